// `lgrpo-native bench --engine --device cuda:N`: the policy engine on a GPU, end to end,
// and PyTorch (eager, bf16 autocast, fp32 master weights) on the same device in the same run.
//
// Per model configuration:
// - the training step of a GRPO trainer with everything on the device: Policy.forward →
//   linearTokenLogprobs (LM head fused with the log-prob) → grpoLoss → its backward →
//   Policy.backward → AdamW (global-norm clipping); each phase ends with a device
//   synchronisation, so the phase times are the device's, not the launch queue's;
// - batched decoding with the KV cache (Policy.generate), as a rollout runs it;
// - model FLOP/s against two ceilings measured in this run: the engine's f32 GEMM (cuBLASLt or its own) at a
//   large square size, and, when PyTorch runs here, the device's bf16 matmul rate
//   (cuBLAS); decoding's bytes read per second (weights, plus the KV cache each step
//   reads) against the device's copy bandwidth measured here.
// CPU and CUDA differ only in where the policy lives: the step is the one the CPU bench
// times, with the per-token values kept on the device.
import os from 'node:os';
import { buildInfo, cudaMemoryStats, cudaSynchronize } from '../build_info.js';
import { AdamW } from '../engine/adamw.js';
import { parseConfig, type ModelConfig } from '../engine/config.js';
import { Policy } from '../engine/policy.js';
import { gemm } from '../ops/gemm.js';
import { grpoLoss } from '../ops/grpo_loss.js';
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../ops/linear_token_logprobs.js';
import { Tensor, type Device } from '../tensor.js';
import {
  DECODE_TEMPERATURE, OPTIMIZER, QWEN2, QWEN25_05B, findTorch, grpoStepInputs, modelStateBytes, runTorch, timing, torchSpec, trainingFlops,
  type EngineCase, type FlopCount, type TorchAvailability, type TorchCaseResult,
} from './engine.js';
import { fillUniform, formatBytes, measureDeviceCopy, median, randomInts, timeIt, type Timing, type TimingOptions } from './harness.js';


export interface CudaEngineCase extends EngineCase {
  /** keep one layer's activations (Policy recompute) */
  recompute: boolean;
  /** decoding batch (rollouts decode many rows together) */
  decodeBatch: number;
}

/** The issue's sizes: Qwen2.5-0.5B and -1.5B shapes, B×T = 16×1024, decoding 64 rows. */
export const CUDA_ENGINE_CASES: readonly CudaEngineCase[] = [
  {
    name: 'qwen2.5-0.5b',
    ...QWEN25_05B,
    batch: 16, seq: 1024, promptLength: 128, maxNewTokens: 128, decodeBatch: 64, recompute: false,
    trainTiming: timing(1, 3, 0, 60), decodeTiming: timing(1, 2, 0, 60), gemmTiming: timing(1, 3, 0, 10),
  },
  {
    name: 'qwen2.5-1.5b',
    description: "Qwen2.5-1.5B's shape: 28 layers, hidden 1536, 12 heads / 2 KV heads, MLP 8960, V 151936, tied; random weights",
    config: {
      ...QWEN2, hidden_size: 1536, intermediate_size: 8960, num_hidden_layers: 28, num_attention_heads: 12,
      num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true,
    },
    batch: 16, seq: 1024, promptLength: 128, maxNewTokens: 128, decodeBatch: 64, recompute: true,
    trainTiming: timing(1, 2, 0, 90), decodeTiming: timing(1, 2, 0, 60), gemmTiming: timing(1, 3, 0, 10),
  },
];

/** CI sizes, for the emulated cuda:0 (its timings mean nothing; the path is what is checked). */
export const CUDA_ENGINE_CASES_QUICK: readonly CudaEngineCase[] = [
  {
    name: 'qwen-shape-quick',
    description: 'CI size, Qwen-like: 2 layers, hidden 64, 4 heads / 2 KV heads, MLP 172, V 1000, tied',
    config: {
      ...QWEN2, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, vocab_size: 1000, tie_word_embeddings: true,
    },
    batch: 2, seq: 12, promptLength: 4, maxNewTokens: 3, decodeBatch: 3, recompute: false,
    trainTiming: timing(1, 1, 0, 1), decodeTiming: timing(1, 1, 0, 1), gemmTiming: timing(1, 1, 0, 1),
  },
];

