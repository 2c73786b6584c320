import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { addon } from '../../src/native.js';
import { attentionBackward, attentionDecode, attentionForward } from '../../src/ops/attention.js';
import { attentionBackwardReference, attentionReference, type AttentionDims } from '../reference/attention.js';
import { ON_GPU, TEST_DEVICE, assertClose, rng, values, type Rng } from '../helpers.js';
import { hashInChild, here } from './thread_determinism.js';

interface Case extends AttentionDims {
  lengths: number[];
}

/** Lengths include 0 and T, in shuffled order; every Hq/Hkv pairing and hd even but not 2^k. */
function cases(r: Rng): Case[] {
  const out: Case[] = [];
  for (const [Hq, Hkv] of [[2, 1], [4, 2], [3, 3]])
    for (const hd of [6, 10]) out.push({ B: 3, T: 7, Hq, Hkv, hd, lengths: r.shuffle([7, 0, 4]) });
  // Sizes that exercise the vector paths: 4-key groups with tails, 8-wide exp chunks, hd with a tail.
  out.push({ B: 2, T: 33, Hq: 4, Hkv: 2, hd: 64, lengths: [33, 20] });
  out.push({ B: 2, T: 9, Hq: 2, Hkv: 1, hd: 70, lengths: [1, 9] });
  // The key gradients' 8-float slices taken four, three, two and one at a time, and a tail.
  out.push({ B: 1, T: 6, Hq: 2, Hkv: 1, hd: 56, lengths: [6] });
  out.push({ B: 2, T: 5, Hq: 3, Hkv: 3, hd: 50, lengths: [4, 5] });
  out.push({ B: 1, T: 4, Hq: 2, Hkv: 2, hd: 8, lengths: [4] });
  // Query groups taken two and four heads at a time with a head left over (Qwen2.5-0.5B's
  // 14/2), and weighted sums with a tail past the 16-float slices.
  out.push({ B: 2, T: 9, Hq: 14, Hkv: 2, hd: 64, lengths: [9, 5] });
  out.push({ B: 1, T: 7, Hq: 5, Hkv: 1, hd: 24, lengths: [7] });
  return out;
}

/** k or v [B, T, Hkv, hd] with each kv head repeated G times: [B, T, Hkv·G, hd]. */
function repeatHeads(x: Float32Array, c: AttentionDims, G: number): Float32Array {
  const out = new Float32Array(x.length * G);
  for (let bt = 0; bt < c.B * c.T; bt++)
    for (let h = 0; h < c.Hkv * G; h++)
      out.set(x.subarray((bt * c.Hkv + Math.floor(h / G)) * c.hd, (bt * c.Hkv + Math.floor(h / G) + 1) * c.hd), (bt * c.Hkv * G + h) * c.hd);
  return out;
}

const idx = (d: AttentionDims, b: number, t: number, h: number, H: number) => ((b * d.T + t) * H + h) * d.hd;

/** Random q, k, v, with NaN written into every padded position to prove padding is never read. */
function inputs(r: Rng, c: Case) {
  const q = r.normals(c.B * c.T * c.Hq * c.hd), k = r.normals(c.B * c.T * c.Hkv * c.hd), v = r.normals(c.B * c.T * c.Hkv * c.hd);
  const dout = r.normals(q.length);
  const qRef = q.slice(), kRef = k.slice(), vRef = v.slice(), doutRef = dout.slice();
  for (let b = 0; b < c.B; b++)
    for (let t = c.lengths[b]; t < c.T; t++) {
      for (let h = 0; h < c.Hq; h++) {
        q.fill(NaN, idx(c, b, t, h, c.Hq), idx(c, b, t, h, c.Hq) + c.hd);
        dout.fill(NaN, idx(c, b, t, h, c.Hq), idx(c, b, t, h, c.Hq) + c.hd);
      }
      for (let h = 0; h < c.Hkv; h++) {
        k.fill(NaN, idx(c, b, t, h, c.Hkv), idx(c, b, t, h, c.Hkv) + c.hd);
        v.fill(NaN, idx(c, b, t, h, c.Hkv), idx(c, b, t, h, c.Hkv) + c.hd);
      }
    }
  // The references never read padding either; they get finite copies so a bug there cannot hide.
  return {
    q: Tensor.from(q, [c.B, c.T, c.Hq, c.hd]),
    k: Tensor.from(k, [c.B, c.T, c.Hkv, c.hd]),
    v: Tensor.from(v, [c.B, c.T, c.Hkv, c.hd]),
    dout: Tensor.from(dout, [c.B, c.T, c.Hq, c.hd]),
    lengths: Int32Array.from(c.lengths),
    ref: { q: qRef, k: kRef, v: vRef, dout: doutRef },
  };
}

