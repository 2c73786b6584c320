// λ-GRPO per-response weights from standardised lengths within each group (spec §4):
// f_i = G_g · softmax_g(h_i^λ), with ∂f_i/∂λ alongside. CPU twin: lambda_weights.cc;
// CUDA twin: kernels/lambda_weights.cu.
#pragma once

#include "../common.h"

namespace lgrpo {

struct LambdaWeightsArgs {
  const float* lengths;     // [rows] response lengths |o_i| (>= 0)
  const int32_t* group_ids; // [rows], each in [0, groups)
  int64_t rows;
  int32_t groups;
  float lambda;
  float r;                  // slope of h = max(1 + r z, 1e-6)
  float* weights;           // [rows] out: f_i
  float* d_weights_d_lambda;// [rows] out: ∂f_i/∂λ
};

void lambda_weights_cpu(const LambdaWeightsArgs& a);
void lambda_weights_cuda(const LambdaWeightsArgs& a);

}  // namespace lgrpo