export interface CudaEngineCaseResult {
  name: string;
  description: string;
  parameters: number;
  batch: number;
  seq: number;
  recompute: boolean;
  train: Timing & {
    tokensPerS: number;
    phases: Record<string, number>;
    flops: FlopCount;
    gflopPerS: number;
    /** of the engine's f32 GEMM rate (cuBLASLt or its own kernel, as device.gemm says) measured in this run */
    fractionOfOwnGemm: number;
    /** of PyTorch's bf16 matmul rate on this device, measured in this run (when it ran) */
    fractionOfBf16Matmul?: number;
    loss: number;
  };
  decode: Timing & {
    batch: number;
    promptLength: number;
    newTokens: number;
    tokensPerS: number;
    /** weights and KV cache read per second (f32 weights every step, each row's cache so far) */
    bytesPerS: number;
    fractionOfCopyBandwidth: number;
  };
  memory: { modelStateBytes: number; trainingArenaBytes: number; inferenceArenaBytes: number; deviceInUseBytes: number; cudaMallocCalls: number };
  torch?: TorchCaseResult & { device?: string; matmulTflops?: number; peakDeviceBytes?: number };
  torchSkipped?: string;
  /** lgrpo-native tokens/s ÷ PyTorch tokens/s */
  ratio?: { train: number; decode: number };
}

export interface CudaEngineBenchReport {
  schema: 'lgrpo-native-engine-bench-cuda/1';
  quick: boolean;
  device: { name: string; index: number; totalMemory: number; emulated: boolean; gemm: string };
  /** the engine's f32 GEMM at n×n×n, GFLOP/s, measured in this run */
  ownGemmGflops: number;
  ownGemmSize: number;
  /** device-to-device copy bandwidth (read + write bytes per second), measured in this run */
  copyGBs: number;
  /** the best bf16 matmul rate PyTorch reported in this run (TFLOP/s) */
  bf16MatmulTflops?: number;
  torch: TorchAvailability;
  cases: CudaEngineCaseResult[];
  skipped: { case: string; reason: string }[];
  errors: { case: string; message: string }[];
}

export interface CudaEngineBenchOptions {
  device: Device;
  quick?: boolean;
  only?: readonly string[];
  torch?: boolean;
  log?: (message: string) => void;
}

class SkipCase extends Error {}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function ownGemmRate(device: Device, n: number, t: Required<TimingOptions>): number {
  const a = Tensor.from(fillUniform(new Float32Array(n * n), -1, 1, 1), [n, n]).to(device);
  const b = Tensor.from(fillUniform(new Float32Array(n * n), -1, 1, 2), [n, n]).to(device);
  const c = Tensor.zeros([n, n], 'f32', device);
  try {
    const r = timeIt(() => { gemm(a, b, c, { transB: true }); cudaSynchronize(device); }, t);
    return (2 * n ** 3) / (r.medianMs / 1000) / 1e9;
  } finally {
    for (const x of [a, b, c]) x.dispose();
  }
}

/** Bytes one decoding call reads: f32 weights once per pass, and each row's KV cache so far per new token. */
function decodeBytes(cfg: ModelConfig, linearWeights: number, c: CudaEngineCase): number {
  const kvPerToken = cfg.numHiddenLayers * 2 * cfg.numKeyValueHeads * cfg.headDim * 4;
  let kv = 0;
  for (let step = 1; step < c.maxNewTokens; step++) kv += c.decodeBatch * (c.promptLength + step) * kvPerToken;
  return 4 * linearWeights * c.maxNewTokens + kv;
}

