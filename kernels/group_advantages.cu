// CUDA twin of group_advantages (spec §2; CPU twin: native/ops/group_advantages.cc).
// Rows number in the thousands and groups in the hundreds, so a sort-free scheme is
// plenty: kernel 1 gives each group one block that scans every row and keeps its own
// (fixed-order tree reductions, so results are the same run after run); one extra block
// does the batch statistics and checks the ids. Kernel 2 writes A_i per row.
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

__global__ void group_stats_kernel(GroupAdvantagesArgs a, GroupScratch s, unsigned long long* bad_row) {
  __shared__ double scratch[kThreads];
  const int32_t g = static_cast<int32_t>(blockIdx.x);
  const bool batch = g == a.groups;  // the extra block: whole-batch statistics
  double sum = 0, count = 0, lo = INFINITY, hi = -INFINITY;
  for (int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) {
    const int32_t id = a.group_ids[i];
    if (batch && (id < 0 || id >= a.groups)) atomicMin(bad_row, static_cast<unsigned long long>(i));
    if (!batch && id != g) continue;
    const double r = a.rewards[i];
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
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const size_t groups = static_cast<size_t>(a.groups);
  // One allocation for the scratch: 4 arrays of `groups` doubles, the batch std, the flag.
  const size_t doubles = 4 * groups + 1;
  char* block = static_cast<char*>(cuda_alloc(doubles * sizeof(double) + sizeof(unsigned long long), device));
  struct Free {
    void* p;
    int d;
    ~Free() { cuda_free(p, d); }
  } free_block{block, device};
  double* base = reinterpret_cast<double*>(block);
  GroupScratch s{base, base + groups, base + 2 * groups, base + 3 * groups, base + 4 * groups};
  auto* bad_row = reinterpret_cast<unsigned long long*>(base + doubles);
  const unsigned long long none = ULLONG_MAX;
  cuda_copy_to_device(bad_row, &none, sizeof(none), device);

  group_stats_kernel<<<static_cast<unsigned>(groups + 1), kThreads>>>(a, s, bad_row);
  check_launch("group_stats_kernel");
  if (a.rows > 0) {
    advantages_kernel<<<blocks_for(a.rows, kThreads), kThreads>>>(a, s);
    check_launch("advantages_kernel");
  }
  cuda_synchronize(device);
  unsigned long long first_bad = none;
  cuda_copy_to_host(&first_bad, bad_row, sizeof(first_bad), device);
  if (first_bad != none) {
    int32_t id = 0;
    cuda_copy_to_host(&id, a.group_ids + first_bad, sizeof(id), device);
    throw Error("groupIds: group id " + std::to_string(id) + " at row " + std::to_string(first_bad) +
                    " is outside [0, groups)", Error::Range);
  }
}

}  // namespace lgrpo
