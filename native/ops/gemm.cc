// CPU GEMM, BLIS-style: op(A) and op(B) are copied ("packed") into contiguous slivers
// that a register-blocked micro-kernel streams through. Loop nest, outside in:
//   jc  columns of C in blocks of NC    (B block lives in L3)
//   pc  K in blocks of KC              (one KC×NR sliver of B lives in L1)
//   ic  rows of C in blocks of MC      (the packed MC×KC block of A lives in L2)
//   jr  NR-wide slivers of B, packed just before their first use
//   ir  MR-tall slivers of A -> micro-kernel: an MR×NR tile of C in 12 ymm registers
//       (AVX2: 6×16) or 12 zmm registers (AVX-512: 12×16, chosen at run time)
// gemm_f32 hands each pool thread a disjoint rectangle of C and runs this nest on it,
// so no two threads ever write the same element and no reduction crosses threads.
//
// A readable reference of what is computed (the tests compare against a float64 one):
//   for i, j: acc = 0; for k: acc += op(A)[i][k]·op(B)[k][j]; C[i][j] = alpha·acc + beta·C[i][j]
// with the one difference that acc is folded into C every KC steps of k.
#include "gemm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "../common.h"
#include "../parallel.h"
#include "../scratch.h"
#include "../simd.h"

namespace lgrpo {
namespace {

constexpr int MR = 6;    // rows of the AVX2 register tile
constexpr int kMaxMR = 12;  // rows of the AVX-512 register tile
constexpr int NR = 16;   // columns: two ymm vectors; 6×2 accumulators + 2 B + 1 A = 15 of 16 ymm
constexpr int64_t KC = kGemmKC;
constexpr int64_t MC = 144;   // MC×KC×4 B = 144 KiB of A: well inside a 1 MiB L2
constexpr int64_t NC = 4080;  // KC×NC×4 B ≈ 4 MiB of B per thread: L3

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One scratch block per thread and per role, so that gemm_f32_serial can run on many
// threads at once without sharing packing space.
thread_local ScratchBlock packed_a_scratch, packed_b_scratch;

// ---------------------------------------------------------------------------------
// Packing. Element (i, k) of op(A) and (k, j) of op(B), whatever the storage:
inline const float* op_a_at(const GemmArgs& g, int64_t i, int64_t k) {
  return g.trans_a ? g.a + k * g.lda + i : g.a + i * g.lda + k;
}
inline const float* op_b_at(const GemmArgs& g, int64_t k, int64_t j) {
  return g.trans_b ? g.b + j * g.ldb + k : g.b + k * g.ldb + j;
}

// mc×kc of op(A) (`a` points at its (0,0)) into slivers of mr rows: sliver s holds
// op(A)[s·mr + r][k] at dst[s·kc·mr + k·mr + r]; rows past mc are zero, so edge tiles
// run the same kernel (zeros add nothing to the valid lanes).
void pack_a_full_sliver(bool trans, const float* a, int64_t lda, int64_t kc, float* dst, int mr);

void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* dst, int mr) {
  for (int64_t i0 = 0; i0 < mc; i0 += mr, dst += kc * mr) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, mc - i0));
    if (rows == mr) {
      pack_a_full_sliver(trans, trans ? a + i0 : a + i0 * lda, lda, kc, dst, mr);
      continue;
    }
    std::memset(dst, 0, sizeof(float) * kc * mr);
    if (trans) {  // stored [K, M]: each k gives mr adjacent values
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = a + k * lda + i0;
        for (int r = 0; r < rows; ++r) dst[k * mr + r] = src[r];
      }
    } else {      // stored [M, K]: walk each row, scatter into its lane
      for (int r = 0; r < rows; ++r) {
        const float* src = a + (i0 + r) * lda;
        for (int64_t k = 0; k < kc; ++k) dst[k * mr + r] = src[k];
      }
    }
  }
}

#if LGRPO_AVX2
// The 4×8 block at src (row stride ld) transposed into dst (row stride ds): 8 rows of 4.
inline void transpose4x8_strided(const float* src, int64_t ld, float* dst, int64_t ds) {
  const __m256 r0 = _mm256_loadu_ps(src + 0 * ld), r1 = _mm256_loadu_ps(src + 1 * ld);
  const __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  _mm_storeu_ps(dst + 0 * ds, _mm256_castps256_ps128(u0));
  _mm_storeu_ps(dst + 1 * ds, _mm256_castps256_ps128(u1));
  _mm_storeu_ps(dst + 2 * ds, _mm256_castps256_ps128(u2));
  _mm_storeu_ps(dst + 3 * ds, _mm256_castps256_ps128(u3));
  _mm_storeu_ps(dst + 4 * ds, _mm256_extractf128_ps(u0, 1));
  _mm_storeu_ps(dst + 5 * ds, _mm256_extractf128_ps(u1, 1));
  _mm_storeu_ps(dst + 6 * ds, _mm256_extractf128_ps(u2, 1));
  _mm_storeu_ps(dst + 7 * ds, _mm256_extractf128_ps(u3, 1));
}
#endif

// One whole sliver (mr rows of op(A), all present): pack_a's layout, the same values,
// with the copies of a fixed width the compiler turns into vector moves (transposes for
// a row-major A). Packing was a third of the micro-kernel's time at the small model's
// K = 96 shapes.
template <int R>
void pack_a_sliver_t(bool trans, const float* a, int64_t lda, int64_t kc, float* dst) {
  if (trans) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * R, a + k * lda, sizeof(float) * R);
    return;
  }
  int64_t k = 0;
#if LGRPO_AVX2
  if constexpr (R == 12) {
    for (; k + 8 <= kc; k += 8) {
      transpose8x8(a + k, lda, dst + k * R, R);
      transpose4x8_strided(a + 8 * lda + k, lda, dst + k * R + 8, R);
    }
  }
#endif
  for (int r = 0; r < R; ++r) {
    const float* src = a + r * lda;
    for (int64_t kk = k; kk < kc; ++kk) dst[kk * R + r] = src[kk];
  }
}

