// Float64 reference for linearTokenLogprobs, straight from spec §1. Unlike the kernels
// it forms each row's logits explicitly (fine at test sizes) and works in double.
//   x_v   = (w_v · h_n) / τ
//   lse   = log Σ_v e^{x_v},  logp = x_y − lse,  H = lse − Σ_v p_v x_v
//   ∂L/∂x_v = g (1[v=y] − p_v) − e p_v (x_v − Σ_u p_u x_u),   then / τ
//   ∂L/∂h_n = Σ_v ∂L/∂x_v w_v,   ∂L/∂w_v = Σ_n ∂L/∂x_v h_n

export interface LinearProblem {
  hidden: ArrayLike<number>;   // [rows, dim]
  weight: ArrayLike<number>;   // [vocab, dim]
  targets: ArrayLike<number>;  // [rows]
  rows: number;
  dim: number;
  vocab: number;
  temperature: number;
}

export interface LinearForwardReference {
  logprobs: Float64Array;
  entropy: Float64Array;
  lse: Float64Array;
}

export interface LinearGradientsReference {
  gradHidden: Float64Array;
  gradWeight: Float64Array;
}

/** Row n's logits (already divided by τ) and their softmax statistics. */
function rowSoftmax(p: LinearProblem, n: number) {
  const x = new Float64Array(p.vocab);
  for (let v = 0; v < p.vocab; v++) {
    let dot = 0;
    for (let k = 0; k < p.dim; k++) dot += p.hidden[n * p.dim + k] * p.weight[v * p.dim + k];
    x[v] = dot / p.temperature;
  }
  let max = -Infinity;
  for (let v = 0; v < p.vocab; v++) max = Math.max(max, x[v]);
  let sum = 0;
  for (let v = 0; v < p.vocab; v++) sum += Math.exp(x[v] - max);
  // Relative to the row maximum: at |x| = 1e8 even a double's x − lse and Σ p x carry
  // errors of order 1e-8 · |x| (up to ~1), far above what is being checked.
  const logSum = Math.log(sum), lse = max + logSum;
  const prob = x.map((xv) => Math.exp((xv - max) - logSum));
  let meanShifted = 0;  // Σ p (x − max)
  for (let v = 0; v < p.vocab; v++) meanShifted += prob[v] * (x[v] - max);
  /** x_v − Σ p x */
  const centered = (v: number) => (x[v] - max) - meanShifted;
  return { x, prob, lse, logSum, meanShifted, centered };
}

export function linearTokenLogprobsReference(p: LinearProblem): LinearForwardReference {
  const out = { logprobs: new Float64Array(p.rows), entropy: new Float64Array(p.rows), lse: new Float64Array(p.rows) };
  for (let n = 0; n < p.rows; n++) {
    const { x, lse, logSum, meanShifted } = rowSoftmax(p, n);
    out.lse[n] = lse;
    out.logprobs[n] = x[p.targets[n]] - lse;
    out.entropy[n] = logSum - meanShifted;
  }
  return out;
}

/** L = Σ_n g_n logp_n + e_n H_n: the loss whose gradients the backward returns. */
export function linearLossReference(p: LinearProblem, gradLogprobs: ArrayLike<number>, gradEntropy?: ArrayLike<number>): number {
  const f = linearTokenLogprobsReference(p);
  let loss = 0;
  for (let n = 0; n < p.rows; n++) loss += gradLogprobs[n] * f.logprobs[n] + (gradEntropy ? gradEntropy[n] * f.entropy[n] : 0);
  return loss;
}

export function linearTokenLogprobsBackwardReference(
  p: LinearProblem,
  gradLogprobs: ArrayLike<number>,
  gradEntropy?: ArrayLike<number>,
): LinearGradientsReference {
  const gradHidden = new Float64Array(p.rows * p.dim), gradWeight = new Float64Array(p.vocab * p.dim);
  for (let n = 0; n < p.rows; n++) {
    const { prob, centered } = rowSoftmax(p, n);
    const g = gradLogprobs[n], e = gradEntropy ? gradEntropy[n] : 0;
    for (let v = 0; v < p.vocab; v++) {
      const dx = ((v === p.targets[n] ? g : 0) - g * prob[v] - e * prob[v] * centered(v)) / p.temperature;
      if (dx === 0) continue;
      for (let k = 0; k < p.dim; k++) {
        gradHidden[n * p.dim + k] += dx * p.weight[v * p.dim + k];
        gradWeight[v * p.dim + k] += dx * p.hidden[n * p.dim + k];
      }
    }
  }
  return { gradHidden, gradWeight };
}
