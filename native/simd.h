// Vector math shared by the CPU twins. The default build targets AVX2+FMA (any
// x86-64 from the last decade); other CPUs get the scalar paths.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LGRPO_AVX2 1
#else
#define LGRPO_AVX2 0
#endif

// Run-time dispatch. The build stays portable (AVX2+FMA baseline, never -march=native);
// kernels that have AVX-512 variants compile them with per-function target attributes
// (LGRPO_TARGET_AVX512*) and pick one through simd_path(), chosen once per process:
// the best the CPU and OS support (cpuid + xgetbv), lowered by the environment variable
// LGRPO_SIMD=avx2|avx512|avx512bf16 (a level the CPU lacks is an error). Every AVX-512
// variant computes each element with the same operations in the same order as its AVX2
// twin, so the two paths give the same bits; only the bf16 dot products
// (Avx512Bf16, rollout precision bf16: gemm_bf16_dot_cpu) have their own rounding.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && LGRPO_AVX2
#define LGRPO_X86_DISPATCH 1
#define LGRPO_AVX512_FEATURES "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#define LGRPO_TARGET_AVX512 __attribute__((target(LGRPO_AVX512_FEATURES)))
#define LGRPO_TARGET_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
// Every function defined between these two gets LGRPO_TARGET_AVX512: for code written once
// over a vector type and included again for AVX-512 (attention_tiles.h), where a template
// cannot take the attribute per instantiation.
#define LGRPO_PRAGMA_TEXT(...) _Pragma(#__VA_ARGS__)
#define LGRPO_PRAGMA(...) LGRPO_PRAGMA_TEXT(__VA_ARGS__)
#if defined(__clang__)
#define LGRPO_BEGIN_AVX512_REGION \
  LGRPO_PRAGMA(clang attribute push(__attribute__((target(LGRPO_AVX512_FEATURES))), apply_to = function))
#define LGRPO_END_AVX512_REGION _Pragma("clang attribute pop")
#else
#define LGRPO_BEGIN_AVX512_REGION _Pragma("GCC push_options") LGRPO_PRAGMA(GCC target(LGRPO_AVX512_FEATURES))
#define LGRPO_END_AVX512_REGION _Pragma("GCC pop_options")
#endif
// GCC 12 warns falsely inside its own AVX-512 intrinsics (their _mm512_undefined_*
// pass-through operands) when they are inlined into target-attribute functions: silenced
// in every file that includes this one (the files with AVX-512 variants all do).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#else
#define LGRPO_X86_DISPATCH 0
#endif

namespace lgrpo {

enum class SimdPath : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// The path chosen for this process (see above). Throws lgrpo::Error naming LGRPO_SIMD
// when the variable asks for something unknown or unsupported.
SimdPath simd_path();
// What the CPU supports, ignoring LGRPO_SIMD.
SimdPath simd_path_supported();
inline bool simd_avx512() { return simd_path() >= SimdPath::Avx512; }
const char* simd_path_name(SimdPath p);
// simd_path_name(simd_path()): what buildInfo().simd reports.
const char* simd_level_name();

#if LGRPO_AVX2
// e^x for 8 floats, relative error < 2e-7 over the range where the result is a
// normal float; inputs below -87.3 flush to 0, which is what softmax wants.
inline __m256 exp_avx2(__m256 x) {
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
  const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365478515625f), _CMP_LT_OQ);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
  r = _mm256_fnmadd_ps(n, ln2_lo, r);
  // Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes coefficients).
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, result);
}

#if LGRPO_X86_DISPATCH
// exp_avx2's operations, 16 lanes at a time (the same bits lane for lane).
LGRPO_TARGET_AVX512 inline __m512 exp_avx512(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
  const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365478515625f), _CMP_LT_OQ);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}
#endif