void pack_a_full_sliver(bool trans, const float* a, int64_t lda, int64_t kc, float* dst, int mr) {
  if (mr == kMaxMR) pack_a_sliver_t<kMaxMR>(trans, a, lda, kc, dst);
  else if (mr == MR) pack_a_sliver_t<MR>(trans, a, lda, kc, dst);
  else {
    for (int64_t k = 0; k < kc; ++k)
      for (int r = 0; r < mr; ++r) dst[k * mr + r] = trans ? a[k * lda + r] : a[r * lda + k];
  }
}

// kc×cols of op(B) (`b` points at its (0,0)), cols <= NR, into one sliver: op(B)[k][j]
// at dst[k·NR + j], columns past cols zero. dst is 64-byte aligned.
void pack_b_sliver(bool trans, const float* b, int64_t ldb, int64_t cols, int64_t kc, float* dst) {
  if (!trans) {  // stored [K, N]: rows of op(B) are contiguous
    if (cols == NR) {
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, b + k * ldb, sizeof(float) * NR);
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        std::memcpy(dst + k * NR, b + k * ldb, sizeof(float) * cols);
        std::memset(dst + k * NR + cols, 0, sizeof(float) * (NR - cols));
      }
    }
    return;
  }
  // Stored [N, K]: column j of op(B) is row j of storage, so this is a transpose.
  int64_t k = 0;
#if LGRPO_AVX2
  if (cols == NR) {
    for (; k + 8 <= kc; k += 8) {
      transpose8x8(b + k, ldb, dst + k * NR, NR);
      transpose8x8(b + 8 * ldb + k, ldb, dst + k * NR + 8, NR);
    }
  }
#endif
  if (k == kc) return;
  for (int64_t kk = k; kk < kc; ++kk) std::memset(dst + kk * NR + cols, 0, sizeof(float) * (NR - cols));
  for (int64_t j = 0; j < cols; ++j) {
    const float* src = b + j * ldb;
    for (int64_t kk = k; kk < kc; ++kk) dst[kk * NR + j] = src[kk];
  }
}

// ---------------------------------------------------------------------------------
// Micro-kernel: acc = Σ_k a_sliver[k]ᵀ·b_sliver[k] over kc steps (MR×NR), then
// C = alpha·acc + beta·C, where beta == 0 means C is not read.

#if LGRPO_AVX2
inline __m256 update(__m256 acc, const float* c, __m256 alpha, __m256 beta, bool read_c) {
  return read_c ? _mm256_fmadd_ps(alpha, acc, _mm256_mul_ps(beta, _mm256_loadu_ps(c))) : _mm256_mul_ps(alpha, acc);
}

void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                  float alpha_s, float beta_s) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + NR - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 x = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    a += MR;
    b += NR;
  }
  const __m256 alpha = _mm256_set1_ps(alpha_s), beta = _mm256_set1_ps(beta_s);
  const bool read_c = beta_s != 0.0f;
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < MR; ++r) {
    float* row = c + r * ldc;
    _mm256_storeu_ps(row, update(acc[r][0], row, alpha, beta, read_c));
    _mm256_storeu_ps(row + 8, update(acc[r][1], row + 8, alpha, beta, read_c));
  }
}
#else
void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                  float alpha, float beta) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR)
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NR; ++j) acc[r][j] += a[r] * b[j];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j)
      c[r * ldc + j] = beta != 0.0f ? alpha * acc[r][j] + beta * c[r * ldc + j] : alpha * acc[r][j];
}
#endif

#if LGRPO_X86_DISPATCH
// The AVX-512 tile: 12 rows × one zmm of 16 columns, 12 accumulators (enough chains to
// cover the FMA latency on two pipes), B read once per k, A broadcast from memory.
// Per element it is the AVX2 kernel's computation exactly: one FMA chain over k in
// order, then alpha·acc (+ beta·C) with the same two roundings.
LGRPO_TARGET_AVX512
void micro_kernel_avx512(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                         float alpha_s, float beta_s) {
  __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
  __m512 c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps(), c6 = _mm512_setzero_ps(), c7 = _mm512_setzero_ps();
  __m512 c8 = _mm512_setzero_ps(), c9 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  for (int r = 0; r < kMaxMR; ++r) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), b0, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1]), b0, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2]), b0, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3]), b0, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4]), b0, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5]), b0, c5);
    c6 = _mm512_fmadd_ps(_mm512_set1_ps(a[6]), b0, c6);
    c7 = _mm512_fmadd_ps(_mm512_set1_ps(a[7]), b0, c7);
    c8 = _mm512_fmadd_ps(_mm512_set1_ps(a[8]), b0, c8);
    c9 = _mm512_fmadd_ps(_mm512_set1_ps(a[9]), b0, c9);
    c10 = _mm512_fmadd_ps(_mm512_set1_ps(a[10]), b0, c10);
    c11 = _mm512_fmadd_ps(_mm512_set1_ps(a[11]), b0, c11);
    a += kMaxMR;
    b += NR;
  }
  const __m512 alpha = _mm512_set1_ps(alpha_s), beta = _mm512_set1_ps(beta_s);
  const bool read_c = beta_s != 0.0f;
  const __m512 acc[kMaxMR] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
  for (int r = 0; r < kMaxMR; ++r) {
    float* row = c + r * ldc;
    _mm512_storeu_ps(row, read_c ? _mm512_fmadd_ps(alpha, acc[r], _mm512_mul_ps(beta, _mm512_loadu_ps(row)))
                                 : _mm512_mul_ps(alpha, acc[r]));
  }
}
#endif

// The register tile of one call: its height (the A packing depends on it) and kernel.
struct Kernel {
  int mr;
  void (*run)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta);
};

// AVX-512 when chosen and there are enough rows to fill its taller tile (the bits are the
// same either way, so the choice may depend on the shape).
Kernel pick_kernel(int64_t m) {
#if LGRPO_X86_DISPATCH
  if (m > MR && simd_avx512()) return Kernel{kMaxMR, micro_kernel_avx512};
#endif
  return Kernel{MR, micro_kernel};
}

