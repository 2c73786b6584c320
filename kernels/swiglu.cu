// CUDA twin of swiglu (CPU twin: native/ops/swiglu.cc): one thread per element, grid-
// stride. Each thread loads all of its element's inputs before storing any output,
// which is what makes the documented aliasing (h over gate or up, dgate over gate or dh,
// dup over up or dh) safe.
//
// σ(g) = 1/(1 + e^(−g)) with the accurate expf: for g < −88 e^(−g) is +Inf, σ = 0 and
// silu = −0, never NaN. The products are __fmul_rn and the one fused step is an explicit
// fmaf, as in the CPU twin; the only difference from its bits is its polynomial e^x.
#include <cuda_runtime.h>

#include "../native/cuda_backend.h"
#include "../native/ops/swiglu.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 65535;

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void __launch_bounds__(kThreads) forward_kernel(SwigluForwardArgs a) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float g = a.gate[i], u = a.up[i];
    a.h[i] = __fmul_rn(__fmul_rn(g, sigmoid(g)), u);
  }
}

// dh/dg of silu(g)·u is u·σ(g)·(1 + g·(1 − σ(g))); dh/du is silu(g).
__global__ void __launch_bounds__(kThreads) backward_kernel(SwigluBackwardArgs a) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float g = a.gate[i], u = a.up[i], d = a.dh[i];
    const float sig = sigmoid(g);
    const float silu = __fmul_rn(g, sig);
    const float dsilu = __fmul_rn(sig, fmaf(g, 1.0f - sig, 1.0f));
    a.dgate[i] = __fmul_rn(__fmul_rn(d, u), dsilu);
    a.dup[i] = __fmul_rn(d, silu);
  }
}

unsigned grid_for(int64_t n) {
  const unsigned blocks = blocks_for(n, kThreads);
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

}  // namespace

void swiglu_forward_cuda(const SwigluForwardArgs& a) {
  DeviceGuard guard(a.device);
  if (a.n <= 0) return;
  forward_kernel<<<grid_for(a.n), kThreads>>>(a);
  check_launch("swiglu forward_kernel");
}

void swiglu_backward_cuda(const SwigluBackwardArgs& a) {
  DeviceGuard guard(a.device);
  if (a.n <= 0) return;
  backward_kernel<<<grid_for(a.n), kThreads>>>(a);
  check_launch("swiglu backward_kernel");
}

}  // namespace lgrpo
