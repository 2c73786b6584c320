// One forward pass of the policy over prompt + completion rows, scoring only the completion
// tokens: the final hidden states at the positions that predict a completion token are
// gathered into [N, D] (N = completion tokens in the batch, far fewer than B·T when
// prompts are long) and handed to the fused LM-head + log-prob kernel, which never forms
// the logits. backward() takes ∂L/∂logprob per token, runs the kernel's backward, scatters
// ∂L/∂hidden back to the padded [B·T, D] layout the engine expects and accumulates the
// gradients into the policy (the LM-head weight's included).
//
// Both the supervised warm-up and the GRPO loss go through here.
import type { Policy } from '../engine/policy.js';
import { linearTokenLogprobs, linearTokenLogprobsBackward } from '../ops/linear_token_logprobs.js';
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
  /** Accumulates the gradients of Σ gradLogprobs[n] · logprobs[n] into the policy. */
  backward(gradLogprobs: Float32Array): void;
}

export interface TokenPassOptions {
  /** Logits are divided by it (the sampling temperature); default 1. */
  temperature?: number;
  entropy?: boolean;
}

function dataOf(t: unknown): Float32Array {
  return (t instanceof Tensor ? t.data : t) as Float32Array;
}

export function completionPass(
  policy: Policy,
  prompts: readonly (readonly number[])[],
  completions: readonly (readonly number[])[],
  options: TokenPassOptions = {},
): TokenPass {
  const temperature = options.temperature ?? 1;
  const B = prompts.length;
  const D = policy.config.hiddenSize;
  const offsets = new Int32Array(B + 1);
  for (let r = 0; r < B; r++) offsets[r + 1] = offsets[r] + completions[r].length;
  const N = offsets[B];
  if (N === 0) {
    return { tokens: 0, offsets, logprobs: new Float32Array(0), entropy: options.entropy ? new Float32Array(0) : undefined, backward: () => {} };
  }

  const rows = prompts.map((p, r) => [...p, ...completions[r]]);
  const { hidden, seq: T } = policy.forward({ ids: rows });
  const h = hidden.data as Float32Array;
  const gathered = new Float32Array(N * D);
  const targets = new Int32Array(N);
  // position[n]: the row-major [B·T] index of the hidden state that predicts token n.
  const position = new Int32Array(N);
  for (let r = 0; r < B; r++) {
    const start = prompts[r].length - 1;
    for (let j = 0; j < completions[r].length; j++) {
      const n = offsets[r] + j;
      const at = r * T + start + j;
      position[n] = at;
      targets[n] = completions[r][j];
      gathered.set(h.subarray(at * D, at * D + D), n * D);
    }
  }
  const hiddenT = Tensor.from(gathered, [N, D]);
  const targetsT = Tensor.from(targets);
  const weight = policy.lmHeadWeight;
  const out = linearTokenLogprobs(hiddenT, weight, targetsT, { temperature, entropy: options.entropy === true });
  const logprobs = dataOf(out.logprobs);
  const entropy = out.entropy === undefined ? undefined : dataOf(out.entropy);

  return {
    tokens: N,
    offsets,
    logprobs,
    entropy,
    backward(gradLogprobs: Float32Array): void {
      if (gradLogprobs.length !== N) throw new RangeError(`gradLogprobs: expected ${N} values, got ${gradLogprobs.length}`);
      // All-zero (e.g. every advantage 0 and no KL): nothing to accumulate.
      if (gradLogprobs.every((g) => g === 0)) return;
      const g = linearTokenLogprobsBackward(hiddenT, weight, targetsT, out.lse, Tensor.from(gradLogprobs), { temperature });
      const gh = dataOf(g.gradHidden);
      const full = new Float32Array(B * T * D);
      for (let n = 0; n < N; n++) full.set(gh.subarray(n * D, n * D + D), position[n] * D);
      policy.backward(Tensor.from(full, [B * T, D]), { gradLmHead: g.gradWeight });
      // The head gradient is [V, D]: free it now rather than at the next GC.
      for (const t of [g.gradWeight, g.gradHidden]) if (t instanceof Tensor) t.dispose();
    },
  };
}
