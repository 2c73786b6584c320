// Float64 reference for the whole optimiser step, written from the documented behaviour
// of PyTorch and Hugging Face Trainer:
//   torch.nn.utils.clip_grad_norm_(params, max_norm):
//     total = ‖(‖g_1‖, …, ‖g_P‖)‖₂ = √(Σ_p Σ_i g²);  coef = max_norm / (total + 1e-6);
//     when coef < 1 every gradient is multiplied by coef. Returns total (before clipping).
//   torch.optim.AdamW with two parameter groups, Trainer-style: weight_decay on the
//     "decay" group, 0 on the rest (test/reference/adamw.ts has the per-element update).
//   The learning rate of update t (1-based) is lr(t) when lr is a schedule.
import { adamwReferenceStep, type AdamwState } from './adamw.js';

export interface ReferenceOptions {
  lr: number | ((step: number) => number);
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm?: number;
  /** true: this parameter gets no weight decay. */
  noDecay: (name: string) => boolean;
}

export class ReferenceAdamW {
  readonly state = new Map<string, AdamwState>();
  step = 0;

  constructor(params: Map<string, ArrayLike<number>>, readonly options: ReferenceOptions) {
    for (const [name, p] of params)
      this.state.set(name, { param: Float64Array.from(p), expAvg: new Float64Array(p.length), expAvgSq: new Float64Array(p.length) });
  }

  /** One update with these gradients (not modified); returns what the optimiser should report. */
  update(grads: Map<string, ArrayLike<number>>): { gradNorm: number; clipped: boolean; lr: number } {
    const o = this.options;
    const t = ++this.step;
    const lr = typeof o.lr === 'number' ? o.lr : o.lr(t);
    let sumSquares = 0;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) sumSquares += g[i] * g[i];
    const gradNorm = Math.sqrt(sumSquares);
    let coef = 1;
    if (o.maxGradNorm !== undefined && o.maxGradNorm / (gradNorm + 1e-6) < 1) coef = o.maxGradNorm / (gradNorm + 1e-6);
    for (const [name, s] of this.state) {
      const g = Float64Array.from(grads.get(name)!, (x) => x * coef);
      const weightDecay = o.noDecay(name) ? 0 : o.weightDecay;
      adamwReferenceStep(s, g, { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay }, t);
    }
    return { gradNorm, clipped: coef < 1, lr };
  }
}
