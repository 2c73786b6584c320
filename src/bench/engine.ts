// `lgrpo-native bench --engine`: the policy engine end to end, and what a user would pick
// instead (PyTorch), measured in the same run on the same machine.
//
// Per model configuration:
// - the training step a GRPO trainer runs: Policy.forward → linearTokenLogprobs (LM head
//   fused with the log-prob, logits never held) → grpoLoss ('grpo' aggregation, its
//   gradient w.r.t. the log-probs) → linearTokenLogprobsBackward → Policy.backward →
//   AdamW.step (global-norm clipping, decoupled decay), gradients zeroed first;
// - sampled decoding with the KV cache (Policy.generate);
// - the achieved model GFLOP/s of the training step against the FMA ceiling measured in
//   this process (measurePeakFlops), and GEMM rows at the model's own linear shapes, so a
//   low fraction can be traced to the GEMMs or to everything around them;
// - scripts/bench-torch.py: the same architecture in plain PyTorch, same configuration,
//   batch and threads, timed on the same step and the same decoding, when `python3` can
//   import torch (PyTorch is never a dependency of the package; without it the
//   comparison is skipped and the report says so).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { buildInfo, setNumThreads } from '../build_info.js';
import { AdamW } from '../engine/adamw.js';
import { parameterShapes, parseConfig, type ModelConfig } from '../engine/config.js';
import { Policy } from '../engine/policy.js';
import { gemm, measurePeakFlops } from '../ops/gemm.js';
import { grpoLoss } from '../ops/grpo_loss.js';
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../ops/linear_token_logprobs.js';
import { savesLogits } from '../train/token_pass.js';
import { Tensor } from '../tensor.js';
import { describeMachine, measureCeiling, fillUniform, formatBytes, median, openReadProbe, randomInts, stealMeter, timeAlternating, timeIt, type Ceiling, type Machine, type Timing, type TimingOptions } from './harness.js';

// ---------------------------------------------------------------------------------
// Configurations

export interface EngineCase {
  name: string;
  description: string;
  /** a Hugging Face config.json */
  config: Record<string, unknown>;
  batch: number;
  seq: number;
  /** decoding: rows (default batch) */
  decodeBatch?: number;
  /** decoding: prompt tokens per row */
  promptLength: number;
  /** decoding: new tokens per row (no stop ids, so every row makes all of them) */
  maxNewTokens: number;
  trainTiming: Required<TimingOptions>;
  decodeTiming: Required<TimingOptions>;
  gemmTiming: Required<TimingOptions>;
}

export const QWEN2 = { model_type: 'qwen2', rms_norm_eps: 1e-6, rope_theta: 1_000_000, max_position_embeddings: 32768 };

/** Qwen2.5-0.5B's shape (random weights in the benchmarks); the CUDA bench times it too. */
export const QWEN25_05B = {
  description: "Qwen2.5-0.5B's shape: 24 layers, hidden 896, 14 heads / 2 KV heads, MLP 4864, V 151936, tied; random weights",
  config: {
    ...QWEN2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
    num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true,
  },
};

export const timing = (warmup: number, minRuns: number, minSeconds: number, maxSeconds: number): Required<TimingOptions> =>
  ({ warmup, minRuns, minSeconds, maxSeconds, maxRuns: 10000 });

export const ENGINE_CASES: readonly EngineCase[] = [
  {
    name: 'small',
    description: '4 layers, hidden 256, 8 heads / 2 KV heads, MLP 688, V 8192, untied head',
    config: {
      ...QWEN2, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 8,
      num_key_value_heads: 2, vocab_size: 8192, tie_word_embeddings: false,
    },
    batch: 8, seq: 256, promptLength: 16, maxNewTokens: 32,
    trainTiming: timing(1, 5, 4, 20), decodeTiming: timing(1, 5, 2, 10), gemmTiming: timing(1, 3, 0.3, 3),
  },
  {
    name: 'qwen2.5-0.5b',
    ...QWEN25_05B,
    batch: 2, seq: 64, decodeBatch: 8, promptLength: 16, maxNewTokens: 32,
    trainTiming: timing(1, 2, 0, 40), decodeTiming: timing(1, 5, 0, 20), gemmTiming: timing(1, 2, 0.3, 3),
  },
];

// CI-sized stand-ins for the two: one untied, one tied with grouped heads.
export const ENGINE_CASES_QUICK: readonly EngineCase[] = [
  {
    name: 'small-quick',
    description: 'CI size: 2 layers, hidden 64, 4 heads / 2 KV heads, MLP 172, V 512, untied head',
    config: {
      ...QWEN2, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, vocab_size: 512, tie_word_embeddings: false,
    },
    batch: 2, seq: 32, promptLength: 8, maxNewTokens: 8,
    trainTiming: timing(1, 2, 0.05, 2), decodeTiming: timing(1, 2, 0.05, 2), gemmTiming: timing(1, 2, 0.02, 0.5),
  },
  {
    name: 'qwen-shape-quick',
    description: 'CI size, Qwen-like: 2 layers, hidden 128, 4 heads / 2 KV heads, MLP 688, V 2048, tied',
    config: {
      ...QWEN2, hidden_size: 128, intermediate_size: 688, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, vocab_size: 2048, tie_word_embeddings: true,
    },
    batch: 2, seq: 16, promptLength: 8, maxNewTokens: 4,
    trainTiming: timing(1, 2, 0.05, 2), decodeTiming: timing(1, 2, 0.05, 2), gemmTiming: timing(1, 2, 0.02, 0.5),
  },
];

// The optimiser a GRPO run would use; its values do not change the cost.
export const OPTIMIZER = { lr: 1e-6, weightDecay: 0.01, maxGradNorm: 1.0 };
export const DECODE_TEMPERATURE = 1;

// ---------------------------------------------------------------------------------
// What is counted

export interface FlopCount {
  /** weights multiplied per token: every projection of every layer plus the LM head */
  linearWeights: number;
  /** 6 · linearWeights · tokens (forward 2, backward 4) */
  linear: number;
  /** causal attention: QKᵀ and PV over the keys each query sees, ×3 for training */
  attention: number;
  total: number;
}

/**
 * Model FLOPs of one training step over B full rows of T tokens (the usual "6 · N · tokens
 * plus attention"). Not counted: the embedding lookup (no multiply), norms, RoPE, SwiGLU,
 * softmax, biases, the loss, AdamW, and the LM-head logits linearTokenLogprobsBackward
 * recomputes when the forward did not keep them (a further 2 · V · D per token): work the
 * implementation chooses to do does not make the model bigger.
 */
