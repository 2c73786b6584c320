import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import {
  SavedLogits, Tensor, buildInfo, fromFloat32Array, linearTokenLogprobs, linearTokenLogprobsBackward, toFloat32Array,
} from '../../src/index.js';
import { addon } from '../../src/native.js';
import {
  linearLossReference, linearTokenLogprobsBackwardReference, linearTokenLogprobsReference, type LinearProblem,
} from '../reference/linear_token_logprobs.js';
import { ON_GPU, Rng, TEST_DEVICE, assertClose, onDevice, rng, values } from '../helpers.js';

type Half = 'bf16' | 'f16';

interface Case extends LinearProblem {
  hidden: Float32Array;
  weight: Float32Array;
  targets: Int32Array;
}

/** Random hidden ~ N(0, 1) and weight ~ N(0, scale²/d), so the logits are ~ N(0, scale²/τ²). */
function randomCase(r: Rng, rows: number, vocab: number, dim: number, temperature = 1, scale = 2): Case {
  return {
    hidden: r.normals(rows * dim),
    weight: r.normals(vocab * dim, scale / Math.sqrt(Math.max(dim, 1))),
    targets: r.ints(rows, 0, vocab),
    rows, vocab, dim, temperature,
  };
}

/** The case's values rounded to a 16-bit format, and its bits. */
function rounded(c: Case, dtype: Half): { c: Case; hiddenBits: Uint16Array; weightBits: Uint16Array } {
  const hiddenBits = fromFloat32Array(c.hidden, dtype), weightBits = fromFloat32Array(c.weight, dtype);
  return { c: { ...c, hidden: toFloat32Array(hiddenBits, dtype), weight: toFloat32Array(weightBits, dtype) }, hiddenBits, weightBits };
}

function inputs(c: Case, dtype?: Half) {
  const hidden = dtype ? fromFloat32Array(c.hidden, dtype) : c.hidden;
  const weight = dtype ? fromFloat32Array(c.weight, dtype) : c.weight;
  return {
    hidden: onDevice(hidden, [c.rows, c.dim], dtype),
    weight: onDevice(weight, [c.vocab, c.dim], dtype),
    targets: onDevice(c.targets),
  };
}

function forward(c: Case, entropy: boolean, dtype?: Half) {
  const x = inputs(c, dtype);
  return linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature: c.temperature, entropy });
}

/** Kernel forward then backward, with upstream gradients drawn from r. */
function forwardBackward(r: Rng, c: Case, withEntropy: boolean, dtype?: Half) {
  const x = inputs(c, dtype);
  const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature: c.temperature, entropy: withEntropy });
  const g = r.normals(c.rows), e = withEntropy ? r.normals(c.rows) : undefined;
  const grads = linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, onDevice(g), {
    temperature: c.temperature,
    ...(e ? { gradEntropy: onDevice(e), entropy: f.entropy } : {}),
  });
  return { g, e, gradHidden: values(grads.gradHidden), gradWeight: values(grads.gradWeight) };
}

function bits(a: Float32Array | Uint8Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

const INDEX_URL = new URL('../../src/index.js', import.meta.url).href;

function toBase64(a: Float32Array | Int32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  const out = new Float32Array(b.length / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

/**
 * Forward and backward in a fresh process with LGRPO_NUM_THREADS=threads: the thread
 * count is fixed when the addon loads, so another count needs another process.
 */
function inChildProcess(threads: number, c: Case, g: Float32Array, e: Float32Array) {
  const script = `
    import { readFileSync } from 'node:fs';
    import { linearTokenLogprobs, linearTokenLogprobsBackward, buildInfo, Tensor } from ${JSON.stringify(INDEX_URL)};
    const input = JSON.parse(readFileSync(0, 'utf8'));
    const f32 = (s) => { const b = Buffer.from(s, 'base64'); const a = new Float32Array(b.length / 4); new Uint8Array(a.buffer).set(b); return a; };
    const i32 = (s) => new Int32Array(f32(s).buffer);
    const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
    if (buildInfo().threads !== input.threads) throw new Error('LGRPO_NUM_THREADS was not honoured');
    const h = Tensor.from(f32(input.hidden), [input.rows, input.dim]), w = Tensor.from(f32(input.weight), [input.vocab, input.dim]);
    const y = i32(input.targets), opts = { temperature: input.temperature };
    const f = linearTokenLogprobs(h, w, y, { ...opts, entropy: true });
    const b = linearTokenLogprobsBackward(h, w, y, f.lse.data, f32(input.g), { ...opts, gradEntropy: f32(input.e), entropy: f.entropy.data });
    process.stdout.write(JSON.stringify({ logprobs: b64(f.logprobs.data), entropy: b64(f.entropy.data), lse: b64(f.lse.data),
      gradHidden: b64(b.gradHidden.data), gradWeight: b64(b.gradWeight.data) }));`;
  const input = JSON.stringify({
    threads, rows: c.rows, dim: c.dim, vocab: c.vocab, temperature: c.temperature,
    hidden: toBase64(c.hidden), weight: toBase64(c.weight), targets: toBase64(c.targets), g: toBase64(g), e: toBase64(e),
  });
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    input, env: { ...process.env, LGRPO_NUM_THREADS: String(threads) }, encoding: 'utf8', maxBuffer: 1 << 28,
  });
  assert.equal(child.status, 0, `child process failed: ${child.stderr}`);
  const out = JSON.parse(child.stdout) as Record<string, string>;
  return {
    logprobs: fromBase64(out.logprobs), entropy: fromBase64(out.entropy), lse: fromBase64(out.lse),
    gradHidden: fromBase64(out.gradHidden), gradWeight: fromBase64(out.gradWeight),
  };
}

/** Calls fn, expecting an error of `kind` whose message starts with `argument: `. */
function throwsNaming(fn: () => unknown, kind: typeof TypeError | typeof RangeError, argument: string, detail?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof kind, `expected ${kind.name}, got ${String(err)}`);
    assert.ok(err.message.startsWith(`${argument}: `), `message should name ${argument}: ${err.message}`);
    if (detail) assert.match(err.message, detail);
    return true;
  });
}