function trainStep(policy: Policy, c: CudaEngineCase, device: Device) {
  const B = c.batch, T = c.seq, N = B * T, V = policy.config.vocabSize;
  const inputs = grpoStepInputs(B, T, V);
  const idsT = Tensor.from(inputs.ids, [B, T]);
  const targetsT = Tensor.from(inputs.targets).to(device);
  const advantages = Tensor.from(inputs.advantages).to(device);
  const mask = Tensor.from(inputs.mask, [B, T]).to(device);
  const groupIds = Tensor.from(inputs.groupIds).to(device);
  const head = policy.lmHeadWeight;
  const first = policy.forward({ ids: idsT });
  const lp0 = linearTokenLogprobs(first.hidden, head, targetsT);
  const old0 = lp0.logprobs.to('cpu').data as Float32Array;
  const oldT = Tensor.from(Float32Array.from(old0, (x, i) => x + inputs.oldNoise[i]), [B, T]).to(device);
  lp0.logprobs.dispose();
  lp0.lse.dispose();
  const { parameters, gradients } = policy.tensors();
  const adamw = new AdamW(parameters, gradients, OPTIMIZER);
  const names = ['zeroGrad', 'forward', 'lmHeadLogprobs', 'loss', 'lmHeadBackward', 'backward', 'adamw'] as const;
  const phases = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<(typeof names)[number], number[]>;
  let mark = 0;
  const lap = (name: (typeof names)[number]) => {
    cudaSynchronize(device);
    const now = nowMs();
    phases[name].push(now - mark);
    mark = now;
  };
  return {
    phases,
    step(): number {
      mark = nowMs();
      policy.zeroGrad();
      lap('zeroGrad');
      const { hidden } = policy.forward({ ids: idsT });
      lap('forward');
      const out = linearTokenLogprobs(hidden, head, targetsT);
      lap('lmHeadLogprobs');
      const logprobs = out.logprobs.view(0, [B, T]);
      const loss = grpoLoss({ logprobs, oldLogprobs: oldT, advantages, mask, groupIds, aggregation: 'grpo' });
      lap('loss');
      const gradLogprobs = (loss.gradLogprobs as Tensor).view(0, [N]);
      const g = linearTokenLogprobsBackward(hidden, head, targetsT, out.lse, gradLogprobs);
      lap('lmHeadBackward');
      policy.backward(g.gradHidden as Tensor, { gradLmHead: g.gradWeight as Tensor });
      lap('backward');
      adamw.step();
      lap('adamw');
      for (const t of [out.logprobs, out.lse, g.gradHidden, g.gradWeight, loss.gradLogprobs, loss.seqLoss, loss.weights, loss.dWeightsDLambda, loss.lengths])
        if (t instanceof Tensor) t.dispose();
      return loss.loss;
    },
    dispose(): void {
      adamw.dispose();
      for (const t of [targetsT, advantages, mask, groupIds, oldT]) t.dispose();
    },
  };
}