export function trainingFlops(cfg: ModelConfig, batch: number, seq: number): FlopCount {
  const D = cfg.hiddenSize, I = cfg.intermediateSize, L = cfg.numHiddenLayers;
  const qWidth = cfg.numAttentionHeads * cfg.headDim, kvWidth = cfg.numKeyValueHeads * cfg.headDim;
  const perLayer = D * qWidth + 2 * D * kvWidth + qWidth * D + 3 * D * I;
  const linearWeights = L * perLayer + cfg.vocabSize * D;
  const linear = 6 * linearWeights * batch * seq;
  // Query t sees t + 1 keys: Σ_t (t+1) = T(T+1)/2 pairs per head, 2·hd FLOPs each for QKᵀ
  // and again for PV, and training is three such passes.
  const attention = 3 * L * batch * cfg.numAttentionHeads * 4 * cfg.headDim * (seq * (seq + 1)) / 2;
  return { linearWeights, linear, attention, total: linear + attention };
}

// ---------------------------------------------------------------------------------
// Results

export interface EngineTrainResult {
  medianMs: number;
  minMs: number;
  runs: number;
  /** B · T / median step time */
  tokensPerS: number;
  /** median ms of each part of the step */
  phases: {
    zeroGradMs: number;
    forwardMs: number;
    lmHeadLogprobsMs: number;
    lossMs: number;
    lmHeadBackwardMs: number;
    backwardMs: number;
    adamwMs: number;
  };
  flops: FlopCount;
  gflopPerS: number;
  /** gflopPerS / the FMA ceiling */
  fractionOfPeak: number;
  /** the loss of the last timed step (a sanity check that it is finite) */
  loss: number;
}

export interface EngineDecodeResult {
  medianMs: number;
  minMs: number;
  runs: number;
  /** B · maxNewTokens / median time of one generate() call, prefill included */
  tokensPerS: number;
  newTokens: number;
  promptTokens: number;
  /**
   * Linear weights (every projection + the LM head) streamed per second, in the bytes the
   * rollout reads (f32: 4 per weight, bf16: 2): each of the maxNewTokens passes (prefill,
   * then one per further token) reads them all once, and at small B that read, not the
   * FLOPs, bounds decoding.
   */
  weightGBs: number;
  /** weightGBs ÷ the read bandwidth measured in this run (NaN when it was not measured) */
  fractionOfRead: number;
  /** median ms of the same call with maxNewTokens 1: the prefill of the prompts and the first draw */
  prefillMs: number;
  /**
   * The decoding steps alone: weights × bytes × (maxNewTokens − 1) / (medianMs − prefillMs),
   * what the few-row kernels stream once the prompt is in the cache (the call's weightGBs
   * also carries the compute-bound prefill)
   */
  stepWeightGBs: number;
  /** stepWeightGBs ÷ the read bandwidth of this run */
  stepFractionOfRead: number;
  /**
   * The read bandwidth beside these calls: the median of ReadProbe measurements taken
   * between the rounds of the decode timings (before each round and after the last), so at
   * the moments the calls ran. The run's best read (fractionOfRead's) is the most the host
   * gave at any moment of the run.
   */
  readBesideGBs: number;
  /** weightGBs ÷ readBesideGBs */
  fractionOfReadBeside: number;
  /** stepWeightGBs ÷ readBesideGBs */
  stepFractionOfReadBeside: number;
  /** rows decoded at once */
  batch: number;
}

export interface EngineGemmRow {
  name: string;
  /** 'M×N×K op' */
  shape: string;
  medianMs: number;
  minMs: number;
  runs: number;
  gflopPerS: number;
  fractionOfPeak: number;
}

export interface TorchCaseResult {
  torch: string;
  python: string;
  threads: number;
  blasLibraries: string[];
  /** OpenBLAS's kernel (openblas_get_corename) when OpenBLAS is the BLAS */
  blasCore?: string;
  attention: string;
  kvCache: boolean;
  parameters: number;
  train: { medianMs: number; minMs: number; runs: number; tokensPerS: number; phases: { forwardLossMs: number; backwardMs: number; optimizerMs: number } };
  decode: { medianMs: number; minMs: number; runs: number; tokensPerS: number; newTokens: number };
  peakRssBytes: number;
}

export interface EngineCaseResult {
  name: string;
  description: string;
  model: {
    hiddenSize: number; intermediateSize: number; layers: number; heads: number; kvHeads: number; headDim: number;
    vocabSize: number; tied: boolean; parameters: number;
  };
  batch: number;
  seq: number;
  promptLength: number;
  maxNewTokens: number;
  memory: {
    /** parameters, gradients and the two AdamW moments: 4 f32 copies of the model */
    modelStateBytes: number;
    /** the engine's training activation arena (Policy.stats().trainingBytes) */
    trainingArenaBytes: number;
    inferenceArenaBytes: number;
    /** the process's resident-set high-water mark after this configuration */
    peakRssBytes: number;
  };
  train: EngineTrainResult;
  decode: EngineDecodeResult;
  /** the share of CPU time the hypervisor stole while the training steps, the decode calls and
   * the PyTorch baseline ran (/proc/stat; undefined off Linux): above a percent or so, the
   * machine was not quiet */
  steal?: { train?: number; decode?: number; torch?: number };
  /** the same decoding with generate({precision: 'bf16'}): weights read from a bf16 copy */
  decodeBf16: EngineDecodeResult;
  /** bf16 decoding's speed over f32's: the median over rounds (the two calls alternate) of
   * the f32 call's time ÷ the bf16 call's in the same round */
  bf16Speedup: number;
  gemm: EngineGemmRow[];
  /** the PyTorch baseline (absent when skipped; see torchSkipped) */
  torch?: TorchCaseResult;
  torchSkipped?: string;
  /** lgrpo-native tokens/s ÷ PyTorch tokens/s: > 1 means lgrpo-native is faster */
  ratio?: { train: number; decode: number };
}

export interface TorchAvailability {
  available: boolean;
  python?: string;
  version?: string;
  /** why the comparison was skipped */
  reason?: string;
}