inline float hsum_avx2(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline float hmax_avx2(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_max_ps(lo, hi);
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// Widens 8 bf16 / f16 values to f32.
inline __m256 load8_bf16(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 load8_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// r[0..8) (eight rows of eight lanes) transposed in place: lane k of row i moves to lane i
// of row k.
inline void transpose8x8_regs(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// The 8×8 block of 32-bit lanes at src (row stride ld) transposed into dst (row stride ds):
// dst[k·ds + r] = src[r·ld + k]. Streaming (dst 32-byte aligned, ds a multiple of 8) for
// copies far bigger than any cache and read only later: no read-for-ownership of each line.
template <bool Streaming = false>
inline void transpose8x8(const float* src, int64_t ld, float* dst, int64_t ds) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  transpose8x8_regs(r);
  for (int i = 0; i < 8; ++i) {
    if (Streaming)
      _mm256_stream_ps(dst + i * ds, r[i]);
    else
      _mm256_storeu_ps(dst + i * ds, r[i]);
  }
}

// transpose8x8 with rows given by pointers: dst[k·ds + r] = rows[r][col + k] ...
inline void transpose8x8_from_rows(const float* const* rows, int64_t col, float* dst, int64_t ds) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows[i] + col);
  transpose8x8_regs(r);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ds, r[i]);
}

// ... and its inverse: rows[r][col + k] = src[k·ld + r].
inline void transpose8x8_to_rows(const float* src, int64_t ld, float* const* rows, int64_t col) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  transpose8x8_regs(r);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(rows[i] + col, r[i]);
}
#endif

}  // namespace lgrpo

// Narrowing stores, the inverse of load8_bf16 / load8_f16: round to nearest even,
// NaN stays NaN, exactly as f32_to_bf16 / f32_to_f16 in common.h do one value at a time.
#if LGRPO_AVX2
namespace lgrpo {
inline void store8_bf16(uint16_t* p, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb), 16);
  // Rounding could carry a NaN's low payload into Inf: force the quiet bit as f32_to_bf16 does.
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  rounded = _mm256_blendv_epi8(rounded, quiet, nan);
  // Every lane is < 2^16 now, so the saturating pack is exact.
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
inline void store8_f16(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#if LGRPO_X86_DISPATCH
// store8_bf16's operations on 16 lanes (AVX-512 path).
LGRPO_TARGET_AVX512 inline void store16_bf16(uint16_t* p, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));  // lanes < 2^16: exact
}
#endif
}  // namespace lgrpo
#endif

// e^d for d ≤ 0, the only case a softmax against its running max needs, cheaper than
// exp_avx2: no overflow clamp, no underflow mask, and 2^n is added straight into the
// exponent bits. Inputs below −86 return e^−86 ≈ 4.5e-38 instead of 0 (harmless in a
// sum that holds a term equal to 1). Relative error < 2e-7 on [−86, 0]; d > 0 is not
// supported (returns garbage past d ≈ 88), NaN gives garbage that the caller must catch.
#if LGRPO_AVX2
namespace lgrpo {
inline __m256 exp_nonpositive_avx2(__m256 d) {
  d = _mm256_max_ps(d, _mm256_set1_ps(-86.0f));  // keeps n ≥ −124, so 2^n·p stays a normal float
  // n = round(d·log2 e) by the 1.5·2^23 trick: t's low mantissa bits then hold n itself.
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 t = _mm256_fmadd_ps(d, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), d);  // ln 2 in two parts: n·hi is exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  // e^r = 1 + r + r²·Q(r) on [−ln2/2, ln2/2]; Q fitted for minimal relative error (3.8e-9 in exact arithmetic).
  __m256 q = _mm256_set1_ps(1.381461275741458e-3f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.368710055947304e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.166838899254799e-2f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.666652113199234e-1f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.999999403953552e-1f));
  const __m256 p = _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i two_n = _mm256_slli_epi32(_mm256_castps_si256(t), 23);  // n << 23 (the magic's bits shift out)
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), two_n));
}
}  // namespace lgrpo
#endif
