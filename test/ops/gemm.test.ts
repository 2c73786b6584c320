import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor, buildInfo } from '../../src/index.js';
import { gemm, measurePeakFlops, type MatrixView } from '../../src/ops/gemm.js';
import { addon } from '../../src/native.js';
import { gemmReference, type StoredMatrix } from '../reference/gemm.js';
import { ON_GPU, TEST_DEVICE, onDevice, rng, values, type Rng } from '../helpers.js';

const U = 2 ** -24;  // f32 unit roundoff
const SIZES = [1, 3, 17, 67, 129];
const OPS = [[false, false], [false, true], [true, false], [true, true]] as const;

/** A rows×cols matrix stored with `pad` extra elements per row, the padding set to `fill`. */
function stored(r: Rng, rows: number, cols: number, pad: number, fill = NaN): MatrixView & StoredMatrix {
  const ld = cols + pad;
  const data = new Float32Array(rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols).fill(fill);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) data[i * ld + j] = r.normal();
  return { data, rows, cols, ld };
}

/**
 * Every element against the float64 reference, within the worst-case bound of a K-term
 * f32 dot product (plus the alpha/beta roundings): (K + 4)·u·Σ|terms|. One missing or
 * wrong term is ~Σ|terms|/K, far outside it. Padding of C must be untouched.
 */
function check(c: MatrixView & StoredMatrix, before: Float32Array, ref: ReturnType<typeof gemmReference>, k: number, label: string) {
  const data = c.data as Float32Array;
  const bound = (k + 4) * U * 1.01;
  for (let i = 0; i < c.rows; i++) {
    for (let j = 0; j < c.ld; j++) {
      const at = i * c.ld + j;
      if (at >= data.length) break;
      if (j >= c.cols) {
        if (!Object.is(data[at], before[at])) assert.fail(`${label}: padding c[${i}][${j}] changed to ${data[at]}`);
        continue;
      }
      const want = ref.value[i * c.cols + j], got = data[at];
      const tol = bound * ref.magnitude[i * c.cols + j] + 1e-35;
      if (!(Math.abs(got - want) <= tol))
        assert.fail(`${label}: c[${i}][${j}] = ${got}, expected ${want} (|diff| ${Math.abs(got - want).toExponential(3)} > ${tol.toExponential(3)})`);
    }
  }
}

/** The same view with its storage on the test device (a Tensor there, the host array here). */
function deviceView(m: MatrixView & StoredMatrix): MatrixView {
  return ON_GPU ? { ...m, data: onDevice(m.data as Float32Array) } : m;
}

/** C's storage after the call, as host values. */
function hostData(view: MatrixView): Float32Array {
  return values(view.data) as Float32Array;
}

function runCase(r: Rng, transA: boolean, transB: boolean, m: number, n: number, k: number, opts: { alpha?: number; beta?: number; pad?: boolean } = {}) {
  const padOf = () => (opts.pad ? r.int(1, 6) : 0);
  const a = transA ? stored(r, k, m, padOf()) : stored(r, m, k, padOf());
  const b = transB ? stored(r, n, k, padOf()) : stored(r, k, n, padOf());
  const c = stored(r, m, n, padOf(), 7.5);
  const alpha = opts.alpha ?? 1, beta = opts.beta ?? 0;
  if (beta === 0) (c.data as Float32Array).forEach((_, i, d) => { d[i] = NaN; });  // beta = 0 must never read C
  const before = Float32Array.from(c.data as Float32Array);
  const ref = gemmReference(a, b, { ...c, data: before }, transA, transB, alpha, beta);
  const cv = deviceView(c);
  const out = gemm(deviceView(a), deviceView(b), cv, { transA, transB, alpha, beta });
  assert.equal(out, cv);
  check({ ...c, data: hostData(cv) }, before, ref, k, `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta}`);
}

