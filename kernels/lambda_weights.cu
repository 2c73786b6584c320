// CUDA twin of lambda_weights (spec §4; CPU twin: native/ops/lambda_weights.cc).
// One block per group scans all rows (B is in the thousands at most), with fixed-order
// tree reductions in double, so the weights are the same run after run. An extra block
// checks ids and lengths. Problems go to per-call flags read back after the kernel and
// reported in the CPU twin's order: ids and lengths by row, then h^λ overflow, then
// ∂f/∂λ overflow.
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "../native/cuda_backend.h"
#include "../native/ops/lambda_weights.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
// Flag words: [0] = 2·row + (0 bad id | 1 bad length), [1] = first row whose h^λ
// overflows, [2] = first row whose ∂f/∂λ overflows.
enum Flag { kInput, kQOverflow, kDerivativeOverflow, kFlagCount };

__device__ double block_sum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  const double result = scratch[0];
  __syncthreads();
  return result;
}

__device__ double block_max(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) scratch[threadIdx.x] = fmax(scratch[threadIdx.x], scratch[threadIdx.x + stride]);
    __syncthreads();
  }
  const double result = scratch[0];
  __syncthreads();
  return result;
}

__device__ double length_at(const LambdaWeightsArgs& a, int64_t i) {
  return a.lengths_dtype == DType::I32 ? static_cast<double>(static_cast<const int32_t*>(a.lengths)[i])
                                       : static_cast<double>(static_cast<const float*>(a.lengths)[i]);
}

__device__ void report(unsigned long long* flags, Flag f, unsigned long long code) { atomicMin(&flags[f], code); }

__global__ void lambda_weights_kernel(LambdaWeightsArgs a, unsigned long long* flags) {
  __shared__ double scratch[kThreads];
  const int32_t g = static_cast<int32_t>(blockIdx.x);
  if (g == a.groups) {  // the checking block
    for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
      if (a.group_ids[i] < 0 || a.group_ids[i] >= a.groups) report(flags, kInput, 2ull * i);
      const double len = length_at(a, i);
      if (!(len >= 0.0) || isinf(len)) report(flags, kInput, 2ull * i + 1);
    }
    return;
  }
  double count = 0, sum = 0;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (a.group_ids[i] != g) continue;
    count += 1;
    sum += length_at(a, i);
  }
  count = block_sum(count, scratch);
  sum = block_sum(sum, scratch);
  if (count == 0) return;  // an empty group has no rows to write
  const double mean = sum / count;
  double squares = 0;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (a.group_ids[i] != g) continue;
    const double d = length_at(a, i) - mean;
    squares += d * d;
  }
  // Population std, floored at 1e-8 so equal lengths give z = 0 and f = 1.
  const double scale = fmax(sqrt(block_sum(squares, scratch) / count), 1e-8);

  // q = h^λ is recomputed in each sweep rather than stored: rows are few, memory is not.
  auto q_and_log_h = [&](int64_t i, double* log_h) {
    const double z = (length_at(a, i) - mean) / scale;
    const double h = fmax(1.0 + a.r * z, 1e-6);
    *log_h = log(h);
    return exp(a.lambda * *log_h);
  };
  double q_max = -INFINITY;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (a.group_ids[i] != g) continue;
    double log_h;
    const double q = q_and_log_h(i, &log_h);
    if (isinf(q) || isnan(q)) report(flags, kQOverflow, i);
    q_max = fmax(q_max, q);
  }
  q_max = block_max(q_max, scratch);
  double e_sum = 0, e_q_log_h_sum = 0;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (a.group_ids[i] != g) continue;
    double log_h;
    const double q = q_and_log_h(i, &log_h);
    const double e = exp(q - q_max);
    e_sum += e;
    e_q_log_h_sum += e * q * log_h;
  }
  e_sum = block_sum(e_sum, scratch);
  e_q_log_h_sum = block_sum(e_q_log_h_sum, scratch);
  const double expected_q_log_h = e_q_log_h_sum / e_sum;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (a.group_ids[i] != g) continue;
    double log_h;
    const double q = q_and_log_h(i, &log_h);
    const double s = exp(q - q_max) / e_sum;
    const float df = static_cast<float>(count * s * (q * log_h - expected_q_log_h));
    if (isinf(df) || isnan(df)) report(flags, kDerivativeOverflow, i);
    a.weights[i] = static_cast<float>(count * s);
    a.d_weights_d_lambda[i] = df;
  }
}

}  // namespace

void lambda_weights_cuda(const LambdaWeightsArgs& a) {
  if (a.lengths_dtype != DType::F32 && a.lengths_dtype != DType::I32)
    throw Error("lengths: expected dtype i32 or f32", Error::Type);
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  lambda_weights_kernel<<<static_cast<unsigned>(a.groups) + 1u, kThreads>>>(a, flags.words());
  check_launch("lambda_weights_kernel");
  cuda_synchronize(a.device);
  const auto f = flags.read();
  if (f[kInput] != kNoProblem) {
    const unsigned long long row = f[kInput] / 2;
    if (f[kInput] % 2 == 0) throw group_id_outside(fetch_element(a.group_ids, row, a.device), row, a.groups);
    const double length = a.lengths_dtype == DType::I32
                              ? fetch_element(static_cast<const int32_t*>(a.lengths), row, a.device)
                              : fetch_element(static_cast<const float*>(a.lengths), row, a.device);
    throw bad_length(row, length);
  }
  if (f[kQOverflow] != kNoProblem) throw lambda_overflow("h^lambda", f[kQOverflow], a.lambda);
  if (f[kDerivativeOverflow] != kNoProblem) throw lambda_overflow("the weight derivative", f[kDerivativeOverflow], a.lambda);
}

}  // namespace lgrpo
