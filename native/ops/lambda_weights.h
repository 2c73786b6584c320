// λ-GRPO per-response weights from standardised lengths within each group (spec §4):
// f_i = G_g · softmax_g(h_i^λ), with ∂f_i/∂λ alongside. CPU twin: lambda_weights.cc;
// CUDA twin: kernels/lambda_weights.cu. grpoLoss calls the CPU twin on host copies of
// the lengths (B is small), whatever the device of the token tensors.
#pragma once

#include "../common.h"

namespace lgrpo {

struct LambdaWeightsArgs {
  const void* lengths;      // [rows] response lengths |o_i|, finite and >= 0
  DType lengths_dtype;      // F32 or I32
  const int32_t* group_ids; // [rows], each in [0, groups)
  int64_t rows;
  int32_t groups;
  double lambda;            // double: λ is a learned scalar, keep every bit the caller gave
  double r;                 // slope of h = max(1 + r z, 1e-6)
  float* weights;           // [rows] out: f_i
  float* d_weights_d_lambda;// [rows] out: ∂f_i/∂λ
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// Both twins throw lgrpo::Error (Range) naming `lengths` or `groupIds` for a negative or
// non-finite length or an id outside [0, groups), and naming `lambda` when h^λ
// overflows (|λ| far outside any useful range).
// The messages both twins throw, in this order of checks: ids and lengths row by row,
// then h^λ overflow (first row), then ∂f/∂λ overflow (first row).
inline Error bad_length(int64_t index, double length) {
  return Error("lengths: element " + std::to_string(index) + " is " + number_text(length) +
                   "; lengths must be finite and >= 0",
               Error::Range);
}
inline Error lambda_overflow(const char* what, int64_t row, double lambda) {
  return Error(std::string("lambda: ") + what + " overflows at row " + std::to_string(row) + " (lambda = " +
                   number_text(lambda) + "); keep |lambda| moderate",
               Error::Range);
}

void lambda_weights_cpu(const LambdaWeightsArgs& a);
void lambda_weights_cuda(const LambdaWeightsArgs& a);

}  // namespace lgrpo