async function runCase(
  c: CudaEngineCase, device: Device, ceilings: { ownGemmGflops: number; copyGBs: number },
  torch: TorchAvailability, log: (m: string) => void,
): Promise<CudaEngineCaseResult> {
  const cfg = parseConfig(c.config, c.name);
  const stateBytes = modelStateBytes(cfg);
  const index = Number(device.slice(5));
  const total = buildInfo().cudaDevices.find((d) => d.index === index)?.totalMemory ?? 0;
  if (stateBytes * 1.3 > total)
    throw new SkipCase(`needs more than ${formatBytes(stateBytes * 1.3)} of device memory (f32 parameters, gradients, AdamW moments, activations); ${device} has ${formatBytes(total)}`);
  log(`${c.name}: building a random policy on ${device} (${c.description}); model state ${formatBytes(stateBytes)}...`);
  const policy = Policy.random(c.config, { seed: 0, device, recompute: c.recompute });
  const flops = trainingFlops(cfg, c.batch, c.seq);
  const recomputeFlops = c.recompute ? flops.total / 3 : 0;  // one more forward of every layer
  let result: CudaEngineCaseResult;
  try {
    log(`${c.name}: training step B=${c.batch} T=${c.seq}${c.recompute ? ' (recompute)' : ''}, ${(flops.total / 1e9).toFixed(0)} model GFLOP per step...`);
    const setup = trainStep(policy, c, device);
    let loss = NaN;
    let t: Timing;
    try {
      let runs = 0;
      t = timeIt(() => {
        loss = setup.step();
        runs++;
        log(`  ${runs > c.trainTiming.warmup ? `step ${runs - c.trainTiming.warmup}` : 'warm-up step'}: loss ${loss.toFixed(4)}`);
      }, c.trainTiming);
    } finally {
      setup.dispose();
    }
    if (!Number.isFinite(loss)) throw new Error(`the training loss is ${loss}`);
    const phases = Object.fromEntries(Object.entries(setup.phases).map(([k, v]) => [`${k}Ms`, median(v.slice(c.trainTiming.warmup))]));
    const gflopPerS = flops.total / (t.medianMs / 1000) / 1e9;
    const trainingArenaBytes = policy.stats().trainingBytes;
    log(`${c.name}: training ${t.medianMs.toFixed(0)} ms median: ${((c.batch * c.seq) / (t.medianMs / 1000)).toFixed(0)} tokens/s, ` +
      `${gflopPerS.toFixed(0)} model GFLOP/s (${(100 * gflopPerS / ceilings.ownGemmGflops).toFixed(0)}% of the engine's f32 GEMM rate)` +
      (recomputeFlops ? `; recompute adds ${(recomputeFlops / 1e9).toFixed(0)} GFLOP not counted` : ''));

    const prompts = Array.from({ length: c.decodeBatch }, (_, b) => Array.from(randomInts(c.promptLength, cfg.vocabSize, 0x777 + b)));
    log(`${c.name}: decoding B=${c.decodeBatch}, prompt ${c.promptLength}, ${c.maxNewTokens} new tokens per row...`);
    let made = 0;
    const d = timeIt(() => {
      const out = policy.generate(prompts, { maxNewTokens: c.maxNewTokens, temperature: DECODE_TEMPERATURE, stopIds: [], seed: 7 });
      made = out.tokens.reduce((s, r) => s + r.length, 0);
      for (const lp of out.logprobs) for (const x of lp) if (!Number.isFinite(x)) throw new Error(`generate: a sampled token has log-prob ${x}`);
    }, c.decodeTiming);
    if (made !== c.decodeBatch * c.maxNewTokens) throw new Error(`generate made ${made} tokens, expected ${c.decodeBatch * c.maxNewTokens}`);
    const bytesPerS = decodeBytes(cfg, flops.linearWeights, c) / (d.medianMs / 1000);
    log(`${c.name}: decoding ${d.medianMs.toFixed(0)} ms median: ${(made / (d.medianMs / 1000)).toFixed(0)} tokens/s, ${(bytesPerS / 1e9).toFixed(0)} GB/s read`);
    const mem = cudaMemoryStats(device);
    result = {
      name: c.name, description: c.description, parameters: policy.numParameters, batch: c.batch, seq: c.seq, recompute: c.recompute,
      train: {
        ...t, tokensPerS: (c.batch * c.seq) / (t.medianMs / 1000), phases, flops, gflopPerS,
        fractionOfOwnGemm: gflopPerS / ceilings.ownGemmGflops, loss,
      },
      decode: {
        ...d, batch: c.decodeBatch, promptLength: c.promptLength, newTokens: made, tokensPerS: made / (d.medianMs / 1000),
        bytesPerS, fractionOfCopyBandwidth: bytesPerS / 1e9 / ceilings.copyGBs,
      },
      memory: {
        modelStateBytes: stateBytes, trainingArenaBytes, inferenceArenaBytes: policy.stats().inferenceBytes,
        deviceInUseBytes: mem.inUseBytes, cudaMallocCalls: mem.mallocCalls,
      },
    };
  } finally {
    policy.dispose();
  }

  if (!torch.available) {
    result.torchSkipped = torch.reason;
  } else {
    log(`${c.name}: PyTorch on ${device} (bf16 autocast, fp32 master weights)...`);
    try {
      const spec = { ...torchSpec(c, cfg, 1), device, decodeBatch: c.decodeBatch };
      const r = await runTorch(torch.python!, spec, log, 600_000) as CudaEngineCaseResult['torch'] & TorchCaseResult;
      result.torch = r;
      result.ratio = { train: result.train.tokensPerS / r.train.tokensPerS, decode: result.decode.tokensPerS / r.decode.tokensPerS };
      if (r.matmulTflops) result.train.fractionOfBf16Matmul = result.train.gflopPerS / (r.matmulTflops * 1000);
    } catch (e) {
      result.torchSkipped = `PyTorch baseline failed: ${e instanceof Error ? e.message : String(e)}`;
      log(`${c.name}: ${result.torchSkipped}`);
    }
  }
  return result;
}

