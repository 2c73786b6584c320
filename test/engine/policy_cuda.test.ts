// The policy engine on a CUDA device (kernels/backend_cuda.cu under the same orchestration
// as the CPU engine) against the CPU engine, through the native PolicyModel: the same
// weights, batch and gradients on both devices must give the same hidden states, every
// parameter gradient, sequence log-probs and generations, within f32 summation-order
// tolerances. Runs wherever a CUDA device exists: the emulated cuda:0 in CI, a GPU.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, Policy, Tensor, buildInfo, cudaMemoryStats, emptyCudaCache, linearTokenLogprobs, linearTokenLogprobsBackward } from '../../src/index.js';
import type { ModelConfig } from '../../src/engine/config.js';
import type { NativeTensor } from '../../src/native.js';
import { addon } from '../../src/native.js';
import { assertClose, rng, type Rng } from '../helpers.js';
import { CONFIGS, makePolicy } from './tiny_configs.js';

const DEVICE = buildInfo().cudaDevices.length > 0 ? 'cuda:0' : undefined;

interface NativePolicy {
  forward(ids: Tensor, lengths: Tensor): Float32Array | NativeTensor;
  backward(gradHidden: Tensor, opts: { gradLmHead?: Tensor }): void;
  sequenceLogprobs(ids: Tensor, lengths: Tensor, promptLengths: Tensor, opts: { temperature?: number }): Float32Array;
  generate(ids: Tensor, lengths: Tensor, opts: Record<string, unknown>): { tokens: Int32Array[]; logprobs: Float32Array[]; stopped: Uint8Array };
  stats(): { device: string };
  dispose(): void;
}

function host(x: Float32Array | NativeTensor): Float32Array {
  if (x instanceof Float32Array) return x;
  return addon().toDevice(x, 'cpu').data as Float32Array;
}

function pair(config: ModelConfig, r: Rng, recompute: boolean) {
  const policy = makePolicy(config, r);
  const P = policy.parameterBuffer.numel;
  const Native = addon().PolicyModel as new (...args: unknown[]) => NativePolicy;
  const cpuGrads = Tensor.zeros([P]);
  const cudaParams = policy.parameterBuffer.to(DEVICE!), cudaGrads = Tensor.zeros([P], 'f32', DEVICE!);
  const cpu = new Native(config, policy.parameterBuffer, cpuGrads, { recompute });
  const cuda = new Native(config, cudaParams, cudaGrads, { recompute });
  return { policy, cpu, cuda, cpuGrads, cudaGrads, cudaParams };
}

function batch(r: Rng, lengths: number[], vocab: number) {
  const T = Math.max(...lengths);
  const ids = new Int32Array(lengths.length * T);
  lengths.forEach((len, b) => { for (let t = 0; t < len; t++) ids[b * T + t] = r.int(0, vocab); });
  return { ids: Tensor.from(ids, [lengths.length, T]), lengths: Tensor.from(Int32Array.from(lengths)), T };
}

