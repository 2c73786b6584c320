// CUDA twin of gemm (CPU twin: native/ops/gemm.cc), the engine's own f32 GEMM for
// machines without cuBLASLt and for the emulated build.
//
// One block of 16×16 threads owns a 64×64 tile of C; each thread owns a 4×4 register
// tile, rows ty + 16·i and columns tx + 16·j, so both the shared-memory reads of the
// inner loop and the final stores are conflict-free and coalesced. op(A) and op(B) are
// staged through shared memory 16 values of k at a time, loaded along whichever index
// is contiguous in storage for the given transpose.
//
// The arithmetic is the CPU twin's, element for element: one fmaf chain over k in
// increasing order, restarted at every multiple of kGemmKC and folded into C as
// C = fma(alpha, acc, beta·C) for the first K block (alpha·acc when beta = 0, so C is
// never read) and fma(alpha, acc, C) for later ones. So the result is deterministic and,
// against the AVX2 CPU build, bit-identical wherever both round the same way.
#include <cuda_runtime.h>

#include "../native/cuda_backend.h"
#include "../native/ops/gemm.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kTile = 64;              // rows and columns of C per block
constexpr int kK = 16;                 // values of k staged per step
constexpr int kSide = 16;              // threads per block side
constexpr int kPer = kTile / kSide;    // outputs per thread per side
constexpr int kThreads = kSide * kSide;
static_assert(kGemmKC % kK == 0, "a K block must end on a staging step");
// Tile rows padded by one so that the column-wise stores of the staging loads fall
// into different banks.
constexpr int kPad = kTile + 1;

struct Params {
  bool trans_a, trans_b;
  long long m, n, k;
  float alpha, beta;
  const float* a;
  long long lda;
  const float* b;
  long long ldb;
  float* c;
  long long ldc;
  long long tiles_n;
};

__global__ void __launch_bounds__(kThreads) gemm_kernel(Params p) {
  __shared__ float as[kK][kPad];  // as[kk][i] = op(A)[row0 + i][k0 + kk]
  __shared__ float bs[kK][kPad];  // bs[kk][j] = op(B)[k0 + kk][col0 + j]
  const int tx = threadIdx.x, ty = threadIdx.y, t = ty * kSide + tx;
  const long long row0 = static_cast<long long>(blockIdx.x) * kTile;
  // Columns tiles beyond the grid's y range are walked by the same block (uniformly).
  for (long long tile_n = blockIdx.y; tile_n < p.tiles_n; tile_n += gridDim.y) {
    const long long col0 = tile_n * kTile;
    float acc[kPer][kPer], out[kPer][kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int j = 0; j < kPer; ++j) acc[i][j] = out[i][j] = 0.0f;

    for (long long k0 = 0; k0 < p.k; k0 += kK) {
      // Out-of-range values are staged as zeros; they only ever meet rows or columns of
      // C that are not stored, because the inner loop stops at the end of K.
#pragma unroll
      for (int r = 0; r < kPer; ++r) {
        if (p.trans_a) {  // stored [K, M]: contiguous along i
          const int i = t % kTile, kk = t / kTile + r * (kThreads / kTile);
          const long long gi = row0 + i, gk = k0 + kk;
          as[kk][i] = gi < p.m && gk < p.k ? p.a[gk * p.lda + gi] : 0.0f;
        } else {          // stored [M, K]: contiguous along k
          const int kk = t % kK, i = t / kK + r * (kThreads / kK);
          const long long gi = row0 + i, gk = k0 + kk;
          as[kk][i] = gi < p.m && gk < p.k ? p.a[gi * p.lda + gk] : 0.0f;
        }
        if (p.trans_b) {  // stored [N, K]: contiguous along k
          const int kk = t % kK, j = t / kK + r * (kThreads / kK);
          const long long gj = col0 + j, gk = k0 + kk;
          bs[kk][j] = gj < p.n && gk < p.k ? p.b[gj * p.ldb + gk] : 0.0f;
        } else {          // stored [K, N]: contiguous along j
          const int j = t % kTile, kk = t / kTile + r * (kThreads / kTile);
          const long long gj = col0 + j, gk = k0 + kk;
          bs[kk][j] = gj < p.n && gk < p.k ? p.b[gk * p.ldb + gj] : 0.0f;
        }
      }
      __syncthreads();
      // Stopping at the end of K (rather than adding padded zero products) keeps the
      // sign of a zero sum as the CPU twin has it.
      const int steps = p.k - k0 < kK ? static_cast<int>(p.k - k0) : kK;
      for (int kk = 0; kk < steps; ++kk) {
        float av[kPer], bv[kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i) av[i] = as[kk][ty + i * kSide];
#pragma unroll
        for (int j = 0; j < kPer; ++j) bv[j] = bs[kk][tx + j * kSide];
#pragma unroll
        for (int i = 0; i < kPer; ++i)
#pragma unroll
          for (int j = 0; j < kPer; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();

      const long long next = k0 + kK;
      if (next % kGemmKC == 0 || next >= p.k) {  // end of a K block: fold it into C
        const bool first = k0 < kGemmKC;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const long long gi = row0 + ty + i * kSide;
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const long long gj = col0 + tx + j * kSide;
            if (!first) {
              out[i][j] = fmaf(p.alpha, acc[i][j], out[i][j]);
            } else if (p.beta != 0.0f) {
              const float old = gi < p.m && gj < p.n ? p.c[gi * p.ldc + gj] : 0.0f;
              out[i][j] = fmaf(p.alpha, acc[i][j], __fmul_rn(p.beta, old));
            } else {
              out[i][j] = __fmul_rn(p.alpha, acc[i][j]);
            }
            acc[i][j] = 0.0f;
          }
        }
      }
    }

#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const long long gi = row0 + ty + i * kSide;
      if (gi >= p.m) continue;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const long long gj = col0 + tx + j * kSide;
        if (gj < p.n) p.c[gi * p.ldc + gj] = out[i][j];
      }
    }
  }
}