export async function runCudaEngineBench(options: CudaEngineBenchOptions): Promise<CudaEngineBenchReport> {
  const { device } = options;
  const quick = options.quick ?? false;
  const log = options.log ?? (() => {});
  const info = buildInfo();
  const index = Number(device.slice(5));
  const dev = info.cudaDevices.find((d) => d.index === index);
  if (!info.cuda) throw new Error(`device: ${device} requested but this addon was built without CUDA`);
  if (!dev) throw new Error(`device: ${device} is not available (${info.cudaUnavailable || `usable devices: ${info.cudaDevices.map((d) => `cuda:${d.index}`).join(', ')}`})`);
  const all = quick ? CUDA_ENGINE_CASES_QUICK : CUDA_ENGINE_CASES;
  for (const n of options.only ?? [])
    if (!all.some((c) => c.name === n)) throw new RangeError(`only: unknown engine configuration '${n}'; expected ${all.map((c) => c.name).join(', ')}`);
  const cases = all.filter((c) => !options.only || options.only.includes(c.name));

  const gemmSize = quick ? 96 : 8192;
  log(`engine (cuda): the engine's f32 GEMM at ${gemmSize}³ on ${device}...`);
  const ownGemmGflops = ownGemmRate(device, gemmSize, quick ? timing(1, 1, 0, 1) : timing(2, 5, 1, 20));
  const copyBytes = quick ? 1 << 20 : 2 ** 31;
  const copyGBs = measureDeviceCopy(device, copyBytes, quick ? timing(1, 1, 0, 1) : timing(2, 10, 1, 10)).copyGBs;
  log(`engine (cuda): f32 GEMM (${info.cudaMatmul}) ${ownGemmGflops.toFixed(0)} GFLOP/s; device copy ${copyGBs.toFixed(0)} GB/s (read + write, ${formatBytes(copyBytes)})`);

  let torch: TorchAvailability;
  if (options.torch === false) torch = { available: false, reason: 'comparison not requested (--no-torch)' };
  else if (info.cudaEmulated) torch = { available: false, reason: 'the emulated cuda:0 is not a device PyTorch can use' };
  else torch = findTorch();

  const results: CudaEngineCaseResult[] = [];
  const skipped: { case: string; reason: string }[] = [];
  const errors: { case: string; message: string }[] = [];
  for (const c of cases) {
    const started = nowMs();
    try {
      results.push(await runCase(c, device, { ownGemmGflops, copyGBs }, torch, log));
      log(`${c.name}: done in ${((nowMs() - started) / 1000).toFixed(1)} s`);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (e instanceof SkipCase) skipped.push({ case: c.name, reason: message });
      else errors.push({ case: c.name, message });
      log(`${c.name}: ${e instanceof SkipCase ? 'skipped' : 'FAILED'}: ${message}`);
    }
  }
  const bf16 = results.map((r) => r.torch?.matmulTflops).filter((x): x is number => typeof x === 'number');
  return {
    schema: 'lgrpo-native-engine-bench-cuda/1',
    quick,
    device: { name: dev.name, index, totalMemory: dev.totalMemory, emulated: info.cudaEmulated, gemm: info.cudaMatmul },
    ownGemmGflops,
    ownGemmSize: gemmSize,
    copyGBs,
    bf16MatmulTflops: bf16.length ? Math.max(...bf16) : undefined,
    torch,
    cases: results,
    skipped,
    errors,
  };
}

