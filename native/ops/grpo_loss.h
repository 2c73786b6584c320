// The clipped-surrogate token pass of the λ-GRPO loss family (spec §3-4). The
// per-row scale w_i/N is known before the pass (it depends on lengths and λ only), so
// one pass over the rows×T tokens yields token gradients and per-row partial sums;
// the host folds the per-row sums into the loss, ∂L/∂λ and the diagnostics.
// CPU twin: grpo_loss.cc; CUDA twin: kernels/grpo_loss.cu. The orchestration (lengths →
// weights → token pass → fold) is shared by both devices: the host functions at the end
// of this header, called by native/bindings/grpo_loss.cc.
#pragma once

#include <vector>

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

// k3 KL: ref − logp is clamped to ±kKlClamp before exp (spec §5, as verl's low_var_kl);
// outside the clamp the KL term is flat in logp, so its gradient there is 0.
constexpr float kKlClamp = 20.0f;

// ρ = exp(logp − oldLogp) with logp − oldLogp clamped to ±kRatioClamp first (as verl
// clamps it): above ~88.7 ρ overflows f32, and for A < 0 the unclipped branch −ρA was
// then +Inf, a loss of +Inf from finite inputs. Outside the clamp the ρ branch is flat in
// logp (gradient 0), as the KL term is outside its clamp. Both twins must clamp alike.
constexpr float kRatioClamp = 20.0f;

struct GrpoTokenPassArgs {
  const float* logprobs;      // [rows, T]
  const float* old_logprobs;  // [rows, T]
  const float* ref_logprobs;  // [rows, T] or nullptr
  const float* advantages;    // [rows]
  const void* mask;           // [rows, T], f32 or u8, values 0/1 (checked by mask_lengths_*)
  DType mask_dtype;
  int64_t rows, T;
  const float* token_scale;   // [rows]: w_i / N, the factor on each token's gradient
  float eps_low, eps_high;
  float dual_clip;            // c > 1 enables the dual clip for A < 0; 0 disables
  float beta;                 // KL coefficient; the KL term needs ref_logprobs
  float* grad_logprobs;       // [rows, T] out: ∂L/∂logp
  double* row_stats;          // [rows, kRowStatCount] out
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// Both twins check logprobs, oldLogprobs and refLogprobs for NaN/Inf over every token
// (masked or not) inside the same pass and throw lgrpo::Error (Range) naming the first
// bad argument and row.
void grpo_token_pass_cpu(const GrpoTokenPassArgs& a);
void grpo_token_pass_cuda(const GrpoTokenPassArgs& a);

// Per-row response lengths Σ_t mask[i,t] (both twins), used to build the weights.
// Throws lgrpo::Error (Range) naming `mask` and the row when a value is not 0 or 1.
void mask_lengths_cpu(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths);
void mask_lengths_cuda(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths, int device);

// ---- host side, shared by both devices (rows are few: B floats cross the bus) ----

enum class Aggregation : int32_t { Grpo = 0, Dapo = 1, DrGrpo = 2, Lambda = 3 };

// w_i, ∂w_i/∂λ (0 outside `lambda` mode) and N by the spec §4 table. N is floored at 1:
// TRL clamps the token count so, and it only matters for a batch without response tokens.
void aggregation_weights(Aggregation mode, const float* lengths, const int32_t* group_ids, int64_t rows,
                         int32_t groups, double lambda, double r, double max_length, float* weights,
                         float* d_weights_d_lambda, double* normalizer);

struct GrpoLossTotals {
  double loss = 0, grad_lambda = 0;
  double tokens = 0, clip_low = 0, clip_high = 0, dual_clip = 0, ratio_sum = 0, kl_sum = 0;
  double weight_min = 0, weight_max = 0;  // over rows with at least one response token
  int64_t empty_rows = 0;
};

// loss = Σ_i w_i S_i / N, ∂L/∂λ = Σ_i S_i ∂w_i/∂λ / N, seq_loss_i = w_i S_i / N (so the
// seq_loss entries sum to the loss). Sums run in row order: deterministic.
GrpoLossTotals fold_row_stats(const double* row_stats, const float* weights, const float* d_weights_d_lambda,
                              double normalizer, int64_t rows, float* seq_loss);

}  // namespace lgrpo