// An edge tile (rows < mr or cols < NR) goes through a full-size scratch tile so it
// takes exactly the arithmetic path of an interior one.
void edge_kernel(const Kernel& kern, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                 float beta, int rows, int cols) {
  alignas(64) float tile[kMaxMR * NR] = {};
  if (beta != 0.0f)
    for (int r = 0; r < rows; ++r) std::memcpy(tile + r * NR, c + r * ldc, sizeof(float) * cols);
  kern.run(kc, a, b, tile, NR, alpha, beta);
  for (int r = 0; r < rows; ++r) std::memcpy(c + r * ldc, tile + r * NR, sizeof(float) * cols);
}

// C ← beta·C (beta == 0 writes zeros without reading, so NaN garbage is cleared too).
void scale_c(float* c, int64_t ldc, int64_t m, int64_t n, float beta) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) std::memset(row, 0, sizeof(float) * n);
    else for (int64_t j = 0; j < n; ++j) row[j] *= beta;
  }
}

// Few rows and a transposed B (y = x·Wᵀ while decoding): the whole job is one read of
// W, so walk W sliver by sliver, each over all of K, reading its 16 rows as 16 streams
// instead of in K-block pieces far apart in time. op(A) is packed once, every K block.
// Per element the arithmetic is the main path's exactly (same K blocks, same order).
constexpr int64_t kSmallMMaxPackedA = int64_t(1) << 20;

void gemm_small_m(const GemmArgs& g) {
  const int64_t m = g.m, n = g.n, k = g.k;
  const Kernel kern = pick_kernel(m);
  const int mr = kern.mr;
  const int64_t a_block = ceil_div(m, mr) * mr * KC;
  float* pa = packed_a_scratch.get(static_cast<size_t>(a_block * ceil_div(k, KC)));
  float* pb = g.b_panels || g.panels_out ? nullptr : packed_b_scratch.get(static_cast<size_t>(KC * NR));
  for (int64_t pc = 0; pc < k; pc += KC)
    pack_a(g.trans_a, op_a_at(g, 0, pc), g.lda, m, std::min(KC, k - pc), pa + pc / KC * a_block, mr);
  for (int64_t jr = 0; jr < n; jr += NR) {
    const int cols = static_cast<int>(std::min<int64_t>(NR, n - jr));
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = std::min(KC, k - pc);
      const float beta = pc == 0 ? g.beta : 1.0f;
      const float* sliver = pb;
      if (g.b_panels) {
        sliver = g.b + jr * k + pc * NR;
      } else {
        float* dst = g.panels_out ? g.panels_out + jr * k + pc * NR : pb;
        pack_b_sliver(true, op_b_at(g, pc, jr), g.ldb, cols, kc, dst);
        sliver = dst;
      }
      const float* pa_block = pa + pc / KC * a_block;
      for (int64_t ir = 0; ir < m; ir += mr) {
        const int rows = static_cast<int>(std::min<int64_t>(mr, m - ir));
        float* tile = g.c + ir * g.ldc + jr;
        if (rows == mr && cols == NR) kern.run(kc, pa_block + ir * kc, sliver, tile, g.ldc, g.alpha, beta);
        else edge_kernel(kern, kc, pa_block + ir * kc, sliver, tile, g.ldc, g.alpha, beta, rows, cols);
      }
    }
  }
}

#if LGRPO_AVX2
// Decoding: a handful of rows (m <= kFewRowsMax) and a transposed B (y = x·Wᵀ). Here the
// whole job is one read of W, so W is read in place, never packed: the rows of C lie in
// the lanes of RV ymm vectors (x is packed k-major, 8·RV values per k), and each weight
// w[j][k] is broadcast from where it lies and multiplied into its row vector, J rows of
// W (J columns of C) at a time, each over all of K. Per element the arithmetic is the
// tile path's exactly — one FMA chain over k per K block of KC, folded as alpha·acc
// (+ beta·C for the first block, + C after) — so the bits do not depend on the path, on
// m, or on how the columns are split between threads.
constexpr int64_t kFewRowsMax = 16;

// acc[j][r] = Σ_k w[j][k]·xp[k][8r..8r+7] over k in [0, n), one FMA chain per lane in
// increasing k. Kept apart from the folding around it so the J row pointers and the
// accumulators all stay in registers.
#ifndef LGRPO_FEW_ROWS_AHEAD
#define LGRPO_FEW_ROWS_AHEAD 256
#endif
#define LGRPO_FEW_ROWS_CHAINS                                                                   \
  const float* __restrict p[J];                                                                 \
  for (int j = 0; j < J; ++j) p[j] = w[j];                                                      \
  __m256 a[J][RV];                                                                              \
  _Pragma("GCC unroll 16") for (int j = 0; j < J; ++j)                                          \
    _Pragma("GCC unroll 2") for (int r = 0; r < RV; ++r) a[j][r] = _mm256_setzero_ps();         \
  for (int64_t kk = 0; kk < n; ++kk) {                                                          \
    if ((kk & 15) == 0)                                                                         \
      _Pragma("GCC unroll 16") for (int j = 0; j < J; ++j)                                      \
        _mm_prefetch(reinterpret_cast<const char*>(p[j] + kk + LGRPO_FEW_ROWS_AHEAD), _MM_HINT_T0); \
    __m256 xv[RV];                                                                              \
    _Pragma("GCC unroll 2") for (int r = 0; r < RV; ++r) xv[r] = _mm256_load_ps(xp + kk * xs + 8 * r); \
    _Pragma("GCC unroll 16") for (int j = 0; j < J; ++j) {                                      \
      const __m256 wv = _mm256_set1_ps(p[j][kk]);                                               \
      _Pragma("GCC unroll 2") for (int r = 0; r < RV; ++r) a[j][r] = _mm256_fmadd_ps(wv, xv[r], a[j][r]); \
    }                                                                                           \
  }                                                                                             \
  _Pragma("GCC unroll 16") for (int j = 0; j < J; ++j)                                          \
    _Pragma("GCC unroll 2") for (int r = 0; r < RV; ++r) acc[j * RV + r] = a[j][r];

