// The five kernels on small inputs. Run: node examples/kernels.mjs
import {
  Tensor, buildInfo, tokenLogprobs, tokenLogprobsBackward, linearTokenLogprobs, linearTokenLogprobsBackward,
  groupAdvantages, lambdaWeights, grpoLoss,
} from 'lgrpo-native';

console.log(buildInfo()); // { version, cuda, cudaDevices: [], simd: 'avx2+fma', threads, zeroCopy: true, ... }

// Token log-probs (and entropy) from logits [N, V], one streaming pass, never a full log-softmax.
const N = 3, V = 5;
const logits = Float32Array.from({ length: N * V }, (_, i) => Math.sin(i));
const targets = Int32Array.of(0, 4, 2);
const { logprobs, entropy, lse } = tokenLogprobs(logits, targets, { entropy: true, temperature: 0.7 });
const gradLogits = tokenLogprobsBackward(logits, targets, lse, new Float32Array(N).fill(1), {
  gradEntropy: new Float32Array(N).fill(0.01), entropy, temperature: 0.7,
});
console.log(logprobs, entropy, gradLogits.length); // Float32Array(3), Float32Array(3), 15

// The same from hidden states and the LM head, without ever holding the N×V logits.
const d = 4;
const hidden = Float32Array.from({ length: N * d }, (_, i) => Math.cos(i));
const weight = Float32Array.from({ length: V * d }, (_, i) => Math.sin(3 * i) / 2);
const fused = linearTokenLogprobs(hidden, weight, targets);
const { gradHidden, gradWeight } = linearTokenLogprobsBackward(hidden, weight, targets, fused.lse, new Float32Array(N).fill(1));
console.log(fused.logprobs, gradHidden.length, gradWeight.length); // Float32Array(3), 12, 20

// Group-normalised advantages: rows sharing a prompt id form a group (ragged groups are fine).
const rewards = Float32Array.of(1, 0, 1, 0, 0.5, 0.5);
const groupIds = Int32Array.of(0, 0, 0, 1, 1, 2);
const adv = groupAdvantages(rewards, groupIds, { mode: 'std' });
console.log(adv.advantages, adv.degenerate); // group 2 (one row) and group 1 (equal rewards) are degenerate

// λ-GRPO weights from response lengths within each group, with ∂w/∂λ.
const lengths = Int32Array.of(3, 9, 5, 4, 2, 7);
const { weights, dWeightsDLambda } = lambdaWeights(lengths, groupIds, { lambda: 0.5 });
console.log(weights, dWeightsDLambda);

// The clipped-surrogate loss, token gradients and ∂L/∂λ in one pass over the B×T tokens.
const B = 6, T = 9;
const mask = new Uint8Array(B * T).map((_, i) => Number(i % T < lengths[Math.floor(i / T)]));
const current = Float32Array.from({ length: B * T }, (_, i) => -1 - 0.1 * Math.sin(i));
const old = current.map((x, i) => x + 0.05 * Math.cos(7 * i));
const loss = grpoLoss({
  logprobs: current, oldLogprobs: old, advantages: adv.advantages, mask, groupIds,
  aggregation: 'lambda', lambda: 0.5, epsLow: 0.2, epsHigh: 0.28,
});
console.log(loss.loss, loss.gradLambda, loss.stats.clipFracHigh, loss.gradLogprobs.length); // number, number, number, 54

// Tensors wrap TypedArrays without copying; outputs come back as Tensors when inputs are Tensors.
const t = Tensor.from(logits, [N, V]);
const out = tokenLogprobs(t, Tensor.from(targets));
console.log(out.logprobs.shape, out.logprobs.device); // [3] 'cpu'
out.logprobs.dispose(); // frees native memory now (a finalizer would otherwise, later)
