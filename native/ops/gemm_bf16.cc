// CPU twin of gemm_bf16 (see the header for the arithmetic every path follows).
//
// Layout of the work: x is first repacked per row into blocks of 32 with the even k of a
// block ahead of the odd ones (xp[32b + l] = x[32b + 2l], xp[32b + 16 + l] = x[32b + 2l + 1]),
// because a bf16 pair read as one 32-bit lane splits into its even element (the lane
// shifted left 16) and its odd one (the lane with its low half cleared) in one operation
// each. Threads own disjoint ranges of W's rows (outputs j); each walks its rows in groups
// of four, and every group meets all rows of x while its 4·K weights are in L1, so W is
// read from memory once.
#include "gemm_bf16.h"
#include "gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../common.h"
#include "../parallel.h"
#include "../scratch.h"
#include "../simd.h"

namespace lgrpo {
namespace {

constexpr int64_t KB = 32;  // K block
constexpr int JB = 4;       // weight rows per group

// x repacked for one call (either kernel), reused by the next call on the same thread.
thread_local ScratchBlock packed_x_scratch;

// Exact sum of the 16 lane sums in the documented order.
inline float reduce16(const float* s) {
  float t8[8], t4[4], t2[2];
  for (int l = 0; l < 8; ++l) t8[l] = s[l] + s[l + 8];
  for (int l = 0; l < 4; ++l) t4[l] = t8[l] + t8[l + 4];
  for (int l = 0; l < 2; ++l) t2[l] = t4[l] + t4[l + 2];
  return t2[0] + t2[1];
}

// Tail k in [k0, k): one FMA each, in order, onto the reduced sum.
inline float tail(float acc, const float* x, const uint16_t* w, int64_t k0, int64_t k) {
  for (int64_t t = k0; t < k; ++t) acc = std::fma(x[t], bf16_to_f32(w[t]), acc);
  return acc;
}

#if LGRPO_AVX2
inline __m256 bf16_even(__m256i pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)); }
inline __m256 bf16_odd(__m256i pairs) {
  return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}
// lanes 0..7 + lanes 8..15 (lo, hi), then hsum_avx2's l+4, l+2, l+1: reduce16's order.
inline float reduce_pair_avx2(__m256 lo, __m256 hi) { return hsum_avx2(_mm256_add_ps(lo, hi)); }

// One row of xp against the JB weight rows w[0..JB): y[j] for j < jn. (One row at a time:
// two rows would need more than the 16 ymm registers.)
void row_avx2(const float* xp, int64_t k, const float* xraw, const uint16_t* const* w, int64_t kfull, float* y, int jn) {
  __m256 lo[JB], hi[JB];
  for (int j = 0; j < JB; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < kfull; b += KB) {
    const __m256 xe_lo = _mm256_loadu_ps(xp + b), xe_hi = _mm256_loadu_ps(xp + b + 8);
    const __m256 xo_lo = _mm256_loadu_ps(xp + b + 16), xo_hi = _mm256_loadu_ps(xp + b + 24);
    for (int j = 0; j < JB; ++j) {
      const __m256i p0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + b));
      const __m256i p1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + b + 16));
      lo[j] = _mm256_fmadd_ps(xo_lo, bf16_odd(p0), _mm256_fmadd_ps(xe_lo, bf16_even(p0), lo[j]));
      hi[j] = _mm256_fmadd_ps(xo_hi, bf16_odd(p1), _mm256_fmadd_ps(xe_hi, bf16_even(p1), hi[j]));
    }
  }
  for (int j = 0; j < jn; ++j) y[j] = tail(reduce_pair_avx2(lo[j], hi[j]), xraw, w[j], kfull, k);
}
#endif

