import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tensor } from '../../src/index.js';
import { sampleRows, type SampleOptions } from '../../src/ops/sample.js';
import { ON_GPU, TEST_DEVICE, assertClose, rng, type Rng } from '../helpers.js';

/** log softmax(x / τ) over the kept tokens, in float64. */
function logSoftmaxAt(row: ArrayLike<number>, keep: number[], tau: number, at: number): number {
  const xs = keep.map((i) => row[i] / tau);
  const m = Math.max(...xs);
  const lse = m + Math.log(xs.reduce((a, x) => a + Math.exp(x - m), 0));
  return row[at] / tau - lse;
}

/** The sampler's counter-based uniform in [0, 1): SplitMix64's finaliser over (seed, row key, step). */
function counterUniform(seed: number, key: number, counter: number): number {
  const M = (1n << 64n) - 1n;
  const mix = (x: bigint) => {
    x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M;
    return x ^ (x >> 31n);
  };
  let h = mix((BigInt(seed) + 0x9e3779b97f4a7c15n) & M);
  h = mix(h ^ ((BigInt(key) * 0xd1b54a32d192ed03n + 0x8cb92ba72f3d8dd7n) & M));
  h = mix(h ^ ((BigInt(counter) * 0xaef17502108ef2d9n + 0x2545f4914f6cdd1dn) & M));
  return Number(h >> 11n) * 2 ** -53;
}

/** Indices by decreasing logit, ties by lower index (the sampler's order). */
const byLogit = (row: ArrayLike<number>) => Array.from(row, (_, i) => i).sort((a, b) => row[b] - row[a] || a - b);

function logits(r: Rng, rows: number, vocab: number, scale: number): Tensor {
  return Tensor.from(r.normals(rows * vocab, scale), [rows, vocab]);
}

describe('sampleRows (the engine sampler, CPU twin)', () => {
  it('greedy: lowest index among the largest logits, log-prob under softmax(logits)', () => {
    const x = Float32Array.of(0.5, 2, -1, 2, 1.5, 0, 0, 0.25);
    const { tokens, logprobs } = sampleRows(Tensor.from(x, [2, 4]), { temperature: 0 });
    assert.deepEqual(Array.from(tokens), [1, 0]);
    assertClose(logprobs, [logSoftmaxAt(x.subarray(0, 4), [0, 1, 2, 3], 1, 1), logSoftmaxAt(x.subarray(4), [0, 1, 2, 3], 1, 0)], { atol: 1e-6 }, 'logprobs');
  });

  it('top-k draws stay in the k best, log-probs are those of the renormalised distribution, a seed repeats', () => {
    const r = rng('sample cpu');
    const rows = 24, V = 50, k = 4, tau = 0.8;
    const t = logits(r, rows, V, 2);
    const opts: SampleOptions = { temperature: tau, topK: k, seed: 11, step: 3 };
    const a = sampleRows(t, opts), b = sampleRows(t, opts);
    assert.deepEqual(a.tokens, b.tokens);
    const x = t.data as Float32Array;
    for (let i = 0; i < rows; i++) {
      const row = x.subarray(i * V, (i + 1) * V), top = byLogit(row).slice(0, k);
      assert.ok(top.includes(a.tokens[i]), `row ${i}: token ${a.tokens[i]} not in the top ${k}`);
      assertClose(a.logprobs[i], logSoftmaxAt(row, top, tau, a.tokens[i]), { atol: 1e-5 }, `logprob ${i}`);
    }
    assert.ok(new Set(a.tokens).size > 1, 'draws vary across rows');
    assert.notDeepEqual(sampleRows(t, { ...opts, seed: 12 }).tokens, a.tokens);
  });

  it('full distribution: the inverse CDF of softmax(x / τ) at the counter uniform, in index order, over awkward V', () => {
    // Independent float64 reference: e_i = exp((x_i − max)/τ), the first i whose running sum
    // passes u·Σe (u from the counter generator, rewritten here). The sampler sums float32
    // weights block by block, so a draw may differ only where u·Σe lies within rounding of a
    // CDF step; any other difference is a wrong token.
    const r = rng('sample full distribution');
    const cases = [
      { V: 151936, rows: 4, scale: 3, tau: 1 }, // the Qwen vocabulary: 2374 whole blocks of 64
      { V: 4133, rows: 24, scale: 2, tau: 0.7 }, // whole blocks and a tail of 37
      { V: 64 * 9, rows: 24, scale: 1, tau: 1.5 }, // whole blocks only
      { V: 61, rows: 24, scale: 2, tau: 1 }, // less than one block
      { V: 3001, rows: 24, scale: 40, tau: 1 }, // most weights underflow to 0
    ];
    for (const c of cases) {
      const t = logits(r, c.rows, c.V, c.scale);
      const seed = r.int(0, 1e9), step = r.int(0, 1000);
      const rowKeys = Array.from({ length: c.rows }, () => r.int(0, 1e6));
      const got = sampleRows(t, { temperature: c.tau, seed, step, rowKeys });
      const x = t.data as Float32Array;
      for (let i = 0; i < c.rows; i++) {
        const row = x.subarray(i * c.V, (i + 1) * c.V);
        const m = row.reduce((a, v) => Math.max(a, v), -Infinity);
        const e = Array.from(row, (v) => Math.exp((v - m) / c.tau));
        const z = e.reduce((a, v) => a + v, 0);
        const target = counterUniform(seed, rowKeys[i], step) * z;
        let cum = 0, want = -1, stepEdge = Infinity;
        for (let j = 0; j < c.V; j++) {
          if (e[j] <= 0) continue;
          cum += e[j];
          if (cum > target) { want = j; stepEdge = Math.min(cum - target, target - (cum - e[j])); break; }
        }
        const at = `V ${c.V}, row ${i}`;
        if (got.tokens[i] !== want)
          assert.ok(stepEdge < 1e-6 * z, `${at}: token ${got.tokens[i]}, the reference draws ${want} (u·Z ${stepEdge / z} of Z from a CDF step)`);
        // log softmax(x/τ) at the token: (x_t − max)/τ − log Σe
        assertClose(got.logprobs[i], (row[got.tokens[i]] - m) / c.tau - Math.log(z), { atol: 2e-5 }, `${at}: logprob`);
      }
    }
  });

  it('rejects non-finite logits naming the row, and bad options naming the option', () => {
    const x = new Float32Array(3 * 5);
    x[2 * 5 + 1] = NaN;
    assert.throws(() => sampleRows(Tensor.from(x, [3, 5])), /generate: the logits of row 2 are not finite/);
    const ok = Tensor.from(new Float32Array(10), [2, 5]);
    assert.throws(() => sampleRows(ok, { topP: 0 }), /topP: expected > 0/);
    assert.throws(() => sampleRows(ok, { topK: 1.5 }), /topK: expected an integer/);
    assert.throws(() => sampleRows(ok, { temperature: -1 }), /temperature: expected >= 0/);
    assert.throws(() => sampleRows(ok, { rowKeys: [1] }), /rowKeys: expected one key per row \(2\)/);
  });
});