export interface EngineBenchReport {
  schema: 'lgrpo-native-engine-bench/1';
  quick: boolean;
  machine: Machine;
  loadAverageAtEnd: number[];
  threads: number;
  /** streaming read and copy bandwidth measured in this run (harness.measureCeiling): of the
   * measurements before and after the configurations, the one with the best read */
  bandwidth: Ceiling;
  /** read and copy GB/s of each bandwidth measurement (before, after) */
  bandwidthSamples: { readGBs: number; copyGBs: number }[];
  /** the FMA ceiling (GFLOP/s): the best of the measurements before and after the cases */
  peakGflops: number;
  peakGflopsSamples: number[];
  flopNote: string;
  torch: TorchAvailability;
  cases: EngineCaseResult[];
  /** configurations this machine cannot hold (not errors) */
  skipped: { case: string; reason: string }[];
  errors: { case: string; message: string }[];
}

export interface EngineBenchOptions {
  quick?: boolean;
  /** case names to run (default all of the selected size) */
  only?: readonly string[];
  /** compare with PyTorch when it can be imported; default true */
  torch?: boolean;
  threads?: number;
  log?: (message: string) => void;
}

// ---------------------------------------------------------------------------------
// PyTorch

const TORCH_SCRIPT = fileURLToPath(new URL('../../../scripts/bench-torch.py', import.meta.url));

/**
 * The first Python that imports torch: $LGRPO_BENCH_PYTHON, then `python3` on PATH, then
 * /usr/bin/python3 (Debian's python3-torch installs there, which a pyenv `python3` on PATH
 * does not see).
 */
export function findTorch(): TorchAvailability {
  if (!existsSync(TORCH_SCRIPT)) return { available: false, reason: `${TORCH_SCRIPT} is missing` };
  const candidates = [...new Set([process.env.LGRPO_BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p))];
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 120_000 });
    if (r.status === 0) return { available: true, python, version: r.stdout.trim() };
  }
  return {
    available: false,
    reason: `PyTorch is not installed (\`import torch\` failed with ${candidates.join(', ')}); comparison skipped. ` +
      'For the comparison only: apt-get install python3-torch libopenblas0-openmp (Debian), or pip install torch; LGRPO_BENCH_PYTHON picks the interpreter.',
  };
}