// C ← beta·C for alpha = 0 or K = 0; beta = 0 writes zeros without reading C.
__global__ void scale_kernel(float* c, long long ldc, long long m, long long n, float beta) {
  const long long total = m * n;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    float* x = c + (e / n) * ldc + e % n;
    *x = beta == 0.0f ? 0.0f : __fmul_rn(*x, beta);
  }
}

}  // namespace

void gemm_f32_cuda(const GemmArgs& g) {
  DeviceGuard guard(g.device);
  if (g.m <= 0 || g.n <= 0) return;
  // cuBLASLt where it was found (kernels/gemm_cublaslt.cu); this file's kernel otherwise.
  if (g.k > 0 && g.alpha != 0.0f && gemm_f32_cublaslt(g)) return;
  if (g.k <= 0 || g.alpha == 0.0f) {
    if (g.beta == 1.0f) return;
    const long long total = g.m * g.n;
    const unsigned blocks = static_cast<unsigned>(total / 256 + 1 < 65535 ? total / 256 + 1 : 65535);
    scale_kernel<<<blocks, 256>>>(g.c, g.ldc, g.m, g.n, g.beta);
    check_launch("gemm scale_kernel");
    return;
  }
  const long long tiles_m = (g.m + kTile - 1) / kTile, tiles_n = (g.n + kTile - 1) / kTile;
  if (tiles_m > 2147483647LL) throw Error("gemm: more than 2^37 rows in one call", Error::Range);
  const Params p{g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, g.beta, g.a, g.lda, g.b, g.ldb, g.c, g.ldc, tiles_n};
  const dim3 grid(static_cast<unsigned>(tiles_m), static_cast<unsigned>(tiles_n < 65535 ? tiles_n : 65535));
  gemm_kernel<<<grid, dim3(kSide, kSide)>>>(p);
  check_launch("gemm_kernel");
}

}  // namespace lgrpo
