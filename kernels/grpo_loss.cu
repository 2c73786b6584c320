// CUDA twin of the λ-GRPO token pass and the mask-length leaf (spec §3-4; CPU twin:
// native/ops/grpo_loss.cc, which also holds the host orchestration both devices share).
//
// Token pass: grid (rows, chunks); each block owns kChunk consecutive tokens of one row,
// threads stride through them (coalesced), and a fixed-order tree reduction gives the
// block's kRowStatCount partial sums. With one chunk per row the block writes row_stats
// directly; otherwise a second small kernel adds the chunk partials in chunk order. Both
// are deterministic. Problems (mask values, NaN/Inf) go to a device flag holding the
// smallest (row · 4 + code), so the error names the first bad row, as on the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string>

#include "../native/cuda_backend.h"
#include "../native/ops/grpo_loss.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8 * kThreads;  // tokens per block
const char* const kTokenArgNames[3] = {"logprobs", "oldLogprobs", "refLogprobs"};


__device__ float mask_at(const void* mask, DType dtype, int64_t i) {
  return dtype == DType::U8 ? static_cast<float>(static_cast<const uint8_t*>(mask)[i])
                            : static_cast<const float*>(mask)[i];
}

__global__ void mask_lengths_kernel(const void* mask, DType dtype, int64_t T, float* lengths,
                                    unsigned long long* flag) {
  __shared__ int64_t scratch[kThreads];
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int64_t row = blockIdx.x;
  int64_t count = 0;
  bool ok = true;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const float m = mask_at(mask, dtype, row * T + t);
    ok &= m == 0.0f || m == 1.0f;
    count += m == 1.0f;
  }
  if (!ok) atomicOr(&bad, 1);
  scratch[threadIdx.x] = count;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    lengths[row] = static_cast<float>(scratch[0]);
    if (bad) atomicMin(flag, static_cast<unsigned long long>(row));
  }
}

// Partial sums of one block in the RowStat order.
struct Sums {
  double v[kRowStatCount];
};

// One token, spec §3: the same definition as token_scalar() in native/ops/grpo_loss.cc.
__device__ void token(const GrpoTokenPassArgs& a, int64_t idx, float advantage, float scale, float lo, float hi,
                      bool dual_on, float dual_bound, Sums& s, int& bad) {
  const float lp = a.logprobs[idx], old = a.old_logprobs[idx];
  const float ref = a.ref_logprobs ? a.ref_logprobs[idx] : 0.0f;
  if (!isfinite(lp)) bad |= 1;
  if (!isfinite(old)) bad |= 2;
  if (!isfinite(ref)) bad |= 4;
  // The log-ratio is clamped as in the CPU twin (kRatioClamp): ρ stays finite, and the ρ
  // branch is flat in logp where the clamp bit.
  const float log_ratio = lp - old;
  const float clamped_log_ratio = fminf(fmaxf(log_ratio, -kRatioClamp), kRatioClamp);
  const float rho = expf(clamped_log_ratio);
  const float clipped = fminf(fmaxf(rho, lo), hi);
  const float unclipped_term = rho * advantage, clipped_term = clipped * advantage;
  float surrogate = fminf(unclipped_term, clipped_term);
  float ds = unclipped_term <= clipped_term && log_ratio == clamped_log_ratio ? unclipped_term : 0.0f;
  bool dual = false;
  if (dual_on && surrogate < dual_bound) {
    surrogate = dual_bound;
    ds = 0.0f;
    dual = true;
  }
  float l = -surrogate, g = -ds, kl = 0.0f;
  if (a.ref_logprobs) {
    const float d = ref - lp;
    const float dc = fminf(fmaxf(d, -kKlClamp), kKlClamp);
    const float e = expf(dc);
    kl = e - dc - 1.0f;
    l += a.beta * kl;
    if (d == dc) g += a.beta * (1.0f - e);
  }
  // Padding may hold anything finite; select rather than multiply by the mask so an
  // overflowing ratio there cannot turn into NaN.
  if (mask_at(a.mask, a.mask_dtype, idx) != 0.0f) {
    a.grad_logprobs[idx] = g * scale;
    s.v[kRowTokenLossSum] += l;
    s.v[kRowTokens] += 1;
    s.v[kRowClipLow] += advantage < 0 && rho < lo;
    s.v[kRowClipHigh] += advantage > 0 && rho > hi;
    s.v[kRowDualClip] += dual;
    s.v[kRowRatioSum] += rho;
    s.v[kRowKlSum] += kl;
  } else {
    a.grad_logprobs[idx] = 0.0f;
  }
}

