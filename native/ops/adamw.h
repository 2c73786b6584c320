// Optimiser leaves for the engine: a fused AdamW step over flat f32 buffers, the sum of
// squares behind global grad-norm clipping, and an in-place scale. The optimiser itself
// (parameter groups, schedules, state files) lives above these.
#pragma once

#include <cstdint>

namespace lgrpo {

// One torch.optim.AdamW step (amsgrad = False, maximize = False), elementwise:
//   p ← p·(1 − lr·weight_decay)                         decoupled weight decay
//   m ← m + (1 − β1)·(g − m)                            exp_avg.lerp_(g, 1 − β1)
//   v ← β2·v + (1 − β2)·g²
//   p ← p − lr/(1 − β1^step) · m / (√v / √(1 − β2^step) + eps)
// `step` counts from 1 (the first update has step = 1). All four buffers are updated in
// place except grad. Elementwise, so the bits do not depend on the thread count.
struct AdamwArgs {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

void adamw_step_cpu(const AdamwArgs& a);

// Σ x² in double over fixed 64 Ki-element chunks, chunk sums added in order: the same
// bits for the same buffer whatever the thread count. NaN or Inf in x gives NaN or Inf.
double grad_sum_squares_cpu(const float* x, int64_t n);

// x ← x·c (f32 multiply).
void scale_in_place_cpu(float* x, int64_t n, float c);

}  // namespace lgrpo
