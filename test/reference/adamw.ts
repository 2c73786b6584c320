// Float64 reference for the optimiser leaves, written from torch.optim.AdamW's documented
// algorithm (amsgrad = False, maximize = False):
//   θ ← θ − γλθ
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   m̂ = m / (1 − β1^t),      v̂ = v / (1 − β2^t)
//   θ ← θ − γ·m̂ / (√v̂ + ε)
// (torch computes the last line as θ − γ/(1−β1^t) · m / (√v/√(1−β2^t) + ε): the same number.)
export interface AdamwState {
  param: Float64Array;
  expAvg: Float64Array;
  expAvgSq: Float64Array;
}

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One step t (1-based) on `state`, in place. */
export function adamwReferenceStep(state: AdamwState, grad: ArrayLike<number>, h: AdamwHyper, t: number): void {
  const { param, expAvg, expAvgSq } = state;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i];
    param[i] -= h.lr * h.weightDecay * param[i];
    expAvg[i] = h.beta1 * expAvg[i] + (1 - h.beta1) * g;
    expAvgSq[i] = h.beta2 * expAvgSq[i] + (1 - h.beta2) * g * g;
    const mHat = expAvg[i] / (1 - h.beta1 ** t);
    const vHat = expAvgSq[i] / (1 - h.beta2 ** t);
    param[i] -= (h.lr * mHat) / (Math.sqrt(vHat) + h.eps);
  }
}

export function sumSquaresReference(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}
