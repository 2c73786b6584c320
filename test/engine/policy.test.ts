// Policy engine: the native forward against the float64 reference model on tiny random
// configs (tied/untied, biases on/off, GQA and MHA, head_dim decoupled from hidden_size)
// with ragged batches; gradients of Σ c·logp (through linearTokenLogprobs) against
// central finite differences of the float64 reference for samples of every tensor;
// KV-cache generation against full forwards; seeds; stop ids; checkpoints; memory.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Policy, Tensor, buildInfo, setNumThreads, linearTokenLogprobs, linearTokenLogprobsBackward } from '../../src/index.js';
import { parseConfig, configToJson, parameterShapes, type ModelConfig } from '../../src/engine/config.js';
import { saveSafetensorsDir, SINGLE_FILE } from '../../src/engine/safetensors.js';
import { bf16ToF32, fromFloat32Array, toFloat32Array } from '../../src/dtype.js';
import { addon } from '../../src/native.js';
import { referenceHidden, referenceLogSoftmax, referenceLoss, type LossRow, type Params } from '../reference/model.js';
import { assertClose, rng, type Rng } from '../helpers.js';
import { CONFIGS, makePolicy } from './tiny_configs.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-policy-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let dirCounter = 0;
const freshDir = (label: string) => join(dir, `${label}-${++dirCounter}`);

function float64Params(policy: Policy): Map<string, Float64Array> {
  return new Map([...policy.parameters()].map(([name, view]) => [name, Float64Array.from(view)]));
}

