// One forward pass of the policy over prompt + completion rows, scoring only the completion
// tokens: the final hidden states at the positions that predict a completion token are
// gathered into [N, D] (N = completion tokens in the batch, far fewer than B·T when
// prompts are long) and handed to the fused LM-head + log-prob kernel, which never forms
// the logits. backward() takes ∂L/∂logprob per token, runs the kernel's backward, scatters
// ∂L/∂hidden back to the padded [B·T, D] layout the engine expects and accumulates the
// gradients into the policy (the LM-head weight's included).
//
// Both the supervised warm-up and the GRPO loss go through here.
//
// Every pass is followed at once by its backward, so on the CPU the kernel keeps the pass's
// logits for it when they are small enough (savesLogits): the backward then reads them
// instead of recomputing them, a third of its FLOPs, with the same bits.
import type { Policy } from '../engine/policy.js';
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../ops/linear_token_logprobs.js';
import { gatherRows, scatterRows } from '../ops/rows.js';
import { Tensor } from '../tensor.js';

export interface TokenPass {
  /** Completion tokens in the batch. */
  readonly tokens: number;
  /** Row r's tokens are [offsets[r], offsets[r + 1]) in the flat arrays. */
  readonly offsets: Int32Array;
  /** log π(token) at the pass's temperature, per completion token. */
  readonly logprobs: Float32Array;
  /** Entropy (nats) of the next-token distribution at each completion token, when asked for. */
  readonly entropy: Float32Array | undefined;
  /** Accumulates the gradients of Σ gradLogprobs[n] · logprobs[n] into the policy; once per pass
   * (on a GPU it frees the pass's device memory). */
  backward(gradLogprobs: Float32Array): void;
}

export interface TokenPassOptions {
  /** Logits are divided by it (the sampling temperature); default 1. */
  temperature?: number;
  entropy?: boolean;
}

/** The most a pass keeps of logits for its backward: 4·N·V bytes (N = 2048 tokens of a
 * 152k vocabulary is 1.2 GB, past it; PyTorch holds at least as much for the same pass). */
export const SAVED_LOGITS_MAX_BYTES = 512 * 2 ** 20;

/** Whether a pass of `tokens` rows over a `vocab` head keeps its logits for the backward. */
export function savesLogits(device: string, tokens: number, vocab: number): boolean {
  return device === 'cpu' && 4 * tokens * vocab <= SAVED_LOGITS_MAX_BYTES;
}

// Per-token values cross to TypeScript as host arrays, whichever device the pass ran on.
function hostOf(t: unknown): Float32Array {
  if (!(t instanceof Tensor)) return t as Float32Array;
  return (t.isCuda ? t.to('cpu') : t).data as Float32Array;
}

export function completionPass(
  policy: Policy,
  prompts: readonly (readonly number[])[],
  completions: readonly (readonly number[])[],
  options: TokenPassOptions = {},
): TokenPass {
  const temperature = options.temperature ?? 1;
  const B = prompts.length;
  const offsets = new Int32Array(B + 1);
  for (let r = 0; r < B; r++) offsets[r + 1] = offsets[r] + completions[r].length;
  const N = offsets[B];
  if (N === 0) {
    return { tokens: 0, offsets, logprobs: new Float32Array(0), entropy: options.entropy ? new Float32Array(0) : undefined, backward: () => {} };
  }

  const rows = prompts.map((p, r) => [...p, ...completions[r]]);
  const { hidden, seq: T } = policy.forward({ ids: rows });
  const targets = new Int32Array(N);
  // position[n]: the row-major [B·T] index of the hidden state that predicts token n.
  const position = new Int32Array(N);
  for (let r = 0; r < B; r++) {
    const start = prompts[r].length - 1;
    for (let j = 0; j < completions[r].length; j++) {
      const n = offsets[r] + j;
      position[n] = r * T + start + j;
      targets[n] = completions[r][j];
    }
  }
  // Everything N×D or bigger stays on the policy's device; only per-token values cross.
  const hiddenT = gatherRows(hidden, position);
  const targetsT = policy.device === 'cpu' ? Tensor.from(targets) : Tensor.from(targets).to(policy.device);
  const weight = policy.lmHeadWeight;
  const saveLogits = savesLogits(policy.device, N, weight.shape[0]);
  const out = linearTokenLogprobs(hiddenT, weight, targetsT, { temperature, entropy: options.entropy === true, saveLogits });
  const logprobs = hostOf(out.logprobs);
  const entropy = out.entropy === undefined ? undefined : hostOf(out.entropy);
  // On a GPU the pass's device tensors go back to the device-memory cache as soon as its
  // backward is done, not when the GC gets to them: the next step's pass then reuses their
  // blocks and the loop makes no cudaMalloc (the host arrays above are copies). On the CPU
  // logprobs/entropy are views of the outputs and stay with the caller.
  const release = () => {
    out.saved?.dispose();
    if (policy.device === 'cpu') return;
    for (const t of [hiddenT, targetsT, out.logprobs, out.lse, out.entropy]) if (t instanceof Tensor) t.dispose();
  };

  return {
    tokens: N,
    offsets,
    logprobs,
    entropy,
    backward(gradLogprobs: Float32Array): void {
      if (gradLogprobs.length !== N) throw new RangeError(`gradLogprobs: expected ${N} values, got ${gradLogprobs.length}`);
      // All-zero (e.g. every advantage 0 and no KL): nothing to accumulate.
      if (gradLogprobs.every((g) => g === 0)) return release();
      const gradT = policy.device === 'cpu' ? Tensor.from(gradLogprobs) : Tensor.from(gradLogprobs).to(policy.device);
      const g = linearTokenLogprobsBackward(hiddenT, weight, targetsT, out.lse, gradT, { temperature, saved: out.saved });
      const full = scatterRows(g.gradHidden as Tensor, position, B * T);
      policy.backward(full, { gradLmHead: g.gradWeight });
      // The head gradient is [V, D]: free it (and the rest) now rather than at the next GC.
      for (const t of [g.gradWeight, g.gradHidden, full, gradT]) if (t instanceof Tensor) t.dispose();
      release();
    },
  };
}