#if LGRPO_X86_DISPATCH
LGRPO_TARGET_AVX512 inline float reduce_avx512(__m512 v) {
  return reduce_pair_avx2(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

template <int R>
LGRPO_TARGET_AVX512 void group_avx512(const float* xp, int64_t k, const float* xraw, int64_t ldx,
                                      const uint16_t* const* w, int64_t kfull, float* y, int64_t ldy, int jn) {
  __m512 acc[R][JB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < JB; ++j) acc[r][j] = _mm512_setzero_ps();
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t b = 0; b < kfull; b += KB) {
    __m512 we[JB], wo[JB];
    for (int j = 0; j < JB; ++j) {
      const __m512i p = _mm512_loadu_si512(w[j] + b);
      we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(p, 16));
      wo[j] = _mm512_castsi512_ps(_mm512_and_si512(p, odd_mask));
    }
    for (int r = 0; r < R; ++r) {
      const __m512 xe = _mm512_loadu_ps(xp + r * k + b), xo = _mm512_loadu_ps(xp + r * k + b + 16);
      for (int j = 0; j < JB; ++j) acc[r][j] = _mm512_fmadd_ps(xo, wo[j], _mm512_fmadd_ps(xe, we[j], acc[r][j]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < jn; ++j)
      y[r * ldy + j] = tail(reduce_avx512(acc[r][j]), xraw + r * ldx, w[j], kfull, k);
}
#endif

// The portable statement of the arithmetic (builds without AVX2).
[[maybe_unused]] void group_scalar(const float* xp, int64_t k, const float* xraw, int64_t ldx, const uint16_t* const* w, int64_t kfull,
                  float* y, int64_t ldy, int rows, int jn) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < jn; ++j) {
      float s[16] = {};
      for (int64_t b = 0; b < kfull; b += KB)
        for (int l = 0; l < 16; ++l) {
          s[l] = std::fma(xp[r * k + b + l], bf16_to_f32(w[j][b + 2 * l]), s[l]);
          s[l] = std::fma(xp[r * k + b + 16 + l], bf16_to_f32(w[j][b + 2 * l + 1]), s[l]);
        }
      y[r * ldy + j] = tail(reduce16(s), xraw + r * ldx, w[j], kfull, k);
    }
}

// All rows of x against weight rows [j0, j0 + jn), jn <= JB (short groups repeat a row).
void run_group(const GemmBf16Args& a, const float* xp, int64_t kfull, int64_t j0, int jn) {
  const uint16_t* w[JB];
  for (int j = 0; j < JB; ++j) w[j] = a.w + std::min<int64_t>(j0 + j, j0 + jn - 1) * a.ldw;
  [[maybe_unused]] int64_t i = 0;  // unused in a scalar build
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) {
    for (; i + 4 <= a.m; i += 4)
      group_avx512<4>(xp + i * a.k, a.k, a.x + i * a.ldx, a.ldx, w, kfull, a.y + i * a.ldy + j0, a.ldy, jn);
    for (; i < a.m; ++i)
      group_avx512<1>(xp + i * a.k, a.k, a.x + i * a.ldx, a.ldx, w, kfull, a.y + i * a.ldy + j0, a.ldy, jn);
    return;
  }
#endif
#if LGRPO_AVX2
  for (; i < a.m; ++i) row_avx2(xp + i * a.k, a.k, a.x + i * a.ldx, w, kfull, a.y + i * a.ldy + j0, jn);
#else
  group_scalar(xp, a.k, a.x, a.ldx, w, kfull, a.y + j0, a.ldy, static_cast<int>(a.m), jn);
#endif
}

#if LGRPO_X86_DISPATCH
// ---------------------------------------------------------------------------------
// bf16 dot products (AVX512-BF16 vdpbf16ps): x rounded to bf16 too, 32 bf16 products per
// zmm instruction. Each output is one chain of steps over the pairs of k, each step one
// vdpbf16ps lane (gemm_bf16.h). x is packed in groups of 8 rows, pair by pair:
//   xp[(g·T + t)·8 + r] = bf16 x[8g + r][2t] | bf16 x[8g + r][2t + 1] << 16,
// zero past the last row and past K, T = bf16_panel_pairs(K): every kernel below runs the
// same T steps (a step on zeros is not a no-op for a subnormal sum, which it flushes).

// Weight rows in place (no panels): 8 rows of x in the lanes of a ymm, one chain per weight
// row j; x's pair t for all 8 rows is one 32-byte load, W[j]'s pair t a 32-bit broadcast.
constexpr int kDotJ = 12;  // weight rows per block: 12 chains cover vdpbf16ps' latency