template <int RV, int J>
__attribute__((noinline)) void few_rows_chains(const float* const* w, const float* __restrict xp, int64_t xs,
                                               int64_t n, __m256* acc) {
  LGRPO_FEW_ROWS_CHAINS
}

#if LGRPO_X86_DISPATCH
// The same chains compiled for AVX-512 (VL): the broadcast folds into the FMA and 32
// registers hold them, the same operations in the same order (the same bits).
template <int RV, int J>
LGRPO_TARGET_AVX512 __attribute__((noinline)) void few_rows_chains_avx512(const float* const* w,
                                                                         const float* __restrict xp, int64_t xs,
                                                                         int64_t n, __m256* acc) {
  LGRPO_FEW_ROWS_CHAINS
}
#endif
#undef LGRPO_FEW_ROWS_CHAINS

// The chains on the chosen SIMD path (the same bits on either).
template <int RV, int J>
void run_few_rows_chains(const float* const* w, const float* xp, int64_t xs, int64_t n, __m256* acc) {
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) {
    few_rows_chains_avx512<RV, J>(w, xp, xs, n, acc);
    return;
  }
#endif
  few_rows_chains<RV, J>(w, xp, xs, n, acc);
}

template <int RV, int J>
void few_rows_block(const float* xp, const float* b, int64_t ldb, int64_t k, float alpha, float beta, float* c,
                    int64_t ldc, int64_t m) {
  constexpr int L = 8 * RV;
  alignas(32) float fold[J][L] = {};  // every lane is written by the first K block (k > 0 here)
  const __m256 va = _mm256_set1_ps(alpha);
  for (int64_t pc = 0; pc < k; pc += KC) {
    const int64_t kc = std::min(KC, k - pc);
    const float* w[J];
    for (int j = 0; j < J; ++j) w[j] = b + j * ldb + pc;
    __m256 acc[J * RV];
    run_few_rows_chains<RV, J>(w, xp + pc * L, L, kc, acc);
    for (int j = 0; j < J; ++j)
      for (int r = 0; r < RV; ++r) {
        float* f = fold[j] + 8 * r;
        const __m256 s = acc[j * RV + r];
        __m256 v;
        if (pc > 0) {
          v = _mm256_fmadd_ps(va, s, _mm256_load_ps(f));
        } else if (beta != 0.0f) {
          alignas(32) float old[8] = {};
          for (int i = 0; i < 8 && 8 * r + i < m; ++i) old[i] = c[(8 * r + i) * ldc + j];
          v = _mm256_fmadd_ps(va, s, _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_load_ps(old)));
        } else {
          v = _mm256_mul_ps(va, s);
        }
        _mm256_store_ps(f, v);
      }
  }
  for (int64_t i = 0; i < m; ++i)
    for (int j = 0; j < J; ++j) c[i * ldc + j] = fold[j][i];
}

template <int RV, int J>
void few_rows_dots_t(const float* const* w, const float* xp, int64_t xs, int64_t n, float* out) {
  __m256 acc[J * RV];
  run_few_rows_chains<RV, J>(w, xp, xs, n, acc);
  for (int i = 0; i < J * RV; ++i) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

template <int RV>
void few_rows_rv(const float* xp, const GemmArgs& g) {
  constexpr int J = RV == 1 ? kFewRowsJ1 : kFewRowsJ2;
  int64_t j = 0;
  for (; j + J <= g.n; j += J)
    few_rows_block<RV, J>(xp, g.b + j * g.ldb, g.ldb, g.k, g.alpha, g.beta, g.c + j, g.ldc, g.m);
  for (; j < g.n; ++j) few_rows_block<RV, 1>(xp, g.b + j * g.ldb, g.ldb, g.k, g.alpha, g.beta, g.c + j, g.ldc, g.m);
}

void gemm_few_rows(const GemmArgs& g) {
  const int64_t m = g.m, k = g.k;
  const int rv = m > 8 ? 2 : 1, lanes = 8 * rv;
  float* xp = packed_a_scratch.get(static_cast<size_t>(k * lanes));
  for (int64_t kk = 0; kk < k; ++kk) {
    float* dst = xp + kk * lanes;
    for (int64_t i = 0; i < lanes; ++i) dst[i] = i < m ? *op_a_at(g, i, kk) : 0.0f;
  }
  if (rv == 1) few_rows_rv<1>(xp, g);
  else few_rows_rv<2>(xp, g);
}

// Few rows over weight panels (GemmArgs::b_panels): each panel is one contiguous stream, its
// 16 columns of C in the lanes of one zmm (two ymm), x[r][k] broadcast into an FMA with it —
// 8 rows × 2 panels = 16 independent chains, half an FMA per weight read, so streaming W is
// the bound, not the FMA pipes. Per element the tile path's arithmetic exactly (below).
#ifndef LGRPO_PANEL_AHEAD
#define LGRPO_PANEL_AHEAD 768  // floats ahead in a panel (48 k steps, 3 KB)
#endif
#ifndef LGRPO_PANEL_HINT
#define LGRPO_PANEL_HINT _MM_HINT_T0
#endif

// AVX2: R rows × one panel (two ymm), out[r·kPanelAccStride + j].
template <int R>
__attribute__((noinline)) void panel_chains_avx2(const float* __restrict xp, int64_t xs, const float* __restrict w,
                                                 int64_t n, float* out) {
  __m256 a[R][2];
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int64_t kk = 0; kk < n; ++kk) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kk * NR + LGRPO_PANEL_AHEAD), LGRPO_PANEL_HINT);
    const __m256 w0 = _mm256_load_ps(w + kk * NR), w1 = _mm256_load_ps(w + kk * NR + 8);
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(xp + kk * xs + r);
      a[r][0] = _mm256_fmadd_ps(x, w0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(x, w1, a[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out + r * kPanelAccStride, a[r][0]);
    _mm256_storeu_ps(out + r * kPanelAccStride + 8, a[r][1]);
  }
}