function randomRows(r: Rng, lengths: number[], vocab: number): number[][] {
  return lengths.map((n) => Array.from({ length: n }, () => r.int(0, vocab)));
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Float64 logits of one hidden row under the policy's own (f32) LM head. */
function logitsOf(policy: Policy, hidden: Float32Array, row: number): Float64Array {
  const D = policy.config.hiddenSize, V = policy.config.vocabSize;
  const W = policy.lmHeadWeight.data as Float32Array;
  const out = new Float64Array(V);
  for (let v = 0; v < V; v++) {
    let s = 0;
    for (let i = 0; i < D; i++) s += W[v * D + i] * hidden[row * D + i];
    out[v] = s;
  }
  return out;
}

/** Native Σ c·logp and its gradients (zeroed first) for rows with per-position targets and weights. */
function nativeLossAndGrads(policy: Policy, rows: LossRow[]): number {
  const { hidden, seq: T } = policy.forward({ ids: rows.map((r) => [...r.ids]) });
  const B = rows.length;
  const targets = new Int32Array(B * T), coeffs = new Float32Array(B * T);
  rows.forEach((row, b) => row.ids.forEach((_, t) => {
    targets[b * T + t] = row.targets[t];
    coeffs[b * T + t] = row.coeffs[t];
  }));
  const W = policy.lmHeadWeight;
  const { logprobs, lse } = linearTokenLogprobs(hidden, W, targets);
  const g = linearTokenLogprobsBackward(hidden, W, targets, lse, coeffs);
  policy.zeroGrad();
  policy.backward(g.gradHidden, { gradLmHead: g.gradWeight });
  const lp = (logprobs as Tensor).data as Float32Array;
  let loss = 0;
  for (let i = 0; i < lp.length; i++) loss += coeffs[i] * lp[i];
  return loss;
}

describe('Policy engine (CPU)', () => {
  it('forward matches the float64 reference model on ragged batches', () => {
    const r = rng('policy forward');
    for (const [label, config] of Object.entries(CONFIGS)) {
      const policy = makePolicy(config, r);
      const rows = randomRows(r, [7, 3, 0, 1, 5], config.vocabSize);
      const { hidden, batch, seq, lengths } = policy.forward({ ids: rows });
      assert.equal(batch, 5);
      assert.equal(seq, 7);
      assert.deepEqual([...lengths], [7, 3, 0, 1, 5]);
      assert.deepEqual(hidden.shape, [35, config.hiddenSize]);
      const h = hidden.data as Float32Array, D = config.hiddenSize;
      const params = float64Params(policy);
      rows.forEach((row, b) => {
        const ref = referenceHidden(config, params, row);
        for (let t = 0; t < seq; t++) {
          const got = h.subarray((b * seq + t) * D, (b * seq + t + 1) * D);
          if (t < row.length) assertClose(got, ref[t], { atol: 2e-5, rtol: 1e-4 }, `${label} hidden[${b}, ${t}]`);
          else assert.ok(got.every((v) => v === 0), `${label} hidden[${b}, ${t}] (padding) must be 0`);
        }
      });
      // The same batch as a flat Int32Array (with junk in the padding) and as a Tensor.
      const flat = new Int32Array(5 * 7).fill(-7);
      rows.forEach((row, b) => flat.set(row, b * 7));
      const again = Float32Array.from(policy.forward({ ids: flat, lengths: [7, 3, 0, 1, 5] }).hidden.data as Float32Array);
      assert.ok(bitsEqual(again, h), `${label}: Int32Array batch differs`);
      const viaTensor = policy.forward({ ids: Tensor.from(flat, [5, 7]), lengths: Int32Array.from([7, 3, 0, 1, 5]) });
      assert.ok(bitsEqual(viaTensor.hidden.data as Float32Array, again), `${label}: Tensor batch differs`);
      policy.dispose();
    }
  });

  it('random init: seeded, N(0, initializer_range²) weights, unit norms, zero biases, zero pad row', () => {
    const config = parseConfig({ ...configToJson(CONFIGS.qwenTied), vocab_size: 300, pad_token_id: 5, initializer_range: 0.05 });
    const a = Policy.random(config, { seed: 7 }), b = Policy.random(config, { seed: 7 }), c = Policy.random(config, { seed: 8 });
    assert.ok(bitsEqual(a.parameterBuffer.data as Float32Array, b.parameterBuffer.data as Float32Array));
    assert.ok(!bitsEqual(a.parameterBuffer.data as Float32Array, c.parameterBuffer.data as Float32Array));
    let sum = 0, squares = 0, count = 0;
    for (const [name, view] of a.parameters()) {
      if (name.endsWith('norm.weight')) assert.ok(view.every((v) => v === 1), name);
      else if (name.endsWith('.bias')) assert.ok(view.every((v) => v === 0), name);
      else for (const v of view) { sum += v; squares += v * v; count++; }
    }
    const embed = a.parameters().get('model.embed_tokens.weight')!;
    assert.ok(embed.subarray(5 * 24, 6 * 24).every((v) => v === 0), 'pad row');
    assert.ok(Math.abs(sum / count) < 0.002, `mean ${sum / count}`);
    assertClose(Math.sqrt(squares / count), 0.05, { atol: 0, rtol: 0.02 }, 'init std');
    assert.equal(a.numParameters, a.layout.reduce((n, p) => n + p.numel, 0));
    for (const p of [a, b, c]) p.dispose();
  });

  it('gradients of Σ c·logp match central finite differences of the float64 reference for every tensor', () => {
    const r = rng('policy gradients');
    for (const [label, config] of Object.entries(CONFIGS)) {
      const policy = makePolicy(config, r);
      const V = config.vocabSize;
      const lossRows: LossRow[] = [6, 1, 4].map((n) => ({
        ids: Array.from({ length: n }, () => r.int(0, V)),
        targets: Array.from({ length: n }, () => r.int(0, V)),
        coeffs: Array.from({ length: n }, () => r.normal()),
      }));
      const loss = nativeLossAndGrads(policy, lossRows);
      const params = float64Params(policy);
      assertClose(loss, referenceLoss(config, params, lossRows), { atol: 1e-4, rtol: 1e-4 }, `${label} loss`);

      const usedIds = [...new Set(lossRows.flatMap((row) => row.ids))];
      const grads = policy.gradients();
      const h = 1e-5;
      for (const { name, numel } of policy.layout) {
        const p = params.get(name)!, g = grads.get(name)!;
        // Embedding rows of absent tokens get no gradient unless the head is tied: sample
        // rows that matter, so the check cannot pass on zeros alone.
        const pick = (): number => name === 'model.embed_tokens.weight' && !config.tieWordEmbeddings
          ? usedIds[r.int(0, usedIds.length)] * config.hiddenSize + r.int(0, config.hiddenSize)
          : r.int(0, numel);
        for (let s = 0; s < 3; s++) {
          const i = pick();
          const keep = p[i];
          p[i] = keep + h;
          const up = referenceLoss(config, params as Params, lossRows);
          p[i] = keep - h;
          const down = referenceLoss(config, params as Params, lossRows);
          p[i] = keep;
          assertClose(g[i], (up - down) / (2 * h), { atol: 2e-5, rtol: 2e-4 }, `${label} ∂L/∂${name}[${i}]`);
        }
      }
      policy.dispose();
    }
  });

  it('padding changes no bit: hidden states and gradients equal those of the rows filled out with tokens nothing reads', () => {
    // The engine computes only on real tokens (packed); this is the same batch with every
    // row at full length and the extra tokens' gradients 0 — no padding, so nothing packed.
    // B·T spans two of the GEMM's K blocks (256 rows), lengths include 0, 1 and full.
    const r = rng('policy padding');
    for (const label of ['llamaBias', 'qwenTied'] as const) {
      const config = CONFIGS[label];
      const D = config.hiddenSize;
      const B = 13, T = 37;
      const lengths = Int32Array.from({ length: B }, (_, b) => (b === 0 ? 0 : b === 1 ? 1 : b === 2 ? T : r.int(2, T + 1)));
      const ids = Int32Array.from({ length: B * T }, () => r.int(0, config.vocabSize));
      const gradHidden = r.normals(B * T * D);
      for (let b = 0; b < B; b++) gradHidden.fill(0, (b * T + lengths[b]) * D, (b + 1) * T * D);
      for (const recompute of [false, true]) {
        const policy = makePolicy(config, rng(`policy padding ${label}`), { recompute });
        const run = (rowLengths: Int32Array) => {
          const hidden = Float32Array.from(policy.forward({ ids, lengths: rowLengths }).hidden.data as Float32Array);
          policy.zeroGrad();
          policy.backward(gradHidden);
          return { hidden, grads: Float32Array.from(policy.gradientBuffer.data as Float32Array) };
        };
        const padded = run(lengths);
        const full = run(new Int32Array(B).fill(T));
        for (let b = 0; b < B; b++)
          for (let i = b * T * D; i < (b * T + lengths[b]) * D; i++)
            assert.ok(padded.hidden[i] === full.hidden[i], `${label}: hidden row ${b} element ${i % (T * D)}: ${padded.hidden[i]} vs ${full.hidden[i]}`);
        assert.ok(padded.grads.some((g) => g !== 0));
        const at = padded.grads.findIndex((g, i) => !(g === full.grads[i]));
        assert.equal(at, -1, `${label} (recompute ${recompute}): gradient ${at} is ${padded.grads[at]} padded, ${full.grads[at]} filled out`);
        policy.dispose();
      }
    }
  });

  it('rows that begin alike compute their common prefix once: hidden states and gradients keep their bits', () => {
    // With recomputation the engine never shares prefixes, so it is the reference here.
    const r = rng('policy shared prefixes');
    for (const label of ['llamaBias', 'qwenTied'] as const) {
      const config = CONFIGS[label];
      const V = config.vocabSize;
      const prompt = randomRows(r, [9], V)[0];
      const groups: Array<{ label: string; rows: number[][] }> = [
        {
          label: 'a group of completions of one prompt, a duplicate, a shorter common prefix, an unrelated row',
          rows: [
            ...randomRows(r, [4, 0, 6, 1, 5], V).map((c) => [...prompt, ...c]),
            [...prompt, 7, 7],
            [...prompt, 7, 7],
            [...prompt.slice(0, 4), ...randomRows(r, [3], V)[0]],
            randomRows(r, [8], V)[0],
          ],
        },
        { label: 'identical rows without padding', rows: [prompt, prompt, prompt] },
      ];
      const policy = makePolicy(config, r);
      for (const { label: what, rows } of groups) {
        const D = config.hiddenSize;
        const T = Math.max(...rows.map((x) => x.length));
        const gradHidden = r.normals(rows.length * T * D);
        const run = (recompute: boolean) => {
          policy.recompute = recompute;
          const hidden = Float32Array.from(policy.forward({ ids: rows }).hidden.data as Float32Array);
          policy.zeroGrad();
          policy.backward(gradHidden);
          return { hidden, grads: Float32Array.from(policy.gradientBuffer.data as Float32Array) };
        };
        const shared = run(false), alone = run(true);
        const h = shared.hidden.findIndex((x, i) => !(x === alone.hidden[i]));
        assert.equal(h, -1, `${label}, ${what}: hidden ${h}: ${shared.hidden[h]} vs ${alone.hidden[h]}`);
        assert.ok(shared.grads.some((g) => g !== 0));
        const g = shared.grads.findIndex((x, i) => !(x === alone.grads[i]));
        assert.equal(g, -1, `${label}, ${what}: gradient ${g}: ${shared.grads[g]} vs ${alone.grads[g]}`);
      }
      policy.dispose();
    }
  });

  it('is deterministic: repeated runs, 1 or 2 threads and recomputation give the same bits', () => {
    const r = rng('policy determinism');
    const config = CONFIGS.llamaBias;
    const policy = makePolicy(config, r);
    const rows = randomRows(r, [9, 4, 7], config.vocabSize);
    const gradHidden = r.normals(3 * 9 * config.hiddenSize);
    const run = () => {
      const hidden = Float32Array.from(policy.forward({ ids: rows }).hidden.data as Float32Array);
      policy.zeroGrad();
      policy.backward(gradHidden);
      return { hidden, grads: Float32Array.from(policy.gradientBuffer.data as Float32Array) };
    };
    const first = run();
    assert.ok(first.grads.some((v) => v !== 0));
    // Gradients given for padded positions are ignored.
    const junk = Float32Array.from(gradHidden);
    for (const [b, len] of [[1, 4], [2, 7]])
      for (let i = (b * 9 + len) * config.hiddenSize; i < (b + 1) * 9 * config.hiddenSize; i++) junk[i] = 1e3 * r.normal();
    policy.forward({ ids: rows });
    policy.zeroGrad();
    policy.backward(junk);
    assert.ok(bitsEqual(policy.gradientBuffer.data as Float32Array, first.grads), 'padded gradients leaked');
    const second = run();
    assert.ok(bitsEqual(first.hidden, second.hidden), 'hidden differs between runs');
    assert.ok(bitsEqual(first.grads, second.grads), 'gradients differ between runs');

    const threads = buildInfo().threads;
    try {
      setNumThreads(1);
      const single = run();
      assert.ok(bitsEqual(first.hidden, single.hidden), 'hidden differs with one thread');
      assert.ok(bitsEqual(first.grads, single.grads), 'gradients differ with one thread');
    } finally {
      setNumThreads(threads);
    }

    policy.recompute = true;
    assert.equal(policy.recompute, true);
    const recomputed = run();
    assert.ok(bitsEqual(first.hidden, recomputed.hidden), 'hidden differs with recomputation');
    assert.ok(bitsEqual(first.grads, recomputed.grads), 'gradients differ with recomputation');
    assert.ok(policy.stats().trainingBytes > 0);

    // Backward accumulates: a second backward over the same forward doubles the gradients.
    policy.zeroGrad();
    policy.forward({ ids: rows });
    policy.backward(gradHidden);
    policy.backward(gradHidden);
    const doubled = policy.gradientBuffer.data as Float32Array;
    assertClose(doubled, first.grads.map((g) => 2 * g), { atol: 1e-6, rtol: 1e-6 }, 'gradients after two backwards');
    policy.dispose();
  });

  it('sequenceLogprobs matches the float64 reference, and greedy decoding follows the argmax of the full forward', () => {
    const r = rng('policy greedy');
    for (const [label, config] of Object.entries(CONFIGS)) {
      const policy = makePolicy(config, r);
      const prompts = randomRows(r, [3, 1, 5], config.vocabSize);
      const completions = randomRows(r, [4, 2, 0], config.vocabSize);
      const lps = policy.sequenceLogprobs(prompts, completions);
      const params = float64Params(policy);
      prompts.forEach((prompt, b) => {
        const full = [...prompt, ...completions[b]];
        const hidden = referenceHidden(config, params, full);
        const expected = completions[b].map((tok, j) => referenceLogSoftmax(config, params, hidden[prompt.length - 1 + j])[tok]);
        assertClose(lps[b], expected, { atol: 5e-5, rtol: 1e-4 }, `${label} sequenceLogprobs row ${b}`);
      });
      const hot = policy.sequenceLogprobs(prompts, completions, { temperature: 0.6 });
      prompts.forEach((prompt, b) => {
        const hidden = referenceHidden(config, params, [...prompt, ...completions[b]]);
        const expected = completions[b].map((tok, j) => referenceLogSoftmax(config, params, hidden[prompt.length - 1 + j], 0.6)[tok]);
        assertClose(hot[b], expected, { atol: 5e-5, rtol: 1e-4 }, `${label} sequenceLogprobs(τ=0.6) row ${b}`);
      });

      const greedy = policy.generate(prompts, { maxNewTokens: 6, temperature: 0, stopIds: [] });
      assert.deepEqual(greedy.stopped, [false, false, false]);
      const seqLps = policy.sequenceLogprobs(prompts, greedy.tokens);
      prompts.forEach((prompt, b) => {
        const tokens = greedy.tokens[b];
        assert.equal(tokens.length, 6);
        const full = [...prompt, ...tokens];
        const { hidden } = policy.forward({ ids: [full] });
        const h = hidden.data as Float32Array;
        tokens.forEach((tok, j) => {
          const logits = logitsOf(policy, h, prompt.length - 1 + j);
          const max = Math.max(...logits);
          // The chosen token is the argmax (up to f32 rounding between two paths).
          assert.ok(logits[tok] >= max - 1e-5, `${label} row ${b} step ${j}: token ${tok} is not the argmax`);
        });
        // Greedy log-probs are reported under softmax(logits), as sequenceLogprobs computes them.
        assertClose(greedy.logprobs[b], seqLps[b], { atol: 5e-5, rtol: 1e-4 }, `${label} greedy logprobs row ${b}`);
      });
      policy.dispose();
    }
  });

  it('sampled log-probs match sequenceLogprobs (τ = 1) and the truncated distribution (τ, top-k, top-p)', () => {
    const r = rng('policy sampling');
    const config = CONFIGS.qwenTied;
    const policy = makePolicy(config, r);
    const prompts = randomRows(r, [4, 2, 6, 1], config.vocabSize);
    const plain = policy.generate(prompts, { maxNewTokens: 7, temperature: 1, seed: 11, stopIds: [] });
    const lps = policy.sequenceLogprobs(prompts, plain.tokens);
    // The sampler's LM head is sequenceLogprobs' own arithmetic: the same bits, so the
    // importance ratio of an unchanged policy is exactly 1.
    prompts.forEach((_, b) => assert.ok(bitsEqual(plain.logprobs[b], lps[b]), `τ=1 logprobs row ${b}: ${plain.logprobs[b]} vs ${lps[b]}`));

    const temperature = 0.8, topK = 6, topP = 0.7;
    const out = policy.generate(prompts, { maxNewTokens: 7, temperature, topK, topP, seed: 5, stopIds: [] });
    prompts.forEach((prompt, b) => {
      const full = [...prompt, ...out.tokens[b]];
      const h = policy.forward({ ids: [full] }).hidden.data as Float32Array;
      out.tokens[b].forEach((tok, j) => {
        const x = logitsOf(policy, h, prompt.length - 1 + j).map((z) => z / temperature);
        const order = [...x.keys()].sort((u, v) => x[v] - x[u] || u - v).slice(0, topK);
        const max = x[order[0]];
        const w = order.map((v) => Math.exp(x[v] - max));
        const massK = w.reduce((a, c) => a + c, 0);
        let kept = 0, cum = 0;
        while (kept < order.length && (kept === 0 || cum < topP * massK)) cum += w[kept++];
        const nucleus = order.slice(0, kept);
        assert.ok(nucleus.includes(tok), `row ${b} step ${j}: token ${tok} is outside the nucleus ${nucleus}`);
        assertClose(out.logprobs[b][j], Math.log(w[order.indexOf(tok)] / cum), { atol: 5e-5, rtol: 1e-4 }, `row ${b} step ${j} logprob`);
      });
    });
    policy.dispose();
  });

  it('samples from the right distribution (empirical frequencies over many rows)', () => {
    const r = rng('policy frequencies');
    const config = CONFIGS.llamaPlain;
    const policy = makePolicy(config, r);
    const prompt = randomRows(r, [3], config.vocabSize)[0];
    const n = 4000;
    const prompts = Array.from({ length: n }, () => prompt);
    const h = policy.forward({ ids: [prompt] }).hidden.data as Float32Array;
    const logits = logitsOf(policy, h, prompt.length - 1);
    for (const { temperature, topK } of [{ temperature: 1, topK: 0 }, { temperature: 0.7, topK: 4 }]) {
      const x = logits.map((z) => z / temperature);
      const allowed = topK ? [...x.keys()].sort((u, v) => x[v] - x[u] || u - v).slice(0, topK) : [...x.keys()];
      const max = Math.max(...x);
      const p = new Float64Array(x.length);
      for (const v of allowed) p[v] = Math.exp(x[v] - max);
      const total = p.reduce((a, c) => a + c, 0);
      const { tokens } = policy.generate(prompts, { maxNewTokens: 1, temperature, topK, seed: 3, stopIds: [] });
      const counts = new Float64Array(x.length);
      for (const [tok] of tokens) {
        assert.ok(p[tok] > 0, `token ${tok} outside the allowed set`);
        counts[tok]++;
      }
      let tv = 0;
      for (let v = 0; v < x.length; v++) tv += Math.abs(counts[v] / n - p[v] / total) / 2;
      // Expected total variation at n = 4000 over 37 tokens is about 0.03.
      assert.ok(tv < 0.07, `total variation ${tv.toFixed(4)} between sampled and model frequencies (τ=${temperature}, k=${topK})`);
    }
    policy.dispose();
  });

  it('rollout log-probs equal sequenceLogprobs bit for bit: τ = 1, τ ≠ 1, greedy, across K blocks of the LM head', () => {
    const r = rng('policy rollout logprobs');
    // hidden 300 > 256: the LM-head dot products span two K blocks, where a GEMM that
    // folds per block and the fused log-prob kernel would round differently.
    const wide = parseConfig({
      model_type: 'qwen2', hidden_size: 300, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 3,
      num_key_value_heads: 1, vocab_size: 389, tie_word_embeddings: true, max_position_embeddings: 64,
    });
    for (const [label, config] of [['qwenTied', CONFIGS.qwenTied], ['llamaBias', CONFIGS.llamaBias], ['wide', wide]] as const) {
      const policy = makePolicy(config, r);
      const prompts = randomRows(r, [4, 2, 6, 1, 3], config.vocabSize);
      for (const temperature of [1, 0.7, 1.3, 0]) {
        const out = policy.generate(prompts, { maxNewTokens: 9, temperature, seed: 5, stopIds: [] });
        // Greedy log-probs are reported under softmax(logits): sequenceLogprobs at τ = 1.
        const lps = policy.sequenceLogprobs(prompts, out.tokens, { temperature: temperature === 0 ? 1 : temperature });
        let compared = 0;
        prompts.forEach((_, b) => {
          assert.equal(out.logprobs[b].length, 9);
          assert.ok(out.logprobs[b].every(Number.isFinite), `${label} τ=${temperature} row ${b}: non-finite log-prob`);
          assert.ok(bitsEqual(out.logprobs[b], lps[b]), `${label} τ=${temperature} row ${b}: ${out.logprobs[b]} vs ${lps[b]}`);
          compared += lps[b].length;
        });
        assert.equal(compared, 45);
      }
      policy.dispose();
    }
  });

  it('rows sharing a prompt (a GRPO group) are prefilled once: each row still equals its own computation, bit for bit', () => {
    const r = rng('policy shared prompts');
    for (const [label, config] of [['qwenTied', CONFIGS.qwenTied], ['llamaBias', CONFIGS.llamaBias]] as const) {
      const policy = makePolicy(config, r);
      const [p0, p1, p2] = randomRows(r, [5, 3, 6], config.vocabSize);
      // p0 and a prompt that only starts like it, groups not adjacent, a unique row last.
      const prefix = p0.slice(0, 3);
      const prompts = [p0, p1, p0, prefix, p0, p1, p2, p1];
      // Sampled: every row draws its own tokens from the copied cache; their log-probs are
      // those of a fresh forward over the row (sequenceLogprobs never shares work).
      for (const temperature of [1, 0.8]) {
        const out = policy.generate(prompts, { maxNewTokens: 7, temperature, seed: 11, stopIds: [] });
        const lps = policy.sequenceLogprobs(prompts, out.tokens, { temperature });
        prompts.forEach((_, b) => assert.ok(bitsEqual(out.logprobs[b], lps[b]), `${label} τ=${temperature} row ${b}: ${out.logprobs[b]} vs ${lps[b]}`));
        assert.notDeepEqual(out.tokens[0], out.tokens[2], `${label}: two rows of one prompt drew the same tokens`);
      }
      // Greedy: each row as the prompt alone.
      const greedy = policy.generate(prompts, { maxNewTokens: 7, temperature: 0, seed: 0, stopIds: [] });
      prompts.forEach((prompt, b) => {
        const alone = policy.generate([prompt], { maxNewTokens: 7, temperature: 0, seed: 0, stopIds: [] });
        assert.deepEqual(greedy.tokens[b], alone.tokens[0], `${label} greedy row ${b}`);
        assert.ok(bitsEqual(greedy.logprobs[b], alone.logprobs[0]), `${label} greedy row ${b} log-probs`);
      });
      policy.dispose();
    }
  });

  it('bf16 rollouts: the f32 engine on bf16-rounded weight matrices, deterministic and batch invariant', () => {
    const r = rng('policy bf16 rollouts');
    const config = CONFIGS.llamaBias;  // untied: the embedding gather stays f32, the LM head is a weight matrix
    const policy = makePolicy(config, r);
    // The same model with every weight matrix (not the embedding, norms or biases) rounded
    // to bf16, run by the f32 engine: what precision 'bf16' computes, up to summation order.
    const rounded = Policy.random(config, { seed: 1 });
    const mine = policy.parameters();
    for (const [name, view] of rounded.parameters()) {
      const src = mine.get(name) as Float32Array;
      if (name.endsWith('proj.weight') || name === 'lm_head.weight') view.set(toFloat32Array(fromFloat32Array(src, 'bf16'), 'bf16'));
      else view.set(src);
    }
    const prompts = randomRows(r, [5, 2, 8, 3], config.vocabSize);
    const opts = { maxNewTokens: 8, stopIds: [] as number[] };
    const greedy = policy.generate(prompts, { ...opts, temperature: 0, precision: 'bf16' });
    if (!buildInfo().simd.includes('bf16')) {
      // f32 activations (AVX2/AVX-512 path): only the summation order differs from the f32 engine.
      const expected = rounded.generate(prompts, { ...opts, temperature: 0 });
      assert.deepEqual(greedy.tokens, expected.tokens);
      prompts.forEach((_, b) => assertClose(greedy.logprobs[b], expected.logprobs[b], { atol: 2e-5, rtol: 2e-5 }, `greedy bf16 row ${b}`));
    } else {
      // AVX512-BF16 path: the activations entering every weight matrix are rounded to bf16
      // too (relative 2^-9 each), so greedy paths may part at near-ties. Teacher-forced
      // instead: the f32 engine on the rounded weights scores the bf16 path's own tokens;
      // each log-prob must agree to activation-rounding size, which is the size of the
      // weights' own rounding (the f32 and rounded models differ by ~1–5e-2 on these tokens).
      // Over 83 random seeds the largest difference was 5.2e-2 (late in a row, where the
      // roundings of earlier positions add up; typical 1.5–2.5e-2), so the bound is 0.1; a
      // wrong row, term or weight matrix moves it by O(1). And the first greedy token must
      // be that close to the rounded model's best.
      const activationRounding = 0.1;
      const scored = rounded.sequenceLogprobs(prompts, greedy.tokens);
      prompts.forEach((_, b) => assertClose(greedy.logprobs[b], scored[b], { atol: activationRounding, rtol: 0 }, `greedy bf16 (bf16 activations) row ${b}`));
      const best = rounded.generate(prompts, { ...opts, maxNewTokens: 1, temperature: 0 });
      prompts.forEach((_, b) => assert.ok(scored[b][0] >= best.logprobs[b][0] - activationRounding, `row ${b}: first greedy token is not near the best`));
    }
    // Not the f32 model: the rounding of the weights shows in the log-probs.
    const f32 = policy.generate(prompts, { ...opts, temperature: 0 });
    assert.ok(f32.logprobs.some((lp, b) => !bitsEqual(lp, greedy.logprobs[b])), 'bf16 and f32 rollouts gave the same bits');

    const sampled = { ...opts, temperature: 1.1, topP: 0.9, seed: 77, precision: 'bf16' as const };
    const a = policy.generate(prompts, sampled), b = policy.generate(prompts, sampled);
    assert.deepEqual(a.tokens, b.tokens);
    a.logprobs.forEach((lp, i) => assert.ok(bitsEqual(lp, b.logprobs[i]) && lp.every(Number.isFinite), `row ${i}`));
    // Row 0 alone draws with row 0's key: the same bits unless batching leaks across rows.
    const alone = policy.generate([prompts[0]], sampled);
    assert.deepEqual(alone.tokens[0], a.tokens[0]);
    assert.ok(bitsEqual(alone.logprobs[0], a.logprobs[0]), 'a row alone differs from the same row in a batch');
    assert.throws(() => policy.generate(prompts, { ...opts, precision: 'f16' as 'bf16' }), /^RangeError: precision: expected 'f32' or 'bf16'/);
    // Each call makes its bf16 weights afresh: after the parameters change, the next call
    // gives the bits of a policy built with the new ones (never the previous call's copy).
    for (const [name, view] of policy.parameters())
      if (name.endsWith('proj.weight') || name === 'lm_head.weight') for (let i = 0; i < view.length; i += 3) view[i] *= -0.75;
    const fresh = Policy.random(config, { seed: 2 });
    const theirs = fresh.parameters();
    for (const [name, view] of policy.parameters()) (theirs.get(name) as Float32Array).set(view);
    const changed = policy.generate(prompts, sampled), expected = fresh.generate(prompts, sampled);
    assert.deepEqual(changed.tokens, expected.tokens);
    changed.logprobs.forEach((lp, i) => assert.ok(bitsEqual(lp, expected.logprobs[i]), `row ${i} after the parameters changed`));
    assert.notDeepEqual(changed.tokens, a.tokens, 'the change of parameters did not show');
    policy.dispose();
    rounded.dispose();
    fresh.dispose();
  });

  it('seeds: the same seed gives the same output, a different seed a different one, whatever the batch', () => {
    const r = rng('policy seeds');
    const config = CONFIGS.llamaBias;
    const policy = makePolicy(config, r);
    const prompts = randomRows(r, [5, 2, 8, 3], config.vocabSize);
    const opts = { maxNewTokens: 10, temperature: 1.2, topP: 0.95, stopIds: [] as number[] };
    const a = policy.generate(prompts, { ...opts, seed: 1234 });
    const b = policy.generate(prompts, { ...opts, seed: 1234 });
    const c = policy.generate(prompts, { ...opts, seed: 1235 });
    assert.deepEqual(a.tokens, b.tokens);
    a.logprobs.forEach((lp, i) => assert.ok(bitsEqual(lp, b.logprobs[i]), `logprobs row ${i} differ for the same seed`));
    assert.notDeepEqual(a.tokens, c.tokens);
    // Row 0 alone samples with the same key as row 0 of the batch: identical bits, so
    // neither padding, batching nor the compaction of finished rows changes a row.
    const alone = policy.generate([prompts[0]], { ...opts, seed: 1234 });
    assert.deepEqual(alone.tokens[0], a.tokens[0]);
    assert.ok(bitsEqual(alone.logprobs[0], a.logprobs[0]));
    const threads = buildInfo().threads;
    try {
      setNumThreads(1);
      assert.deepEqual(policy.generate(prompts, { ...opts, seed: 1234 }).tokens, a.tokens);
    } finally {
      setNumThreads(threads);
    }
    policy.dispose();
  });

  it('stop ids end a row (included, stopped = true); maxNewTokens truncates (stopped = false)', () => {
    const r = rng('policy stops');
    // A larger vocabulary, so that rows rarely meet each other's stop ids by chance.
    const config = parseConfig({ ...configToJson(CONFIGS.qwenTied), vocab_size: 500 });
    const policy = makePolicy(config, r);
    const prompts = randomRows(r, [3, 5, 2, 4, 1, 6], config.vocabSize);
    const free = policy.generate(prompts, { maxNewTokens: 12, temperature: 1, seed: 9, stopIds: [] });
    free.tokens.forEach((t) => assert.equal(t.length, 12));
    assert.deepEqual(free.stopped, [false, false, false, false, false, false]);
    // Rows 0–3 stop on the token they drew at step 1 (or earlier, if it came before):
    // the remaining rows then run on after the finished ones are packed out of the cache.
    const stopIds = [0, 1, 2, 3].map((b) => free.tokens[b][1]);
    const stopped = policy.generate(prompts, { maxNewTokens: 12, temperature: 1, seed: 9, stopIds });
    free.tokens.forEach((tokens, b) => {
      const cut = tokens.findIndex((t) => stopIds.includes(t));
      const expected = cut < 0 ? tokens : tokens.slice(0, cut + 1);
      assert.deepEqual(stopped.tokens[b], expected, `row ${b}`);
      assert.equal(stopped.stopped[b], cut >= 0, `row ${b} stopped flag`);
      assert.ok(bitsEqual(stopped.logprobs[b], free.logprobs[b].slice(0, expected.length)), `row ${b} logprobs`);
      if (b < 4) assert.ok(stopped.tokens[b].length <= 2 && stopped.stopped[b]);
    });
    // A stop id on the last allowed token still counts as stopped.
    // (Compared with the free run cut at that id, not with `stopped`: row 0's first token may
    // be another row's stop id, 1 run in ~100 with this vocabulary.)
    const last = policy.generate([prompts[0]], { maxNewTokens: 2, temperature: 1, seed: 9, stopIds: [free.tokens[0][1]] });
    assert.deepEqual(last.tokens[0], free.tokens[0].slice(0, free.tokens[0].indexOf(free.tokens[0][1]) + 1));
    assert.equal(last.stopped[0], true);
    const none = policy.generate(prompts, { maxNewTokens: 0, seed: 1 });
    assert.deepEqual(none.tokens, [[], [], [], [], [], []]);
    assert.deepEqual(none.stopped, [false, false, false, false, false, false]);
    assert.deepEqual(policy.generate([], { maxNewTokens: 4 }).tokens, []);
    policy.dispose();
  });

  it('save → fromPretrained round-trips bit for bit, single file and sharded', () => {
    const r = rng('policy checkpoint');
    for (const config of [CONFIGS.qwenTied, CONFIGS.llamaBias]) {
      const policy = makePolicy(config, r);
      const rows = randomRows(r, [6, 2], config.vocabSize);
      const hidden = Float32Array.from(policy.forward({ ids: rows }).hidden.data as Float32Array);
      for (const maxShardBytes of [undefined, 4096]) {
        const out = freshDir('save');
        policy.save(out, maxShardBytes === undefined ? undefined : { maxShardBytes });
        const files = readdirSync(out);
        if (maxShardBytes === undefined) assert.ok(files.includes(SINGLE_FILE));
        else assert.ok(files.includes('model.safetensors.index.json') && files.filter((f) => f.startsWith('model-')).length > 1);
        const loaded = Policy.fromPretrained(out);
        assert.deepEqual(configToJson(loaded.config), configToJson({ ...config, torchDtype: 'float32' }));
        assert.ok(bitsEqual(loaded.parameterBuffer.data as Float32Array, policy.parameterBuffer.data as Float32Array));
        assert.ok(bitsEqual(loaded.forward({ ids: rows }).hidden.data as Float32Array, hidden));
        loaded.dispose();
      }
      policy.dispose();
    }
  });

  it('loads bf16 checkpoints (widened exactly) and names missing, unexpected and misshapen tensors', () => {
    const r = rng('policy bad checkpoints');
    const config = CONFIGS.llamaPlain;
    const shapes = parameterShapes(config);
    const tensors = new Map(shapes.map(({ name, shape }) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return [name, { dtype: 'bf16' as const, shape, data: fromFloat32Array(r.normals(n, 0.1), 'bf16') }];
    }));
    const write = (label: string, entries: Map<string, { dtype: 'bf16' | 'f32'; shape: number[]; data: Uint16Array | Float32Array }>, cfg = config) => {
      const out = freshDir(label);
      saveSafetensorsDir(out, entries);
      writeFileSync(join(out, 'config.json'), JSON.stringify(configToJson(cfg)));
      return out;
    };
    const good = Policy.fromPretrained(write('bf16', tensors));
    for (const [name, t] of tensors) {
      const got = good.parameters().get(name)!;
      for (let i = 0; i < got.length; i++) if (got[i] !== bf16ToF32(t.data[i])) assert.fail(`${name}[${i}] not widened exactly`);
    }
    good.dispose();

    const missing = new Map(tensors);
    missing.delete('model.layers.1.mlp.up_proj.weight');
    assert.throws(() => Policy.fromPretrained(write('missing', missing)), /missing 1 tensor\(s\): model\.layers\.1\.mlp\.up_proj\.weight/);
    const extra = new Map(tensors);
    extra.set('model.layers.2.mlp.up_proj.weight', tensors.get('model.layers.1.mlp.up_proj.weight')!);
    assert.throws(() => Policy.fromPretrained(write('extra', extra)), /unexpected 1 tensor\(s\): model\.layers\.2\.mlp\.up_proj\.weight/);
    const misshapen = new Map(tensors);
    const down = tensors.get('model.layers.0.mlp.down_proj.weight')!;
    misshapen.set('model.layers.0.mlp.down_proj.weight', { ...down, shape: [down.shape[1], down.shape[0]] });
    assert.throws(() => Policy.fromPretrained(write('shape', misshapen)), /model\.layers\.0\.mlp\.down_proj\.weight has shape \[32, 24\]/);

    // A truncated weights file fails in the safetensors reader, naming the file.
    const truncated = write('truncated', tensors);
    const file = join(truncated, SINGLE_FILE);
    writeFileSync(file, readFileSync(file).subarray(0, 1000));
    assert.throws(() => Policy.fromPretrained(truncated), /model\.safetensors/);
    assert.throws(() => Policy.fromPretrained(freshDir('nothing')), /config/);

    // Tied checkpoints may carry an identical lm_head copy; a different one contradicts the config.
    const tiedConfig = parseConfig({ ...configToJson(config), tie_word_embeddings: true });
    const tied = new Map(tensors);
    tied.set('lm_head.weight', tensors.get('model.embed_tokens.weight')!);
    Policy.fromPretrained(write('tied-copy', tied, tiedConfig)).dispose();
    tied.set('lm_head.weight', { ...tensors.get('lm_head.weight')! });
    assert.throws(() => Policy.fromPretrained(write('tied-differs', tied, tiedConfig)), /lm_head\.weight differs/);
  });

  it('100 forward+backward steps on a fixed batch reuse one arena (no growth)', () => {
    const r = rng('policy memory');
    const config = CONFIGS.qwenTied;
    const policy = makePolicy(config, r);
    const rows = randomRows(r, [12, 9, 16, 3], config.vocabSize);
    const gradHidden = r.normals(4 * 16 * config.hiddenSize);
    const step = () => {
      policy.forward({ ids: rows });
      policy.backward(gradHidden);
    };
    for (let i = 0; i < 10; i++) step();
    const before = process.memoryUsage().rss;
    const stats = policy.stats();
    for (let i = 0; i < 100; i++) step();
    const after = policy.stats();
    assert.equal(after.trainingAllocations, 1);
    assert.equal(after.hiddenAllocations, 1);
    assert.equal(after.trainingBytes, stats.trainingBytes);
    const growth = process.memoryUsage().rss - before;
    assert.ok(growth < 16 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB over 100 steps`);
    // A smaller batch fits in the same arena; a larger one grows it once.
    policy.forward({ ids: rows.slice(0, 2) });
    assert.equal(policy.stats().trainingAllocations, 1);
    policy.forward({ ids: [...rows, ...rows] });
    assert.equal(policy.stats().trainingAllocations, 2);
    policy.dispose();
  });

  it('rejects bad arguments with errors naming them', () => {
    const r = rng('policy errors');
    const config = CONFIGS.qwenTied;
    const policy = makePolicy(config, r);
    const V = config.vocabSize;
    assert.throws(() => policy.forward({ ids: [[1, 2, V]] }), (e: Error) => e instanceof RangeError && /^ids: token id 37/.test(e.message));
    assert.throws(() => policy.forward({ ids: [[1, -1]] }), /^RangeError: ids:/);
    assert.throws(() => policy.forward({ ids: [[1, 2.5]] }), /^RangeError: ids:/);
    assert.throws(() => policy.forward({ ids: [[1, 2]], lengths: [3] }), /^RangeError: lengths:/);
    assert.throws(() => policy.forward({ ids: new Int32Array(6), lengths: [3, 4] }), /^RangeError: lengths:/);
    assert.throws(() => policy.forward({ ids: new Int32Array(7), lengths: [3, 4] }), /^RangeError: ids:/);
    assert.throws(() => policy.forward({ ids: new Int32Array(6) }), /^TypeError: lengths:/);
    assert.throws(() => policy.forward({ ids: [Array(65).fill(1)] }), /max_position_embeddings/);
    // Padded ids are never read, so any value may sit there.
    const padded = Tensor.from(Int32Array.from([1, 2, -5, 3, 999, 999]), [2, 3]);
    policy.forward({ ids: padded, lengths: Int32Array.from([2, 1]) });

    const fresh = makePolicy(config, r);
    assert.throws(() => fresh.backward(new Float32Array(24)), /^Error: backward: no saved activations/);
    fresh.dispose();
    policy.forward({ ids: [[1, 2, 3]] });
    assert.throws(() => policy.backward(new Float32Array(24)), /^RangeError: gradHidden:/);
    const nan = new Float32Array(3 * 24);
    nan[30] = NaN;
    assert.throws(() => policy.backward(nan), /^RangeError: gradHidden: row 0/);
    assert.throws(() => policy.backward(new Float32Array(3 * 24), { gradLmHead: new Float32Array(5) }), /^RangeError: gradLmHead:/);
    // Issue 12 item 7: one rule for both gradients (a NaN gradLmHead was added in silently).
    const badHead = new Float32Array(V * 24);
    badHead[5 * 24 + 3] = NaN;
    const before = Float32Array.from(policy.gradients().get('model.embed_tokens.weight')!);
    assert.throws(() => policy.backward(new Float32Array(3 * 24), { gradLmHead: badHead }), /^RangeError: gradLmHead: row 5 holds a NaN/);
    badHead[5 * 24 + 3] = -Infinity;
    assert.throws(() => policy.backward(new Float32Array(3 * 24), { gradLmHead: badHead }), /^RangeError: gradLmHead: row 5/);
    assert.deepEqual(policy.gradients().get('model.embed_tokens.weight'), before, 'a rejected call must not touch the gradients');
    // τ whose inverse overflows float32 is an error here as in the kernels (it gave NaN/−Infinity).
    for (const temperature of [1e-40, 1e-38])
      assert.throws(() => policy.sequenceLogprobs([[1, 2]], [[3, 4]], { temperature }), /^RangeError: temperature: .* overflows float32/);
    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: 2, temperature: 1e-40 }), /^RangeError: temperature:/);

    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: 2, temperature: -1 }), /^RangeError: temperature:/);
    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: 2, topP: 0 }), /^RangeError: topP:/);
    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: 2, topK: 1.5 }), /^RangeError: topK:/);
    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: -1 }), /^RangeError: maxNewTokens:/);
    assert.throws(() => policy.generate([[1, 2]], { maxNewTokens: 63 }), /^RangeError: maxNewTokens:.*max_position_embeddings/);
    assert.throws(() => policy.generate([[1, 2], []], { maxNewTokens: 2 }), /^RangeError: prompts\[1\]: expected at least 1 token/);
    assert.throws(() => policy.generate([[1, 40]], { maxNewTokens: 2 }), /^RangeError: prompts\[0\]\[1\]/);
    assert.throws(() => policy.generate([[1]], { maxNewTokens: 2, stopIds: [99] }), /^RangeError: stopIds\[0\]/);
    assert.throws(() => policy.generate([[1]], { maxNewTokens: 2, seed: -3 }), /^RangeError: seed:/);
    assert.throws(() => policy.sequenceLogprobs([[1]], [[1], [2]]), /^RangeError: completions:/);
    assert.throws(() => policy.sequenceLogprobs([[]], [[1]]), /^RangeError: prompts\[0\]/);
    assert.throws(() => policy.sequenceLogprobs([[1]], [[1]], { temperature: 0 }), /^RangeError: temperature:/);

    // A device the build cannot see is refused with the runtime's reason (the engine itself runs on CUDA devices).
    assert.throws(() => Policy.random(config, { device: 'cuda:7' }), /^Error: device: cuda:7 is not available \(.+\); use device 'cpu'/);
    assert.throws(() => Policy.random(config, { device: 'tpu' as never }), /^TypeError: device:/);
    // The raw native object is just as careful.
    const PolicyModel = addon().PolicyModel;
    assert.throws(() => new PolicyModel(config, policy.parameterBuffer, Tensor.zeros([3])), /^RangeError: gradients: holds 3 values/);
    assert.throws(() => new PolicyModel({ ...config, numKeyValueHeads: 3 }, policy.parameterBuffer, policy.gradientBuffer), /numKeyValueHeads/);
    assert.throws(() => new PolicyModel(config, policy.parameterBuffer, policy.parameterBuffer), /^TypeError: gradients: must not share memory/);

    policy.dispose();
    assert.throws(() => policy.forward({ ids: [[1]] }), /^Error: policy: it was disposed/);
    assert.equal(policy.disposed, true);
  });
});

describe('Policy.save with dtype bf16', () => {
  it('writes each weight rounded to the nearest bf16 (ties to even), loads back to those values, in half the bytes', () => {
    const r = rng('policy save bf16');
    const config = CONFIGS.llamaBias;
    const policy = makePolicy(config, r);
    const dirs = [mkdtempSync(join(tmpdir(), 'lgrpo-bf16-')), mkdtempSync(join(tmpdir(), 'lgrpo-f32-'))];
    try {
      policy.save(dirs[0], { dtype: 'bf16' });
      policy.save(dirs[1]);
      const size = (d: string) => readFileSync(join(d, 'model.safetensors')).length;
      assert.ok(size(dirs[0]) < 0.55 * size(dirs[1]), `bf16 file ${size(dirs[0])} bytes, f32 ${size(dirs[1])}`);
      assert.equal(JSON.parse(readFileSync(join(dirs[0], 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
      const back = Policy.fromPretrained(dirs[0]);
      const want = fromFloat32Array(policy.parameterBuffer.data as Float32Array, 'bf16');
      const got = back.parameterBuffer.data as Float32Array;
      for (let i = 0; i < got.length; i++)
        if (!Object.is(got[i], bf16ToF32(want[i]))) assert.fail(`parameter ${i}: ${got[i]}, expected ${bf16ToF32(want[i])}`);
      assert.ok(got.some((x, i) => x !== (policy.parameterBuffer.data as Float32Array)[i]), 'bf16 rounding changed nothing: the test proves nothing');
      back.dispose();
      assert.throws(() => policy.save(dirs[0], { dtype: 'f16' as 'bf16' }), /^TypeError: dtype: expected 'f32' or 'bf16', got "f16"/);
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      policy.dispose();
    }
  });
});
