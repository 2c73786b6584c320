// RMSNorm (Qwen2/Llama): y = x · rsqrt(mean(x²) + eps) · w, row by row over [rows, dim].
// Engine leaf op: f32 only, CPU twin in rms_norm.cc (forward and backward together),
// CUDA twin in kernels/rms_norm.cu (same signatures).
#pragma once

#include "../common.h"

namespace lgrpo {

struct RmsNormForwardArgs {
  const float* x;       // [rows, dim]
  const float* weight;  // [dim]
  int64_t rows, dim;
  float eps;
  float* y;             // [rows, dim] out; may alias x
  float* rstd;          // [rows] out: rsqrt(mean(x²) + eps), saved for the backward; may be nullptr
  int device = 0;       // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct RmsNormBackwardArgs {
  const float* x;       // [rows, dim] the forward's input
  const float* weight;  // [dim]
  const float* rstd;    // [rows] from the forward
  const float* dy;      // [rows, dim]
  int64_t rows, dim;
  float* dx;            // [rows, dim] out, overwritten; may alias dy
  float* dweight;       // [dim], ACCUMULATED (+=) so layers and micro-batches can be summed;
                        // nullptr skips it (a frozen norm)
  int device = 0;       // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// Returns the first row whose sum of squares is not finite (a NaN or ±Inf in x, or
// overflow), or -1. The outputs are written either way; the caller decides whether to throw.
int64_t rms_norm_forward_cpu(const RmsNormForwardArgs& a);
void rms_norm_backward_cpu(const RmsNormBackwardArgs& a);
int64_t rms_norm_forward_cuda(const RmsNormForwardArgs& a);  // waits for the device (it reads the flag)
void rms_norm_backward_cuda(const RmsNormBackwardArgs& a);    // asynchronous

}  // namespace lgrpo