describe('the policy engine on CUDA matches the CPU engine', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  for (const name of ['qwenTied', 'llamaBias'] as const) {
    const config = CONFIGS[name];
    for (const recompute of [false, true]) {
      it(`${name}${recompute ? ' (recompute)' : ''}: forward, every parameter gradient, sequence log-probs`, () => {
        const r = rng('policy cuda');
        const { cpu, cuda, cpuGrads, cudaGrads, cudaParams } = pair(config, r, recompute);
        const lengths = [5, 0, 9, 1, 7];
        const { ids, lengths: lens, T } = batch(r, lengths, config.vocabSize);
        const D = config.hiddenSize, V = config.vocabSize;
        const hCpu = host(cpu.forward(ids, lens));
        const hCuda = host(cuda.forward(ids, lens));
        assert.equal(cuda.stats().device, DEVICE);
        assertClose(hCuda, hCpu, { atol: 2e-5, rtol: 2e-5 }, 'hidden');

        const gh = new Float32Array(lengths.length * T * D);
        lengths.forEach((len, b) => { for (let i = 0; i < len * D; i++) gh[b * T * D + i] = r.normal(); });
        const head = Float32Array.from({ length: V * D }, () => 0.1 * r.normal());
        cpu.backward(Tensor.from(gh, [lengths.length * T, D]), { gradLmHead: Tensor.from(head, [V, D]) });
        const ghDev = Tensor.from(gh, [lengths.length * T, D]).to(DEVICE!), headDev = Tensor.from(head, [V, D]).to(DEVICE!);
        cuda.backward(ghDev, { gradLmHead: headDev });
        // Gradients reach ~100 here and small entries come from cancelling sums of large
        // terms in another order: the absolute tolerance scales with the largest gradient
        // (a few f32 ulps of it), which still catches any term added wrongly.
        const reference = cpuGrads.data as Float32Array;
        const scale = reference.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        assertClose(cudaGrads.to('cpu').data as Float32Array, reference, { atol: 1e-5 * scale, rtol: 1e-4 }, 'parameter gradients');

        const seqLengths = lengths.map((len) => Math.max(len, 1));
        const b2 = batch(r, seqLengths, V);
        const pl = Tensor.from(Int32Array.from(seqLengths, (len) => Math.max(1, len - 3)));
        for (const temperature of [1, 0.7]) {
          assertClose(cuda.sequenceLogprobs(b2.ids, b2.lengths, pl, { temperature }), cpu.sequenceLogprobs(b2.ids, b2.lengths, pl, { temperature }),
            { atol: 2e-5, rtol: 2e-5 }, `sequence log-probs (τ ${temperature})`);
        }
        for (const t of [ghDev, headDev, cudaParams, cudaGrads]) t.dispose();
        cpu.dispose();
        cuda.dispose();
      });
    }
  }

  it('generates the CPU engine\'s tokens, greedy and seeded, with its log-probs', () => {
    const r = rng('policy cuda');
    const config = CONFIGS.qwenTied;
    const { cpu, cuda, cudaParams, cudaGrads } = pair(config, r, false);
    const { ids, lengths } = batch(r, [3, 6, 1], config.vocabSize);
    for (const opts of [
      { maxNewTokens: 8, temperature: 0 },
      { maxNewTokens: 8, temperature: 0.9, seed: 7 },
      { maxNewTokens: 8, temperature: 1, topK: 5, topP: 0.9, seed: 11, stopIds: Tensor.from(Int32Array.of(3)) },
      // bf16 rollouts: both devices read the same bf16 copy through gemm_bf16 (the same bits)
      // — unless the CPU runs bf16 dot products (AVX512-BF16: activations rounded to bf16
      // too, gemm_bf16.h), which the CUDA twin does not (yet): then only the f32 rollouts
      // are compared here; LGRPO_SIMD=avx512 (or avx2) runs the bf16 comparison.
      ...(buildInfo().simd.includes('bf16') ? [] : [
        { maxNewTokens: 8, temperature: 0, precision: 'bf16' },
        { maxNewTokens: 8, temperature: 0.9, seed: 5, precision: 'bf16' },
      ]),
    ]) {
      const a = cpu.generate(ids, lengths, opts), b = cuda.generate(ids, lengths, opts);
      assert.deepEqual(b.tokens.map((t) => Array.from(t)), a.tokens.map((t) => Array.from(t)), JSON.stringify({ ...opts, stopIds: undefined }));
      assert.deepEqual(Array.from(b.stopped), Array.from(a.stopped));
      b.logprobs.forEach((lp, row) => assertClose(lp, a.logprobs[row], { atol: 2e-5, rtol: 2e-5 }, `log-probs of row ${row}`));
    }
    cudaParams.dispose();
    cudaGrads.dispose();
    cpu.dispose();
    cuda.dispose();
  });

  it('refuses gradients on another device than the model', () => {
    const r = rng('policy cuda');
    const config = CONFIGS.llamaBias;
    const { cuda, cudaParams, cudaGrads } = pair(config, r, false);
    const { ids, lengths, T } = batch(r, [2, 3], config.vocabSize);
    cuda.forward(ids, lengths);
    assert.throws(() => cuda.backward(Tensor.from(new Float32Array(2 * T * config.hiddenSize), [2 * T, config.hiddenSize]), {}),
      /gradHidden: is on cpu but the model is on cuda:0/);
    assert.throws(() => new (addon().PolicyModel as new (...a: unknown[]) => NativePolicy)(config, cudaParams, Tensor.zeros([cudaParams.numel]), {}),
      /gradients: is on cpu but the other inputs are on cuda:0/);
    cudaParams.dispose();
    cudaGrads.dispose();
    cuda.dispose();
  });
});