const label = (c: Case) => `B=${c.B} T=${c.T} Hq=${c.Hq} Hkv=${c.Hkv} hd=${c.hd} lengths=[${c.lengths}]`;

describe('attention (engine leaf, CPU)', () => {
  it('forward matches the float64 reference; padded rows are 0 and padding is never read', () => {
    const r = rng('attention');
    for (const c of cases(r)) {
      const x = inputs(r, c);
      const scale = 1 / Math.sqrt(c.hd);
      const { out, lse } = attentionForward(x.q, x.k, x.v, x.lengths);
      const ref = attentionReference(x.ref.q, x.ref.k, x.ref.v, c.lengths, c, scale);
      assert.deepEqual(out.shape, [c.B, c.T, c.Hq, c.hd]);
      assert.deepEqual(lse.shape, [c.B, c.Hq, c.T]);
      // Padded rows are exactly 0 in both (the reference leaves them 0).
      assertClose(out.data as Float32Array, ref.out, { atol: 5e-6, rtol: 1e-5 }, `out ${label(c)}`);
      assertClose(lse.data as Float32Array, ref.lse, { atol: 5e-6, rtol: 1e-5 }, `lse ${label(c)}`);
    }
  });

  it('a group of query heads gives each head the bits it gets alone (its kv head repeated, one query head per kv head)', () => {
    const r = rng('attention groups');
    for (const c of [
      { B: 2, T: 19, Hq: 14, Hkv: 2, hd: 64, lengths: [19, 11] },
      { B: 1, T: 6, Hq: 3, Hkv: 1, hd: 70, lengths: [6] },
      { B: 2, T: 5, Hq: 10, Hkv: 2, hd: 24, lengths: [5, 3] },
    ] as Case[]) {
      const x = inputs(r, c), G = c.Hq / c.Hkv;
      const alone = { ...c, Hkv: c.Hq };
      const k1 = Tensor.from(repeatHeads(x.k.data as Float32Array, c, G), [c.B, c.T, c.Hq, c.hd]);
      const v1 = Tensor.from(repeatHeads(x.v.data as Float32Array, c, G), [c.B, c.T, c.Hq, c.hd]);
      const grouped = attentionForward(x.q, x.k, x.v, x.lengths), single = attentionForward(x.q, k1, v1, x.lengths);
      assert.deepEqual(grouped.out.data, single.out.data, `out ${label(c)} against ${label(alone)}`);
      assert.deepEqual(grouped.lse.data, single.lse.data, `lse ${label(c)}`);
      const q = Tensor.from(r.normals(c.B * c.Hq * c.hd), [c.B, c.Hq, c.hd]);
      assert.deepEqual(attentionDecode(q, x.k, x.v, x.lengths).data, attentionDecode(q, k1, v1, x.lengths).data, `decode ${label(c)}`);
    }
  });

  it('honours a custom scale', () => {
    const r = rng('attention scale');
    const c: Case = { B: 2, T: 5, Hq: 4, Hkv: 2, hd: 6, lengths: [5, 3] };
    const x = inputs(r, c);
    const { out } = attentionForward(x.q, x.k, x.v, x.lengths, { scale: 0.9 });
    assertClose(out.data as Float32Array, attentionReference(x.ref.q, x.ref.k, x.ref.v, c.lengths, c, 0.9).out, { atol: 5e-6, rtol: 1e-5 }, 'out');
  });

  it('the reference gradients agree with central finite differences (float64)', () => {
    const r = rng('attention fd');
    for (const [Hq, Hkv] of [[2, 1], [4, 2], [3, 3]]) {
      const d: AttentionDims = { B: 2, T: 4, Hq, Hkv, hd: 6 };
      const lengths = [4, 3], scale = 1 / Math.sqrt(d.hd);
      const q = Float64Array.from(r.normals(d.B * d.T * Hq * d.hd)), k = Float64Array.from(r.normals(d.B * d.T * Hkv * d.hd));
      const v = Float64Array.from(r.normals(k.length)), R = Float64Array.from(r.normals(q.length));
      const loss = () => attentionReference(q, k, v, lengths, d, scale).out.reduce((a, o, i) => a + o * R[i], 0);
      const grads = attentionBackwardReference(q, k, v, lengths, R, d, scale);
      for (const [name, x, g] of [['dq', q, grads.dq], ['dk', k, grads.dk], ['dv', v, grads.dv]] as const) {
        for (let c = 0; c < 12; c++) {
          const i = r.int(0, x.length), keep = x[i], h = 1e-5;
          x[i] = keep + h;
          const up = loss();
          x[i] = keep - h;
          const down = loss();
          x[i] = keep;
          assertClose((up - down) / (2 * h), g[i], { atol: 1e-8, rtol: 1e-6 }, `${name}[${i}] Hq=${Hq} Hkv=${Hkv}`);
        }
      }
    }
  });

  it('backward matches the float64 reference; padded dout is ignored and padding gets zero gradient', () => {
    const r = rng('attention backward');
    for (const c of cases(r)) {
      const x = inputs(r, c);
      const scale = 1 / Math.sqrt(c.hd);
      const { out, lse } = attentionForward(x.q, x.k, x.v, x.lengths);
      const g = attentionBackward(x.q, x.k, x.v, x.lengths, out, lse, x.dout);
      const ref = attentionBackwardReference(x.ref.q, x.ref.k, x.ref.v, c.lengths, x.ref.dout, c, scale);
      assert.deepEqual(g.dk.shape, [c.B, c.T, c.Hkv, c.hd]);
      const tol = { atol: 2e-5, rtol: 1e-4 };
      assertClose(g.dq.data as Float32Array, ref.dq, tol, `dq ${label(c)}`);
      assertClose(g.dk.data as Float32Array, ref.dk, tol, `dk ${label(c)}`);
      assertClose(g.dv.data as Float32Array, ref.dv, tol, `dv ${label(c)}`);
    }
  });

  it('decode step by step over a KV cache gives exactly the forward rows (same bits)', () => {
    const r = rng('attention decode');
    for (const c of [
      { B: 3, T: 13, Hq: 4, Hkv: 2, hd: 64, lengths: [13, 6, 0] },
      { B: 2, T: 11, Hq: 3, Hkv: 3, hd: 10, lengths: [2, 11] },
      { B: 2, T: 9, Hq: 2, Hkv: 1, hd: 6, lengths: [9, 9] },
    ] as Case[]) {
      const x = inputs(r, c);
      const { out } = attentionForward(x.q, x.k, x.v, x.lengths);
      // A cache larger than the sequence, NaN beyond what each row has written.
      const S = c.T + 3;
      const kc = new Float32Array(c.B * S * c.Hkv * c.hd).fill(NaN), vc = kc.slice();
      const qData = x.q.data as Float32Array, kData = x.k.data as Float32Array, vData = x.v.data as Float32Array;
      const rowQ = c.Hq * c.hd, rowKv = c.Hkv * c.hd;
      for (let t = 0; t < c.T; t++) {
        // Step t: each live row appends its token t to the cache and attends tokens 0..t.
        const q = new Float32Array(c.B * rowQ).fill(NaN);
        const lengths = new Int32Array(c.B);
        for (let b = 0; b < c.B; b++) {
          if (t >= c.lengths[b]) continue;  // finished row: length 0, output 0
          q.set(qData.subarray((b * c.T + t) * rowQ, (b * c.T + t + 1) * rowQ), b * rowQ);
          kc.set(kData.subarray((b * c.T + t) * rowKv, (b * c.T + t + 1) * rowKv), (b * S + t) * rowKv);
          vc.set(vData.subarray((b * c.T + t) * rowKv, (b * c.T + t + 1) * rowKv), (b * S + t) * rowKv);
          lengths[b] = t + 1;
        }
        for (let b = 0; b < c.B; b++) if (lengths[b] === 0) q.fill(0, b * rowQ, (b + 1) * rowQ);
        const step = attentionDecode(Tensor.from(q, [c.B, c.Hq, c.hd]), Tensor.from(kc, [c.B, S, c.Hkv, c.hd]), Tensor.from(vc, [c.B, S, c.Hkv, c.hd]), lengths);
        assert.deepEqual(step.shape, [c.B, c.Hq, c.hd]);
        for (let b = 0; b < c.B; b++) {
          const want = (out.data as Float32Array).subarray((b * c.T + t) * rowQ, (b * c.T + t + 1) * rowQ);
          const got = (step.data as Float32Array).subarray(b * rowQ, (b + 1) * rowQ);
          assert.deepEqual(got, want, `row ${b}, step ${t}, ${label(c)}`);
        }
      }
    }
  });

  it('is deterministic: identical bits twice, and for 1, 2 or 3 threads', () => {
    const r = rng('attention determinism');
    const seed = r.int(1, 2 ** 31);
    const snippet = `
      const { attentionForward, attentionBackward, attentionDecode } = await import(${JSON.stringify(here('../../src/ops/attention.js'))});
      const { Tensor } = await import(${JSON.stringify(here('../../src/index.js'))});
      const r = new Rng(${seed});
      const B = 3, T = 29, Hq = 4, Hkv = 2, hd = 10;
      const q = Tensor.from(r.normals(B * T * Hq * hd), [B, T, Hq, hd]);
      const k = Tensor.from(r.normals(B * T * Hkv * hd), [B, T, Hkv, hd]), v = Tensor.from(r.normals(B * T * Hkv * hd), [B, T, Hkv, hd]);
      const lengths = Int32Array.from([29, 17, 3]);
      const f = attentionForward(q, k, v, lengths);
      const g = attentionBackward(q, k, v, lengths, f.out, f.lse, Tensor.from(r.normals(B * T * Hq * hd), [B, T, Hq, hd]));
      const d = attentionDecode(Tensor.from(r.normals(B * Hq * hd), [B, Hq, hd]), k, v, lengths);
      done([f.out.data, f.lse.data, g.dq.data, g.dk.data, g.dv.data, d.data]);`;
    const hashes = [1, 2, 3, 2].map((threads) => hashInChild(threads, snippet));
    assert.equal(hashes[3], hashes[1], 'twice with 2 threads');
    assert.equal(hashes[1], hashes[0], '2 threads vs 1');
    assert.equal(hashes[2], hashes[0], '3 threads vs 1');
  });

  it('rejects bad input with errors naming the argument', () => {
    const t = (shape: number[]) => Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    const q = t([2, 3, 4, 6]), k = t([2, 3, 2, 6]), v = t([2, 3, 2, 6]);
    const len = Int32Array.from([3, 1]);
    assert.throws(() => attentionForward(q.data as never, k, v, len), /q: expected a Tensor/);
    assert.throws(() => attentionForward(t([2, 3, 6]), k, v, len), /q: expected shape \[batch, seq, heads, headDim\]/);
    assert.throws(() => attentionForward(q, t([2, 3, 3, 6]), t([2, 3, 3, 6]), len), /k: kv heads \(3\) must be >= 1 and divide the query heads \(4\)/);
    assert.throws(() => attentionForward(q, t([2, 4, 2, 6]), v, len), /k: expected shape \[2, 3, kvHeads, 6\]/);
    assert.throws(() => attentionForward(q, k, t([2, 3, 1, 6]), len), /v: expected shape \[2, 3, 2, 6\]/);
    assert.throws(() => attentionForward(q, k, v, Int32Array.from([4, 1])), /lengths: length 4 of row 0 is outside \[0, 3\]/);
    assert.throws(() => attentionForward(q, k, v, Int32Array.from([3, -1])), /lengths: length -1 of row 1/);
    assert.throws(() => attentionForward(q, k, v, Int32Array.from([3])), /lengths: length 1 does not fit shape \[2\]/);
    assert.throws(() => attentionForward(q, k, v, len, { scale: 0 }), /scale: expected > 0/);
    const bad = t([2, 3, 4, 6]);
    (bad.data as Float32Array)[5] = NaN;  // row 0, t 0: a live position
    assert.throws(() => attentionForward(bad, k, v, len), /q, k, v: a non-finite value reached attention at row 0, head 0, position 0/);
    const { out, lse } = attentionForward(q, k, v, len);
    assert.throws(() => attentionBackward(q, k, v, len, out, t([2, 3, 4]), out), /lse: expected shape \[2, 4, 3\]/);
    assert.throws(() => attentionBackward(q, k, v, len, out, lse, t([2, 3, 4, 5])), /dout: expected shape \[2, 3, 4, 6\]/);
    assert.throws(() => attentionDecode(t([2, 4, 6]), t([2, 5, 2, 6]), t([2, 5, 2, 6]), Int32Array.from([6, 0])), /lengths: length 6 of row 0 is outside \[0, 5\] \(the cache size\)/);
    assert.throws(() => attentionDecode(t([2, 4, 6]), t([2, 5, 3, 6]), t([2, 5, 3, 6]), Int32Array.from([1, 0])), /kCache: kv heads \(3\)/);
    assert.throws(() => attentionDecode(t([2, 4, 6]), t([3, 5, 2, 6]), t([3, 5, 2, 6]), Int32Array.from([1, 0])), /kCache: expected shape \[2, maxSeq, kvHeads, 6\]/);
    // The raw addon re-checks lengths itself: an unchecked length would read past the buffers.
    assert.throws(() => addon().attentionForward(q, k, v, Tensor.from(Int32Array.from([9, 0])), {}), /lengths: length 9 of row 0/);
    assert.throws(() => addon().attentionDecode(t([2, 4, 6]), t([2, 5, 2, 6]), t([2, 5, 2, 6]), Tensor.from(Int32Array.from([0, 7])), {}), /lengths: length 7 of row 1/);
  });

});

