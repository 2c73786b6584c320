// Float64 reference for grpoLoss, written from the spec formulas (§3 token surrogate,
// §4 aggregation table and λ weights, §5 KL clamp), one token at a time.
import { lambdaWeightsReference } from './lambda_weights.js';

export type Aggregation = 'grpo' | 'dapo' | 'dr_grpo' | 'lambda';

export interface GrpoReferenceInput {
  B: number;
  T: number;
  logprobs: ArrayLike<number>;
  oldLogprobs: ArrayLike<number>;
  refLogprobs?: ArrayLike<number>;
  advantages: ArrayLike<number>;
  mask: ArrayLike<number>;
  groupIds: ArrayLike<number>;
  groups: number;
  aggregation: Aggregation;
  lambda?: number;
  r?: number;
  epsLow?: number;
  epsHigh?: number;
  dualClip?: number;
  beta?: number;
  maxLength?: number;
  /** whole-step values, as a micro-batch receives them */
  weights?: ArrayLike<number>;
  dWeightsDLambda?: ArrayLike<number>;
  normalizer?: number;
}

export interface GrpoReference {
  loss: number;
  gradLogprobs: Float64Array;
  gradLambda: number;
  seqLoss: Float64Array;
  weights: Float64Array;
  dWeightsDLambda: Float64Array;
  lengths: Float64Array;
  normalizer: number;
  /** ℓ_it for every token (masked or not) */
  tokenLoss: Float64Array;
  stats: {
    clipFracLow: number; clipFracHigh: number; dualClipFrac: number; ratioMean: number; klMean: number;
    tokens: number; meanLength: number;
  };
}

export const KL_CLAMP = 20;
/** logp − oldLogp is clamped to ±RATIO_CLAMP before exp (as verl does); the ρ branch is flat outside. */
export const RATIO_CLAMP = 20;

export function grpoLossReference(x: GrpoReferenceInput): GrpoReference {
  const { B, T } = x;
  const epsLow = x.epsLow ?? 0.2, epsHigh = x.epsHigh ?? 0.2, beta = x.beta ?? 0;
  const lengths = new Float64Array(B);
  for (let i = 0; i < B; i++) for (let t = 0; t < T; t++) lengths[i] += x.mask[i * T + t];
  const tokens = lengths.reduce((a, b) => a + b, 0);

  // §4: w_i and N by aggregation mode.
  let weights: Float64Array = new Float64Array(B).fill(1);
  let dWeightsDLambda: Float64Array = new Float64Array(B);
  let normalizer: number;
  switch (x.aggregation) {
    case 'grpo':
      weights = lengths.map((l) => (l > 0 ? 1 / l : 0));
      normalizer = B;
      break;
    case 'dapo':
      normalizer = tokens;
      break;
    case 'dr_grpo':
      normalizer = B * (x.maxLength ?? T);
      break;
    case 'lambda': {
      const ref = lambdaWeightsReference(lengths, x.groupIds, x.groups, x.lambda ?? 0, x.r ?? 1 / 9);
      weights = ref.weights;
      dWeightsDLambda = ref.dWeightsDLambda;
      normalizer = tokens;
      break;
    }
  }
  normalizer = Math.max(normalizer, 1);  // the implementation's convention (TRL clamps the token count)
  if (x.weights) weights = Float64Array.from(x.weights);
  if (x.dWeightsDLambda) dWeightsDLambda = Float64Array.from(x.dWeightsDLambda);
  if (x.normalizer !== undefined) normalizer = x.normalizer;

  // §3: per-token surrogate, KL and the derivative of ℓ w.r.t. logp.
  const tokenLoss = new Float64Array(B * T), gradLogprobs = new Float64Array(B * T);
  const seqLoss = new Float64Array(B);
  let loss = 0, gradLambda = 0, low = 0, high = 0, dual = 0, ratioSum = 0, klSum = 0;
  for (let i = 0; i < B; i++) {
    const A = x.advantages[i];
    let S = 0;
    for (let t = 0; t < T; t++) {
      const k = i * T + t;
      const lp = x.logprobs[k];
      const logRatio = lp - x.oldLogprobs[k];
      const clampedLogRatio = Math.min(Math.max(logRatio, -RATIO_CLAMP), RATIO_CLAMP);
      const rho = Math.exp(clampedLogRatio);
      const clipped = Math.min(Math.max(rho, 1 - epsLow), 1 + epsHigh);
      let s = Math.min(rho * A, clipped * A);
      // ∂s/∂logp = ρA where the unclipped branch is the min, else 0 (clip(ρ) is then constant).
      let dsdlp = rho * A <= clipped * A && logRatio === clampedLogRatio ? rho * A : 0;
      let dualActive = false;
      if (x.dualClip !== undefined && A < 0 && s < x.dualClip * A) {
        s = x.dualClip * A;
        dsdlp = 0;
        dualActive = true;
      }
      let l = -s, dl = -dsdlp, kl = 0;
      if (x.refLogprobs) {
        const d = x.refLogprobs[k] - lp;
        const dc = Math.min(Math.max(d, -KL_CLAMP), KL_CLAMP);
        kl = Math.exp(dc) - dc - 1;
        l += beta * kl;
        if (Math.abs(d) < KL_CLAMP) dl += beta * (1 - Math.exp(dc));  // ∂kl/∂logp = 1 − e^d inside the clamp
      }
      tokenLoss[k] = l;
      if (x.mask[k] === 0) continue;
      S += l;
      gradLogprobs[k] = (weights[i] / normalizer) * dl;
      if (A < 0 && rho < 1 - epsLow) low++;
      if (A > 0 && rho > 1 + epsHigh) high++;
      if (dualActive) dual++;
      ratioSum += rho;
      klSum += kl;
    }
    seqLoss[i] = (weights[i] * S) / normalizer;
    loss += seqLoss[i];
    gradLambda += (S * dWeightsDLambda[i]) / normalizer;
  }
  const perToken = tokens > 0 ? 1 / tokens : 0;
  return {
    loss, gradLogprobs, gradLambda, seqLoss, weights, dWeightsDLambda, lengths, normalizer, tokenLoss,
    stats: {
      clipFracLow: low * perToken, clipFracHigh: high * perToken, dualClipFrac: dual * perToken,
      ratioMean: ratioSum * perToken, klMean: klSum * perToken, tokens, meanLength: B > 0 ? tokens / B : 0,
    },
  };
}
