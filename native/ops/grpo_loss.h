// The clipped-surrogate token pass of the λ-GRPO loss family (spec §3-4). The
// per-row scale w_i/N is known before the pass (it depends on lengths and λ only), so
// one pass over the rows×T tokens yields token gradients and per-row partial sums;
// the host folds the per-row sums into the loss, ∂L/∂λ and the diagnostics.
// CPU twin: grpo_loss.cc; CUDA twin: kernels/grpo_loss.cu.
#pragma once

#include "../common.h"

namespace lgrpo {

// Per-row partial sums written by the token pass, in this order.
enum RowStat : int {
  kRowTokenLossSum = 0,  // S_i = Σ_t mask ℓ_it
  kRowTokens,            // |o_i| = Σ_t mask
  kRowClipLow,           // tokens with ρ < 1-ε_low and A < 0
  kRowClipHigh,          // tokens with ρ > 1+ε_high and A > 0
  kRowDualClip,          // tokens where the dual clip bound c·A was active
  kRowRatioSum,          // Σ_t mask ρ
  kRowKlSum,             // Σ_t mask kl (0 without a reference)
  kRowStatCount
};

struct GrpoTokenPassArgs {
  const float* logprobs;      // [rows, T]
  const float* old_logprobs;  // [rows, T]
  const float* ref_logprobs;  // [rows, T] or nullptr
  const float* advantages;    // [rows]
  const void* mask;           // [rows, T], f32 or u8, values 0/1
  DType mask_dtype;
  int64_t rows, T;
  const float* token_scale;   // [rows]: w_i / N, the factor on each token's gradient
  float eps_low, eps_high;
  float dual_clip;            // c > 1 enables the dual clip for A < 0; 0 disables
  float beta;                 // KL coefficient; the KL term needs ref_logprobs
  float* grad_logprobs;       // [rows, T] out: ∂L/∂logp
  double* row_stats;          // [rows, kRowStatCount] out
};

void grpo_token_pass_cpu(const GrpoTokenPassArgs& a);
void grpo_token_pass_cuda(const GrpoTokenPassArgs& a);

// Per-row response lengths Σ_t mask[i,t] (both twins), used to build the weights.
void mask_lengths_cpu(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths);
void mask_lengths_cuda(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths);

}  // namespace lgrpo