describe('Policy on a CUDA device', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  it('trains through the fused LM head on the device as the CPU policy does, and saves what it holds', () => {
    const r = rng('policy cuda');
    const config = CONFIGS.llamaBias;
    const seed = r.int(0, 1e9);
    const cpu = Policy.random(config, { seed, initializerRange: 0.25 });
    const gpu = Policy.random(config, { seed, initializerRange: 0.25, device: DEVICE! });
    assert.equal(gpu.device, DEVICE);
    assert.deepEqual(Array.from(gpu.parameterBuffer.to('cpu').data as Float32Array), Array.from(cpu.parameterBuffer.data as Float32Array));
    assert.throws(() => gpu.parameters(), /parameters: this policy's weights live on cuda:0; use parameterBuffer/);

    const rows = [[1, 5, 9, 2], [7, 3], [4, 4, 4, 8, 0, 1]];
    const results = [cpu, gpu].map((policy) => {
      const onIt = <A extends Float32Array | Int32Array>(a: A) => (policy.device === 'cpu' ? Tensor.from(a) : Tensor.from(a).to(policy.device));
      policy.zeroGrad();
      const f = policy.forward({ ids: rows });
      assert.equal(f.hidden.device, policy.device);
      const T = f.seq;
      const targets = new Int32Array(rows.length * T);
      rows.forEach((row, b) => row.forEach((_, t) => { targets[b * T + t] = row[(t + 1) % row.length]; }));
      const y = onIt(targets);
      const lp = linearTokenLogprobs(f.hidden, policy.lmHeadWeight, y, { entropy: true });
      const g = new Float32Array(rows.length * T);
      rows.forEach((row, b) => row.forEach((_, t) => { g[b * T + t] = -1 / row.length; }));
      const back = linearTokenLogprobsBackward(f.hidden, policy.lmHeadWeight, y, lp.lse, onIt(g));
      policy.backward(back.gradHidden, { gradLmHead: back.gradWeight });
      const host = (t: Tensor) => (t.isCuda ? t.to('cpu') : t).data as Float32Array;
      const gen = policy.generate([[1, 2, 3], [9]], { maxNewTokens: 5, temperature: 0, stopIds: [] });
      return { logprobs: host(lp.logprobs as Tensor), grads: Float32Array.from(host(policy.gradientBuffer)), tokens: gen.tokens };
    });
    assertClose(results[1].logprobs, results[0].logprobs, { atol: 2e-5, rtol: 2e-5 }, 'token log-probs');
    const scale = results[0].grads.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    assertClose(results[1].grads, results[0].grads, { atol: 1e-5 * scale, rtol: 1e-4 }, 'parameter gradients');
    assert.ok(results[0].grads.some((x) => x !== 0), 'the CPU gradients are all zero: the comparison would prove nothing');
    assert.deepEqual(results[1].tokens, results[0].tokens);

    gpu.zeroGrad();
    assert.ok((gpu.gradientBuffer.to('cpu').data as Float32Array).every((x) => x === 0), 'zeroGrad on the device');
    const dir = mkdtempSync(join(tmpdir(), 'lgrpo-cuda-policy-'));
    try {
      gpu.save(dir);
      const back = Policy.fromPretrained(dir);
      assert.deepEqual(Array.from(back.parameterBuffer.data as Float32Array), Array.from(cpu.parameterBuffer.data as Float32Array));
      const again = Policy.fromPretrained(dir, { device: DEVICE! });
      assert.equal(again.device, DEVICE);
      back.dispose();
      again.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    cpu.dispose();
    gpu.dispose();
  });
});

describe('rollouts on a CUDA policy', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  // The own GEMM sums each output in one fixed order whatever the number of rows, so the
  // decode's one-row products give the prefill's bits. cuBLASLt picks its kernel (tiles,
  // split-K) by shape, so there the two agree to rounding only (H200, cuBLASLt 13.1:
  // |Δ| ≤ 1.2e-6 on log-probs near −2); the trainer does not rely on it (its old log-probs
  // are its own first pass's). Likewise where sequenceLogprobs' LM head runs as chunks
  // through the GEMM (LGRPO_CUDA_LM_HEAD=chunked; the default under cuBLASLt for 256 rows
  // or more) while the sampler's stays fused.
  const exact = !buildInfo().cudaMatmul.startsWith('cuBLASLt') && !(process.env.LGRPO_CUDA_LM_HEAD ?? '').startsWith('chunked');
  it(`rollout log-probs equal sequenceLogprobs on the device ${exact ? 'bit for bit (own GEMM, fused LM head)' : 'to 1e-5 (cuBLASLt or a chunked LM head)'} (τ = 1, τ ≠ 1, greedy; hidden > one K slab)`, () => {
    const r = rng('cuda rollout logprobs');
    const wide = { model_type: 'qwen2', hidden_size: 72, intermediate_size: 40, num_hidden_layers: 1, num_attention_heads: 3,
      num_key_value_heads: 1, vocab_size: 389, tie_word_embeddings: true, max_position_embeddings: 64 };
    for (const config of [CONFIGS.qwenTied, wide]) {
      const policy = Policy.random(config, { seed: r.int(0, 1e9), initializerRange: 0.25, device: DEVICE! });
      const prompts = [[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12], [3]];
      for (const temperature of [1, 0.7, 0]) {
        const out = policy.generate(prompts, { maxNewTokens: 6, temperature, seed: 5, stopIds: [] });
        const lps = policy.sequenceLogprobs(prompts, out.tokens, { temperature: temperature === 0 ? 1 : temperature });
        prompts.forEach((_, b) => {
          assert.ok(out.logprobs[b].every(Number.isFinite));
          if (exact) assert.deepEqual(Array.from(out.logprobs[b]), Array.from(lps[b]), `τ=${temperature} row ${b}`);
          else assertClose(out.logprobs[b], lps[b], { atol: 1e-5, rtol: 1e-5 }, `τ=${temperature} row ${b}`);
        });
      }
      policy.dispose();
    }
  });

  it('linearTokenLogprobs on the device is batch invariant: a row alone gives the bits it gives in a batch', () => {
    const r = rng('cuda linear batch invariance');
    // V > 128 tiles of 64: the old slicing (by rows) gave a lone row 141 slices and the batch 128.
    const N = 70, D = 40, V = 9000;
    const hidden = Float32Array.from({ length: N * D }, () => r.normal());
    const weight = Float32Array.from({ length: V * D }, () => r.normal() * 0.3);
    const targets = Int32Array.from({ length: N }, () => r.int(0, V));
    const w = Tensor.from(weight, [V, D]).to(DEVICE!);
    const all = linearTokenLogprobs(Tensor.from(hidden, [N, D]).to(DEVICE!), w, Tensor.from(targets).to(DEVICE!), { entropy: true });
    const host = (t: unknown) => (t as Tensor).to('cpu').data as Float32Array;
    const batch = { logprobs: host(all.logprobs), lse: host(all.lse), entropy: host(all.entropy) };
    for (let n = 0; n < N; n++) {
      const one = linearTokenLogprobs(Tensor.from(hidden.slice(n * D, (n + 1) * D), [1, D]).to(DEVICE!), w,
        Tensor.from(targets.slice(n, n + 1)).to(DEVICE!), { entropy: true });
      for (const key of ['logprobs', 'lse', 'entropy'] as const)
        assert.ok(Object.is(host(one[key])[0], batch[key][n]), `row ${n} ${key}: ${host(one[key])[0]} alone, ${batch[key][n]} in the batch`);
    }
  });
});

