// CUDA twin of group_advantages (spec §2; CPU twin: native/ops/group_advantages.cc).
// Rows number in the thousands and groups in the hundreds, so a sort-free scheme is
// plenty: kernel 1 gives each group one block that scans every row and keeps its own
// (fixed-order tree reductions, so results are the same run after run); one extra block
// does the batch statistics and checks ids and rewards (first problem in row order, an
// id before its reward, as the CPU twin reports). Kernel 2 writes A_i per row.
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "../native/cuda_backend.h"
#include "../native/ops/group_advantages.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;

// Tree reduction over the block; every thread gets the result. `op` must be associative
// in exact arithmetic; the fixed tree makes the rounding the same on every run.
template <class T, class Op>
__device__ T block_reduce(T v, T* scratch, Op op) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) scratch[threadIdx.x] = op(scratch[threadIdx.x], scratch[threadIdx.x + stride]);
    __syncthreads();
  }
  T result = scratch[0];
  __syncthreads();
  return result;
}

struct Add {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct Min {
  __device__ double operator()(double a, double b) const { return fmin(a, b); }
};
struct Max {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

struct GroupScratch {
  double* mean;   // [groups]
  double* std;    // [groups]
  double* sum;    // [groups]
  double* count;  // [groups]
  double* batch_std;  // [1]
};

// Problem code of row i: 2i for a bad group id, 2i + 1 for a non-finite reward.
__global__ void group_stats_kernel(GroupAdvantagesArgs a, GroupScratch s, unsigned long long* problem) {
  __shared__ double scratch[kThreads];
  const int32_t g = static_cast<int32_t>(blockIdx.x);
  const bool batch = g == a.groups;  // the extra block: whole-batch statistics
  double sum = 0, count = 0, lo = INFINITY, hi = -INFINITY;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    const int32_t id = a.group_ids[i];
    if (!batch && id != g) continue;
    const double r = a.rewards[i];
    if (batch && (id < 0 || id >= a.groups)) atomicMin(problem, 2ull * static_cast<unsigned long long>(i));
    if (batch && !isfinite(r)) atomicMin(problem, 2ull * static_cast<unsigned long long>(i) + 1);
    sum += r;
    count += 1;
    lo = fmin(lo, r);
    hi = fmax(hi, r);
  }
  sum = block_reduce(sum, scratch, Add());
  count = block_reduce(count, scratch, Add());
  lo = block_reduce(lo, scratch, Min());
  hi = block_reduce(hi, scratch, Max());
  const double mean = count > 0 ? sum / count : 0.0;
  double squares = 0;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    if (!batch && a.group_ids[i] != g) continue;
    const double d = a.rewards[i] - mean;
    squares += d * d;
  }
  squares = block_reduce(squares, scratch, Add());
  if (threadIdx.x != 0) return;
  const double denom = a.unbiased ? count - 1.0 : count;
  const double stddev = denom > 0 ? sqrt(squares / denom) : 0.0;
  if (batch) {
    *s.batch_std = stddev;
    return;
  }
  s.mean[g] = mean;
  s.std[g] = stddev;
  s.sum[g] = sum;
  s.count[g] = count;
  a.group_mean[g] = static_cast<float>(mean);
  a.group_std[g] = static_cast<float>(stddev);
  // Fewer than two rows, or all rewards equal: no signal to learn from.
  a.degenerate[g] = (count < 2 || lo == hi) ? 1 : 0;
}

__global__ void advantages_kernel(GroupAdvantagesArgs a, GroupScratch s) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.rows) return;
  const int32_t g = a.group_ids[i];
  if (g < 0 || g >= a.groups || a.degenerate[g]) {  // bad ids are reported by the host
    a.advantages[i] = 0.0f;
    return;
  }
  const double r = a.rewards[i];
  const double centred = r - s.mean[g];
  double adv = 0.0;
  switch (a.mode) {
    case AdvantageMode::Std: adv = centred / (s.std[g] + a.eps); break;
    case AdvantageMode::Mean: adv = centred; break;
    case AdvantageMode::Batch: adv = centred / (*s.batch_std + a.eps); break;
    case AdvantageMode::Rloo: adv = r - (s.sum[g] - r) / (s.count[g] - 1.0); break;
  }
  a.advantages[i] = static_cast<float>(adv);
}

}  // namespace

void group_advantages_cuda(const GroupAdvantagesArgs& a) {
  DeviceGuard guard(a.device);
  const size_t groups = static_cast<size_t>(a.groups);
  // 4 arrays of `groups` doubles and the batch std, in one allocation.
  DeviceBuffer scratch((4 * groups + 1) * sizeof(double), a.device);
  DeviceFlags<1> problem(a.device);
  double* base = scratch.as<double>();
  GroupScratch s{base, base + groups, base + 2 * groups, base + 3 * groups, base + 4 * groups};

  group_stats_kernel<<<static_cast<unsigned>(groups + 1), kThreads>>>(a, s, problem.words());
  check_launch("group_stats_kernel");
  if (a.rows > 0) {
    advantages_kernel<<<blocks_for(a.rows, kThreads), kThreads>>>(a, s);
    check_launch("advantages_kernel");
  }
  cuda_synchronize(a.device);
  const unsigned long long first = problem.read()[0];
  if (first == kNoProblem) return;
  const unsigned long long row = first / 2;
  if (first % 2 == 0) throw group_id_outside(fetch_element(a.group_ids, row, a.device), row, a.groups);
  throw not_finite("rewards", std::to_string(row), fetch_element(a.rewards, row, a.device));
}

}  // namespace lgrpo