__global__ void token_pass_kernel(GrpoTokenPassArgs a, double* partials, unsigned long long* flag) {
  __shared__ double scratch[kRowStatCount][kThreads];
  __shared__ int block_bad;
  if (threadIdx.x == 0) block_bad = 0;
  __syncthreads();
  const int64_t row = blockIdx.x, chunk = blockIdx.y;
  const float advantage = a.advantages[row], scale = a.token_scale[row];
  const float lo = 1.0f - a.eps_low, hi = 1.0f + a.eps_high;
  const bool dual_on = a.dual_clip > 1.0f && advantage < 0;
  const float dual_bound = a.dual_clip * advantage;
  Sums s;
  for (int k = 0; k < kRowStatCount; ++k) s.v[k] = 0;
  int bad = 0;
  const int64_t begin = chunk * kChunk, end = min(a.T, begin + kChunk);
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x)
    token(a, row * a.T + t, advantage, scale, lo, hi, dual_on, dual_bound, s, bad);
  if (bad) atomicOr(&block_bad, bad);
  for (int k = 0; k < kRowStatCount; ++k) scratch[k][threadIdx.x] = s.v[k];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      for (int k = 0; k < kRowStatCount; ++k) scratch[k][threadIdx.x] += scratch[k][threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x < kRowStatCount)
    partials[(row * gridDim.y + chunk) * kRowStatCount + threadIdx.x] = scratch[threadIdx.x][0];
  if (threadIdx.x == 0 && block_bad) {
    const unsigned long long code = (block_bad & 1) ? 0 : (block_bad & 2) ? 1 : 2;
    atomicMin(flag, static_cast<unsigned long long>(row) * 4ull + code);
  }
}

// Adds the chunk partials of each row in chunk order.
__global__ void fold_chunks_kernel(const double* partials, int64_t rows, int64_t chunks, double* row_stats) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * kRowStatCount) return;
  const int64_t row = i / kRowStatCount, k = i % kRowStatCount;
  double sum = 0;
  for (int64_t c = 0; c < chunks; ++c) sum += partials[(row * chunks + c) * kRowStatCount + k];
  row_stats[i] = sum;
}


}  // namespace

void mask_lengths_cuda(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths, int device) {
  if (mask_dtype != DType::U8 && mask_dtype != DType::F32) throw Error("mask: expected dtype u8 or f32", Error::Type);
  if (rows == 0) return;
  DeviceGuard guard(device);
  DeviceFlags<1> flag(device);
  mask_lengths_kernel<<<static_cast<unsigned>(rows), kThreads>>>(mask, mask_dtype, T, lengths, flag.words());
  check_launch("mask_lengths_kernel");
  cuda_synchronize(device);
  const unsigned long long first = flag.read()[0];
  if (first != kNoProblem)
    throw Error("mask: row " + std::to_string(first) + " holds a value other than 0 or 1", Error::Range);
}

void grpo_token_pass_cuda(const GrpoTokenPassArgs& a) {
  if (a.mask_dtype != DType::U8 && a.mask_dtype != DType::F32) throw Error("mask: expected dtype u8 or f32", Error::Type);
  if (a.rows == 0) return;
  const int device = a.device;
  DeviceGuard guard(device);
  DeviceFlags<1> flag(device);
  const int64_t chunks = std::max<int64_t>(1, (a.T + kChunk - 1) / kChunk);
  DeviceBuffer scratch(chunks > 1 ? static_cast<size_t>(a.rows * chunks * kRowStatCount) * sizeof(double) : 0, device);
  double* partials = chunks > 1 ? scratch.as<double>() : a.row_stats;
  token_pass_kernel<<<dim3(static_cast<unsigned>(a.rows), static_cast<unsigned>(chunks)), kThreads>>>(a, partials,
                                                                                                     flag.words());
  check_launch("token_pass_kernel");
  if (chunks > 1) {
    fold_chunks_kernel<<<blocks_for(a.rows * kRowStatCount, kThreads), kThreads>>>(partials, a.rows, chunks,
                                                                                   a.row_stats);
    check_launch("fold_chunks_kernel");
  }
  cuda_synchronize(device);
  const unsigned long long first = flag.read()[0];
  if (first != kNoProblem)
    throw Error(std::string(kTokenArgNames[first % 4]) + ": row " + std::to_string(first / 4) +
                    " holds NaN or Inf; inputs must be finite (padding included)", Error::Range);
}

}  // namespace lgrpo
