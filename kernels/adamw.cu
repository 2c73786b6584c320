// CUDA twins of the optimiser leaves (CPU twins: native/ops/adamw.cc). Each performs
// the CPU twin's operations in the CPU twin's order, so both devices give the same bits:
//
//   adamw_step:        elementwise, the per-step scalars from adamw_constants (host),
//                      products as __fmul_rn, the fused steps as explicit fmaf; sqrtf and
//                      '/' are IEEE round-to-nearest (nvcc's default without fast math).
//   grad_sum_squares:  the CPU's chunks of kGradSumSquaresChunk elements; 16 threads per
//                      chunk stand for its 16 double lanes (element i feeds lane i mod 16,
//                      one fma chain each), folded pairwise by shuffles as the CPU folds
//                      its lanes; the chunk sums are added in chunk order on the host.
//   scale_in_place:    x·c as one f32 multiply.
#include <cuda_runtime.h>

#include <vector>

#include "../native/cuda_backend.h"
#include "../native/ops/adamw.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 65535;
constexpr int kLanes = 16;  // double accumulators per chunk, as in the CPU twin
constexpr int kChunksPerBlock = kThreads / kLanes;

unsigned grid_for(int64_t n) {
  const unsigned blocks = blocks_for(n, kThreads);
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

__global__ void __launch_bounds__(kThreads)
adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ exp_avg,
             float* __restrict__ exp_avg_sq, long long n, AdamwConstants k) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    const float decayed = __fmul_rn(param[i], k.decay);
    const float m = fmaf(k.one_minus_beta1, g - exp_avg[i], exp_avg[i]);
    const float v = fmaf(k.one_minus_beta2, __fmul_rn(g, g), __fmul_rn(exp_avg_sq[i], k.beta2));
    const float denom = sqrtf(v) / k.bias2_sqrt + k.eps;
    param[i] = fmaf(k.neg_step_size, m / denom, decayed);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

// One chunk per 16 consecutive threads; every thread of a warp reaches the shuffles
// (threads past the last chunk carry zeros), so the full mask is always live.
__global__ void __launch_bounds__(kThreads)
chunk_sums_kernel(const float* __restrict__ x, long long n, long long chunks, double* __restrict__ out) {
  const long long chunk = static_cast<long long>(blockIdx.x) * kChunksPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  double acc = 0.0;
  if (chunk < chunks) {
    const long long begin = chunk * kGradSumSquaresChunk;
    const long long end = begin + kGradSumSquaresChunk < n ? begin + kGradSumSquaresChunk : n;
    for (long long i = begin + lane; i < end; i += kLanes) {
      const double d = x[i];
      acc = fma(d, d, acc);
    }
  }
  // lanes[l] += lanes[l + width] for width 8, 4, 2, 1: lane 0 ends with the CPU's fold.
  for (int width = kLanes / 2; width >= 1; width /= 2) acc += __shfl_down_sync(0xffffffffu, acc, width, kLanes);
  if (lane == 0 && chunk < chunks) out[chunk] = acc;
}

__global__ void __launch_bounds__(kThreads) scale_kernel(float* __restrict__ x, long long n, float c) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], c);
}

}  // namespace

void adamw_step_cuda(const AdamwArgs& a) {
  DeviceGuard guard(a.device);
  if (a.n <= 0) return;
  adamw_kernel<<<grid_for(a.n), kThreads>>>(a.param, a.grad, a.exp_avg, a.exp_avg_sq, a.n, adamw_constants(a));
  check_launch("adamw_kernel");
}

double grad_sum_squares_cuda(const float* x, int64_t n, int device) {
  DeviceGuard guard(device);
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kGradSumSquaresChunk - 1) / kGradSumSquaresChunk;
  DeviceBuffer partial(sizeof(double) * static_cast<size_t>(chunks), device);
  const int64_t blocks = (chunks + kChunksPerBlock - 1) / kChunksPerBlock;  // ≤ 2^31 for any n < 2^63
  chunk_sums_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(x, n, chunks, partial.as<double>());
  check_launch("grad_sum_squares chunk_sums_kernel");
  std::vector<double> host(static_cast<size_t>(chunks));
  cuda_copy_to_host(host.data(), partial.as(), sizeof(double) * host.size(), device);
  double total = 0.0;
  for (double p : host) total += p;
  return total;
}

void scale_in_place_cuda(float* x, int64_t n, float c, int device) {
  DeviceGuard guard(device);
  if (n <= 0) return;
  scale_kernel<<<grid_for(n), kThreads>>>(x, n, c);
  check_launch("scale_in_place scale_kernel");
}

}  // namespace lgrpo
