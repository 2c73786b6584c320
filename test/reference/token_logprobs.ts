// Float64 reference for tokenLogprobs and its backward, straight from spec §1.
// Deliberately the textbook two-pass form (max, then sum) with every intermediate in
// float64, so it shares no trick with the streaming kernels it checks.

export interface TokenLogprobsRef {
  logprobs: Float64Array;
  entropy: Float64Array;
  lse: Float64Array;
}

/** logits: N×V row-major values (read as float64); row n is scaled by 1/temperature. */
export function tokenLogprobsReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  vocab: number,
  temperature = 1,
): TokenLogprobsRef {
  const rows = targets.length;
  const logprobs = new Float64Array(rows), entropy = new Float64Array(rows), lse = new Float64Array(rows);
  for (let n = 0; n < rows; n++) {
    const x = (v: number) => logits[n * vocab + v] / temperature;
    let m = -Infinity;
    for (let v = 0; v < vocab; v++) m = Math.max(m, x(v));
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(x(v) - m);
    lse[n] = m + Math.log(sum);
    logprobs[n] = x(targets[n]) - lse[n];
    // H = lse − Σ p x, written as −Σ p (x − lse) = −Σ p log p to avoid cancelling large terms.
    let h = 0;
    for (let v = 0; v < vocab; v++) {
      const logp = x(v) - lse[n];
      h -= Math.exp(logp) * logp;
    }
    entropy[n] = h;
  }
  return { logprobs, entropy, lse };
}

/**
 * ∂L/∂logits for L = Σ_n g_n logp_n + e_n H_n (e omitted: no entropy term):
 *   ∂L/∂x_v = [g (1[v = y] − p_v) − e p_v (x_v − Σ_u p_u x_u)] / τ   (x = logits / τ)
 */
export function tokenLogprobsBackwardReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  vocab: number,
  gradLogprobs: ArrayLike<number>,
  gradEntropy?: ArrayLike<number>,
  temperature = 1,
): Float64Array {
  const rows = targets.length;
  const { lse } = tokenLogprobsReference(logits, targets, vocab, temperature);
  const grad = new Float64Array(rows * vocab);
  for (let n = 0; n < rows; n++) {
    const x = (v: number) => logits[n * vocab + v] / temperature;
    const p = (v: number) => Math.exp(x(v) - lse[n]);
    let meanX = 0;
    for (let v = 0; v < vocab; v++) meanX += p(v) * x(v);
    const g = gradLogprobs[n], e = gradEntropy ? gradEntropy[n] : 0;
    for (let v = 0; v < vocab; v++) {
      const onehot = v === targets[n] ? 1 : 0;
      grad[n * vocab + v] = (g * (onehot - p(v)) - e * p(v) * (x(v) - meanX)) / temperature;
    }
  }
  return grad;
}

/** The scalar loss the backward differentiates, for finite-difference checks. */
export function tokenLogprobsLossReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  vocab: number,
  gradLogprobs: ArrayLike<number>,
  gradEntropy?: ArrayLike<number>,
  temperature = 1,
): number {
  const { logprobs, entropy } = tokenLogprobsReference(logits, targets, vocab, temperature);
  let loss = 0;
  for (let n = 0; n < targets.length; n++) loss += gradLogprobs[n] * logprobs[n] + (gradEntropy ? gradEntropy[n] * entropy[n] : 0);
  return loss;
}