// The CUDA twins against the CPU twin on the same inputs (NaN-poisoned padding included).
// Tolerances: forward out and lse within 1e-5 + 1e-5·|x| (both are f32 with different sum
// orders and exp), gradients within 5e-5 + 1e-4·|x| (sums of up to T·G terms); decode
// must give the CUDA forward's exact bits, as the CPU decode gives the CPU forward's.
if (ON_GPU) {
  describe(`attention on ${TEST_DEVICE} (CUDA twins vs the CPU twin)`, () => {
    const dev = (t: Tensor) => t.to(TEST_DEVICE);
    /** Ragged lengths with 0 and T; T not a multiple of the 32-key tile (nor 16 for 256-wide heads);
     *  Hq/Hkv of 1, 2 and 7; awkward head dims on every path (<=64, <=128, <=256). */
    function deviceCases(r: Rng): Case[] {
      return [
        { B: 3, T: 37, Hq: 2, Hkv: 2, hd: 8, lengths: r.shuffle([37, 0, 19]) },
        { B: 2, T: 45, Hq: 4, Hkv: 2, hd: 13, lengths: r.shuffle([45, 33]) },
        { B: 3, T: 23, Hq: 7, Hkv: 1, hd: 40, lengths: r.shuffle([23, 0, 1]) },
        { B: 2, T: 70, Hq: 14, Hkv: 2, hd: 64, lengths: r.shuffle([70, 41]) },
        { B: 2, T: 33, Hq: 2, Hkv: 1, hd: 70, lengths: r.shuffle([33, 32]) },
        { B: 1, T: 21, Hq: 3, Hkv: 3, hd: 160, lengths: [21] },
      ];
    }
    const tol = { atol: 1e-5, rtol: 1e-5 }, gradTol = { atol: 5e-5, rtol: 1e-4 };

    it('forward and backward match the CPU twin', () => {
      const r = rng('attention cuda');
      for (const c of deviceCases(r)) {
        const x = inputs(r, c);
        const len = Tensor.from(x.lengths);
        const cpu = attentionForward(x.q, x.k, x.v, len);
        const gpu = attentionForward(dev(x.q), dev(x.k), dev(x.v), dev(len));
        assert.equal(gpu.out.device, TEST_DEVICE);
        assert.deepEqual(gpu.lse.shape, [c.B, c.Hq, c.T]);
        assertClose(values(gpu.out), cpu.out.data as Float32Array, tol, `out ${label(c)}`);
        assertClose(values(gpu.lse), cpu.lse.data as Float32Array, tol, `lse ${label(c)}`);
        const gCpu = attentionBackward(x.q, x.k, x.v, len, cpu.out, cpu.lse, x.dout);
        const gGpu = attentionBackward(dev(x.q), dev(x.k), dev(x.v), dev(len), gpu.out, gpu.lse, dev(x.dout));
        assertClose(values(gGpu.dq), gCpu.dq.data as Float32Array, gradTol, `dq ${label(c)}`);
        assertClose(values(gGpu.dk), gCpu.dk.data as Float32Array, gradTol, `dk ${label(c)}`);
        assertClose(values(gGpu.dv), gCpu.dv.data as Float32Array, gradTol, `dv ${label(c)}`);
        // One owner per gradient element, fixed sum orders: the same bits again.
        const again = attentionBackward(dev(x.q), dev(x.k), dev(x.v), dev(len), gpu.out, gpu.lse, dev(x.dout));
        assert.deepEqual(values(again.dk), values(gGpu.dk), `dk repeat ${label(c)}`);
        assert.deepEqual(values(again.dq), values(gGpu.dq), `dq repeat ${label(c)}`);
      }
    });

    it('decode over a device KV cache gives the CUDA forward rows exactly, and the CPU decode to rounding', () => {
      const r = rng('attention cuda decode');
      for (const c of [
        { B: 3, T: 35, Hq: 14, Hkv: 2, hd: 24, lengths: [35, 6, 0] },
        { B: 2, T: 18, Hq: 3, Hkv: 3, hd: 160, lengths: [18, 17] },
        { B: 2, T: 9, Hq: 10, Hkv: 1, hd: 16, lengths: [4, 9] },  // a group wider than one block's 8 rows
      ] as Case[]) {
        const x = inputs(r, c);
        const fwd = values(attentionForward(dev(x.q), dev(x.k), dev(x.v), dev(Tensor.from(x.lengths))).out) as Float32Array;
        const S = c.T + 5;
        const rowQ = c.Hq * c.hd, rowKv = c.Hkv * c.hd;
        const kc = new Float32Array(c.B * S * rowKv).fill(NaN), vc = kc.slice();
        const qData = x.q.data as Float32Array, kData = x.k.data as Float32Array, vData = x.v.data as Float32Array;
        for (let b = 0; b < c.B; b++)
          for (let t = 0; t < c.lengths[b]; t++) {
            kc.set(kData.subarray((b * c.T + t) * rowKv, (b * c.T + t + 1) * rowKv), (b * S + t) * rowKv);
            vc.set(vData.subarray((b * c.T + t) * rowKv, (b * c.T + t + 1) * rowKv), (b * S + t) * rowKv);
          }
        const kct = Tensor.from(kc, [c.B, S, c.Hkv, c.hd]), vct = Tensor.from(vc, [c.B, S, c.Hkv, c.hd]);
        const kcd = dev(kct), vcd = dev(vct);
        // Every step t: row b attends its tokens 0..t (entries past that hold NaN or later tokens).
        for (let t = 0; t < c.T; t++) {
          const q = new Float32Array(c.B * rowQ);
          const lengths = new Int32Array(c.B);
          for (let b = 0; b < c.B; b++) {
            if (t >= c.lengths[b]) continue;
            q.set(qData.subarray((b * c.T + t) * rowQ, (b * c.T + t + 1) * rowQ), b * rowQ);
            lengths[b] = t + 1;
          }
          const qt = Tensor.from(q, [c.B, c.Hq, c.hd]), lt = Tensor.from(lengths);
          const got = values(attentionDecode(dev(qt), kcd, vcd, dev(lt))) as Float32Array;
          const cpu = attentionDecode(qt, kct, vct, lt).data as Float32Array;
          assertClose(got, cpu, tol, `decode vs CPU, step ${t}, ${label(c)}`);
          for (let b = 0; b < c.B; b++) {
            const want = t < c.lengths[b] ? fwd.subarray((b * c.T + t) * rowQ, (b * c.T + t + 1) * rowQ) : new Float32Array(rowQ);
            assert.deepEqual(got.subarray(b * rowQ, (b + 1) * rowQ), want, `row ${b}, step ${t}, ${label(c)}`);
          }
        }
      }
    });

    it('rejects bad lengths, non-finite inputs, mixed devices and too wide heads as the CPU twin does', () => {
      const t = (shape: number[]) => Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
      const q = dev(t([2, 3, 4, 6])), k = dev(t([2, 3, 2, 6])), v = dev(t([2, 3, 2, 6]));
      const len = (...l: number[]) => dev(Tensor.from(Int32Array.from(l)));
      // The wrapper cannot read device lengths: the twin checks them, in the CPU twin's words.
      assert.throws(() => attentionForward(q, k, v, len(3, 4)), /lengths: length 4 of row 1 is outside \[0, 3\] \(the sequence length\)/);
      assert.throws(() => attentionForward(q, k, v, len(-1, 9)), /lengths: length -1 of row 0/);
      const ok = attentionForward(q, k, v, len(3, 1));
      assert.throws(() => attentionBackward(q, k, v, len(3, 5), ok.out, ok.lse, q), /lengths: length 5 of row 1 is outside \[0, 3\]/);
      assert.throws(() => attentionDecode(dev(t([2, 4, 6])), dev(t([2, 5, 2, 6])), dev(t([2, 5, 2, 6])), len(0, 6)),
        /lengths: length 6 of row 1 is outside \[0, 5\] \(the cache size\)/);
      assert.throws(() => addon().attentionForward(q, k, v, len(9, 0), {}), /lengths: length 9 of row 0/);
      const bad = new Float32Array(2 * 3 * 4 * 6);
      bad[(1 * 3 + 2) * 24 + 3 * 6 + 1] = Infinity;  // row 1, position 2, head 3: live when lengths[1] = 3
      assert.throws(() => attentionForward(dev(Tensor.from(bad, [2, 3, 4, 6])), k, v, len(3, 3)),
        /q, k, v: a non-finite value reached attention at row 1, head 3, position 2/);
      // Padding is never read, so the same value at a padded position is fine.
      assertClose(values(attentionForward(dev(Tensor.from(bad, [2, 3, 4, 6])), k, v, len(3, 2)).out), new Float32Array(bad.length), {}, 'padded Inf');
      const badV = new Float32Array(2 * 5 * 2 * 6);
      badV[(0 * 5 + 1) * 12 + 1 * 6] = NaN;  // row 0, cache entry 1, kv head 1 (query heads 2, 3)
      assert.throws(() => attentionDecode(dev(t([2, 4, 6])), dev(t([2, 5, 2, 6])), dev(Tensor.from(badV, [2, 5, 2, 6])), len(2, 0)),
        /q, kCache, vCache: a non-finite value reached attention at row 0, head 2/);
      assert.throws(() => attentionForward(q, t([2, 3, 2, 6]), v, len(3, 1)), /k: is on cpu but q is on cuda/);
      assert.throws(() => addon().attentionForward(q, k, v, Tensor.from(Int32Array.of(3, 1)), {}), /lengths: is on cpu but the other inputs are on cuda/);
      assert.throws(() => attentionForward(dev(t([1, 2, 1, 257])), dev(t([1, 2, 1, 257])), dev(t([1, 2, 1, 257])), len(2)), /headDim 257 is above 256/);
    });
  });
}