template <int J>
LGRPO_TARGET_AVX512BF16 __attribute__((noinline)) void dot_rows(const uint32_t* __restrict xp, int64_t pairs,
                                                                const uint16_t* const* w, int64_t k,
                                                                float* out /* [J][8] */) {
  __m256 acc[J];
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j) acc[j] = _mm256_setzero_ps();
  const int64_t full = k / 2;  // pairs whose two weights lie inside the row
  for (int64_t t = 0; t < pairs; ++t) {
    if ((t & 15) == 0 && t < full)  // once per 64-byte line of each row, 1 KB ahead
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) _mm_prefetch(reinterpret_cast<const char*>(w[j] + 2 * t + 512), _MM_HINT_T0);
    const __m256bh xv = (__m256bh)_mm256_load_si256(reinterpret_cast<const __m256i*>(xp + t * 8));
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) {
      uint32_t pair = 0;  // past K: zero partners (never read past the row)
      if (t < full) std::memcpy(&pair, w[j] + 2 * t, sizeof(pair));
      else if (2 * t < k) pair = w[j][2 * t];
      acc[j] = _mm256_dpbf16_ps(acc[j], xv, (__m256bh)_mm256_set1_epi32(static_cast<int>(pair)));
    }
  }
  for (int j = 0; j < J; ++j) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

// Panels (GemmBf16Args::w_panels): 8 rows × Q (up to kPanelStreams) panels of 16 outputs,
// one zmm chain per row and panel (24 chains for Q = 3); per pair t one 64-byte load of each
// panel (Q streams, which keep more of memory busy than one) and x's pair of each row
// broadcast as 32 bits, shared by the Q panels — the lanes of dot_rows with the same
// operands, so the same bits. Each stream is prefetched 3 KB ahead as non-temporal: the
// weights are read once per step, and keeping them out of the outer caches spares what the
// rest of the step reuses (the engine's bf16 steps ran 2–3% faster than with T0 prefetches,
// alternating in one process; decode-gemm-ab, the GEMMs alone, 1–3%; f32 was neutral and
// keeps T0).
#ifndef LGRPO_BF16_PANEL_AHEAD
#define LGRPO_BF16_PANEL_AHEAD 768  // 32-bit lanes ahead in each panel (3 KB)
#endif
#ifndef LGRPO_BF16_PANEL_HINT
#define LGRPO_BF16_PANEL_HINT _MM_HINT_NTA
#endif
template <int Q>
LGRPO_TARGET_AVX512BF16 __attribute__((noinline)) void dot_panel(const uint32_t* __restrict xp, int64_t pairs,
                                                                 const uint32_t* __restrict w, int64_t panel_stride,
                                                                 float* out, int64_t ldo, int64_t qo /* out[r·ldo + q·qo + j] */) {
  __m512 acc[8][Q];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 2
    for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t t = 0; t < pairs; ++t) {
    __m512bh wv[Q];
#pragma GCC unroll 2
    for (int q = 0; q < Q; ++q) {
      _mm_prefetch(reinterpret_cast<const char*>(w + q * panel_stride + t * 16 + LGRPO_BF16_PANEL_AHEAD), LGRPO_BF16_PANEL_HINT);
      wv[q] = (__m512bh)_mm512_load_si512(w + q * panel_stride + t * 16);
    }
    const uint32_t* x = xp + t * 8;
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r]));
#pragma GCC unroll 2
      for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], xb, wv[q]);
    }
  }
  for (int r = 0; r < 8; ++r)
    for (int q = 0; q < Q; ++q) _mm512_storeu_ps(out + ldo * r + qo * q, acc[r][q]);
}

