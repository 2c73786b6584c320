// Fused token log-prob: log-softmax gathered at the target, with optional entropy,
// in one streaming pass over each row of logits (spec §1). Never materialises the
// log-softmax. The CPU twin lives in token_logprobs.cc, the CUDA twin in
// kernels/token_logprobs.cu; both implement exactly these signatures.
#pragma once

#include "../common.h"

namespace lgrpo {

struct TokenLogprobsForwardArgs {
  const void* logits;     // [rows, vocab], dtype f32 | bf16 | f16
  DType dtype;
  int64_t rows, vocab;
  const int32_t* targets; // [rows], each in [0, vocab)
  float temperature;      // logits are divided by this before the softmax
  float* logprobs;        // [rows] out
  float* entropy;         // [rows] out, or nullptr to skip
  float* lse;             // [rows] out: logsumexp of the scaled logits
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

struct TokenLogprobsBackwardArgs {
  const void* logits;          // [rows, vocab]
  DType dtype;
  int64_t rows, vocab;
  const int32_t* targets;      // [rows]
  const float* lse;            // [rows] from the forward
  const float* grad_logprobs;  // [rows]
  const float* grad_entropy;   // [rows] or nullptr
  const float* entropy;        // [rows] from the forward; required when grad_entropy is set
  float temperature;
  void* grad_logits;           // [rows, vocab] out, same dtype as logits; may alias logits
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// The twins' error for a gradient beyond its dtype's range (it would be ±Infinity).
Error gradient_overflow_error(int64_t row, DType dtype);

void token_logprobs_forward_cpu(const TokenLogprobsForwardArgs& a);
void token_logprobs_backward_cpu(const TokenLogprobsBackwardArgs& a);
void token_logprobs_forward_cuda(const TokenLogprobsForwardArgs& a);
void token_logprobs_backward_cuda(const TokenLogprobsBackwardArgs& a);

}  // namespace lgrpo