#if LGRPO_X86_DISPATCH
// AVX-512: 8 rows × Q panels, the broadcast embedded in the FMA. The same chains.
template <int Q>
LGRPO_TARGET_AVX512 __attribute__((noinline)) void panel_chains_avx512(const float* __restrict xp, int64_t xs,
                                                                      const float* __restrict w, int64_t ps,
                                                                      int64_t n, float* out) {
  __m512 a[8][Q];
  _Pragma("GCC unroll 8") for (int r = 0; r < 8; ++r)
    _Pragma("GCC unroll 2") for (int q = 0; q < Q; ++q) a[r][q] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t kk = 0; kk < n; ++kk) {
    __m512 wv[Q];
    _Pragma("GCC unroll 2") for (int q = 0; q < Q; ++q) {
      _mm_prefetch(reinterpret_cast<const char*>(w + q * ps + kk * NR + LGRPO_PANEL_AHEAD), LGRPO_PANEL_HINT);
      wv[q] = _mm512_load_ps(w + q * ps + kk * NR);
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; ++r) {
      const __m512 x = _mm512_set1_ps(xp[kk * xs + r]);
      _Pragma("GCC unroll 2") for (int q = 0; q < Q; ++q) a[r][q] = _mm512_fmadd_ps(x, wv[q], a[r][q]);
    }
  }
  for (int r = 0; r < 8; ++r)
    for (int q = 0; q < Q; ++q) _mm512_storeu_ps(out + r * kPanelAccStride + q * NR, a[r][q]);
}
#endif

void panel_dots_chosen(int count, const float* xp, int64_t xs, const float* w, int64_t ps, int64_t n, float* out) {
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) {
    static_assert(kPanelStreams == 3, "a kernel for each count of panels up to kPanelStreams");
    if (count == 3) panel_chains_avx512<3>(xp, xs, w, ps, n, out);
    else if (count == 2) panel_chains_avx512<2>(xp, xs, w, ps, n, out);
    else panel_chains_avx512<1>(xp, xs, w, ps, n, out);
    return;
  }
#endif
  for (int q = 0; q < count; ++q) {
    panel_chains_avx2<4>(xp, xs, w + q * ps, n, out + q * NR);
    panel_chains_avx2<4>(xp + 4, xs, w + q * ps, n, out + 4 * kPanelAccStride + q * NR);
  }
}

// C (rows × cols, ldc) folded with the chains' sums acc (row stride kPanelAccStride), the tile path's
// fold: alpha·acc, + beta·C on the first K block (beta = 0: C not read), + C after.
void fold_panel_block(const float* acc, float* c, int64_t ldc, int rows, int cols, float alpha, float beta,
                      bool first) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  for (int r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    alignas(32) float tail[NR];
    float* dst = row;
    if (cols < NR) {
      std::memset(tail, 0, sizeof(tail));
      if (!first || beta != 0.0f) std::memcpy(tail, row, sizeof(float) * cols);
      dst = tail;
    }
    for (int h = 0; h < NR; h += 8) {
      const __m256 s = _mm256_loadu_ps(acc + r * kPanelAccStride + h);
      __m256 v;
      if (!first) v = _mm256_fmadd_ps(va, s, _mm256_loadu_ps(dst + h));
      else if (beta != 0.0f) v = _mm256_fmadd_ps(va, s, _mm256_mul_ps(vb, _mm256_loadu_ps(dst + h)));
      else v = _mm256_mul_ps(va, s);
      _mm256_storeu_ps(dst + h, v);
    }
    if (cols < NR) std::memcpy(row, tail, sizeof(float) * cols);
  }
}

// x k-major in groups of 8 rows: xp[(grp·k + kk)·8 + r], zero past m; in the calling
// thread's scratch.
const float* pack_x_groups(const GemmArgs& g) {
  const int64_t m = g.m, k = g.k, groups = ceil_div(m, 8);
  float* xp = packed_a_scratch.get(static_cast<size_t>(groups * k * 8));
  for (int64_t grp = 0; grp < groups; ++grp) {
    int64_t kk = 0;
    // Whole groups of rows 8 k at a time (this runs on the calling thread while the pool waits)
    if (!g.trans_a && grp * 8 + 8 <= m)
      for (; kk + 8 <= k; kk += 8) transpose8x8(g.a + grp * 8 * g.lda + kk, g.lda, xp + (grp * k + kk) * 8, 8);
    for (; kk < k; ++kk) {
      float* dst = xp + (grp * k + kk) * 8;
      for (int64_t r = 0; r < 8; ++r) dst[r] = grp * 8 + r < m ? *op_a_at(g, grp * 8 + r, kk) : 0.0f;
    }
  }
  return xp;
}

// Panels [p_begin, p_end) of the product, x packed by pack_x_groups.
void few_rows_panel_range(const GemmArgs& g, const float* xp, int64_t p_begin, int64_t p_end) {
  const int64_t m = g.m, n = g.n, k = g.k;
  const int64_t groups = ceil_div(m, 8);
  const int64_t ps = NR * k;
  alignas(64) float acc[8 * kPanelAccStride];
  for_panel_steps(p_end - p_begin, [&](int64_t i, int count, int64_t part) {
    const int64_t p0 = p_begin + i;
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = std::min(KC, k - pc);
      for (int64_t grp = 0; grp < groups; ++grp) {
        panel_dots_chosen(count, xp + (grp * k + pc) * 8, 8, g.b + p0 * ps + pc * NR, part * ps, kc, acc);
        const int rows = static_cast<int>(std::min<int64_t>(8, m - grp * 8));
        for (int q = 0; q < count; ++q) {
          const int64_t col = (p0 + q * part) * NR;
          fold_panel_block(acc + q * NR, g.c + grp * 8 * g.ldc + col, g.ldc, rows,
                           static_cast<int>(std::min<int64_t>(NR, n - col)), g.alpha, g.beta, pc == 0);
        }
      }
    }
  });
}