export function formatCudaEngineReport(r: CudaEngineBenchReport): string {
  const lines: string[] = [];
  const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : `${(100 * x).toFixed(0)}%`);
  lines.push(`lgrpo-native engine bench on ${r.device.name} (cuda:${r.device.index}, ${formatBytes(r.device.totalMemory)})` +
    (r.device.emulated ? ' — EMULATED device: the timings mean nothing, only that every path runs' : ''));
  lines.push(`host: ${os.cpus()[0]?.model ?? 'unknown CPU'}; matrix products: ${r.device.gemm}`);
  lines.push(`ceilings measured in this run: the engine's f32 GEMM (${r.device.gemm}) ${r.ownGemmGflops.toFixed(0)} GFLOP/s at ${r.ownGemmSize}³; device copy ${r.copyGBs.toFixed(0)} GB/s` +
    (r.bf16MatmulTflops ? `; PyTorch bf16 matmul ${r.bf16MatmulTflops.toFixed(0)} TFLOP/s (8192³)` : ''));
  lines.push(`PyTorch: ${r.torch.available ? `${r.torch.version} (${r.torch.python}), eager, bf16 autocast, fp32 master weights` : r.torch.reason}`);
  lines.push('');
  lines.push('| config | params | B×T | step ms | tokens/s | model GFLOP/s | of engine GEMM | of bf16 matmul | torch step ms | torch tokens/s | lgrpo/torch |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const c of r.cases)
    lines.push(`| ${c.name}${c.recompute ? ' (recompute)' : ''} | ${(c.parameters / 1e6).toPrecision(3)} M | ${c.batch}×${c.seq} | ${c.train.medianMs.toFixed(0)} | ${c.train.tokensPerS.toFixed(0)} | ` +
      `${c.train.gflopPerS.toFixed(0)} | ${pct(c.train.fractionOfOwnGemm)} | ${pct(c.train.fractionOfBf16Matmul)} | ` +
      `${c.torch ? c.torch.train.medianMs.toFixed(0) : '-'} | ${c.torch ? c.torch.train.tokensPerS.toFixed(0) : '-'} | ${c.ratio ? `${c.ratio.train.toFixed(2)}×` : '-'} |`);
  lines.push('');
  lines.push('| config | rows | prompt | new/row | ms | tokens/s | GB/s read | of copy bandwidth | torch ms | torch tokens/s | lgrpo/torch |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const c of r.cases)
    lines.push(`| ${c.name} | ${c.decode.batch} | ${c.decode.promptLength} | ${c.decode.newTokens / c.decode.batch} | ${c.decode.medianMs.toFixed(0)} | ${c.decode.tokensPerS.toFixed(0)} | ` +
      `${(c.decode.bytesPerS / 1e9).toFixed(0)} | ${pct(c.decode.fractionOfCopyBandwidth)} | ${c.torch ? c.torch.decode.medianMs.toFixed(0) : '-'} | ` +
      `${c.torch ? c.torch.decode.tokensPerS.toFixed(0) : '-'} | ${c.ratio ? `${c.ratio.decode.toFixed(2)}×` : '-'} |`);
  lines.push('');
  for (const c of r.cases) {
    lines.push(`${c.name}: step phases (ms, each ended by a device synchronisation): ${Object.entries(c.train.phases).map(([k, v]) => `${k.replace(/Ms$/, '')} ${v.toFixed(1)}`).join(', ')}`);
    lines.push(`${c.name}: memory: model state ${formatBytes(c.memory.modelStateBytes)}, training arena ${formatBytes(c.memory.trainingArenaBytes)}, ` +
      `inference arena ${formatBytes(c.memory.inferenceArenaBytes)}, device in use ${formatBytes(c.memory.deviceInUseBytes)}` +
      (c.torch?.peakDeviceBytes ? `; PyTorch peak ${formatBytes(c.torch.peakDeviceBytes)}` : ''));
  }
  lines.push('Model FLOPs: 6 · (projection + LM-head weights) · B·T plus causal attention (as bench --engine on the CPU); recompute and the');
  lines.push('LM-head logits recomputed by the fused backward are work the implementation chooses, not counted.');
  lines.push('Decoding bytes: f32 weights read once per pass, plus each row\'s KV cache so far at every new token.');
  for (const c of r.cases) if (c.torchSkipped && r.torch.available) lines.push(`! ${c.name}: ${c.torchSkipped}`);
  for (const k of r.skipped) lines.push(`! ${k.case} skipped: ${k.reason}`);
  for (const e of r.errors) lines.push(`! ${e.case} failed: ${e.message}`);
  return lines.join('\n');
}