// Panels [p0, p1) of a.w_panels, kPanelStreams at a time, one from each part of the range
// (gemm.h, for_panel_steps); two streams held bf16 at 49.9 GB/s where three reach 55.4, f32's rate.
void panel_range(const GemmBf16Args& a, const uint32_t* xp, int64_t groups, int64_t pairs, int64_t p0, int64_t p1) {
  const int64_t panel_stride = pairs * 16;
  const uint32_t* wp = reinterpret_cast<const uint32_t*>(a.w);
  alignas(64) float out[8 * kPanelAccStride];
  for_panel_steps(p1 - p0, [&](int64_t i, int count, int64_t part) {
    const int64_t pa = p0 + i;
    int64_t cols[kPanelStreams];
    bool full = true;
    for (int q = 0; q < count; ++q) {
      cols[q] = std::min<int64_t>(16, a.n - 16 * (pa + q * part));
      full = full && cols[q] == 16;
    }
    const uint32_t* w = wp + pa * panel_stride;
    const int64_t qs = part * panel_stride;
    for (int64_t g = 0; g < groups; ++g) {
      // Whole blocks straight into y (a 0.5B decoding step has ~14,000); an edge block
      // through out, then only the rows and columns y has.
      const int64_t rows = std::min<int64_t>(8, a.m - 8 * g);
      const bool whole = full && rows == 8;
      float* dst = whole ? a.y + 8 * g * a.ldy + 16 * pa : out;
      const int64_t ldo = whole ? a.ldy : kPanelAccStride, qo = whole ? 16 * part : 16;
      static_assert(kPanelStreams == 3, "a kernel for each count of panels up to kPanelStreams");
      if (count == 3) dot_panel<3>(xp + g * pairs * 8, pairs, w, qs, dst, ldo, qo);
      else if (count == 2) dot_panel<2>(xp + g * pairs * 8, pairs, w, qs, dst, ldo, qo);
      else dot_panel<1>(xp + g * pairs * 8, pairs, w, qs, dst, ldo, qo);
      if (!whole)
        for (int64_t r = 0; r < rows; ++r)
          for (int q = 0; q < count; ++q)
            std::memcpy(a.y + (8 * g + r) * a.ldy + 16 * (pa + q * part), out + kPanelAccStride * r + 16 * q,
                        sizeof(float) * cols[q]);
    }
  });
}

// xp as above: each row converted whole with vector stores (store16_bf16 / store8_bf16 =
// f32_to_bf16 lane for lane), then a group's 8 rows transposed 8 pairs at a time. This runs
// on the calling thread before every GEMM, while the pool waits.
LGRPO_TARGET_AVX512BF16 void pack_x_pairs(const GemmBf16Args& a, int64_t groups, int64_t pairs, uint32_t* xp) {
  thread_local std::vector<uint32_t> rows;  // a group's 8 rows in bf16 pairs, [8][pairs]
  rows.resize(static_cast<size_t>(8 * pairs));
  for (int64_t g = 0; g < groups; ++g) {
    for (int r = 0; r < 8; ++r) {
      const int64_t i = 8 * g + r;
      uint32_t* row = rows.data() + r * pairs;
      if (i >= a.m) {
        std::fill(row, row + pairs, 0u);
        continue;
      }
      uint16_t* half = reinterpret_cast<uint16_t*>(row);
      const float* src = a.x + i * a.ldx;
      int64_t t = 0;
      for (; t + 16 <= a.k; t += 16) store16_bf16(half + t, _mm512_loadu_ps(src + t));
      for (; t + 8 <= a.k; t += 8) store8_bf16(half + t, _mm256_loadu_ps(src + t));
      for (; t < a.k; ++t) half[t] = f32_to_bf16(src[t]);
      std::fill(half + a.k, half + 2 * pairs, uint16_t(0));
    }
    uint32_t* out = xp + g * pairs * 8;
    int64_t t = 0;
    for (; t + 8 <= pairs; t += 8)
      transpose8x8(reinterpret_cast<const float*>(rows.data() + t), pairs, reinterpret_cast<float*>(out + t * 8), 8);
    for (; t < pairs; ++t)
      for (int r = 0; r < 8; ++r) out[t * 8 + r] = rows[static_cast<size_t>(r * pairs + t)];
  }
}