void gemm_few_rows_panels(const GemmArgs& g) { few_rows_panel_range(g, pack_x_groups(g), 0, ceil_div(g.n, NR)); }

PanelChunks few_rows_chunks(const GemmArgs& g) { return panel_chunks(ceil_div(g.n, NR), 4 * NR * g.k, num_threads()); }

// The pool's version, for one product or several sharing op(A): A packed once, then the
// products' chunks claimed as the threads come (a panel's bits do not depend on which
// thread makes it, or on its neighbours).
void gemm_few_rows_panels_parallel(const GemmArgs* g, int count) {
  const float* xp = pack_x_groups(g[0]);
  std::vector<PanelChunks> chunks;
  for (int i = 0; i < count; ++i) chunks.push_back(few_rows_chunks(g[i]));
  parallel_panel_chunks(chunks, [&](int i, int64_t p0, int64_t p1) { few_rows_panel_range(g[i], xp, p0, p1); });
}
#endif

// Columns [j0, j1) of C and the matching part of op(B): a job whose per-element bits are
// those of the whole (each element's chain over k does not depend on the other columns).
GemmArgs columns(const GemmArgs& g, int64_t j0, int64_t j1) {
  GemmArgs s = g;
  s.n = j1 - j0;
  s.b = g.b_panels ? g.b + j0 * g.k : g.trans_b ? g.b + j0 * g.ldb : g.b + j0;
  s.c = g.c + j0;
  if (g.panels_out) s.panels_out = g.panels_out + j0 * g.k;
  return s;
}

// run(j0, j1) on `parts` ranges of C's n columns, each a whole number of `unit` columns,
// over the pool (on the calling thread when parts <= 1).
template <class Run>
void for_column_parts(int64_t n, int64_t unit, int64_t parts, Run&& run) {
  if (parts <= 1) {
    run(int64_t(0), n);
    return;
  }
  const int64_t units = ceil_div(n, unit);
  parallel_for(parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      run(std::min(n, units * p / parts * unit), std::min(n, units * (p + 1) / parts * unit));
  });
}

}  // namespace

void gemm_f32_serial(const GemmArgs& g) {
  const int64_t m = g.m, n = g.n, k = g.k;
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || g.alpha == 0.0f) {
    scale_c(g.c, g.ldc, m, n, g.beta);
    return;
  }
#if LGRPO_AVX2
  if (g.b_panels && m <= kFewRowsMax) {
    gemm_few_rows_panels(g);
    return;
  }
  if (g.trans_b && !g.b_panels && m <= kFewRowsMax) {
    gemm_few_rows(g);
    return;
  }
#endif
  if (g.trans_b && m <= MC && m * k <= kSmallMMaxPackedA) {
    gemm_small_m(g);
    return;
  }
  const Kernel kern = pick_kernel(m);
  const int mr = kern.mr;
  float* pa = packed_a_scratch.get(static_cast<size_t>(std::min(MC, ceil_div(m, mr) * mr) * KC));
  float* pb = g.b_panels || g.panels_out ? nullptr : packed_b_scratch.get(static_cast<size_t>(KC * std::min(NC, ceil_div(n, NR) * NR)));
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = std::min(KC, k - pc);
      const float beta = pc == 0 ? g.beta : 1.0f;  // later K blocks accumulate onto C
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        pack_a(g.trans_a, op_a_at(g, ic, pc), g.lda, mc, kc, pa, mr);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int cols = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          float* own = g.panels_out ? g.panels_out + (jc + jr) * k + pc * NR : pb + jr * kc;
          const float* sliver = g.b_panels ? g.b + (jc + jr) * k + pc * NR : own;
          // Packed on first use (ic == 0), so it is still in L1 for that pass.
          if (ic == 0 && !g.b_panels) pack_b_sliver(g.trans_b, op_b_at(g, pc, jc + jr), g.ldb, cols, kc, own);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int rows = static_cast<int>(std::min<int64_t>(mr, mc - ir));
            float* tile = g.c + (ic + ir) * g.ldc + jc + jr;
            const float* a_sliver = pa + ir * kc;
            if (rows == mr && cols == NR) kern.run(kc, a_sliver, sliver, tile, g.ldc, g.alpha, beta);
            else edge_kernel(kern, kc, a_sliver, sliver, tile, g.ldc, g.alpha, beta, rows, cols);
          }
        }
      }
    }
  }
}

void gemm_f32_group(const GemmArgs* g, int count) {
  bool one_job = count > 1;
#if LGRPO_AVX2
  for (int i = 0; i < count && one_job; ++i)
    one_job = g[i].trans_b && g[i].b_panels && !g[i].trans_a && g[i].a == g[0].a && g[i].lda == g[0].lda &&
              g[i].m == g[0].m && g[i].k == g[0].k && g[i].m > 0 && g[i].m <= kFewRowsMax && g[i].n > 0 &&
              g[i].k > 0 && g[i].alpha != 0.0f;
#else
  one_job = false;
#endif
  if (!one_job) {
    for (int i = 0; i < count; ++i) gemm_f32(g[i]);
    return;
  }
#if LGRPO_AVX2
  gemm_few_rows_panels_parallel(g, count);
#endif
}

void gemm_f32(const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.panels_out) {
    if (!g.trans_b) throw Error("gemm: panels_out needs trans_b (W stored [N, K])", Error::Type);
    // The paths that never pack W (few rows read it in place; nothing to multiply): the
    // panels first, then the product from them.
    bool packs = g.k > 0 && g.alpha != 0.0f;
#if LGRPO_AVX2
    packs = packs && g.m > kFewRowsMax;
#endif
    if (!packs) {
      pack_panels_cpu(g.b, g.ldb, g.n, std::max<int64_t>(g.k, 0), g.panels_out);
      GemmArgs p = g;
      p.b = g.panels_out;
      p.b_panels = true;
      p.panels_out = nullptr;
      return gemm_f32(p);
    }
  }
