// Optimiser leaves for the engine: a fused AdamW step over flat f32 buffers, the sum of
// squares behind global grad-norm clipping, and an in-place scale. The optimiser itself
// (parameter groups, schedules, state files) lives above these. CPU twins in adamw.cc,
// CUDA twins in kernels/adamw.cu: the same arithmetic, so the same bits on both.
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
  int device = 0;  // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// The per-step scalars, in double and rounded once to f32 (as torch does with Python
// floats on f32 tensors); both twins take them from here.
struct AdamwConstants {
  float decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias2_sqrt, eps;
};
AdamwConstants adamw_constants(const AdamwArgs& a);

void adamw_step_cpu(const AdamwArgs& a);
void adamw_step_cuda(const AdamwArgs& a);  // asynchronous

// Σ x² in double over fixed 64 Ki-element chunks, chunk sums added in order: the same
// bits for the same buffer whatever the thread count. NaN or Inf in x gives NaN or Inf.
constexpr int64_t kGradSumSquaresChunk = int64_t(1) << 16;
double grad_sum_squares_cpu(const float* x, int64_t n);
// The same chunks, lanes and folds on the device (the chunk sums are added on the host).
double grad_sum_squares_cuda(const float* x, int64_t n, int device);

// x ← x·c (f32 multiply).
void scale_in_place_cpu(float* x, int64_t n, float c);
void scale_in_place_cuda(float* x, int64_t n, float c, int device);  // asynchronous

}  // namespace lgrpo