describe('AdamW on a CUDA policy', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  it('steps the device weights as it steps the CPU weights (clipping, decay groups, state round trip)', () => {
    const r = rng('adamw cuda');
    const config = CONFIGS.qwenTied;
    const seed = r.int(0, 1e9);
    const policies = [Policy.random(config, { seed, initializerRange: 0.25 }), Policy.random(config, { seed, initializerRange: 0.25, device: DEVICE! })];
    const grads = Float32Array.from({ length: policies[0].numParameters }, () => r.normal());
    const after = policies.map((policy) => {
      const { parameters, gradients } = policy.tensors();
      const opt = new AdamW(parameters, gradients, { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 });
      const results = [];
      for (let step = 0; step < 3; step++) {
        policy.gradientBuffer.copyFrom(Tensor.from(grads.map((x) => x * (step + 1))));
        results.push(opt.step());
      }
      const state = opt.state();
      const opt2 = new AdamW(parameters, gradients, { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 });
      opt2.loadState(state);
      assert.deepEqual(opt2.state().moments, state.moments, 'moments after a state round trip');
      return { results, params: Float32Array.from((policy.parameterBuffer.isCuda ? policy.parameterBuffer.to('cpu') : policy.parameterBuffer).data as Float32Array) };
    });
    for (let i = 0; i < 3; i++) {
      assertClose(after[1].results[i].gradNorm, after[0].results[i].gradNorm, { atol: 0, rtol: 1e-6 }, `grad norm, step ${i + 1}`);
      assert.equal(after[1].results[i].clipped, after[0].results[i].clipped);
    }
    assertClose(after[1].params, after[0].params, { atol: 1e-6, rtol: 1e-6 }, 'weights after 3 steps');
    for (const p of policies) p.dispose();
  });
});


