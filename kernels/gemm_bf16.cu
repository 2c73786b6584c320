// CUDA twin of gemm_bf16 (native/ops/gemm_bf16.h states the arithmetic): y = x·Wᵀ with W
// a bf16 copy of the weights, x and y f32, for bf16 rollouts on the device. Each thread
// owns one output (i, j) and runs the header's order exactly: 16 lane sums, each one fmaf
// chain over the K blocks of 32 (k = 32b + 2l, then 32b + 2l + 1), added pairwise (l with
// l + 8, l + 4, l + 2, l + 1), then the K mod 32 tail one fmaf per k. fmaf is the same
// correctly rounded fused multiply-add as the CPU's, bf16 widens exactly, so y has the CPU
// twin's bits, and row i of y depends on row i of x only.
//
// A block computes 16 rows × 16 outputs; each 32-wide K block of x and W is staged once in
// shared memory and read by 16 threads, so W is read from memory once per 16 rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../native/common.h"
#include "../native/ops/gemm_bf16.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kTile = 16, kBlockK = 32;

__device__ __forceinline__ float widen(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

__global__ void gemm_bf16_weights_kernel(const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* y,
                                         int64_t ldy, int64_t m, int64_t n, int64_t k) {
  __shared__ float xs[kTile][kBlockK + 1];
  __shared__ float ws[kTile][kBlockK + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;  // tx: output j within the tile, ty: row i
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kTile + ty, j = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  const int64_t kfull = k / kBlockK * kBlockK;
  float s[16];
  for (int l = 0; l < 16; ++l) s[l] = 0.0f;
  for (int64_t b = 0; b < kfull; b += kBlockK) {
    // 256 threads stage 16×32 of x and 16×32 of W, two elements each.
    for (int e = ty * kTile + tx; e < kTile * kBlockK; e += kTile * kTile) {
      const int r = e / kBlockK, c = e % kBlockK;
      const int64_t xi = static_cast<int64_t>(blockIdx.y) * kTile + r, wj = static_cast<int64_t>(blockIdx.x) * kTile + r;
      xs[r][c] = xi < m ? x[xi * ldx + b + c] : 0.0f;
      ws[r][c] = wj < n ? widen(w[wj * ldw + b + c]) : 0.0f;
    }
    __syncthreads();
    for (int l = 0; l < 16; ++l) {
      s[l] = fmaf(xs[ty][2 * l], ws[tx][2 * l], s[l]);
      s[l] = fmaf(xs[ty][2 * l + 1], ws[tx][2 * l + 1], s[l]);
    }
    __syncthreads();
  }
  if (i >= m || j >= n) return;
  float t8[8], t4[4];
  for (int l = 0; l < 8; ++l) t8[l] = s[l] + s[l + 8];
  for (int l = 0; l < 4; ++l) t4[l] = t8[l] + t8[l + 4];
  float acc = (t4[0] + t4[2]) + (t4[1] + t4[3]);
  for (int64_t t = kfull; t < k; ++t) acc = fmaf(x[i * ldx + t], widen(w[j * ldw + t]), acc);
  y[i * ldy + j] = acc;
}

__global__ void f32_to_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t bits = __float_as_uint(src[i]);
    // native/common.h's f32_to_bf16: NaN stays a quiet NaN, else round to nearest even.
    dst[i] = (bits & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((bits >> 16) | 0x40)
                                                : static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
  }
}

}  // namespace

void gemm_bf16_weights_cuda(const GemmBf16Args& a) {
  if (a.m <= 0 || a.n <= 0) return;
  DeviceGuard guard(a.device);
  const int64_t tiles_m = (a.m + kTile - 1) / kTile, tiles_n = (a.n + kTile - 1) / kTile;
  if (tiles_m > 65535) throw Error("gemm_bf16: more than 2^20 rows in one call", Error::Range);
  if (tiles_n > 2147483647LL) throw Error("gemm_bf16: too many outputs in one call", Error::Range);
  gemm_bf16_weights_kernel<<<dim3(static_cast<unsigned>(tiles_n), static_cast<unsigned>(tiles_m)), dim3(kTile, kTile)>>>(
      a.x, a.ldx, a.w, a.ldw, a.y, a.ldy, a.m, a.n, a.k);
  check_launch("gemm_bf16_weights_kernel");
}

void f32_to_bf16_cuda(const float* src, uint16_t* dst, int64_t n, int device) {
  if (n <= 0) return;
  DeviceGuard guard(device);
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65535);
  f32_to_bf16_kernel<<<static_cast<unsigned>(blocks), 256>>>(src, dst, n);
  check_launch("f32_to_bf16_kernel");
}

}  // namespace lgrpo