export function runTorch(python: string, spec: Record<string, unknown>, log: (m: string) => void, timeoutMs: number): Promise<TorchCaseResult> {
  return new Promise((resolve, reject) => {
    // Some machines set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) for old OpenBLAS builds; they
    // hold a current OpenBLAS to a generic kernel, so the PyTorch side runs without them
    // (bench-torch.py reports the kernel OpenBLAS then chose). Only that process: the
    // engine's own run and the tests keep the machine's settings.
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const child = spawn(python, [TORCH_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '', stderrTail = '', pending = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the PyTorch baseline ran past ${timeoutMs / 1000} s and was stopped`));
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderrTail = (stderrTail + d).slice(-4000);
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) if (line.trim()) log(`  ${line}`);
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`bench-torch.py exited with ${code}: ${stderrTail.trim().split('\n').slice(-3).join(' | ')}`));
      try {
        resolve(JSON.parse(stdout) as TorchCaseResult);
      } catch {
        reject(new Error(`bench-torch.py printed no JSON: ${stdout.slice(0, 200)}`));
      }
    });
    child.stdin.end(JSON.stringify(spec));
  });
}

// ---------------------------------------------------------------------------------
// The lgrpo-native side

class SkipCase extends Error {}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function dataOf(t: unknown): Float32Array {
  return (t as Tensor).data as Float32Array;
}

interface TrainSetup {
  step(): number;
  phases: Record<keyof EngineTrainResult['phases'], number[]>;
  dispose(): void;
}

/** One GRPO-style training step over B full rows, as a trainer runs it. */
/**
 * The inputs of the benchmarked GRPO step over B full rows of T tokens: random ids, each
 * row's next tokens as targets, advantages in [−1, 1], groups of 4, every token scored;
 * host arrays, the same on every device.
 */
export function grpoStepInputs(B: number, T: number, V: number) {
  const N = B * T;
  const ids = randomInts(N, V, 0x1234);
  const targets = new Int32Array(N);
  const extra = randomInts(B, V, 0x5678);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : extra[b];
  const groupSize = Math.min(4, B);
  return {
    ids, targets,
    advantages: fillUniform(new Float32Array(B), -1, 1, 0x9abc),
    mask: new Uint8Array(N).fill(1),
    groupIds: Int32Array.from({ length: B }, (_, b) => Math.floor(b / groupSize)),
    /** nudges of the old log-probs, so the ratios are not all exactly 1 */
    oldNoise: fillUniform(new Float32Array(N), -0.05, 0.05, 0xdef0),
  };
}

function trainStep(policy: Policy, c: EngineCase): TrainSetup {
  const B = c.batch, T = c.seq, N = B * T, V = policy.config.vocabSize;
  const inputs = grpoStepInputs(B, T, V);
  const idsT = Tensor.from(inputs.ids, [B, T]);
  const targetsT = Tensor.from(inputs.targets);
  const advantages = Tensor.from(inputs.advantages);
  const mask = Tensor.from(inputs.mask, [B, T]);
  const groupIds = Tensor.from(inputs.groupIds);
  const head = policy.lmHeadWeight;

  // Old log-probs: the policy's own, nudged so the ratios are not all exactly 1.
  const first = policy.forward({ ids: idsT });
  const lp0 = linearTokenLogprobs(first.hidden, head, targetsT);
  const old = Float32Array.from(dataOf(lp0.logprobs), (x, i) => x + inputs.oldNoise[i]);
  lp0.logprobs.dispose();
  lp0.lse.dispose();
  const oldT = Tensor.from(old, [B, T]);

  const adamw = new AdamW(policy.parameters(), policy.gradients(), OPTIMIZER);
  // As the trainer's passes do: the LM head keeps its logits for the backward when they fit.
  const saveLogits = savesLogits(policy.device, N, V);
  const phases: TrainSetup['phases'] = {
    zeroGradMs: [], forwardMs: [], lmHeadLogprobsMs: [], lossMs: [], lmHeadBackwardMs: [], backwardMs: [], adamwMs: [],
  };
  return {
    phases,
    step(): number {
      const t0 = nowMs();
      policy.zeroGrad();
      const t1 = nowMs();
      const { hidden } = policy.forward({ ids: idsT });
      const t2 = nowMs();
      const out = linearTokenLogprobs(hidden, head, targetsT, { saveLogits });
      const t3 = nowMs();
      const logprobs = Tensor.from(dataOf(out.logprobs), [B, T]);
      const loss = grpoLoss({ logprobs, oldLogprobs: oldT, advantages, mask, groupIds, aggregation: 'grpo' });
      const t4 = nowMs();
      const g = linearTokenLogprobsBackward(hidden, head, targetsT, out.lse, Tensor.from(dataOf(loss.gradLogprobs), [N]), { saved: out.saved });
      out.saved?.dispose();
      const t5 = nowMs();
      policy.backward(g.gradHidden, { gradLmHead: g.gradWeight });
      const t6 = nowMs();
      adamw.step();
      const t7 = nowMs();
      for (const t of [out.logprobs, out.lse, g.gradHidden, g.gradWeight, loss.gradLogprobs, loss.seqLoss, loss.weights, loss.dWeightsDLambda, loss.lengths])
        (t as Tensor).dispose();
      phases.zeroGradMs.push(t1 - t0);
      phases.forwardMs.push(t2 - t1);
      phases.lmHeadLogprobsMs.push(t3 - t2);
      phases.lossMs.push(t4 - t3);
      phases.lmHeadBackwardMs.push(t5 - t4);
      phases.backwardMs.push(t6 - t5);
      phases.adamwMs.push(t7 - t6);
      return loss.loss;
    },
    dispose(): void {
      adamw.dispose();
    },
  };
}

interface GemmCaseShape {
  name: string;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  beta: number;
  /** use this matrix (a weight of the model) as B */
  weight?: Float32Array;
}

/** The GEMMs one layer and the head run at this batch, forward and (for the MLP) backward. */
function gemmShapes(policy: Policy, c: EngineCase): GemmCaseShape[] {
  const cfg = policy.config, M = c.batch * c.seq, decodeRows = c.decodeBatch ?? c.batch;
  const D = cfg.hiddenSize, I = cfg.intermediateSize, V = cfg.vocabSize;
  const q = cfg.numAttentionHeads * cfg.headDim, kv = cfg.numKeyValueHeads * cfg.headDim;
  const p = policy.parameters();
  const w = (name: string) => p.get(name);
  const head = dataOf(policy.lmHeadWeight);
  return [
    { name: 'q_proj y=x·Wᵀ', m: M, n: q, k: D, transA: false, transB: true, beta: 0, weight: w('model.layers.0.self_attn.q_proj.weight') },
    { name: 'k/v_proj y=x·Wᵀ', m: M, n: kv, k: D, transA: false, transB: true, beta: 0, weight: w('model.layers.0.self_attn.k_proj.weight') },
    { name: 'o_proj y=x·Wᵀ', m: M, n: D, k: q, transA: false, transB: true, beta: 0, weight: w('model.layers.0.self_attn.o_proj.weight') },
    { name: 'gate/up_proj y=x·Wᵀ', m: M, n: I, k: D, transA: false, transB: true, beta: 0, weight: w('model.layers.0.mlp.gate_proj.weight') },
    { name: 'down_proj y=x·Wᵀ', m: M, n: D, k: I, transA: false, transB: true, beta: 0, weight: w('model.layers.0.mlp.down_proj.weight') },
    { name: 'gate_proj input grad dX=dY·W', m: M, n: D, k: I, transA: false, transB: false, beta: 0, weight: w('model.layers.0.mlp.gate_proj.weight') },
    { name: 'gate_proj weight grad dW+=dYᵀ·X', m: I, n: D, k: M, transA: true, transB: false, beta: 1 },
    { name: 'lm_head logits y=h·Wᵀ', m: M, n: V, k: D, transA: false, transB: true, beta: 0, weight: head },
    { name: `decode lm_head (${decodeRows} rows)`, m: decodeRows, n: V, k: D, transA: false, transB: true, beta: 0, weight: head },
    { name: `decode gate_proj (${decodeRows} rows)`, m: decodeRows, n: I, k: D, transA: false, transB: true, beta: 0, weight: w('model.layers.0.mlp.gate_proj.weight') },
  ];
}

function benchGemmShapes(shapes: GemmCaseShape[], t: Required<TimingOptions>, log: (m: string) => void): Omit<EngineGemmRow, 'fractionOfPeak'>[] {
  return shapes.map((s) => {
    const shape = `${s.m}×${s.n}×${s.k} ${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}`;
    const a = fillUniform(new Float32Array(s.m * s.k), -1, 1, 21);
    const b = s.weight ?? fillUniform(new Float32Array(s.k * s.n), -1, 1, 22);
    if (b.length !== s.k * s.n) throw new Error(`gemm ${s.name}: weight has ${b.length} values, expected ${s.k * s.n}`);
    const c = new Float32Array(s.m * s.n);
    const A = { data: a, rows: s.transA ? s.k : s.m, cols: s.transA ? s.m : s.k };
    const B = { data: b, rows: s.transB ? s.n : s.k, cols: s.transB ? s.k : s.n };
    const C = { data: c, rows: s.m, cols: s.n };
    const r = timeIt(() => gemm(A, B, C, { transA: s.transA, transB: s.transB, beta: s.beta }), t);
    const gflopPerS = (2 * s.m * s.n * s.k) / (r.medianMs / 1000) / 1e9;
    log(`    gemm ${s.name} [${shape}]: ${r.medianMs.toFixed(2)} ms, ${gflopPerS.toFixed(1)} GFLOP/s`);
    return { name: s.name, shape, ...r, gflopPerS };
  });
}

function weightGBs(linearWeights: number, passes: number, medianMs: number, bytesPerWeight = 4): number {
  return (bytesPerWeight * linearWeights * passes) / (medianMs / 1000) / 1e9;
}

export function modelStateBytes(cfg: ModelConfig): number {
  const params = parameterShapes(cfg).reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
  return 4 * 4 * params;  // f32 parameters, gradients, exp_avg, exp_avg_sq
}

export function torchSpec(c: EngineCase, cfg: ModelConfig, threads: number): Record<string, unknown> {
  return {
    name: c.name,
    config: {
      hidden: cfg.hiddenSize, intermediate: cfg.intermediateSize, layers: cfg.numHiddenLayers, heads: cfg.numAttentionHeads,
      kvHeads: cfg.numKeyValueHeads, headDim: cfg.headDim, vocab: cfg.vocabSize, tied: cfg.tieWordEmbeddings,
      ropeTheta: cfg.ropeTheta, rmsEps: cfg.rmsNormEps, qkvBias: cfg.qkvBias,
    },
    batch: c.batch, seq: c.seq, decodeBatch: c.decodeBatch ?? c.batch, promptLength: c.promptLength, maxNewTokens: c.maxNewTokens, threads,
    ...OPTIMIZER, temperature: DECODE_TEMPERATURE, initStd: 0.02, seed: 0,
    trainTiming: c.trainTiming, decodeTiming: c.decodeTiming,
  };
}

async function runCase(
  c: EngineCase, torch: TorchAvailability, threads: number, log: (m: string) => void,
): Promise<EngineCaseResult> {
  const cfg = parseConfig(c.config, c.name);
  const stateBytes = modelStateBytes(cfg);
  const available = os.freemem();
  // Parameters + gradients + moments, plus room for activations and the LM-head gradient.
  if (stateBytes * 1.25 + 512e6 > available)
    throw new SkipCase(`needs about ${formatBytes(stateBytes * 1.25 + 512e6)} (parameters, gradients, AdamW moments, activations) but ${formatBytes(available)} is available`);

  log(`${c.name}: building a random policy (${c.description}); model state ${formatBytes(stateBytes)}...`);
  const built = nowMs();
  const policy = Policy.random(c.config, { seed: 0 });
  log(`${c.name}: ${(policy.numParameters / 1e6).toFixed(1)} M parameters in ${((nowMs() - built) / 1000).toFixed(1)} s`);
  let bf16Speedup = NaN;
  let train: EngineTrainResult, decode: EngineDecodeResult, decodeBf16: EngineDecodeResult, gemmRows: Omit<EngineGemmRow, 'fractionOfPeak'>[];
  let trainingArenaBytes: number, inferenceArenaBytes: number;
  const steal: NonNullable<EngineCaseResult['steal']> = {};
  try {
    const flops = trainingFlops(cfg, c.batch, c.seq);
    log(`${c.name}: training step B=${c.batch} T=${c.seq} (${c.trainTiming.warmup} warm-up, then ≥ ${c.trainTiming.minRuns} runs), ${(flops.total / 1e9).toFixed(1)} GFLOP per step...`);
    const setup = trainStep(policy, c);
    const trainSteal = stealMeter();
    let loss = NaN;
    let runs = 0;
    let t: Timing;
    try {
      t = timeIt(() => {
        loss = setup.step();
        runs++;
        const stepMs = Object.values(setup.phases).reduce((sum, v) => sum + v[v.length - 1], 0);
        log(runs > c.trainTiming.warmup
          ? `  step ${runs - c.trainTiming.warmup}: ${stepMs.toFixed(0)} ms, loss ${loss.toFixed(4)}`
          : `  warm-up step: ${stepMs.toFixed(0)} ms`);
      }, c.trainTiming);
    } finally {
      setup.dispose();  // the AdamW moments: as large as the model twice over
    }
    steal.train = trainSteal.fraction();
    const skip = c.trainTiming.warmup;
    const phases = Object.fromEntries(Object.entries(setup.phases).map(([k, v]) => [k, median(v.slice(skip))])) as EngineTrainResult['phases'];
    trainingArenaBytes = policy.stats().trainingBytes;
    if (!Number.isFinite(loss)) throw new Error(`the training loss is ${loss}`);
    const gflopPerS = flops.total / (t.medianMs / 1000) / 1e9;
    train = {
      ...t, tokensPerS: (c.batch * c.seq) / (t.medianMs / 1000), phases, flops, gflopPerS, fractionOfPeak: NaN, loss,
    };
    log(`${c.name}: training ${t.medianMs.toFixed(0)} ms median (${t.runs} runs): ${train.tokensPerS.toFixed(0)} tokens/s, ${gflopPerS.toFixed(1)} GFLOP/s`);

    const decodeBatch = c.decodeBatch ?? c.batch;
    const prompts = Array.from({ length: decodeBatch }, (_, b) => Array.from(randomInts(c.promptLength, cfg.vocabSize, 0x777 + b)));
    // f32 and bf16 calls alternate, so that the machine's drift falls on both precisions alike.
    log(`${c.name}: decoding B=${decodeBatch}, prompt ${c.promptLength}, ${c.maxNewTokens} new tokens per row (sampled, KV cache), ` +
      'f32 and bf16 weights alternating, then the same with 1 new token (the prefill)...');
    const precisions = ['f32', 'bf16'] as const;
    const calls = (maxNewTokens: number) => precisions.map((precision) => () => {
      const out = policy.generate(prompts, { maxNewTokens, temperature: DECODE_TEMPERATURE, stopIds: [], seed: 7, precision });
      const made = out.tokens.reduce((sum, r) => sum + r.length, 0);
      if (made !== decodeBatch * maxNewTokens) throw new Error(`generate made ${made} tokens, expected ${decodeBatch * maxNewTokens}`);
      for (const lp of out.logprobs) for (const x of lp) if (!Number.isFinite(x)) throw new Error(`generate: a sampled token has log-prob ${x}`);
    });
    const probe = await openReadProbe();
    const decodeSteal = stealMeter();
    let whole: ReturnType<typeof timeAlternating>, prefill: ReturnType<typeof timeAlternating>;
    try {
      whole = timeAlternating(calls(c.maxNewTokens), c.decodeTiming, () => probe.measure());
      prefill = timeAlternating(calls(1), c.decodeTiming, () => probe.measure());
    } finally {
      await probe.close();
    }
    steal.decode = decodeSteal.fraction();
    log(`${c.name}: CPU time stolen by the hypervisor: ${stealText(steal.train)} during the training steps, ${stealText(steal.decode)} during the decode calls`);
    const readBesideGBs = median(probe.samples);
    log(`${c.name}: read beside the decode calls ${readBesideGBs.toFixed(1)} GB/s (median of ${probe.samples.length}, ` +
      `${Math.min(...probe.samples).toFixed(1)}–${Math.max(...probe.samples).toFixed(1)})`);
    const newTokens = decodeBatch * c.maxNewTokens;
    bf16Speedup = whole.ratios[0][1];
    [decode, decodeBf16] = precisions.map((precision, i): EngineDecodeResult => {
      const d = whole.timings[i], p = prefill.timings[i];
      const bytes = precision === 'bf16' ? 2 : 4;
      const gbs = weightGBs(flops.linearWeights, c.maxNewTokens, d.medianMs, bytes);
      const stepGbs = c.maxNewTokens > 1 && d.medianMs > p.medianMs
        ? weightGBs(flops.linearWeights, c.maxNewTokens - 1, d.medianMs - p.medianMs, bytes) : NaN;
      const result: EngineDecodeResult = {
        ...d, tokensPerS: newTokens / (d.medianMs / 1000), newTokens, promptTokens: decodeBatch * c.promptLength,
        weightGBs: gbs, fractionOfRead: NaN, prefillMs: p.medianMs, stepWeightGBs: stepGbs, stepFractionOfRead: NaN,
        readBesideGBs, fractionOfReadBeside: gbs / readBesideGBs, stepFractionOfReadBeside: stepGbs / readBesideGBs,
        batch: decodeBatch,
      };
      log(`${c.name}: decoding (${precision}) ${d.medianMs.toFixed(0)} ms median (${d.runs} runs): ${result.tokensPerS.toFixed(1)} tokens/s, weights ${gbs.toFixed(1)} GB/s; ` +
        `prefill + first draw ${p.medianMs.toFixed(0)} ms, the steps after it ${stepGbs.toFixed(1)} GB/s ` +
        `(${(100 * result.fractionOfReadBeside).toFixed(0)}% and ${(100 * result.stepFractionOfReadBeside).toFixed(0)}% of the read beside the calls)`);
      return result;
    });
    log(`${c.name}: bf16 / f32 decoding speed ${bf16Speedup.toFixed(2)}× (median over rounds of the f32 call's time ÷ the bf16 call's)`);
    inferenceArenaBytes = policy.stats().inferenceBytes;

    log(`${c.name}: GEMM at the model's linear shapes...`);
    gemmRows = benchGemmShapes(gemmShapes(policy, c), c.gemmTiming, log);
  } finally {
    policy.dispose();
  }
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;

  const result: EngineCaseResult = {
    name: c.name,
    description: c.description,
    model: {
      hiddenSize: cfg.hiddenSize, intermediateSize: cfg.intermediateSize, layers: cfg.numHiddenLayers,
      heads: cfg.numAttentionHeads, kvHeads: cfg.numKeyValueHeads, headDim: cfg.headDim, vocabSize: cfg.vocabSize,
      tied: cfg.tieWordEmbeddings, parameters: stateBytes / 16,
    },
    batch: c.batch, seq: c.seq, promptLength: c.promptLength, maxNewTokens: c.maxNewTokens,
    memory: { modelStateBytes: stateBytes, trainingArenaBytes, inferenceArenaBytes, peakRssBytes },
    train, decode, decodeBf16, bf16Speedup, steal,
    gemm: gemmRows.map((r) => ({ ...r, fractionOfPeak: NaN })),
  };

  // After the policy is gone: PyTorch needs the same four copies of the model again.
  if (!torch.available) {
    result.torchSkipped = torch.reason;
  } else {
    log(`${c.name}: PyTorch baseline (${torch.python}, torch ${torch.version})...`);
    try {
      const torchSteal = stealMeter();
      const r = await runTorch(torch.python!, torchSpec(c, cfg, threads), log, 300_000);
      steal.torch = torchSteal.fraction();
      if (!(r.train?.tokensPerS > 0) || !(r.decode?.tokensPerS > 0)) throw new Error('bench-torch.py reported no rates');
      result.torch = r;
      result.ratio = { train: train.tokensPerS / r.train.tokensPerS, decode: decode.tokensPerS / r.decode.tokensPerS };
      log(`${c.name}: lgrpo-native / PyTorch: training ${result.ratio.train.toFixed(2)}×, decoding ${result.ratio.decode.toFixed(2)}×`);
    } catch (e) {
      result.torchSkipped = `PyTorch baseline failed: ${e instanceof Error ? e.message : String(e)}`;
      log(`${c.name}: ${result.torchSkipped}`);
    }
  }
  return result;
}

export async function runEngineBench(options: EngineBenchOptions = {}): Promise<EngineBenchReport> {
  const loadAtStart = os.loadavg();
  const quick = options.quick ?? false;
  const log = options.log ?? (() => {});
  if (options.threads !== undefined) setNumThreads(options.threads);
  const threads = buildInfo().threads;
  const all = quick ? ENGINE_CASES_QUICK : ENGINE_CASES;
  if (options.only)
    for (const n of options.only)
      if (!all.some((c) => c.name === n))
        throw new RangeError(`only: unknown engine configuration '${n}'; expected ${all.map((c) => c.name).join(', ')}`);
  const cases = all.filter((c) => !options.only || options.only.includes(c.name));

  // Twice before and twice after, best kept: a busy neighbour during one measurement
  // would otherwise lower the ceiling and flatter every fraction.
  const samples: number[] = [];
  const measurePeak = (when: string) => {
    log(`engine: measuring the FMA ceiling (${when})...`);
    samples.push(measurePeakFlops(0.25), measurePeakFlops(0.25));
    log(`engine: FMA ceiling ${Math.max(...samples).toFixed(1)} GFLOP/s`);
  };
  measurePeak('before');
  // The same for the bandwidth, before and after: the best read is the ceiling.
  const bandwidthSamples: Ceiling[] = [];
  const measureBandwidth = async (when: string) => {
    log(`engine: measuring the read and copy bandwidth (256 MB streams, ${when})...`);
    const b = await measureCeiling();
    bandwidthSamples.push(b);
    log(`engine: read ${b.readGBs.toFixed(1)} GB/s, copy ${b.copyGBs.toFixed(1)} GB/s`);
  };
  await measureBandwidth('before');

  let torch: TorchAvailability;
  if (options.torch === false) {
    torch = { available: false, reason: 'comparison not requested (--no-torch)' };
  } else {
    log('engine: looking for PyTorch (python3 -c "import torch")...');
    torch = findTorch();
    log(torch.available ? `engine: PyTorch ${torch.version} via ${torch.python}` : `engine: ${torch.reason}`);
  }

  const results: EngineCaseResult[] = [];
  const errors: { case: string; message: string }[] = [];
  const skipped: { case: string; reason: string }[] = [];
  for (const c of cases) {
    const started = nowMs();
    try {
      results.push(await runCase(c, torch, threads, log));
      log(`${c.name}: done in ${((nowMs() - started) / 1000).toFixed(1)} s`);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (e instanceof SkipCase) {
        skipped.push({ case: c.name, reason: message });
        log(`${c.name}: skipped: ${message}`);
      } else {
        errors.push({ case: c.name, message });
        log(`${c.name}: FAILED: ${message}`);
      }
    }
  }
  measurePeak('after');
  await measureBandwidth('after');
  const peakGflops = Math.max(...samples);
  const bandwidth = bandwidthSamples.reduce((best, b) => (b.readGBs > best.readGBs ? b : best));
  for (const r of results) {
    r.train.fractionOfPeak = r.train.gflopPerS / peakGflops;
    for (const g of r.gemm) g.fractionOfPeak = g.gflopPerS / peakGflops;
    for (const d of [r.decode, r.decodeBf16]) {
      d.fractionOfRead = d.weightGBs / bandwidth.readGBs;
      d.stepFractionOfRead = d.stepWeightGBs / bandwidth.readGBs;
    }
  }
  return {
    schema: 'lgrpo-native-engine-bench/1',
    quick,
    machine: describeMachine('cpu', loadAtStart),
    loadAverageAtEnd: os.loadavg(),
    threads,
    peakGflops,
    peakGflopsSamples: samples,
    bandwidth,
    bandwidthSamples: bandwidthSamples.map((b) => ({ readGBs: b.readGBs, copyGBs: b.copyGBs })),
    flopNote: 'FMA ceiling: measurePeakFlops(), independent FMA chains in registers on every kernel thread, with the vector width the kernels use; best of 4 (2 before, 2 after the configurations)',
    torch,
    cases: results,
    skipped,
    errors,
  };
}

// ---------------------------------------------------------------------------------
// The report

function table(header: string[], rows: string[][], leftColumns = 1): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (row: string[]) => row.map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ');
  return [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)];
}

const stealText = (x: number | undefined) => (x === undefined ? 'not known' : `${(100 * x).toFixed(2)}%`);
const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toPrecision(2));
const rate = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