#if LGRPO_AVX2
  if (g.trans_b && g.m <= kFewRowsMax) {
    // Streaming W is the whole cost: split its rows (C's columns) evenly — whole panels, or
    // 8 rows of W in place — once there is enough of it to pay for waking the pool.
    if (g.b_panels && g.k > 0 && g.alpha != 0.0f) {
      if (few_rows_chunks(g).count > 1) {
        gemm_few_rows_panels_parallel(&g, 1);
        return;
      }
    }
    const int64_t unit = g.b_panels ? NR : 8;
    const double bytes = 4.0 * static_cast<double>(ceil_div(g.n, unit) * unit) * static_cast<double>(std::max<int64_t>(g.k, 0));
    const int64_t parts = std::min<int64_t>({num_threads(), ceil_div(g.n, unit), std::max<int64_t>(1, static_cast<int64_t>(bytes / 262144))});
    for_column_parts(g.n, unit, parts, [&](int64_t j0, int64_t j1) { gemm_f32_serial(columns(g, j0, j1)); });
    return;
  }
#endif
  const int mr = pick_kernel(g.m).mr;  // rectangles aligned to the register tile
  const int64_t tiles_m = ceil_div(g.m, mr), tiles_n = ceil_div(g.n, NR);
  // Below a few MFLOP per thread, waking the pool costs more than it saves.
  const double flops = 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.k);
  const int64_t max_threads = std::max<int64_t>(1, std::min<int64_t>(num_threads(), static_cast<int64_t>(flops / 4e6)));

  // Pick the grid tm × tn of rectangles (tile-aligned) with the least per-thread cost,
  // estimated in cycles: padded FMAs at 16 per cycle, plus one per packed element
  // (A is packed once per NC block of columns, B once), plus a fixed wake-up cost.
  int64_t best_tm = 1, best_tn = 1;
  double best_cost = 1e300;
  for (int64_t t = 1; t <= max_threads; ++t) {
    for (int64_t tm = 1; tm <= t; ++tm) {
      if (t % tm) continue;
      if (tm > 1 && g.panels_out) continue;  // each sliver packed by one thread: split columns only
      const int64_t tn = t / tm;
      if (tm > tiles_m || tn > tiles_n) continue;
      const double mt = static_cast<double>(ceil_div(tiles_m, tm) * mr);
      const double nt = static_cast<double>(ceil_div(tiles_n, tn) * NR);
      const double kk = static_cast<double>(g.k);
      const double cost = mt * nt * kk / 16.0 + kk * (nt + mt * std::ceil(nt / NC)) + (t > 1 ? 2e4 : 0.0);
      if (cost < best_cost) { best_cost = cost; best_tm = tm; best_tn = tn; }
    }
  }
  if (best_tm * best_tn == 1) {
    gemm_f32_serial(g);
    return;
  }
  const int64_t tm = best_tm, tn = best_tn;
  parallel_for(tm * tn, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ti = t / tn, tj = t % tn;
      const int64_t i0 = std::min(g.m, tiles_m * ti / tm * mr), i1 = std::min(g.m, tiles_m * (ti + 1) / tm * mr);
      const int64_t j0 = std::min(g.n, tiles_n * tj / tn * NR), j1 = std::min(g.n, tiles_n * (tj + 1) / tn * NR);
      GemmArgs s = columns(g, j0, j1);
      s.m = i1 - i0;
      s.a = g.trans_a ? g.a + i0 : g.a + i0 * g.lda;
      s.c += i0 * g.ldc;
      gemm_f32_serial(s);
    }
  });
}

void gemm_f32_k_segments(const GemmArgs& g, const int64_t* bounds, int64_t count) {
  if (g.m <= 0 || g.n <= 0 || count <= 0) return;
  auto run = [&](const GemmArgs& part) {
    for (int64_t s = 0; s < count; ++s) {
      GemmArgs seg = gemm_k_range(part, bounds[s], bounds[s + 1]);
      if (s > 0) seg.beta = 1.0f;
      if (seg.k > 0 || s == 0) gemm_f32_serial(seg);  // an empty first segment still applies beta
    }
  };
  const double flops = 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) *
                       static_cast<double>(bounds[count] - bounds[0]);
  const int64_t parts = std::min<int64_t>({num_threads(), ceil_div(g.n, NR), std::max<int64_t>(1, static_cast<int64_t>(flops / 4e6))});
  // Column ranges of C, whole register tiles each: per element the serial path's bits.
  for_column_parts(g.n, NR, parts, [&](int64_t j0, int64_t j1) { run(columns(g, j0, j1)); });
}