// [rows, vocab, dim]: V = 1, 7, 50257; d not a multiple of 8; N odd; N = 0; N across
// the CPU twin's 256-row chunks; V across its 192-row tiles and 16 shards.
const SHAPES: [number, number, number][] = [
  [1, 1, 1], [3, 7, 13], [5, 7, 37], [0, 7, 13], [3, 50257, 5], [17, 193, 8], [300, 401, 19], [33, 3203, 9],
];

describe(`linearTokenLogprobs on ${TEST_DEVICE}`, () => {
  for (const [rows, vocab, dim] of SHAPES) {
    for (const temperature of [1, 0.7]) {
      it(`forward matches the float64 reference: N=${rows}, V=${vocab}, d=${dim}, τ=${temperature}`, () => {
        const r = rng('linearTokenLogprobs');
        const c = randomCase(r, rows, vocab, dim, temperature);
        const ref = linearTokenLogprobsReference(c);
        for (const entropy of [false, true]) {
          const out = forward(c, entropy);
          assertClose(values(out.logprobs), ref.logprobs, { atol: 3e-5, rtol: 2e-5 }, 'logprobs');
          assertClose(values(out.lse), ref.lse, { atol: 3e-5, rtol: 2e-5 }, 'lse');
          if (entropy) assertClose(values(out.entropy!), ref.entropy, { atol: 3e-5, rtol: 2e-5 }, 'entropy');
          else assert.equal(out.entropy, undefined);
        }
      });
    }
  }

  // Shapes that reach every path of the CUDA twin's tiling: d = 33, 70, 130 take 2, 3 and
  // 5 k-slabs of 32 and 1, 2 and 3 output passes of 64 columns; N > 64 spans row tiles;
  // V = 9001 gives 141 vocabulary tiles, so a slice holds one or two of them and the
  // last tile is partial. The backward runs twice: with its slice count as chosen, and
  // with the partial-sum budget lowered so the cap decides it (3 slices).
  for (const [rows, vocab, dim] of [[65, 9001, 70], [130, 1000, 33], [70, 300, 130]] as const) {
    it(`forward and backward match the reference across tile and slice edges: N=${rows}, V=${vocab}, d=${dim}`, () => {
      const r = rng('linearTokenLogprobs');
      const c = randomCase(r, rows, vocab, dim, 0.7);
      const ref = linearTokenLogprobsReference(c);
      const out = forward(c, true);
      assertClose(values(out.logprobs), ref.logprobs, { atol: 3e-5, rtol: 2e-5 }, 'logprobs');
      assertClose(values(out.entropy!), ref.entropy, { atol: 3e-5, rtol: 2e-5 }, 'entropy');
      for (const budget of [undefined, String(3 * rows * dim)]) {
        if (budget) process.env.LGRPO_LINEAR_PARTIAL_FLOATS = budget;
        try {
          const k = forwardBackward(r, c, true);
          const g = linearTokenLogprobsBackwardReference(c, k.g, k.e);
          assertClose(k.gradHidden, g.gradHidden, { atol: 3e-5, rtol: 1e-4 }, `gradHidden (partial budget ${budget ?? 'default'})`);
          assertClose(k.gradWeight, g.gradWeight, { atol: 3e-5, rtol: 1e-4 }, `gradWeight (partial budget ${budget ?? 'default'})`);
        } finally {
          delete process.env.LGRPO_LINEAR_PARTIAL_FLOATS;
        }
      }
    });
  }

  // The CUDA twin's LM head as row chunks through the device GEMM (its default where
  // cuBLASLt runs the GEMMs): several chunks and a partial last one, τ ≠ 1, entropy;
  // bad inputs still name hidden or weight (the fused kernels rerun to name them).
  it('the chunked CUDA LM head (LGRPO_CUDA_LM_HEAD=chunked:R) matches the reference over several chunks', { skip: ON_GPU ? false : 'the CUDA twin only' }, () => {
    const r = rng('linearTokenLogprobs chunked');
    const c = randomCase(r, 70, 1001, 33, 0.7);
    const ref = linearTokenLogprobsReference(c);
    for (const mode of ['chunked:16', 'chunked:1', 'chunked']) {
      process.env.LGRPO_CUDA_LM_HEAD = mode;
      try {
        const out = forward(c, true);
        assertClose(values(out.logprobs), ref.logprobs, { atol: 3e-5, rtol: 2e-5 }, `logprobs (${mode})`);
        assertClose(values(out.lse), ref.lse, { atol: 3e-5, rtol: 2e-5 }, `lse (${mode})`);
        assertClose(values(out.entropy!), ref.entropy, { atol: 3e-5, rtol: 2e-5 }, `entropy (${mode})`);
        const k = forwardBackward(r, c, true);
        const g = linearTokenLogprobsBackwardReference(c, k.g, k.e);
        assertClose(k.gradHidden, g.gradHidden, { atol: 3e-5, rtol: 1e-4 }, `gradHidden (${mode})`);
        assertClose(k.gradWeight, g.gradWeight, { atol: 3e-5, rtol: 1e-4 }, `gradWeight (${mode})`);
        for (const [which, bad] of [['hidden', NaN], ['weight', Infinity]] as const) {
          const broken = { ...c, [which]: Float32Array.from(c[which]) };
          broken[which][40 * c.dim + 2] = bad;
          const x = inputs(broken);
          throwsNaming(() => linearTokenLogprobs(x.hidden, x.weight, x.targets), RangeError, which);
          throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, onDevice(Float32Array.from(ref.lse)), onDevice(k.g)), RangeError, which);
        }
      } finally {
        delete process.env.LGRPO_CUDA_LM_HEAD;
      }
    }
  });

  it('forward is exact where the answer is: V = 1 gives logp = 0 and H = 0', () => {
    const r = rng('linearTokenLogprobs');
    const c = randomCase(r, 9, 1, 11, 0.7);
    const out = forward(c, true);
    assert.deepEqual(Array.from(values(out.logprobs)), new Array(9).fill(0));
    assert.deepEqual(Array.from(values(out.entropy!)), new Array(9).fill(0));
  });

  for (const [rows, vocab, dim] of [[3, 7, 13], [5, 50257, 3], [300, 401, 19], [33, 3203, 9], [1, 1, 4]] as const) {
    for (const temperature of [1, 0.7]) {
      it(`backward matches the float64 reference: N=${rows}, V=${vocab}, d=${dim}, τ=${temperature}`, () => {
        const r = rng('linearTokenLogprobs');
        const c = randomCase(r, rows, vocab, dim, temperature);
        for (const withEntropy of [false, true]) {
          const k = forwardBackward(r, c, withEntropy);
          const ref = linearTokenLogprobsBackwardReference(c, k.g, k.e);
          assertClose(k.gradHidden, ref.gradHidden, { atol: 3e-5, rtol: 1e-4 }, `gradHidden (entropy ${withEntropy})`);
          assertClose(k.gradWeight, ref.gradWeight, { atol: 3e-5, rtol: 1e-4 }, `gradWeight (entropy ${withEntropy})`);
        }
      });
    }
  }

  it('backward with no rows gives an empty gradHidden and a zero gradWeight', () => {
    const c = randomCase(rng('linearTokenLogprobs'), 0, 7, 13);
    const x = inputs(c);
    const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { entropy: true });
    const grads = linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, onDevice(new Float32Array(0)), {
      gradEntropy: onDevice(new Float32Array(0)), entropy: f.entropy,
    });
    assert.equal(values(grads.gradHidden).length, 0);
    assert.deepEqual(Array.from(values(grads.gradWeight)), new Array(7 * 13).fill(0));
  });

  // Issue 12 (tokenLogprobsBackward's item 5, fused form): p = e^(x − lse) from an f32 lse
  // is off by a factor e^±(half an ulp of lse): at |lse| = 1e8 that is up to e^4, and three
  // tied logits each got p = 1 instead of 1/3. Rows with |lse| ≥ 64 now get the log-sum-exp
  // recomputed (row 2 stays small: the ordinary path, in the same call).
  it('backward keeps p exact at huge |logits/τ| (the f32 lse has lost log Σ)', () => {
    const cases = [
      { top: 1e8, rest: -1e8, temperature: 1 },
      { top: 30, rest: -30, temperature: 1e-5 },
      { top: 5000, rest: 4990, temperature: 1 },
    ];
    const ties = [1, 4, 5];
    for (const { top, rest, temperature } of cases) {
      for (const vocab of [7, 301, 5000]) {
        for (const dtype of [undefined, 'bf16'] as const) {
          const rows = 3, dim = 3;
          const weight = new Float32Array(vocab * dim);
          for (let v = 0; v < vocab; v++) weight[v * dim] = ties.includes(v) ? top : rest;
          const hidden = Float32Array.of(1, 0, 0, 1, 0.5, 0, 1e-7, 0, 0);
          const plain: Case = { hidden, weight, targets: Int32Array.of(4, 0, 6), rows, vocab, dim, temperature };
          const c = dtype ? rounded(plain, dtype).c : plain;
          const label = `top ${top}, τ ${temperature}, V ${vocab}, ${dtype ?? 'f32'}`;
          const x = inputs(c, dtype);
          const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature, entropy: true });
          const g = Float32Array.of(1, 1, 1), e = Float32Array.of(0.5, -1, 2);
          const grads = linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, onDevice(g), {
            temperature, gradEntropy: onDevice(e), entropy: f.entropy,
          });
          const ref = linearTokenLogprobsBackwardReference(c, g, e);
          const gradWeight = values(grads.gradWeight), gradHidden = values(grads.gradHidden);
          if (top - rest > 100) {
            // Row 0 alone feeds column 0 of a tie's gradient (row 1 adds the same, row 2 ~1e-7
            // of it): −g·p/τ per row at p = 1/3 (the entropy term vanishes at a tie).
            assertClose(gradWeight[1 * dim] * temperature, -2 / 3, { atol: 1e-5, rtol: 0 }, `p at a tie, ${label}`);
          }
          assertClose(gradWeight, ref.gradWeight, { atol: 1e-5 / temperature, rtol: 1e-4 }, `gradWeight ${label}`);
          const wmax = Math.max(Math.abs(top), Math.abs(rest));
          // ∂hidden sums V products of size ~wmax in f32: its error grows with √V · wmax.
          assertClose(gradHidden, ref.gradHidden, { atol: 1e-6 * wmax * Math.sqrt(vocab) / temperature, rtol: 1e-4 }, `gradHidden ${label}`);
        }
      }
    }
  });

  // Found by the fuzzer: an lse that is not the forward's made p = e^(x − lse) unbounded,
  // and the gradients came back ±Infinity (the fuzzer exempted this kernel from its check).
  it('backward refuses an lse below the log-sum-exp, or far from a large one, naming the row', () => {
    const r = rng('linearTokenLogprobs');
    const c = randomCase(r, 4, 50, 13);
    const x = inputs(c);
    const lse = Float32Array.from(values(linearTokenLogprobs(x.hidden, x.weight, x.targets).lse));
    const g = onDevice(new Float32Array(4).fill(1));
    const low = Float32Array.from(lse);
    low[2] -= 5;  // more than log V below: some p > 1
    throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, onDevice(low), g), RangeError, 'lse',
      /^lse: row 2 is below the log-sum-exp of hidden · weightᵀ \/ temperature/);
    // Logits ~1e5 wide: every |lse| ≥ 64, so each row's log-sum-exp is recomputed. A
    // difference of a few ulps (another implementation's rounding) is repaired; a stale
    // lse, 1% off either way, is refused.
    const wide = { ...c, weight: c.weight.map((w) => w * 1e5) };
    const y = inputs(wide);
    const exact = Float32Array.from(values(linearTokenLogprobs(y.hidden, y.weight, y.targets).lse));
    assert.ok(exact.every((l) => Math.abs(l) >= 64), `expected large lse, got ${Array.from(exact)}`);
    const nudged = exact.map((l, i) => Math.fround(l * (1 + (i % 2 ? 3e-7 : -3e-7))));
    const gn = r.normals(4);
    const grads = linearTokenLogprobsBackward(y.hidden, y.weight, y.targets, onDevice(nudged), onDevice(gn));
    const ref = linearTokenLogprobsBackwardReference(wide, gn);
    assertClose(values(grads.gradWeight), ref.gradWeight, { atol: 1e-4, rtol: 1e-4 }, 'gradWeight with a nudged lse');
    assert.ok(values(grads.gradHidden).every(Number.isFinite), 'gradHidden finite');
    for (const factor of [1.01, 0.99]) {
      const stale = Float32Array.from(exact);
      stale[1] *= factor;
      throwsNaming(() => linearTokenLogprobsBackward(y.hidden, y.weight, y.targets, onDevice(stale), g), RangeError, 'lse',
        /^lse: row 1 is .* but the log-sum-exp of hidden · weightᵀ \/ temperature is /);
    }
  });

  // The kernel's gradients against central differences of the float64 reference loss
  // L = Σ g·logp + e·H: checks the backward formula itself, not just agreement of two
  // implementations of it.
  for (const withEntropy of [false, true]) {
    it(`gradients agree with central finite differences of the reference loss (entropy term: ${withEntropy})`, () => {
      const r = rng('linearTokenLogprobs');
      const c = randomCase(r, 4, 23, 13, 0.7);
      const k = forwardBackward(r, c, withEntropy);
      const h = 1e-4;
      const probe = (which: 'hidden' | 'weight', index: number, kernel: number) => {
        const base = Float64Array.from(c[which]);
        const at = (delta: number) => {
          const moved = Float64Array.from(base);
          moved[index] += delta;
          return linearLossReference({ ...c, [which]: moved }, k.g, k.e);
        };
        const fd = (at(h) - at(-h)) / (2 * h);
        assertClose(kernel, fd, { atol: 5e-5, rtol: 1e-3 }, `∂L/∂${which}[${index}]`);
      };
      for (let i = 0; i < 6; i++) {
        const hi = r.int(0, c.rows * c.dim);
        probe('hidden', hi, k.gradHidden[hi]);
        const wi = r.int(0, c.vocab * c.dim);
        probe('weight', wi, k.gradWeight[wi]);
      }
      // The target rows of weight always carry gradient: probe one of them too.
      const wi = c.targets[0] * c.dim + r.int(0, c.dim);
      probe('weight', wi, k.gradWeight[wi]);
    });
  }

  for (const dtype of ['bf16', 'f16'] as const) {
    it(`${dtype} inputs: forward and backward match the reference on the rounded values`, () => {
      const r = rng('linearTokenLogprobs');
      const { c } = rounded(randomCase(r, 37, 1001, 21, 0.7), dtype);
      const ref = linearTokenLogprobsReference(c);
      const out = forward(c, true, dtype);
      assertClose(values(out.logprobs), ref.logprobs, { atol: 3e-5, rtol: 2e-5 }, 'logprobs');
      assertClose(values(out.entropy!), ref.entropy, { atol: 3e-5, rtol: 2e-5 }, 'entropy');
      const k = forwardBackward(r, c, true, dtype);
      const g = linearTokenLogprobsBackwardReference(c, k.g, k.e);
      assertClose(k.gradHidden, g.gradHidden, { atol: 3e-5, rtol: 1e-4 }, 'gradHidden');
      assertClose(k.gradWeight, g.gradWeight, { atol: 3e-5, rtol: 1e-4 }, 'gradWeight');
    });
  }

  it('a row\'s forward does not depend on the other rows: 1..17 rows give the bits they have inside 40', () => {
    // Decoding's few rows read the weight in place with the rows in vector lanes; a full
    // panel goes through the register tile. The sampler's log-probs equal
    // sequenceLogprobs' only if both give a row the same bits. d = 300 > one K block.
    const r = rng('linearTokenLogprobs rows');
    for (const temperature of [1, 0.7]) {
      const c = randomCase(r, 40, 1201, 300, temperature);
      const all = forward(c, true);
      const want = [all.logprobs, all.entropy!, all.lse].map((t) => values(t) as Float32Array);
      for (const m of [1, 3, 8, 9, 16, 17]) {
        const sub = { ...c, rows: m, hidden: c.hidden.subarray(0, m * c.dim), targets: c.targets.subarray(0, m) };
        const f = forward(sub, true);
        const got = [f.logprobs, f.entropy!, f.lse].map((t) => values(t) as Float32Array);
        for (let o = 0; o < 3; o++)
          for (let i = 0; i < m; i++)
            if (!Object.is(got[o][i], want[o][i])) assert.fail(`τ=${temperature} rows=${m}: output ${o} row ${i} = ${got[o][i]}, ${want[o][i]} among 40 rows`);
      }
    }
  });

  // The forward's kept logits stand in for the backward's recomputed ones: the same bits
  // wherever the tiling is awkward (one tile, few rows, a ragged last row chunk and
  // vocabulary tile, d past one K block), for bf16, τ ≠ 1, entropy, and rows whose large
  // |lse| the backward rechecks. On CUDA the forward keeps none and the backward recomputes.
  it('backward from the forward\'s saved logits gives the recomputing backward\'s bits', () => {
    const r = rng('linearTokenLogprobs saved');
    const shapes: [number, number, number][] = [[1, 1, 1], [3, 7, 13], [13, 97, 70], [17, 193, 8], [300, 401, 19], [40, 1201, 300], [530, 500, 33]];
    let compared = 0;
    for (const [rows, vocab, dim] of shapes) {
      for (const [temperature, dtype, entropy, scale] of [[1, undefined, false, 2], [0.7, 'bf16', true, 2], [0.5, undefined, true, 400]] as const) {
        const label = `N=${rows} V=${vocab} d=${dim} τ=${temperature} ${dtype ?? 'f32'}${entropy ? ' entropy' : ''} scale ${scale}`;
        const plain = randomCase(r, rows, vocab, dim, temperature, scale);
        const c = dtype ? rounded(plain, dtype).c : plain;
        const x = inputs(c, dtype);
        const opts = { temperature, entropy, dtype };
        const kept = linearTokenLogprobs(x.hidden, x.weight, x.targets, { ...opts, saveLogits: true });
        const plainOut = linearTokenLogprobs(x.hidden, x.weight, x.targets, opts);
        for (const key of (entropy ? ['logprobs', 'lse', 'entropy'] : ['logprobs', 'lse']) as ('logprobs' | 'lse' | 'entropy')[])
          assert.ok(bits(values(kept[key]!)).equals(bits(values(plainOut[key]!))), `${key} changed by saveLogits: ${label}`);
        if (ON_GPU) {
          assert.equal(kept.saved, undefined, 'the CUDA forward keeps no logits');
          continue;
        }
        assert.ok(kept.saved instanceof SavedLogits, `saved: ${label}`);
        assert.ok(kept.saved.bytes >= 4 * rows * vocab, `saved.bytes ${kept.saved.bytes} < 4·N·V: ${label}`);
        const g = onDevice(r.normals(rows)), e = onDevice(r.normals(rows));
        const back = (saved?: SavedLogits) => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, kept.lse, g, {
          temperature, dtype, saved, ...(entropy ? { gradEntropy: e, entropy: kept.entropy } : {}),
        });
        const want = back(), got = back(kept.saved);
        assert.ok(bits(values(got.gradHidden)).equals(bits(values(want.gradHidden))), `gradHidden: ${label}`);
        assert.ok(bits(values(got.gradWeight)).equals(bits(values(want.gradWeight))), `gradWeight: ${label}`);
        // And the backward did read them: logits lowered by 1 move every gradient with a target.
        const logits = kept.saved.tensor().data as Float32Array;
        for (let i = 0; i < logits.length; i++) logits[i] -= 1;
        const moved = values(back(kept.saved).gradWeight), before = values(want.gradWeight);
        assert.ok(moved.some((v, i) => v !== before[i]), `the saved logits were not read: ${label}`);
        kept.saved.dispose();
        assert.equal(kept.saved.bytes, 0);
        compared++;
      }
    }
    if (!ON_GPU) assert.equal(compared, shapes.length * 3);
  });

  it('backward refuses saved logits kept for other inputs or disposed, naming saved', { skip: ON_GPU ? 'the CPU twin keeps logits' : false }, () => {
    const r = rng('linearTokenLogprobs saved');
    const c = randomCase(r, 20, 300, 16, 0.9);
    const x = inputs(c), y = inputs(c);
    const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature: 0.9, saveLogits: true });
    const g = onDevice(r.normals(c.rows));
    const back = (o: ReturnType<typeof inputs>, options: object) => linearTokenLogprobsBackward(o.hidden, o.weight, o.targets, f.lse, g, options);
    throwsNaming(() => back(y, { temperature: 0.9, saved: f.saved }), TypeError, 'saved', /another hidden/);
    throwsNaming(() => back({ ...x, weight: y.weight }, { temperature: 0.9, saved: f.saved }), TypeError, 'saved', /another weight/);
    throwsNaming(() => back(x, { temperature: 1, saved: f.saved }), RangeError, 'saved', /temperature 0\.9/);
    throwsNaming(() => back(x, { temperature: 0.9, saved: {} }), TypeError, 'saved', /saveLogits/);
    // The native boundary checks the size on its own.
    throwsNaming(() => addon().linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, g, { temperature: 0.9, savedLogits: Tensor.from(new Float32Array(5)) }), RangeError, 'savedLogits');
    f.saved!.dispose();
    throwsNaming(() => back(x, { temperature: 0.9, saved: f.saved }), TypeError, 'saved', /disposed/);
    // No rows: nothing to keep.
    const none = inputs(randomCase(r, 0, 30, 4));
    assert.equal(linearTokenLogprobs(none.hidden, none.weight, none.targets, { saveLogits: true }).saved, undefined);
  });

  it('gives the same bits on every run', () => {
    const r = rng('linearTokenLogprobs');
    const c = randomCase(r, 300, 3203, 37, 0.7);
    const g = onDevice(r.normals(c.rows)), e = onDevice(r.normals(c.rows));
    const x = inputs(c);
    const run = () => {
      const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature: 0.7, entropy: true });
      const b = linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, g, { temperature: 0.7, gradEntropy: e, entropy: f.entropy });
      return [f.logprobs, f.entropy!, f.lse, b.gradHidden, b.gradWeight].map((t) => bits(values(t)));
    };
    const first = run(), second = run();
    for (let i = 0; i < first.length; i++) assert.ok(first[i].equals(second[i]), `output ${i} differs between runs`);
  });

  it('rejects non-finite hidden or weight, naming the argument', () => {
    const c = randomCase(rng('linearTokenLogprobs'), 3, 50, 13);
    for (const [which, bad] of [['hidden', NaN], ['weight', Infinity], ['weight', NaN], ['hidden', -Infinity]] as const) {
      const broken = { ...c, [which]: Float32Array.from(c[which]) };
      broken[which][1 * c.dim + 2] = bad;
      const x = inputs(broken);
      throwsNaming(() => linearTokenLogprobs(x.hidden, x.weight, x.targets), RangeError, which);
      const lse = onDevice(new Float32Array(c.rows)), g = onDevice(new Float32Array(c.rows));
      throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, lse, g), RangeError, which);
    }
    const bf = inputs(c, 'bf16');
    const weightBits = fromFloat32Array(c.weight, 'bf16');
    weightBits[2 * c.dim + 5] = 0x7fc0;  // bf16 NaN
    throwsNaming(() => linearTokenLogprobs(bf.hidden, onDevice(weightBits, [c.vocab, c.dim], 'bf16'), bf.targets), RangeError, 'weight');
  });

  it('rejects targets outside [0, V), naming targets', () => {
    const c = randomCase(rng('linearTokenLogprobs'), 4, 7, 5);
    for (const bad of [7, -1]) {
      const x = inputs({ ...c, targets: Int32Array.from([0, bad, 3, 6]) });
      throwsNaming(() => linearTokenLogprobs(x.hidden, x.weight, x.targets), RangeError, 'targets');
      const z = onDevice(new Float32Array(4));
      throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, z, z), RangeError, 'targets');
    }
  });

  it('rejects mismatched shapes and dtypes and a missing entropy, naming the argument', () => {
    const c = randomCase(rng('linearTokenLogprobs'), 4, 7, 13);
    const x = inputs(c);
    const narrow = onDevice(c.weight.subarray(0, 7 * 12), [7, 12]);
    throwsNaming(() => linearTokenLogprobs(x.hidden, narrow, x.targets), RangeError, 'weight', /\[\?, 13\].*\[7, 12\]/);
    const half = onDevice(fromFloat32Array(c.weight, 'bf16'), [7, 13], 'bf16');
    throwsNaming(() => linearTokenLogprobs(x.hidden, half, x.targets), TypeError, 'weight', /bf16.*f32/);
    throwsNaming(() => linearTokenLogprobs(x.hidden, x.weight, onDevice(new Int32Array(3))), RangeError, 'hidden');
    throwsNaming(() => linearTokenLogprobs(x.hidden, x.weight, x.targets, { temperature: 0 }), RangeError, 'temperature');
    const f = linearTokenLogprobs(x.hidden, x.weight, x.targets, { entropy: true });
    const g = onDevice(new Float32Array(4));
    throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, g, { gradEntropy: g }), TypeError, 'entropy');
    throwsNaming(() => linearTokenLogprobsBackward(x.hidden, x.weight, x.targets, f.lse, onDevice(new Float32Array(3))), RangeError, 'gradLogprobs');
  });

  if (!ON_GPU) {
    it('forward gives the same bits for any thread count; backward matches the reference on 1 and 3 threads', () => {
      const r = rng('linearTokenLogprobs');
      const c = randomCase(r, 270, 3203, 21, 0.7);
      const g = r.normals(c.rows), e = r.normals(c.rows);
      const here = forward(c, true);
      const ref = linearTokenLogprobsBackwardReference(c, g, e);
      for (const threads of [1, 3]) {
        const other = inChildProcess(threads, c, g, e);
        for (const key of ['logprobs', 'entropy', 'lse'] as const)
          assert.ok(bits(values(here[key]!)).equals(bits(other[key])), `${key} differs between ${buildInfo().threads} threads and ${threads}`);
        assertClose(other.gradHidden, ref.gradHidden, { atol: 3e-5, rtol: 1e-4 }, `gradHidden (${threads} threads)`);
        assertClose(other.gradWeight, ref.gradWeight, { atol: 3e-5, rtol: 1e-4 }, `gradWeight (${threads} threads)`);
      }
    });

    it('backward over one vocabulary tile (V <= 192) gives the same bits on 1, 2 and 3 threads', () => {
      // Its row chunks (256 rows) run on different threads, then gradWeight is split by
      // columns: 700 rows are three chunks, the last one short, and 40 columns end in a
      // part-width tile.
      const r = rng('linearTokenLogprobs one tile');
      const c = randomCase(r, 700, 100, 40, 0.8);
      const g = r.normals(c.rows), e = r.normals(c.rows);
      const ref = linearTokenLogprobsBackwardReference(c, g, e);
      const one = inChildProcess(1, c, g, e);
      assertClose(one.gradHidden, ref.gradHidden, { atol: 3e-5, rtol: 1e-4 }, 'gradHidden (1 thread)');
      assertClose(one.gradWeight, ref.gradWeight, { atol: 3e-5, rtol: 1e-4 }, 'gradWeight (1 thread)');
      for (const threads of [2, 3]) {
        const other = inChildProcess(threads, c, g, e);
        for (const key of ['gradHidden', 'gradWeight'] as const)
          assert.ok(bits(one[key]).equals(bits(other[key])), `${key} differs between 1 thread and ${threads}`);
      }
    });

    it('returns TypedArrays for TypedArray inputs, reading bf16 bits with {dtype}', () => {
      const r = rng('linearTokenLogprobs');
      const { c, hiddenBits, weightBits } = rounded(randomCase(r, 3, 7, 13), 'bf16');
      const out = linearTokenLogprobs(hiddenBits, weightBits, c.targets, { dtype: 'bf16', entropy: true });
      assert.ok(out.logprobs instanceof Float32Array && out.lse instanceof Float32Array);
      assertClose(out.logprobs, linearTokenLogprobsReference(c).logprobs, { atol: 3e-5, rtol: 2e-5 }, 'logprobs');
      const grads = linearTokenLogprobsBackward(hiddenBits, weightBits, c.targets, out.lse, new Float32Array(3).fill(1), { dtype: 'bf16' });
      assert.ok(grads.gradHidden instanceof Float32Array && grads.gradHidden.length === 3 * 13);
      assert.ok(grads.gradWeight instanceof Float32Array && grads.gradWeight.length === 7 * 13);
      const wrapped = linearTokenLogprobs(Tensor.from(c.hidden, [3, 13]), c.weight, c.targets);
      assert.ok(wrapped.logprobs instanceof Tensor);
      throwsNaming(() => linearTokenLogprobs(hiddenBits, weightBits, c.targets), TypeError, 'hidden', /Uint16Array needs/);
    });

    it('reports the first non-finite element and checks small inputs in TypeScript', () => {
      const c = randomCase(rng('linearTokenLogprobs'), 3, 50, 13);
      const hidden = Float32Array.from(c.hidden);
      hidden[1 * 13 + 2] = NaN;
      throwsNaming(() => linearTokenLogprobs(hidden, c.weight, c.targets), RangeError, 'hidden', /element \[1, 2\] is NaN/);
      const lse = new Float32Array(3);
      lse[2] = Infinity;
      throwsNaming(() => linearTokenLogprobsBackward(c.hidden, c.weight, c.targets, lse, new Float32Array(3)), RangeError, 'lse');
    });

    it('the raw addon rejects bad arguments without crashing', () => {
      const c = randomCase(rng('linearTokenLogprobs'), 4, 7, 13);
      const h = Tensor.from(c.hidden, [4, 13]), y = Tensor.from(c.targets);
      const native = addon();
      throwsNaming(() => native.linearTokenLogprobs(h, Tensor.from(c.weight.subarray(0, 7 * 12), [7, 12]), y), RangeError, 'weight');
      throwsNaming(() => native.linearTokenLogprobs(h, Tensor.from(fromFloat32Array(c.weight, 'f16'), [7, 13], 'f16'), y), TypeError, 'weight');
      throwsNaming(() => native.linearTokenLogprobs(h, Tensor.from(c.weight, [7, 13]), Tensor.from(Int32Array.from([0, 1, 2, 99]))), RangeError, 'targets');
      throwsNaming(() => native.linearTokenLogprobsBackward(h, Tensor.from(c.weight, [7, 13]), y, Tensor.from(new Float32Array(4)),
        Tensor.from(new Float32Array(4)), { gradEntropy: Tensor.from(new Float32Array(4)) }), TypeError, 'entropy');
    });
  }
});