// a[0..count) over panels, products sharing x (a[0]'s x, m and k): x packed once, then the
// products' chunks claimed as the threads come, one list for all of them (one chunk in all
// runs inline on the calling thread).
void dot_panels(const GemmBf16Args* a, int count) {
  const int64_t groups = (a[0].m + 7) / 8, pairs = bf16_panel_pairs(a[0].k);
  uint32_t* xp = packed_x_scratch.get<uint32_t>(static_cast<size_t>(groups * pairs * 8));
  pack_x_pairs(a[0], groups, pairs, xp);
  std::vector<PanelChunks> chunks;
  for (int i = 0; i < count; ++i)
    chunks.push_back(panel_chunks((a[i].n + 15) / 16, 64 * pairs, num_threads(), kBf16PanelChunkBytes));
  parallel_panel_chunks(chunks, [&](int i, int64_t p0, int64_t p1) { panel_range(a[i], xp, groups, pairs, p0, p1); });
}
#endif

}  // namespace

void gemm_bf16_weights_cpu(const GemmBf16Args& a) {
  if (a.m <= 0 || a.n <= 0) return;
  const int64_t kfull = a.k / KB * KB;
  // x with each 32-block's even k first (see the top of the file); the tail stays in x.
  float* xp = packed_x_scratch.get<float>(static_cast<size_t>(a.m * a.k));
  for (int64_t i = 0; i < a.m; ++i) {
    const float* src = a.x + i * a.ldx;
    float* dst = xp + i * a.k;
    for (int64_t b = 0; b < kfull; b += KB)
      for (int l = 0; l < 16; ++l) {
        dst[b + l] = src[b + 2 * l];
        dst[b + 16 + l] = src[b + 2 * l + 1];
      }
  }
  const int64_t groups = (a.n + JB - 1) / JB;
  // Enough groups per range that waking a thread pays: ~64 K-elements of weights.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, a.k * JB * std::max<int64_t>(1, a.m)));
  parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t j0 = g * JB;
      run_group(a, xp, kfull, j0, static_cast<int>(std::min<int64_t>(JB, a.n - j0)));
    }
  });
}

void f32_to_bf16_cpu(const float* src, uint16_t* dst, int64_t n) {
  parallel_for((n + 7) / 8, 8192, [&](int64_t b0, int64_t b1) {
    int64_t i = b0 * 8;
    const int64_t end = std::min(n, b1 * 8);
#if LGRPO_AVX2
    for (; i + 8 <= end; i += 8) store8_bf16(dst + i, _mm256_loadu_ps(src + i));
#endif
    for (; i < end; ++i) dst[i] = f32_to_bf16(src[i]);
  });
}


void pack_panels_bf16_cpu(const float* w, int64_t ldw, int64_t n, int64_t k, uint16_t* panels) {
  const int64_t count = (n + 15) / 16, pairs = bf16_panel_pairs(k);
  if (count == 0 || pairs == 0) return;
  parallel_for(count, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, pairs * 16)), [&](int64_t p0, int64_t p1) {
    [[maybe_unused]] alignas(32) uint16_t block[16 * 16];  // 16 rows × 16 k = 16 rows × 8 pairs (AVX2 path)
    for (int64_t p = p0; p < p1; ++p) {
      uint32_t* dst = reinterpret_cast<uint32_t*>(panels) + p * pairs * 16;
      const int64_t rows = std::min<int64_t>(16, n - 16 * p);
      const float* src = w + 16 * p * ldw;
      int64_t k0 = 0;
#if LGRPO_AVX2
      if (rows == 16)
        for (; k0 + 16 <= k; k0 += 16) {
          for (int j = 0; j < 16; ++j) {
            // 16 rows are 16 streams: fetch each a few lines ahead
            _mm_prefetch(reinterpret_cast<const char*>(src + j * ldw + k0 + 128), _MM_HINT_T0);
            store8_bf16(block + 16 * j, _mm256_loadu_ps(src + j * ldw + k0));
            store8_bf16(block + 16 * j + 8, _mm256_loadu_ps(src + j * ldw + k0 + 8));
          }
          // block as 32-bit pairs [16 rows][8]: pair t of row j → dst[(k0/2 + t)·16 + j]
          float* out = reinterpret_cast<float*>(dst + (k0 / 2) * 16);
          transpose8x8<true>(reinterpret_cast<const float*>(block), 8, out, 16);
          transpose8x8<true>(reinterpret_cast<const float*>(block) + 64, 8, out + 8, 16);
        }
#endif
      for (int64_t t = k0 / 2; t < pairs; ++t)
        for (int64_t j = 0; j < 16; ++j) {
          uint32_t v = 0;
          if (j < rows) {
            if (2 * t < k) v |= f32_to_bf16(src[j * ldw + 2 * t]);
            if (2 * t + 1 < k) v |= static_cast<uint32_t>(f32_to_bf16(src[j * ldw + 2 * t + 1])) << 16;
          }
          dst[t * 16 + j] = v;
        }
    }
#if LGRPO_AVX2
    _mm_sfence();  // the streaming stores are visible before the pool's join
#endif
  });
}