export function formatEngineReport(report: EngineBenchReport): string {
  const m = report.machine;
  const lines: string[] = [];
  lines.push(`lgrpo-native ${m.build.version} engine bench${report.quick ? ' (--quick: CI-sized configurations)' : ''}`);
  lines.push(`machine: ${m.cpu}, ${m.logicalCpus} logical CPUs [${m.cpuFlags.join(' ')}], ${formatBytes(m.memoryBytes)} RAM, node ${m.node}`);
  lines.push(`addon:   simd ${m.build.simd}, ${report.threads} kernel thread(s); load average ${m.loadAverageAtStart[0].toFixed(2)} at the start, ${report.loadAverageAtEnd[0].toFixed(2)} at the end` +
    // The end's average counts the bench's own kernel threads: busy means more than those.
    (m.loadAverageAtStart[0] >= 0.5 * m.logicalCpus || report.loadAverageAtEnd[0] >= report.threads + 0.5 * m.logicalCpus
      ? ' (other processes were busy: timings are pessimistic and noisy)' : ''));
  lines.push(`FMA ceiling: ${report.peakGflops.toFixed(1)} GFLOP/s (samples ${report.peakGflopsSamples.map((s) => s.toFixed(0)).join(', ')})`);
  lines.push(`         ${report.flopNote}`);
  if (report.cases.some((c) => c.steal?.train !== undefined))
    lines.push(`CPU time stolen by the hypervisor (train / decode / PyTorch): ${report.cases.map((c) => `${c.name} ${stealText(c.steal?.train)} / ${stealText(c.steal?.decode)} / ${stealText(c.steal?.torch)}`).join('; ')}`);
  const t = report.torch;
  const first = report.cases.find((c) => c.torch)?.torch;
  if (t.available && first) {
    lines.push(`PyTorch: ${first.torch} (${t.python}, python ${first.python}), ${first.threads} thread(s), BLAS ${first.blasLibraries.map((p) => p.split('/').pop()).join(', ') || 'unknown'}${first.blasCore ? ` (OpenBLAS kernel ${first.blasCore}; OPENBLAS_CORETYPE unset for it)` : ''}, attention ${first.attention}, KV cache ${first.kvCache ? 'yes' : 'no'}`);
    // Debian's python3-torch uses whatever libblas.so.3 the system provides: without
    // OpenBLAS that is the reference BLAS, ten times slower (seen here: 11.1 s against
    // 0.84 s for the small step), which would make every ratio meaningless.
    if (!first.blasCore)
      lines.push(`! PyTorch's BLAS is not OpenBLAS (${first.blasLibraries.join(', ') || 'none found'}): if it is the reference BLAS, its times are no baseline; on Debian: apt-get install libopenblas0-openmp`);
    // With both libopenblas0-pthread and -openmp installed, Debian's alternatives can point
    // libopenblas.so.0 at one and libblas.so.3 at the other: PyTorch then loads two OpenBLAS
    // builds whose thread pools compete (seen here: its 0.5B decode at 10.8 tokens/s against 34.9).
    const builds = new Set(first.blasLibraries.map((p) => /openblas-(pthread|openmp|serial)/.exec(p)?.[1]).filter((b) => b));
    if (builds.size > 1)
      lines.push(`! PyTorch loaded ${builds.size} OpenBLAS builds (${[...builds].join(', ')}: ${first.blasLibraries.join(', ')}), whose thread pools compete: its times are no baseline; ` +
        'on Debian point libopenblas.so.0 and libblas.so.3 at one (update-alternatives --config libopenblas.so.0-x86_64-linux-gnu)');
  } else if (t.available) lines.push(`PyTorch: ${t.version} (${t.python}) found, but no configuration produced a comparison`);
  else lines.push(`PyTorch: ${t.reason}`);
  lines.push('');

  const cmp = (c: EngineCaseResult, f: (x: NonNullable<EngineCaseResult['torch']>) => string) => (c.torch ? f(c.torch) : '-');
  lines.push('Training step: forward + LM head log-probs + GRPO loss + backward + AdamW (clip 1.0), all B·T positions scored');
  lines.push(...table(
    ['config', 'params', 'B×T', 'lgrpo ms', 'lgrpo tok/s', 'GFLOP/step', 'GFLOP/s', 'of FMA peak', 'torch ms', 'torch tok/s', 'lgrpo/torch'],
    report.cases.map((c) => [
      c.name, `${(c.model.parameters / 1e6).toFixed(1)} M`, `${c.batch}×${c.seq}`, ms(c.train.medianMs), rate(c.train.tokensPerS),
      (c.train.flops.total / 1e9).toFixed(1), c.train.gflopPerS.toFixed(1), pct(c.train.fractionOfPeak),
      cmp(c, (x) => ms(x.train.medianMs)), cmp(c, (x) => rate(x.train.tokensPerS)), c.ratio ? `${c.ratio.train.toFixed(2)}×` : '-',
    ]),
  ));
  lines.push('');
  lines.push(`Decoding: generate(), sampled at temperature ${DECODE_TEMPERATURE}, KV cache; tokens/s = B × new tokens / time of the call, prefill of the prompt included;`);
  lines.push(`weights GB/s = linear weights × bytes per weight (f32 4, bf16 2) × new tokens / time, against the read bandwidth measured beside the calls ` +
    `(between their rounds: ${report.cases.map((c) => `${c.name} ${c.decode.readBesideGBs.toFixed(1)} GB/s`).join(', ')}) and against the best read of this run ` +
    `(${report.bandwidth.readGBs.toFixed(1)} GB/s, the best of ${report.bandwidthSamples.map((b) => b.readGBs.toFixed(1)).join(' and ')})`);
  lines.push(...table(
    ['config', 'B', 'prompt', 'new/row', 'weights', 'lgrpo ms', 'lgrpo tok/s', 'weights GB/s', '% of read beside', '% of best read', 'torch ms', 'torch tok/s', 'torch weights GB/s', 'lgrpo/torch'],
    report.cases.flatMap((c) => [['f32', c.decode], ['bf16', c.decodeBf16]] as const).map(([precision, d], i) => {
      const c = report.cases[Math.floor(i / 2)];
      const f32 = precision === 'f32';
      return [
        c.name, String(d.batch), String(c.promptLength), String(c.maxNewTokens), precision, ms(d.medianMs), rate(d.tokensPerS),
        d.weightGBs.toFixed(1), pct(d.fractionOfReadBeside), pct(d.fractionOfRead),
        f32 ? cmp(c, (x) => ms(x.decode.medianMs)) : '', f32 ? cmp(c, (x) => rate(x.decode.tokensPerS)) : '',
        f32 ? cmp(c, (x) => weightGBs(c.train.flops.linearWeights, c.maxNewTokens, x.decode.medianMs).toFixed(1)) : '',
        c.torch ? `${(d.tokensPerS / c.torch.decode.tokensPerS).toFixed(2)}×` : '-',
      ];
    }),
  ));
  lines.push(...report.cases.map((c) => `${c.name}: bf16 rollouts ${(c.decodeBf16.tokensPerS / c.decode.tokensPerS).toFixed(2)}× the f32 tokens/s ` +
    `(medians; ${c.bf16Speedup.toFixed(2)}× as the median over rounds of f32 time ÷ bf16 time, the two alternating)`));
  lines.push(...report.cases.flatMap((c) => ([['f32', c.decode], ['bf16', c.decodeBf16]] as const).map(([precision, d]) =>
    `${c.name} ${precision}: prefill + first draw ${ms(d.prefillMs)} ms; the ${c.maxNewTokens - 1} decoding steps after it stream the weights at ` +
    `${d.stepWeightGBs.toFixed(1)} GB/s = ${pct(d.stepFractionOfReadBeside)} of the read beside the calls, ${pct(d.stepFractionOfRead)} of the best read`)));
  lines.push('');
  lines.push('Where a training step goes (median ms):');
  lines.push(...table(
    ['config', 'zeroGrad', 'forward', 'head logprobs', 'loss', 'head backward', 'backward', 'AdamW', '| torch fwd+loss', 'torch backward', 'torch clip+AdamW'],
    report.cases.map((c) => {
      const p = c.train.phases;
      return [c.name, ms(p.zeroGradMs), ms(p.forwardMs), ms(p.lmHeadLogprobsMs), ms(p.lossMs), ms(p.lmHeadBackwardMs), ms(p.backwardMs), ms(p.adamwMs),
        cmp(c, (x) => ms(x.train.phases.forwardLossMs)), cmp(c, (x) => ms(x.train.phases.backwardMs)), cmp(c, (x) => ms(x.train.phases.optimizerMs))];
    }),
  ));
  lines.push('');
  lines.push('Memory:');
  for (const c of report.cases)
    lines.push(`  ${c.name}: model state ${formatBytes(c.memory.modelStateBytes)} (f32 parameters + gradients + 2 AdamW moments), training arena ${formatBytes(c.memory.trainingArenaBytes)}, ` +
      `inference arena ${formatBytes(c.memory.inferenceArenaBytes)}, process peak RSS so far ${formatBytes(c.memory.peakRssBytes)}` +
      (c.torch ? `; PyTorch process peak RSS ${formatBytes(c.torch.peakRssBytes)}` : ''));
  lines.push('');
  for (const c of report.cases) {
    lines.push(`GEMM at ${c.name}'s linear shapes (M = B·T = ${c.batch * c.seq} rows; decode rows M = ${c.decodeBf16.batch}), against the FMA ceiling:`);
    lines.push(...table(['gemm', 'shape', 'median ms', 'GFLOP/s', 'of FMA peak'],
      c.gemm.map((g) => [g.name, g.shape, ms(g.medianMs), g.gflopPerS.toFixed(1), pct(g.fractionOfPeak)]), 2));
    lines.push('');
  }
  lines.push('What is counted:');
  lines.push('- GFLOP/step = 6 · (weights of every layer projection + the LM head) · B·T, plus causal attention 6 · L · B · H · hd · T(T+1)');
  lines.push('  (QKᵀ and PV over the keys each query sees, ×3 for forward + backward). Not counted: embedding lookup, norms, RoPE, SwiGLU,');
  lines.push('  softmax, loss, AdamW, and the LM-head logits linearTokenLogprobsBackward recomputes when they were not kept (another 2·V·D');
  lines.push('  per token; the step keeps them, as the trainer does, when 4·N·V bytes ≤ 512 MiB).');
  lines.push('- The step times everything from zeroGrad to the end of AdamW.step; the torch step: zero_grad, forward, full logits + log_softmax');
  lines.push('  gather, the same clipped GRPO loss, backward, clip_grad_norm_, AdamW (no decay on biases and norms), same threads.');
  lines.push('- weights GB/s (decoding): linear weights (projections + LM head) × bytes per weight × new tokens per row ÷ time: each pass');
  lines.push('  reads them all once, so at small B this read, not the FLOPs, bounds decoding; % of read is against the read bandwidth');
  lines.push("  measured in this run. bf16: generate({precision: 'bf16'}), every weight matrix from a bf16 copy made at the start of");
  lines.push('  each call (its conversion is inside the time).');
  lines.push('- lgrpo/torch: lgrpo-native tokens/s ÷ PyTorch tokens/s, both measured in this run (> 1: lgrpo-native is faster).');
  for (const c of report.cases) if (c.torchSkipped && t.available) lines.push(`! ${c.name}: ${c.torchSkipped}`);
  for (const k of report.skipped) lines.push(`! ${k.case} skipped: ${k.reason}`);
  for (const e of report.errors) lines.push(`! ${e.case} failed: ${e.message}`);
  return lines.join('\n');
}