// ---------------------------------------------------------------------------------
// FLOP ceiling: independent FMA chains on registers only. 12 chains of 8 lanes cover
// the 4-cycle FMA latency on both FMA pipes (8 in flight needed) with room to spare.
namespace {

float fma_chains(int64_t iterations, float seed) {
#if LGRPO_AVX2
  // Distinct starting values: identical chains would be merged into one by the compiler.
  const __m256 mul = _mm256_set1_ps(0.999f), add = _mm256_set1_ps(1e-3f);
  const __m256 step = _mm256_set1_ps(seed * 0.0625f);
  __m256 v0 = _mm256_set1_ps(seed);
  __m256 v1 = _mm256_add_ps(v0, step), v2 = _mm256_add_ps(v1, step), v3 = _mm256_add_ps(v2, step);
  __m256 v4 = _mm256_add_ps(v3, step), v5 = _mm256_add_ps(v4, step), v6 = _mm256_add_ps(v5, step);
  __m256 v7 = _mm256_add_ps(v6, step), v8 = _mm256_add_ps(v7, step), v9 = _mm256_add_ps(v8, step);
  __m256 v10 = _mm256_add_ps(v9, step), v11 = _mm256_add_ps(v10, step);
  for (int64_t i = 0; i < iterations; ++i) {
    // Each chain converges to add/(1-mul): no overflow, no subnormals, whatever the count.
    v0 = _mm256_fmadd_ps(v0, mul, add); v1 = _mm256_fmadd_ps(v1, mul, add);
    v2 = _mm256_fmadd_ps(v2, mul, add); v3 = _mm256_fmadd_ps(v3, mul, add);
    v4 = _mm256_fmadd_ps(v4, mul, add); v5 = _mm256_fmadd_ps(v5, mul, add);
    v6 = _mm256_fmadd_ps(v6, mul, add); v7 = _mm256_fmadd_ps(v7, mul, add);
    v8 = _mm256_fmadd_ps(v8, mul, add); v9 = _mm256_fmadd_ps(v9, mul, add);
    v10 = _mm256_fmadd_ps(v10, mul, add); v11 = _mm256_fmadd_ps(v11, mul, add);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3)),
                           _mm256_add_ps(_mm256_add_ps(v4, v5), _mm256_add_ps(v6, v7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(v8, v9), _mm256_add_ps(v10, v11)));
  return hsum_avx2(s);
#else
  float v[12];
  for (int c = 0; c < 12; ++c) v[c] = seed * (1.0f + 0.0625f * c);
  for (int64_t i = 0; i < iterations; ++i)
    for (float& x : v) x = x * 0.999f + 1e-3f;
  float s = 0;
  for (float x : v) s += x;
  return s;
#endif
}

#if LGRPO_X86_DISPATCH
LGRPO_TARGET_AVX512 float fma_chains_avx512(int64_t iterations, float seed) {
  const __m512 mul = _mm512_set1_ps(0.999f), add = _mm512_set1_ps(1e-3f);
  __m512 v[12];
  for (int c = 0; c < 12; ++c) v[c] = _mm512_set1_ps(seed * (1.0f + 0.0625f * c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < 12; ++c) v[c] = _mm512_fmadd_ps(v[c], mul, add);
  }
  __m512 s = v[0];
  for (int c = 1; c < 12; ++c) s = _mm512_add_ps(s, v[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0.0f;
  for (float x : lanes) sum += x;
  return sum;
}
#endif

// The chains at the width the GEMM's kernel has on this path; sets the FLOPs per iteration.
float fma_chains_chosen(int64_t iterations, float seed, double* flops_per_iteration) {
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) {
    *flops_per_iteration = 12.0 * 16 * 2.0;
    return fma_chains_avx512(iterations, seed);
  }
#endif
  *flops_per_iteration = 12.0 * (LGRPO_AVX2 ? 8 : 1) * 2.0;
  return fma_chains(iterations, seed);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measure_peak_flops(double seconds) {
  seconds = std::max(0.01, std::min(seconds, 10.0));
  // Calibrate the per-thread iteration count on one thread, then run every thread.
  int64_t iterations = 1 << 16;
  volatile float sink = 0;
  double flops_per_iteration = 0;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    sink = sink + fma_chains_chosen(iterations, 1.0f, &flops_per_iteration);
    double dt = seconds_since(t0);
    if (dt > 0.01 || iterations > (int64_t(1) << 40)) {
      iterations = std::max<int64_t>(1, static_cast<int64_t>(iterations * (seconds / 3) / dt));
      break;
    }
    iterations *= 4;
  }
  const int threads = num_threads();
  std::vector<float> results(threads, 0.0f);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
      double unused;
      for (int64_t t = begin; t < end; ++t) results[t] = fma_chains_chosen(iterations, 1.0f + t, &unused);
    });
    double dt = seconds_since(t0);
    best = std::max(best, threads * static_cast<double>(iterations) * flops_per_iteration / dt);
  }
  for (float r : results) sink = sink + r;
  return best / 1e9;
}

void pack_panels_cpu(const float* w, int64_t ldw, int64_t n, int64_t k, float* panels) {
  const int64_t count = ceil_div(n, NR);
  if (count == 0 || k == 0) return;
  // A panel is 16·K floats: a few per range so waking the pool pays.
  parallel_for(count, std::max<int64_t>(1, 65536 / std::max<int64_t>(k * NR, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t cols = std::min<int64_t>(NR, n - p * NR);
      const float* src = w + p * NR * ldw;
      float* dst = panels + p * NR * k;
      int64_t k0 = 0;
#if LGRPO_AVX2
      // pack_b_sliver's transposes, with the 16 rows fetched ahead and streaming stores (the
      // panels are far bigger than any cache and read only later: no read-for-ownership).
      if (cols == NR)
        for (; k0 + 16 <= k; k0 += 16) {
          for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(src + j * ldw + k0 + 64), _MM_HINT_T0);
          alignas(32) float t[16 * NR];
          for (int h = 0; h < 16; h += 8) {
            transpose8x8(src + k0 + h, ldw, t + h * NR, NR);
            transpose8x8(src + 8 * ldw + k0 + h, ldw, t + h * NR + 8, NR);
          }
          for (int i = 0; i < 16 * NR; i += 8) _mm256_stream_ps(dst + k0 * NR + i, _mm256_load_ps(t + i));
        }
#endif
      if (k0 < k) pack_b_sliver(true, src + k0, ldw, cols, k - k0, dst + k0 * NR);
    }
#if LGRPO_AVX2
    _mm_sfence();  // the streaming stores are visible before the pool's join
#endif
  });
}

#if LGRPO_AVX2
void panel_dots(int count, const float* xp, int64_t xs, const float* w, int64_t panel_stride, int64_t n, float* out) {
  panel_dots_chosen(count, xp, xs, w, panel_stride, n, out);
}

void few_rows_dots(int rv, const float* const* w, const float* xp, int64_t xs, int64_t n, float* out) {
  if (rv == 1) few_rows_dots_t<1, kFewRowsJ1>(w, xp, xs, n, out);
  else few_rows_dots_t<2, kFewRowsJ2>(w, xp, xs, n, out);
}
#endif

}  // namespace lgrpo