bool gemm_bf16_dot_available() {
#if LGRPO_X86_DISPATCH
  return simd_path() >= SimdPath::Avx512Bf16;
#else
  return false;
#endif
}

void gemm_bf16_dot_cpu(const GemmBf16Args& a) {
  if (!gemm_bf16_dot_available())
    throw Error("gemm_bf16_dot: needs the AVX512-BF16 path (buildInfo().simd 'avx512+bf16')", Error::Range);
#if LGRPO_X86_DISPATCH
  if (a.m <= 0 || a.n <= 0) return;
  if (a.k <= 0) {
    for (int64_t i = 0; i < a.m; ++i) std::fill(a.y + i * a.ldy, a.y + i * a.ldy + a.n, 0.0f);
    return;
  }
  if (a.w_panels) {
    dot_panels(&a, 1);
    return;
  }
  const int64_t groups = (a.m + 7) / 8, pairs = bf16_panel_pairs(a.k);
  uint32_t* xp = packed_x_scratch.get<uint32_t>(static_cast<size_t>(groups * pairs * 8));
  pack_x_pairs(a, groups, pairs, xp);
  const int64_t blocks = (a.n + kDotJ - 1) / kDotJ;
  // Enough blocks per range that waking a thread pays (~256 KB of weights).
  const int64_t grain = std::max<int64_t>(1, 131072 / std::max<int64_t>(1, a.k * kDotJ));
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    alignas(64) float out[kDotJ * 8];
    const uint16_t* w[kDotJ];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t j0 = blk * kDotJ, jn = std::min<int64_t>(kDotJ, a.n - j0);
      for (int j = 0; j < kDotJ; ++j) w[j] = a.w + std::min<int64_t>(j0 + j, a.n - 1) * a.ldw;
      for (int64_t g = 0; g < groups; ++g) {
        dot_rows<kDotJ>(xp + g * pairs * 8, pairs, w, a.k, out);
        const int64_t rows = std::min<int64_t>(8, a.m - 8 * g);
        for (int64_t r = 0; r < rows; ++r) {
          float* y = a.y + (8 * g + r) * a.ldy + j0;
          for (int64_t j = 0; j < jn; ++j) y[j] = out[8 * j + r];
        }
      }
    }
  });
#endif
}

void gemm_bf16_rollout_cpu(const GemmBf16Args& a) {
  if (gemm_bf16_dot_available()) gemm_bf16_dot_cpu(a);
  else gemm_bf16_weights_cpu(a);
}

void gemm_bf16_rollout_group_cpu(const GemmBf16Args* a, int count) {
  bool one_job = count > 1 && gemm_bf16_dot_available();
  for (int i = 0; i < count && one_job; ++i)
    one_job = a[i].w_panels && a[i].x == a[0].x && a[i].ldx == a[0].ldx && a[i].m == a[0].m && a[i].k == a[0].k &&
              a[i].m > 0 && a[i].n > 0 && a[i].k > 0;
  if (!one_job) {
    for (int i = 0; i < count; ++i) gemm_bf16_rollout_cpu(a[i]);
    return;
  }
#if LGRPO_X86_DISPATCH
  dot_panels(a, count);
#endif
}

}  // namespace lgrpo
