// CUDA twin of rms_norm (CPU twin: native/ops/rms_norm.cc, which has the formulas).
//
//   forward:   one block per row: Σx² by strided fmaf chains, a fixed-order block
//              reduction, then y = (x·rstd)·w. The first row whose Σx² is not finite is
//              reported through a flag word, as the CPU twin returns it.
//   backward:  dweight first (dx may alias dy): one block per 32 columns, 8 row lanes
//              each summing every 8th row in row order, the lanes then added in lane
//              order; then dx, one block per row, like the forward.
// Every sum has a fixed shape that depends only on the sizes, so the bits are the same
// run after run; they differ from the CPU twin's only by summation order.
#include <cuda_runtime.h>

#include "../native/cuda_backend.h"
#include "../native/ops/rms_norm.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kColumns = 32;   // dweight: columns per block (one warp wide)
constexpr int kRowLanes = 8;   // dweight: rows summed side by side per block

// Sum over the block in a fixed tree (shuffles within warps, then warp 0 over the warps);
// every thread gets the result. Once per kernel: a second call would need a barrier
// before scratch is written again.
__device__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? scratch[lane] : 0.0f;
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
    if (lane == 0) scratch[kWarps] = v;
  }
  __syncthreads();
  return scratch[kWarps];
}

__global__ void __launch_bounds__(kThreads)
forward_kernel(RmsNormForwardArgs a, unsigned long long* first_bad) {
  __shared__ float scratch[kWarps + 1];
  const long long row = blockIdx.x;
  const long long D = a.dim;
  const float* x = a.x + row * D;
  float* y = a.y + row * D;
  float ss = 0.0f;
  for (long long i = threadIdx.x; i < D; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
  ss = block_sum(ss, scratch);  // also the barrier before y (which may alias x) is written
  if (threadIdx.x == 0 && !isfinite(ss)) atomicMin(first_bad, static_cast<unsigned long long>(row));
  const float rstd = 1.0f / sqrtf(ss / static_cast<float>(D) + a.eps);
  if (threadIdx.x == 0 && a.rstd) a.rstd[row] = rstd;
  for (long long i = threadIdx.x; i < D; i += blockDim.x) y[i] = __fmul_rn(__fmul_rn(x[i], rstd), a.weight[i]);
}

__global__ void __launch_bounds__(kColumns * kRowLanes) dweight_kernel(RmsNormBackwardArgs a) {
  __shared__ float partial[kRowLanes][kColumns];
  const long long c = static_cast<long long>(blockIdx.x) * kColumns + threadIdx.x;
  const bool live = c < a.dim;
  float acc = 0.0f;
  if (live)
    for (long long r = threadIdx.y; r < a.rows; r += kRowLanes) {
      const long long at = r * a.dim + c;
      acc = fmaf(a.dy[at], __fmul_rn(a.x[at], a.rstd[r]), acc);
    }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && live) {
    float sum = partial[0][threadIdx.x];
    for (int l = 1; l < kRowLanes; ++l) sum += partial[l][threadIdx.x];
    a.dweight[c] += sum;
  }
}

// dx = r·(g − x̂·c), g = dy·w, x̂ = x·r, c = r·Σ g·x̂ / D. Every dy of the row is read for
// the dot before any dx is written (block_sum is a barrier), and each element is then
// read and written by the same thread, so dx may alias dy.
__global__ void __launch_bounds__(kThreads) dx_kernel(RmsNormBackwardArgs a, float inv_d) {
  __shared__ float scratch[kWarps + 1];
  const long long row = blockIdx.x;
  const long long D = a.dim;
  const float* x = a.x + row * D;
  const float* dy = a.dy + row * D;
  float* dx = a.dx + row * D;
  const float rstd = a.rstd[row];
  float dot = 0.0f;
  for (long long i = threadIdx.x; i < D; i += blockDim.x) dot = fmaf(__fmul_rn(dy[i], a.weight[i]), x[i], dot);
  dot = block_sum(dot, scratch);
  const float c = __fmul_rn(__fmul_rn(dot, rstd), inv_d);
  for (long long i = threadIdx.x; i < D; i += blockDim.x) {
    const float g = __fmul_rn(dy[i], a.weight[i]);
    const float xhat = __fmul_rn(x[i], rstd);
    dx[i] = __fmul_rn(rstd, fmaf(-xhat, c, g));
  }
}

void check_rows(int64_t rows) {
  if (rows > 2147483647LL) throw Error("x: more than 2^31 - 1 rows in one call; split the batch", Error::Range);
}

}  // namespace

int64_t rms_norm_forward_cuda(const RmsNormForwardArgs& a) {
  DeviceGuard guard(a.device);
  if (a.rows <= 0) return -1;
  check_rows(a.rows);
  DeviceFlags<1> flags(a.device);
  forward_kernel<<<static_cast<unsigned>(a.rows), kThreads>>>(a, flags.words());
  check_launch("rms_norm forward_kernel");
  cuda_synchronize(a.device);
  const auto f = flags.read();
  return f[0] == kNoProblem ? -1 : static_cast<int64_t>(f[0]);
}

void rms_norm_backward_cuda(const RmsNormBackwardArgs& a) {
  DeviceGuard guard(a.device);
  if (a.rows <= 0 || a.dim <= 0) return;
  check_rows(a.rows);
  if (a.dweight) {
    const unsigned blocks = blocks_for(a.dim, kColumns);
    dweight_kernel<<<blocks, dim3(kColumns, kRowLanes)>>>(a);
    check_launch("rms_norm dweight_kernel");
  }
  dx_kernel<<<static_cast<unsigned>(a.rows), kThreads>>>(a, 1.0f / static_cast<float>(a.dim));
  check_launch("rms_norm dx_kernel");
}

}  // namespace lgrpo