// The CUDA twin against the CPU twin on the same logits, seeds, row keys and steps:
// tokens equal (random normal logits have no ties), log-probs within 1e-5 (the twins'
// exp differ in the last bits and sum in other orders).
if (ON_GPU) {
  describe(`sampleRows on ${TEST_DEVICE} (CUDA twin vs the CPU twin)`, () => {
    const configs: { name: string; rows: number; V: number; scale: number; opts: SampleOptions }[] = [
      { name: 'greedy', rows: 6, V: 300, scale: 2, opts: { temperature: 0 } },
      { name: 'full distribution', rows: 24, V: 300, scale: 2, opts: { temperature: 1 } },
      { name: 'top-k', rows: 24, V: 300, scale: 2, opts: { temperature: 0.7, topK: 7 } },
      { name: 'top-k + top-p', rows: 24, V: 300, scale: 2, opts: { temperature: 1.3, topK: 40, topP: 0.6 } },
      { name: 'top-p', rows: 24, V: 700, scale: 2, opts: { temperature: 1, topP: 0.9 } },
      { name: 'top-p, low', rows: 24, V: 700, scale: 1, opts: { temperature: 0.5, topP: 0.3 } },
      // Past the shared-memory sort: the cuts found by bisection on the order key.
      { name: 'top-k of 4200', rows: 3, V: 4500, scale: 1, opts: { temperature: 1, topK: 4200, topP: 0.95 } },
      { name: 'top-p with a crowded boundary bin', rows: 3, V: 4500, scale: 0.002, opts: { temperature: 1, topP: 0.6 } },
    ];
    for (const c of configs)
      it(`${c.name}: the CPU twin's draws`, () => {
        const r = rng(`sample ${c.name}`);
        const t = logits(r, c.rows, c.V, c.scale);
        const rowKeys = Array.from({ length: c.rows }, () => r.int(0, 1e6));
        const seen = new Set<number>();
        for (const step of [0, 5]) {
          const opts = { ...c.opts, seed: 1234, rowKeys, step };
          const cpu = sampleRows(t, opts);
          const gpu = sampleRows(t.to(TEST_DEVICE), opts);
          assert.deepEqual(gpu.tokens, cpu.tokens, `tokens, step ${step}`);
          assertClose(gpu.logprobs, cpu.logprobs, { atol: 1e-5, rtol: 1e-6 }, `logprobs, step ${step}`);
          for (const tok of gpu.tokens) seen.add(tok);
        }
        if (c.opts.temperature !== 0) assert.ok(seen.size > 1, 'draws vary, so agreement means something');
      });

    it('rejects non-finite logits naming the row', () => {
      const x = new Float32Array(4 * 9);
      x[3 * 9 + 8] = Infinity;
      x[1 * 9] = NaN;
      assert.throws(() => sampleRows(Tensor.from(x, [4, 9]).to(TEST_DEVICE), { temperature: 0 }), /generate: the logits of row 1 are not finite/);
      assert.throws(() => sampleRows(Tensor.from(x.subarray(18), [2, 9]).to(TEST_DEVICE), { topK: 3 }), /the logits of row 1 are not finite/);
    });
  });
}
