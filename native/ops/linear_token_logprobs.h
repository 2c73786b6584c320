// Fused-linear token log-prob: logits = hidden · weightᵀ computed tile by tile and
// folded into per-row running (max, sum, Σe^x·x, target logit), so the rows×vocab
// logits never exist in memory (spec §1, fused-linear form). Peak extra memory is
// O(rows + tile), unless the caller asks the CPU twin to keep the logits for the backward
// (saved_logits: 4·rows·vocab bytes, and the backward runs two GEMMs instead of three).
// CPU twin: linear_token_logprobs.cc; CUDA twin: kernels/linear_token_logprobs.cu.
#pragma once

#include "../common.h"

namespace lgrpo {

struct LinearTokenLogprobsForwardArgs {
  const void* hidden;     // [rows, dim]
  const void* weight;     // [vocab, dim], same dtype as hidden
  DType dtype;            // f32 | bf16 | f16
  int64_t rows, dim, vocab;
  const int32_t* targets; // [rows]
  float temperature;
  float* logprobs;        // [rows] out
  float* entropy;         // [rows] out or nullptr
  float* lse;             // [rows] out
  // [rows] out or nullptr: lse − (float)lse, so that lse + lse_lo holds the log-sum-exp
  // to ~2^-48 relative (the backward's recheck of rows with a large |lse|)
  float* lse_lo = nullptr;
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
  // CPU twin, f32 only, optional: the weight also as 16-row panels (pack_panels_cpu, gemm.h),
  // read instead of weight for the dot products (rollouts stream them contiguously); the
  // same bits. weight is still read if a logit comes out non-finite, to name the culprit.
  const float* weight_panels = nullptr;
  // CPU twin, optional: [linear_saved_logits_floats(rows, vocab)] out, the scaled logits in
  // the tiles the backward walks, so that it reads them instead of recomputing them (the
  // same values: the backward's GEMM is this one). Every other output is unchanged.
  float* saved_logits = nullptr;
};

struct LinearTokenLogprobsBackwardArgs {
  const void* hidden;
  const void* weight;
  DType dtype;
  int64_t rows, dim, vocab;
  const int32_t* targets;
  const float* lse;            // [rows]
  const float* grad_logprobs;  // [rows]
  const float* grad_entropy;   // [rows] or nullptr
  const float* entropy;        // [rows]; required when grad_entropy is set
  // [rows] or nullptr (all 0): δ = true log-sum-exp − lse for rows whose f32 lse lost
  // precision (|lse| ≥ kLinearLseRecheck); log p = (x − lse) − δ
  const float* lse_shift = nullptr;
  float temperature;
  float* grad_hidden;          // [rows, dim] out (f32), overwritten
  float* grad_weight;          // [vocab, dim] out (f32), overwritten
  // CPU twin, optional: the forward's saved_logits for these very inputs and temperature,
  // read in place of the logits GEMM; the gradients come out bit for bit the same
  const float* saved_logits = nullptr;
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

// |lse| from which the backward recomputes the log-sum-exp instead of trusting the f32 lse
// (whose rounding, half an ulp, is 2^-18 at 64: every p of the row scaled by e^±that).
constexpr float kLinearLseRecheck = 64.0f;
// How far above 0 a log-probability may come out before the given lse is refused.
constexpr float kLinearLseSlack = 1e-3f;

// The twins' error for an lse below its row's log-sum-exp (a probability above 1).
Error lse_below_error(int64_t row);

// Floats of saved_logits for rows × vocab: every row chunk's tiles, its rows rounded up to
// 16-row panels.
int64_t linear_saved_logits_floats(int64_t rows, int64_t vocab);

void linear_token_logprobs_forward_cpu(const LinearTokenLogprobsForwardArgs& a);
void linear_token_logprobs_backward_cpu(const LinearTokenLogprobsBackwardArgs& a);
// The sampler's LM head (f32 only): the scaled logits x = (h·wᵀ)/τ [rows, vocab] and each
// row's logsumexp in double (before rounding), from the very arithmetic of the forward
// above, so float(double(x[r, y]) − lse[r]) is bit for bit the log-prob the forward
// reports for target y. a.targets, a.logprobs, a.entropy and a.lse are ignored.
void linear_token_logits_cpu(const LinearTokenLogprobsForwardArgs& a, float* logits, double* lse);
// The CUDA twin: logits on the device, lse copied to the host (kernels/linear_token_logprobs.cu).
void linear_token_logits_cuda(const LinearTokenLogprobsForwardArgs& a, float* logits, double* host_lse);
void linear_token_logprobs_forward_cuda(const LinearTokenLogprobsForwardArgs& a);
void linear_token_logprobs_backward_cuda(const LinearTokenLogprobsBackwardArgs& a);

}  // namespace lgrpo