describe(`gemm on ${TEST_DEVICE}`, () => {
  for (const [transA, transB] of OPS) {
    const name = `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`;
    it(`${name}: matches the float64 reference for every M, N, K in {1, 3, 17, 67, 129}`, () => {
      const r = rng(`gemm ${name}`);
      for (const m of SIZES) for (const n of SIZES) for (const k of SIZES) runCase(r, transA, transB, m, n, k);
    });

    it(`${name}: alpha/beta variants, leading dimensions larger than cols`, () => {
      const r = rng(`gemm ${name} alpha beta`);
      for (const [alpha, beta] of [[1, 1], [-0.5, 0.75], [2, 0], [0.25, -1]]) {
        for (let trial = 0; trial < 6; trial++)
          runCase(r, transA, transB, r.int(1, 40), r.int(1, 40), r.int(1, 40), { alpha, beta, pad: true });
        runCase(r, transA, transB, 67, 129, 17, { alpha, beta, pad: true });
      }
    });

    it(`${name}: several K, M and N blocks, split across threads`, () => {
      // K = 520 crosses two K-block boundaries (256), M = 200 two row blocks, and the
      // 2·M·N·K = 31 MFLOP is enough for the work to be split between threads. On CUDA,
      // several 64×64 tiles each way, none of them full at the edges.
      const r = rng(`gemm ${name} blocks`);
      runCase(r, transA, transB, 200, 150, 520, { beta: 1, pad: true });
      // Every K block after the first must add to C, whatever beta is.
      runCase(r, transA, transB, 150, 40, 520, { beta: 0 });
      runCase(r, transA, transB, 150, 40, 300, { alpha: -0.5, beta: 0.75, pad: true });
      runCase(r, transA, transB, 5, 40, 520, { alpha: 2, beta: 0 });
      runCase(r, transA, transB, 7, 4200, 9);  // N past one column block (4080)
    });
  }

  it('a row of C does not depend on M: the few-row (decode) path gives the many-row path\'s bits', { skip: ON_GPU ? 'CPU twin only: the few-row path is the CPU\'s' : false }, () => {
    // y = x·Wᵀ for 1..17 rows (the decoding path reads W in place, rows in vector lanes)
    // against the same rows inside a 150-row product (the packed register-tile path): the
    // sampler's log-probs equal sequenceLogprobs' only if these agree bit for bit.
    const r = rng('gemm few rows');
    const big = 150;
    for (const [k, alpha, beta, n] of [[520, 1, 0, 45], [300, -0.5, 1, 67], [17, 2, 0.75, 16], [256, 1, 0, 9], [1, 1, 0, 3], [4100, 1, 0, 40],
      // over 64 KB of panels: the pool's chunks, to the panel (5 panels) and in triples (63)
      [520, 1, 0, 80], [300, 1, 0.5, 1001]] as const) {
      for (const transA of [false, true]) {
        const a = transA ? stored(r, k, big, 0) : stored(r, big, k, 0);
        const b = stored(r, n, k, 3);
        const c0 = stored(r, big, n, 2, 7.5);
        const cBig = { ...c0, data: Float32Array.from(c0.data as Float32Array) };
        gemm(a, b, cBig, { transA, transB: true, alpha, beta });
        // weightPanels: the rollout path over a panel copy of W (few rows: panels streamed,
        // rows broadcast; many rows: the tile path reading the panels as its B slivers).
        for (const weightPanels of [false, true])
          for (const m of [1, 2, 5, 8, 9, 13, 16, 17, ...(weightPanels ? [big] : [])]) {
            // the first m rows of op(A): a prefix of A, or its first m columns when transposed
            const aM = transA ? { data: a.data, rows: k, cols: m, ld: big } : { data: (a.data as Float32Array).subarray(0, m * k), rows: m, cols: k };
            const cM = { data: Float32Array.from((c0.data as Float32Array).subarray(0, (m - 1) * c0.ld + n)), rows: m, cols: n, ld: c0.ld };
            gemm(aM, b, cM, { transA, transB: true, alpha, beta, weightPanels });
            for (let i = 0; i < m; i++)
              for (let j = 0; j < n; j++)
                if (!Object.is(cM.data[i * c0.ld + j], cBig.data[i * c0.ld + j]))
                  assert.fail(`m=${m} k=${k} transA=${transA} weightPanels=${weightPanels}: c[${i}][${j}] = ${cM.data[i * c0.ld + j]}, the ${big}-row product has ${cBig.data[i * c0.ld + j]}`);
          }
      }
    }
  });

  it('handles empty dimensions: M or N = 0 is a no-op, K = 0 gives beta·C', () => {
    const r = rng('gemm empty');
    for (const [transA, transB] of OPS) {
      for (const m of [0, 3]) for (const n of [0, 5]) for (const k of [0, 4]) {
        runCase(r, transA, transB, m, n, k, { beta: 0 });
        runCase(r, transA, transB, m, n, k, { alpha: 1.5, beta: 0.5 });
      }
    }
    const c = { data: onDevice(new Float32Array([NaN, NaN])), rows: 2, cols: 1 };
    gemm({ data: onDevice(new Float32Array(0)), rows: 2, cols: 0 }, { data: onDevice(new Float32Array(0)), rows: 0, cols: 1 }, c);
    assert.deepEqual(Array.from(hostData(c)), [0, 0]);
  });

  it('alpha = 0 does not read A or B: C becomes beta·C exactly', () => {
    const r = rng('gemm alpha0');
    const a = new Float32Array(12).fill(NaN), b = new Float32Array(20).fill(Infinity);
    const c0 = r.normals(15), c = { data: onDevice(Float32Array.from(c0)), rows: 3, cols: 5 };
    gemm({ data: onDevice(a), rows: 3, cols: 4 }, { data: onDevice(b), rows: 4, cols: 5 }, c, { alpha: 0, beta: 0.3 });
    assert.deepEqual(Array.from(hostData(c)), Array.from(c0, (x) => Math.fround(x * Math.fround(0.3))));
  });

  it('accepts rank-2 Tensors and views over Tensors', () => {
    const r = rng('gemm tensors');
    const xs = r.normals(5 * 7), ws = r.normals(4 * 7);
    const x = onDevice(xs, [5, 7]), w = onDevice(ws, [4, 7]);
    const y = onDevice(new Float32Array(20), [5, 4]);
    assert.equal(gemm(x, w, y, { transB: true }), y);
    const ref = gemmReference({ data: xs, rows: 5, cols: 7, ld: 7 }, { data: ws, rows: 4, cols: 7, ld: 7 },
      { data: new Float32Array(20), rows: 5, cols: 4, ld: 4 }, false, true, 1, 0);
    check({ data: values(y) as Float32Array, rows: 5, cols: 4, ld: 4 }, new Float32Array(20), ref, 7, 'tensor');
    // The first 3 columns of w's rows as a [4, 3] view with ld 7.
    const y2 = { data: onDevice(new Float32Array(5 * 4)), rows: 5, cols: 4 };
    gemm({ data: x, rows: 5, cols: 3, ld: 7 }, { data: w, rows: 4, cols: 3, ld: 7 }, y2, { transB: true });
    const ref2 = gemmReference({ data: xs, rows: 5, cols: 3, ld: 7 }, { data: ws, rows: 4, cols: 3, ld: 7 },
      { data: new Float32Array(20), rows: 5, cols: 4, ld: 4 }, false, true, 1, 0);
    check({ data: hostData(y2), rows: 5, cols: 4, ld: 4 }, new Float32Array(20), ref2, 3, 'view');
  });

  it('rejects bad inputs with errors naming the argument', () => {
    const f = (n: number) => new Float32Array(n);
    const v = (rows: number, cols: number, ld?: number): MatrixView => ({ data: f(rows * (ld ?? cols)), rows, cols, ld });
    assert.throws(() => gemm(v(2, 3), v(4, 5), v(2, 5)), { name: 'RangeError', message: /^b: b has 4 rows but a has 3 columns/ });
    assert.throws(() => gemm(v(2, 3), v(5, 3), v(2, 5)), { name: 'RangeError', message: /^b: / });
    assert.throws(() => gemm(v(2, 3), v(5, 3), v(2, 4), { transB: true }), { name: 'RangeError', message: /^c: expected 2×5/ });
    assert.throws(() => gemm(v(3, 2), v(3, 5), v(3, 5), { transA: true }), { name: 'RangeError', message: /^c: expected 2×5/ });
    assert.throws(() => gemm(f(6) as never, v(3, 5), v(2, 5)), { name: 'TypeError', message: /^a: a Float32Array needs its shape/ });
    assert.throws(() => gemm({ data: new Float64Array(6) as never, rows: 2, cols: 3 }, v(3, 5), v(2, 5)), { name: 'TypeError', message: /^a\.data: expected a Float32Array/ });
    assert.throws(() => gemm(v(2, 3), { data: f(14), rows: 3, cols: 5 }, v(2, 5)), { name: 'RangeError', message: /^b: 3×5 with ld 5 needs 15 elements/ });
    assert.throws(() => gemm(v(2, 3), v(3, 5), { data: f(10), rows: 2, cols: 5, ld: 4 }), { name: 'RangeError', message: /^c\.ld: 4 is smaller/ });
    assert.throws(() => gemm(v(2, 3), v(3, 5), { data: f(10), rows: -2, cols: 5 }), { name: 'RangeError', message: /^c\.rows: expected a non-negative integer/ });
    assert.throws(() => gemm(Tensor.from(f(24), [2, 3, 4]), v(3, 5), v(2, 5)), { name: 'RangeError', message: /^a: expected a rank-2 tensor/ });
    assert.throws(() => gemm(Tensor.from(new Int32Array(6), [2, 3]), v(3, 5), v(2, 5)), { name: 'TypeError', message: /^a: expected dtype f32/ });
    assert.throws(() => gemm(v(2, 3), v(3, 5), v(2, 5), { alpha: NaN }), { name: 'TypeError', message: /^alpha: / });
    assert.throws(() => gemm(v(2, 3), v(3, 5), v(2, 5), { transA: 1 as never }), { name: 'TypeError', message: /^transA: / });
    // C sharing memory with A would be overwritten while A is still being read.
    const shared = f(100);
    assert.throws(() => gemm({ data: shared, rows: 3, cols: 3 }, v(3, 3), { data: shared.subarray(4), rows: 3, cols: 3 }),
      { name: 'RangeError', message: /^c: must not share memory with a/ });
    // The raw addon re-checks sizes against storage, so it never reads out of bounds.
    const t = (n: number) => Tensor.from(f(n));
    assert.throws(() => addon().gemm(t(6), t(15), t(10), { m: 2, n: 5, k: 3, lda: 9 }), { name: 'RangeError', message: /^a: / });
    assert.throws(() => addon().gemm(t(6), t(15), t(10), { m: 2, n: 5, k: 3, ldc: 4 }), { name: 'RangeError', message: /^c: leading dimension/ });
    assert.throws(() => addon().gemm(t(6), t(15), t(10), { m: 2e15, n: 5, k: 3 }), { name: 'RangeError', message: /^a: / });
    assert.throws(() => addon().gemm(t(6), Tensor.from(new Int32Array(15)), t(10), { m: 2, n: 5, k: 3 }), { name: 'TypeError', message: /^b: / });
    if (ON_GPU) {
      const d = (n: number) => onDevice(f(n));
      assert.throws(() => gemm(v(2, 3), { data: d(15), rows: 3, cols: 5 }, v(2, 5)), { name: 'TypeError', message: new RegExp(`^b: is on ${TEST_DEVICE} but a is on cpu`) });
      assert.throws(() => addon().gemm(d(6), t(15), d(10), { m: 2, n: 5, k: 3 }), { name: 'TypeError', message: new RegExp(`^b: is on cpu but the other inputs are on ${TEST_DEVICE}`) });
      assert.throws(() => addon().gemm(d(6), d(15), t(10), { m: 2, n: 5, k: 3 }), { name: 'TypeError', message: /^c: is on cpu/ });
      assert.throws(() => addon().gemm(d(6), d(15), d(10), { m: 2, n: 5, k: 3, lda: 9 }), { name: 'RangeError', message: /^a: / });
      const onDev = d(100);
      assert.throws(() => gemm({ data: onDev, rows: 3, cols: 3 }, { data: d(9), rows: 3, cols: 3 }, { data: onDev, rows: 3, cols: 3 }),
        { name: 'RangeError', message: /^c: must not share memory with a/ });
    }
  });

  if (ON_GPU) {
    // Both twins fold each K block of 256 into C with the same fused multiply-adds in the
    // same order, so against the AVX2+FMA CPU build the bits must agree exactly. Otherwise
    // (a scalar CPU build) each is within (K + 4)·u·Σ|terms| of the exact value, so they
    // are within twice that of each other. Padding must stay as it was on both.
    it('matches the CPU twin on the same inputs: both transposes, beta 0 and 1, edge tiles, 0 rows', () => {
      const r = rng('gemm twin');
      // cuBLASLt (a real GPU that has it) sums in its own order: within the bound, not the bits.
      const exact = buildInfo().simd.startsWith('avx') && !buildInfo().cudaMatmul.startsWith('cuBLASLt');
      const shapes: [number, number, number][] = [
        [1, 1, 1], [1, 65, 300], [63, 1, 17], [65, 130, 257], [64, 64, 256], [0, 5, 7], [5, 0, 7], [130, 67, 520], [3, 200, 1],
      ];
      for (const [transA, transB] of OPS) for (const beta of [0, 1]) for (const [m, n, k] of shapes) {
        const label = `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} m=${m} n=${n} k=${k} beta=${beta}`;
        const a = transA ? stored(r, k, m, r.int(0, 4)) : stored(r, m, k, r.int(0, 4));
        const b = transB ? stored(r, n, k, r.int(0, 4)) : stored(r, k, n, r.int(0, 4));
        const c = stored(r, m, n, r.int(0, 4), 7.5);
        if (beta === 0) (c.data as Float32Array).fill(NaN);  // never read, on either device
        const before = Float32Array.from(c.data as Float32Array);
        const alpha = r.uniform(0.5, 2);
        const cpu = { ...c, data: Float32Array.from(before) };
        gemm(a, b, cpu, { transA, transB, alpha, beta });
        const dev = deviceView({ ...c, data: Float32Array.from(before) });
        gemm(deviceView(a), deviceView(b), dev, { transA, transB, alpha, beta });
        const got = hostData(dev), want = cpu.data;
        const ref = gemmReference(a, b, { ...c, data: before }, transA, transB, alpha, beta);
        const bound = 2 * (k + 4) * U * 1.01;
        assert.equal(got.length, want.length);
        for (let i = 0; i < got.length; i++) {
          const row = Math.floor(i / c.ld), col = i % c.ld;
          if (col >= n) {
            if (!Object.is(got[i], before[i])) assert.fail(`${label}: padding c[${row}][${col}] changed to ${got[i]}`);
            continue;
          }
          if (!Number.isFinite(got[i])) assert.fail(`${label}: c[${row}][${col}] is ${got[i]} on ${TEST_DEVICE}`);
          if (exact) {
            if (!Object.is(got[i], want[i])) assert.fail(`${label}: c[${row}][${col}] = ${got[i]} on ${TEST_DEVICE}, ${want[i]} on the CPU`);
          } else {
            const tol = bound * ref.magnitude[row * n + col] + 1e-35;
            if (!(Math.abs(got[i] - want[i]) <= tol))
              assert.fail(`${label}: c[${row}][${col}] = ${got[i]} on ${TEST_DEVICE}, ${want[i]} on the CPU (> ${tol.toExponential(3)})`);
          }
        }
      }
    });
  }

  it('measurePeakFlops returns a positive GFLOP/s figure', () => {
    const peak = measurePeakFlops(0.02);
    assert.ok(Number.isFinite(peak) && peak > 0, `peak ${peak}`);
    assert.throws(() => measurePeakFlops(-1), { name: 'RangeError', message: /^seconds: / });
  });
});