describe('device memory in the training loop', { skip: DEVICE ? false : 'no CUDA device in this build' }, () => {
  it('a step at the shape of the previous one makes no cudaMalloc (freed blocks are reused)', () => {
    const config = CONFIGS.qwenTied;
    const policy = Policy.random(config, { seed: 3, initializerRange: 0.25, device: DEVICE! });
    const { parameters, gradients } = policy.tensors();
    const opt = new AdamW(parameters, gradients, { lr: 1e-3, maxGradNorm: 1 });
    const rows = [[1, 5, 9, 2, 3], [7, 3, 1]];
    const step = () => {
      policy.zeroGrad();
      const f = policy.forward({ ids: rows });
      const N = rows.length * f.seq;
      const y = Tensor.from(Int32Array.from({ length: N }, (_, i) => (i * 7) % config.vocabSize)).to(DEVICE!);
      const lp = linearTokenLogprobs(f.hidden, policy.lmHeadWeight, y);
      const g = Tensor.from(new Float32Array(N).fill(-0.1)).to(DEVICE!);
      const back = linearTokenLogprobsBackward(f.hidden, policy.lmHeadWeight, y, lp.lse, g);
      policy.backward(back.gradHidden, { gradLmHead: back.gradWeight });
      const result = opt.step();
      for (const t of [y, g, lp.logprobs, lp.lse, back.gradHidden, back.gradWeight]) (t as Tensor).dispose();
      return result;
    };
    step();
    step();
    const before = cudaMemoryStats(DEVICE!);
    for (let i = 0; i < 3; i++) assert.ok(Number.isFinite(step().gradNorm));
    const after = cudaMemoryStats(DEVICE!);
    assert.equal(after.mallocCalls, before.mallocCalls, 'cudaMalloc calls during steps 3–5');
    assert.ok(after.reusedBlocks > before.reusedBlocks, 'the steps allocate through the cache');
    opt.dispose();
    policy.dispose();
    const released = cudaMemoryStats(DEVICE!);
    emptyCudaCache(DEVICE!);
    assert.equal(cudaMemoryStats(DEVICE!).cachedBytes, 0);
    assert.ok(released.cachedBytes > 0);
  });

  it('probes gradHidden and gradLmHead for NaN/Inf on the device, padding ignored, before touching the gradients', () => {
    const config = CONFIGS.qwenTied;
    const policy = Policy.random(config, { seed: 4, initializerRange: 0.25, device: DEVICE! });
    const D = config.hiddenSize, V = config.vocabSize;
    policy.forward({ ids: [[1, 2, 3, 4], [5, 6], [7, 8, 9]] });  // T = 4; row 1 has 2 padded positions
    const onDevice = (a: Float32Array, shape: number[]) => Tensor.from(a, shape).to(DEVICE!);
    const grad = new Float32Array(3 * 4 * D);
    grad[(1 * 4 + 3) * D + 2] = NaN;  // row 1, a padded position: ignored
    policy.backward(onDevice(grad, [12, D]));
    grad[(2 * 4 + 2) * D + D - 1] = Infinity;  // row 2, its last real token
    grad[(0 * 4 + 0) * D] = 1;
    const before = Float32Array.from(policy.gradientBuffer.to('cpu').data as Float32Array);
    assert.throws(() => policy.backward(onDevice(grad, [12, D])), /^RangeError: gradHidden: row 2 holds a NaN or infinite value/);
    grad[(2 * 4 + 2) * D + D - 1] = 0;
    const head = new Float32Array(V * D);
    head[(V - 1) * D + 5] = -Infinity;
    head[7 * D] = NaN;
    assert.throws(() => policy.backward(onDevice(grad, [12, D]), { gradLmHead: onDevice(head, [V, D]) }), /^RangeError: gradLmHead: row 7 holds a NaN or infinite value/);
    assert.deepEqual(policy.gradientBuffer.to('cpu').data, before, 'a rejected call must not touch the gradients');
    policy.dispose();
  });

});
