// CPU twin of the λ-GRPO token pass (spec §3-4), the mask-length leaf, and the host
// side shared with the CUDA twin: weights/normaliser by aggregation mode and the fold of
// per-row sums into the loss. Forward and backward are one pass: the per-row scale
// w_i/N is known before the pass, so ∂L/∂logp is written as each token's loss is formed.
//
// Layout: token_scalar() is the readable definition of one token; the AVX2 loop beside
// it computes the same thing eight tokens at a time, its AVX-512 twin sixteen (the same
// bits), and the scalar form handles row tails and non-AVX2 builds.
#include "grpo_loss.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../parallel.h"
#include "../simd.h"
#include "lambda_weights.h"

// GCC 12 warns falsely inside its own AVX-512 intrinsics (their _mm512_undefined_*
// pass-through operands) when they are inlined into target-attribute functions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace lgrpo {

namespace {

struct RowParams {
  float advantage;
  float scale;       // w_i / N
  float lo, hi;      // 1 - ε_low, 1 + ε_high
  bool dual;         // dual clip active for this row (c > 1 and A < 0)
  float dual_bound;  // c · A
  float beta;
  bool has_ref;
};

// Row sums of one token's contributions, accumulated in double.
struct RowSums {
  double loss = 0, tokens = 0, clip_low = 0, clip_high = 0, dual = 0, ratio = 0, kl = 0;
};

inline bool finite(float x) { return std::fabs(x) <= 3.402823466e38f; }  // false for NaN too

// One token: ℓ = −s + β kl and ∂ℓ/∂logp, spec §3. Returns the gradient of ℓ (unscaled).
inline float token_scalar(float lp, float old, float ref, const RowParams& p, float* loss, float* ratio, float* kl,
                          bool* low, bool* high, bool* dual) {
  const float log_ratio = lp - old;
  const float clamped = std::fmin(std::fmax(log_ratio, -kRatioClamp), kRatioClamp);
  const float rho = std::exp(clamped);
  const float clipped = std::fmin(std::fmax(rho, p.lo), p.hi);
  const float unclipped_term = rho * p.advantage, clipped_term = clipped * p.advantage;
  // min(ρA, clip(ρ)A); where the unclipped branch is the min (ties included: inside the
  // clip range both branches agree), ∂s/∂logp = ρA, else the clipped branch is flat; so
  // is the unclipped one where the log-ratio was clamped.
  float s = std::fmin(unclipped_term, clipped_term);
  float ds = unclipped_term <= clipped_term && log_ratio == clamped ? unclipped_term : 0.0f;
  *dual = false;
  if (p.dual && s < p.dual_bound) {
    s = p.dual_bound;
    ds = 0.0f;
    *dual = true;
  }
  float l = -s, g = -ds;
  *kl = 0.0f;
  if (p.has_ref) {
    const float d = ref - lp;
    const float dc = std::fmin(std::fmax(d, -kKlClamp), kKlClamp);
    const float e = std::exp(dc);
    *kl = e - dc - 1.0f;
    l += p.beta * *kl;
    if (d == dc) g += p.beta * (1.0f - e);
  }
  *loss = l;
  *ratio = rho;
  *low = p.advantage < 0 && rho < p.lo;   // TRL's low clip: ρ < 1-ε_low with A < 0
  *high = p.advantage > 0 && rho > p.hi;  // TRL's high clip: ρ > 1+ε_high with A > 0
  return g;
}

inline float mask_at(const void* mask, DType dtype, int64_t i) {
  return dtype == DType::U8 ? static_cast<float>(static_cast<const uint8_t*>(mask)[i])
                            : static_cast<const float*>(mask)[i];
}

// Tokens [t0, T) of one row, one at a time. Returns the finiteness flags seen.
int row_scalar(const GrpoTokenPassArgs& a, int64_t row, int64_t t0, const RowParams& p, RowSums* sums) {
  const int64_t base = row * a.T;
  int bad = 0;
  for (int64_t t = t0; t < a.T; ++t) {
    const float lp = a.logprobs[base + t], old = a.old_logprobs[base + t];
    const float ref = p.has_ref ? a.ref_logprobs[base + t] : 0.0f;
    if (!finite(lp)) bad |= 1;
    if (!finite(old)) bad |= 2;
    if (!finite(ref)) bad |= 4;
    float loss, ratio, kl;
    bool low, high, dual;
    const float g = token_scalar(lp, old, ref, p, &loss, &ratio, &kl, &low, &high, &dual);
    // Masked-out tokens may hold anything finite (padding): their terms are dropped by
    // selection, never multiplied by 0, so an overflowing ratio there cannot leak a NaN.
    if (mask_at(a.mask, a.mask_dtype, base + t) != 0.0f) {
      a.grad_logprobs[base + t] = g * p.scale;
      sums->loss += loss;
      sums->tokens += 1;
      sums->clip_low += low;
      sums->clip_high += high;
      sums->dual += dual;
      sums->ratio += ratio;
      sums->kl += kl;
    } else {
      a.grad_logprobs[base + t] = 0.0f;
    }
  }
  return bad;
}

#if LGRPO_AVX2
inline __m256 load8_mask(const void* mask, DType dtype, int64_t i) {
  if (dtype == DType::U8) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(mask) + i));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
  }
  return _mm256_loadu_ps(static_cast<const float*>(mask) + i);
}

// Finiteness costs one FMA per difference the pass forms anyway: probe += (x − y)·0 turns
// NaN for good if x or y is NaN or ±Inf. Only then is the row rescanned to name the input
// (a difference of two huge finite values can overflow too: the rescan clears those).
inline __m256 probe_finite(__m256 probe, __m256 difference) {
  return _mm256_fmadd_ps(difference, _mm256_setzero_ps(), probe);
}

int rescan_finite(const GrpoTokenPassArgs& a, int64_t row, int64_t end) {
  int bad = 0;
  for (int64_t k = row * a.T, stop = row * a.T + end; k < stop; ++k) {
    if (!finite(a.logprobs[k])) bad |= 1;
    if (!finite(a.old_logprobs[k])) bad |= 2;
    if (a.ref_logprobs && !finite(a.ref_logprobs[k])) bad |= 4;
  }
  return bad;
}

// The AVX2 form of token_scalar over the first T - T % 8 tokens of a row; returns the
// index where the scalar tail starts. Lane sums run in f32 and are flushed into the
// double row sums every kFlush vectors, so long rows keep double-level accuracy.
int64_t row_avx2(const GrpoTokenPassArgs& a, int64_t row, const RowParams& p, RowSums* sums, int* bad_out) {
  constexpr int kFlush = 64;
  const int64_t base = row * a.T;
  const int64_t end = a.T - a.T % 8;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 adv = _mm256_set1_ps(p.advantage), scale = _mm256_set1_ps(p.scale);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  const __m256 dual_bound = _mm256_set1_ps(p.dual_bound), beta = _mm256_set1_ps(p.beta);
  const __m256 kl_lo = _mm256_set1_ps(-kKlClamp), kl_hi = _mm256_set1_ps(kKlClamp);
  const __m256 ratio_lo = _mm256_set1_ps(-kRatioClamp), ratio_hi = _mm256_set1_ps(kRatioClamp);
  // Only one clip side can count in a row (it depends on the sign of A): one accumulator.
  const bool counts_low = p.advantage < 0, counts_any = p.advantage != 0;
  const __m256 clip_bound = counts_low ? lo : hi;
  const __m256 clip_flag = counts_any ? one : zero;
  __m256 probe = zero;
  __m256 acc_loss = zero, acc_tokens = zero, acc_clip = zero, acc_dual = zero, acc_ratio = zero, acc_kl = zero;
  auto flush = [&]() {
    sums->loss += hsum_avx2(acc_loss);
    sums->tokens += hsum_avx2(acc_tokens);
    (counts_low ? sums->clip_low : sums->clip_high) += hsum_avx2(acc_clip);
    sums->dual += hsum_avx2(acc_dual);
    sums->ratio += hsum_avx2(acc_ratio);
    sums->kl += hsum_avx2(acc_kl);
    acc_loss = acc_tokens = acc_clip = acc_dual = acc_ratio = acc_kl = zero;
  };
  int since_flush = 0;
  for (int64_t t = 0; t < end; t += 8) {
    const __m256 lp = _mm256_loadu_ps(a.logprobs + base + t);
    const __m256 old = _mm256_loadu_ps(a.old_logprobs + base + t);
    const __m256 log_ratio = _mm256_sub_ps(lp, old);
    probe = probe_finite(probe, log_ratio);
    const __m256 on = _mm256_cmp_ps(load8_mask(a.mask, a.mask_dtype, base + t), zero, _CMP_NEQ_UQ);
    if (_mm256_movemask_ps(on) == 0) {  // all padding (common at row ends): only check and zero
      if (p.has_ref) probe = probe_finite(probe, _mm256_sub_ps(_mm256_loadu_ps(a.ref_logprobs + base + t), lp));
      _mm256_storeu_ps(a.grad_logprobs + base + t, zero);
      continue;
    }

    const __m256 clamped = _mm256_min_ps(_mm256_max_ps(log_ratio, ratio_lo), ratio_hi);
    const __m256 rho = exp_avx2(clamped);
    const __m256 clipped = _mm256_min_ps(_mm256_max_ps(rho, lo), hi);
    const __m256 unclipped_term = _mm256_mul_ps(rho, adv), clipped_term = _mm256_mul_ps(clipped, adv);
    __m256 s = _mm256_min_ps(unclipped_term, clipped_term);
    const __m256 unclipped_live = _mm256_and_ps(_mm256_cmp_ps(unclipped_term, clipped_term, _CMP_LE_OQ),
                                                _mm256_cmp_ps(log_ratio, clamped, _CMP_EQ_OQ));
    __m256 ds = _mm256_and_ps(unclipped_live, unclipped_term);
    if (p.dual) {
      const __m256 active = _mm256_cmp_ps(s, dual_bound, _CMP_LT_OQ);
      s = _mm256_blendv_ps(s, dual_bound, active);
      ds = _mm256_andnot_ps(active, ds);
      acc_dual = _mm256_add_ps(acc_dual, _mm256_and_ps(_mm256_and_ps(active, on), one));
    }
    __m256 l = _mm256_sub_ps(zero, s), g = _mm256_sub_ps(zero, ds);
    if (p.has_ref) {
      const __m256 ref = _mm256_loadu_ps(a.ref_logprobs + base + t);
      const __m256 d = _mm256_sub_ps(ref, lp);
      probe = probe_finite(probe, d);
      const __m256 dc = _mm256_min_ps(_mm256_max_ps(d, kl_lo), kl_hi);
      const __m256 e = exp_avx2(dc);
      const __m256 kl = _mm256_sub_ps(_mm256_sub_ps(e, dc), one);
      l = _mm256_fmadd_ps(beta, kl, l);
      const __m256 inside = _mm256_cmp_ps(d, dc, _CMP_EQ_OQ);
      g = _mm256_fmadd_ps(beta, _mm256_and_ps(inside, _mm256_sub_ps(one, e)), g);
      acc_kl = _mm256_add_ps(acc_kl, _mm256_and_ps(on, kl));
    }
    _mm256_storeu_ps(a.grad_logprobs + base + t, _mm256_and_ps(on, _mm256_mul_ps(g, scale)));
    acc_loss = _mm256_add_ps(acc_loss, _mm256_and_ps(on, l));
    acc_tokens = _mm256_add_ps(acc_tokens, _mm256_and_ps(on, one));
    acc_ratio = _mm256_add_ps(acc_ratio, _mm256_and_ps(on, rho));
    // ρ < 1-ε_low (A < 0) or ρ > 1+ε_high (A > 0): ρ outside the bound on A's side
    const __m256 outside = counts_low ? _mm256_cmp_ps(rho, clip_bound, _CMP_LT_OQ) : _mm256_cmp_ps(rho, clip_bound, _CMP_GT_OQ);
    acc_clip = _mm256_add_ps(acc_clip, _mm256_and_ps(_mm256_and_ps(outside, on), clip_flag));
    if (++since_flush == kFlush) {
      flush();
      since_flush = 0;
    }
  }
  flush();
  *bad_out = _mm256_movemask_ps(_mm256_cmp_ps(probe, probe, _CMP_UNORD_Q)) ? rescan_finite(a, row, end) : 0;
  return end;
}
#endif

#if LGRPO_X86_DISPATCH
LGRPO_TARGET_AVX512 inline __m256 half_of(__m512 v, int half) {
  return half ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v);
}

// Masked memory access only for the last half step: masked stores are slow on some cores
// (Zen 4), so full steps use plain loads and stores.
constexpr __mmask16 kFull = 0xffff;

LGRPO_TARGET_AVX512 inline __m512 load16(const float* p, __mmask16 valid) {
  return valid == kFull ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(valid, p);
}

LGRPO_TARGET_AVX512 inline void store16(float* p, __mmask16 valid, __m512 v) {
  if (valid == kFull) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, valid, v);
}

LGRPO_TARGET_AVX512 inline __m512 load16_mask(const void* mask, DType dtype, int64_t i, __mmask16 valid) {
  if (dtype == DType::U8) {
    const uint8_t* p = static_cast<const uint8_t*>(mask) + i;
    const __m128i bytes = valid == kFull ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_maskz_loadu_epi8(valid, p);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
  }
  return load16(static_cast<const float*>(mask) + i, valid);
}

// row_avx2 16 tokens at a time: every token's gradient is the same bits, and each
// 8-token half is folded into the same 8-lane sums in the same order (all-padding halves
// skipped, a flush every 64 counted halves), so the row sums are the same bits too.
LGRPO_TARGET_AVX512 int64_t row_avx512(const GrpoTokenPassArgs& a, int64_t row, const RowParams& p, RowSums* sums,
                                       int* bad_out) {
  constexpr int kFlush = 64;
  const int64_t base = row * a.T;
  const int64_t end = a.T - a.T % 8;
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 adv = _mm512_set1_ps(p.advantage), scale = _mm512_set1_ps(p.scale);
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const __m512 dual_bound = _mm512_set1_ps(p.dual_bound), beta = _mm512_set1_ps(p.beta);
  const __m512 kl_lo = _mm512_set1_ps(-kKlClamp), kl_hi = _mm512_set1_ps(kKlClamp);
  const __m512 ratio_lo = _mm512_set1_ps(-kRatioClamp), ratio_hi = _mm512_set1_ps(kRatioClamp);
  const bool counts_low = p.advantage < 0, counts_any = p.advantage != 0;
  const __m512 clip_bound = counts_low ? lo : hi;
  const __m512 clip_flag = counts_any ? one : zero;
  __m512 probe = zero;
  const __m256 zero8 = _mm256_setzero_ps();
  __m256 acc_loss = zero8, acc_tokens = zero8, acc_clip = zero8, acc_dual = zero8, acc_ratio = zero8, acc_kl = zero8;
  auto flush = [&]() {
    sums->loss += hsum_avx2(acc_loss);
    sums->tokens += hsum_avx2(acc_tokens);
    (counts_low ? sums->clip_low : sums->clip_high) += hsum_avx2(acc_clip);
    sums->dual += hsum_avx2(acc_dual);
    sums->ratio += hsum_avx2(acc_ratio);
    sums->kl += hsum_avx2(acc_kl);
    acc_loss = acc_tokens = acc_clip = acc_dual = acc_ratio = acc_kl = zero8;
  };
  int since_flush = 0;
  for (int64_t t = 0; t < end; t += 16) {
    const __mmask16 valid = t + 16 <= end ? kFull : static_cast<__mmask16>(0x00ff);
    const __m512 lp = load16(a.logprobs + base + t, valid);
    const __m512 old = load16(a.old_logprobs + base + t, valid);
    const __m512 log_ratio = _mm512_sub_ps(lp, old);
    probe = _mm512_fmadd_ps(log_ratio, zero, probe);
    const __mmask16 on = _mm512_cmp_ps_mask(load16_mask(a.mask, a.mask_dtype, base + t, valid), zero, _CMP_NEQ_UQ) & valid;
    __m512 ref = zero;
    if (p.has_ref) ref = load16(a.ref_logprobs + base + t, valid);
    if (on == 0) {
      if (p.has_ref) probe = _mm512_fmadd_ps(_mm512_sub_ps(ref, lp), zero, probe);
      store16(a.grad_logprobs + base + t, valid, zero);
      continue;
    }
    const __m512 clamped = _mm512_min_ps(_mm512_max_ps(log_ratio, ratio_lo), ratio_hi);
    const __m512 rho = exp_avx512(clamped);
    const __m512 clipped = _mm512_min_ps(_mm512_max_ps(rho, lo), hi);
    const __m512 unclipped_term = _mm512_mul_ps(rho, adv), clipped_term = _mm512_mul_ps(clipped, adv);
    __m512 s = _mm512_min_ps(unclipped_term, clipped_term);
    const __mmask16 unclipped_live = _mm512_cmp_ps_mask(unclipped_term, clipped_term, _CMP_LE_OQ) &
                                     _mm512_cmp_ps_mask(log_ratio, clamped, _CMP_EQ_OQ);
    __m512 ds = _mm512_maskz_mov_ps(unclipped_live, unclipped_term);
    __m512 dual_v = zero;
    if (p.dual) {
      const __mmask16 active = _mm512_cmp_ps_mask(s, dual_bound, _CMP_LT_OQ);
      s = _mm512_mask_mov_ps(s, active, dual_bound);
      ds = _mm512_maskz_mov_ps(static_cast<__mmask16>(~active), ds);
      dual_v = _mm512_maskz_mov_ps(active & on, one);
    }
    __m512 l = _mm512_sub_ps(zero, s), g = _mm512_sub_ps(zero, ds);
    __m512 kl_v = zero;
    if (p.has_ref) {
      const __m512 d = _mm512_sub_ps(ref, lp);
      probe = _mm512_fmadd_ps(d, zero, probe);
      const __m512 dc = _mm512_min_ps(_mm512_max_ps(d, kl_lo), kl_hi);
      const __m512 e = exp_avx512(dc);
      const __m512 kl = _mm512_sub_ps(_mm512_sub_ps(e, dc), one);
      l = _mm512_fmadd_ps(beta, kl, l);
      const __mmask16 inside = _mm512_cmp_ps_mask(d, dc, _CMP_EQ_OQ);
      g = _mm512_fmadd_ps(beta, _mm512_maskz_mov_ps(inside, _mm512_sub_ps(one, e)), g);
      kl_v = _mm512_maskz_mov_ps(on, kl);
    }
    store16(a.grad_logprobs + base + t, valid, _mm512_maskz_mov_ps(on, _mm512_mul_ps(g, scale)));
    const __m512 loss_v = _mm512_maskz_mov_ps(on, l), tokens_v = _mm512_maskz_mov_ps(on, one);
    const __m512 ratio_v = _mm512_maskz_mov_ps(on, rho);
    const __mmask16 outside = counts_low ? _mm512_cmp_ps_mask(rho, clip_bound, _CMP_LT_OQ)
                                         : _mm512_cmp_ps_mask(rho, clip_bound, _CMP_GT_OQ);
    const __m512 clip_v = _mm512_maskz_mov_ps(outside & on, clip_flag);
    for (int half = 0; half < 2; ++half) {
      if (((on >> (8 * half)) & 0xff) == 0) continue;  // all padding: row_avx2 skips it too
      if (p.dual) acc_dual = _mm256_add_ps(acc_dual, half_of(dual_v, half));
      if (p.has_ref) acc_kl = _mm256_add_ps(acc_kl, half_of(kl_v, half));
      acc_loss = _mm256_add_ps(acc_loss, half_of(loss_v, half));
      acc_tokens = _mm256_add_ps(acc_tokens, half_of(tokens_v, half));
      acc_ratio = _mm256_add_ps(acc_ratio, half_of(ratio_v, half));
      acc_clip = _mm256_add_ps(acc_clip, half_of(clip_v, half));
      if (++since_flush == kFlush) {
        flush();
        since_flush = 0;
      }
    }
  }
  flush();
  *bad_out = _mm512_cmp_ps_mask(probe, probe, _CMP_UNORD_Q) ? rescan_finite(a, row, end) : 0;
  return end;
}
#endif

const char* const kTokenArgNames[3] = {"logprobs", "oldLogprobs", "refLogprobs"};

}  // namespace

void grpo_token_pass_cpu(const GrpoTokenPassArgs& a) {
  if (a.mask_dtype != DType::U8 && a.mask_dtype != DType::F32) throw Error("mask: expected dtype u8 or f32", Error::Type);
  std::vector<uint8_t> bad(static_cast<size_t>(a.rows), 0);
  // Rows are independent and each writes only its own outputs, so any split gives the
  // same bits. ~32k tokens per range keeps small batches on the calling thread.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(a.T, 1));
#if LGRPO_X86_DISPATCH
  const bool use_avx512 = simd_avx512();
#endif
  parallel_for(a.rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      RowParams p;
      p.advantage = a.advantages[i];
      p.scale = a.token_scale[i];
      p.lo = 1.0f - a.eps_low;
      p.hi = 1.0f + a.eps_high;
      p.dual = a.dual_clip > 1.0f && p.advantage < 0;
      p.dual_bound = a.dual_clip * p.advantage;
      p.beta = a.beta;
      p.has_ref = a.ref_logprobs != nullptr;
      RowSums sums;
      int flags = 0;
      int64_t t0 = 0;
#if LGRPO_X86_DISPATCH
      if (use_avx512) t0 = row_avx512(a, i, p, &sums, &flags);
      else t0 = row_avx2(a, i, p, &sums, &flags);
#elif LGRPO_AVX2
      t0 = row_avx2(a, i, p, &sums, &flags);
#endif
      flags |= row_scalar(a, i, t0, p, &sums);
      bad[i] = static_cast<uint8_t>(flags);
      double* out = a.row_stats + i * kRowStatCount;
      out[kRowTokenLossSum] = sums.loss;
      out[kRowTokens] = sums.tokens;
      out[kRowClipLow] = sums.clip_low;
      out[kRowClipHigh] = sums.clip_high;
      out[kRowDualClip] = sums.dual;
      out[kRowRatioSum] = sums.ratio;
      out[kRowKlSum] = sums.kl;
    }
  });
  for (int64_t i = 0; i < a.rows; ++i) {
    if (!bad[i]) continue;
    for (int k = 0; k < 3; ++k)
      if (bad[i] & (1 << k))
        throw Error(std::string(kTokenArgNames[k]) + ": row " + std::to_string(i) +
                        " holds NaN or Inf; inputs must be finite (padding included)", Error::Range);
  }
}

void mask_lengths_cpu(const void* mask, DType mask_dtype, int64_t rows, int64_t T, float* lengths) {
  if (mask_dtype != DType::U8 && mask_dtype != DType::F32) throw Error("mask: expected dtype u8 or f32", Error::Type);
  std::vector<uint8_t> bad(static_cast<size_t>(rows), 0);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(T, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t count = 0;
      bool ok = true;
      int64_t t = 0;
      if (mask_dtype == DType::U8) {
        const uint8_t* m = static_cast<const uint8_t*>(mask) + i * T;
#if LGRPO_AVX2
        // Any bit above bit 0 set means a value other than 0/1; SAD against 0 sums bytes.
        __m256i above = _mm256_setzero_si256(), sum = _mm256_setzero_si256();
        const __m256i high_bits = _mm256_set1_epi8(static_cast<char>(0xfe));
        for (; t + 32 <= T; t += 32) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + t));
          above = _mm256_or_si256(above, _mm256_and_si256(v, high_bits));
          sum = _mm256_add_epi64(sum, _mm256_sad_epu8(v, _mm256_setzero_si256()));
        }
        ok = _mm256_testz_si256(above, above);
        alignas(32) int64_t lanes[4];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
        count = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#endif
        for (; t < T; ++t) {
          ok &= m[t] <= 1;
          count += m[t];
        }
      } else {
        const float* m = static_cast<const float*>(mask) + i * T;
#if LGRPO_AVX2
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
        __m256i counts = _mm256_setzero_si256();
        __m256 other = _mm256_setzero_ps();
        for (; t + 8 <= T; t += 8) {
          const __m256 v = _mm256_loadu_ps(m + t);
          const __m256 is_one = _mm256_cmp_ps(v, one, _CMP_EQ_OQ);
          const __m256 is_zero = _mm256_cmp_ps(v, zero, _CMP_EQ_OQ);
          other = _mm256_or_ps(other, _mm256_andnot_ps(_mm256_or_ps(is_one, is_zero), _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
          counts = _mm256_sub_epi32(counts, _mm256_castps_si256(is_one));  // all-ones lane = -1
        }
        ok = _mm256_movemask_ps(other) == 0;
        alignas(32) int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), counts);
        for (int k = 0; k < 8; ++k) count += lanes[k];
#endif
        for (; t < T; ++t) {
          ok &= m[t] == 0.0f || m[t] == 1.0f;
          count += m[t] == 1.0f;
        }
      }
      bad[i] = !ok;
      lengths[i] = static_cast<float>(count);
    }
  });
  for (int64_t i = 0; i < rows; ++i)
    if (bad[i])
      throw Error("mask: row " + std::to_string(i) + " holds a value other than 0 or 1", Error::Range);
}

void aggregation_weights(Aggregation mode, const float* lengths, const int32_t* group_ids, int64_t rows,
                         int32_t groups, double lambda, double r, double max_length, float* weights,
                         float* d_weights_d_lambda, double* normalizer) {
  double tokens = 0;
  for (int64_t i = 0; i < rows; ++i) tokens += lengths[i];
  std::fill(d_weights_d_lambda, d_weights_d_lambda + rows, 0.0f);
  double n = 1;
  switch (mode) {
    case Aggregation::Grpo:  // mean over sequences of each sequence's token mean
      for (int64_t i = 0; i < rows; ++i) weights[i] = lengths[i] > 0 ? static_cast<float>(1.0 / lengths[i]) : 0.0f;
      n = static_cast<double>(rows);
      break;
    case Aggregation::Dapo:  // token mean over the batch
      std::fill(weights, weights + rows, 1.0f);
      n = tokens;
      break;
    case Aggregation::DrGrpo:  // token sum over a constant B·L_max
      std::fill(weights, weights + rows, 1.0f);
      n = static_cast<double>(rows) * max_length;
      break;
    case Aggregation::Lambda: {
      LambdaWeightsArgs la{};
      la.lengths = lengths;
      la.lengths_dtype = DType::F32;
      la.group_ids = group_ids;
      la.rows = rows;
      la.groups = groups;
      la.lambda = lambda;
      la.r = r;
      la.weights = weights;
      la.d_weights_d_lambda = d_weights_d_lambda;
      lambda_weights_cpu(la);
      n = tokens;
      break;
    }
  }
  *normalizer = std::max(n, 1.0);
}

GrpoLossTotals fold_row_stats(const double* row_stats, const float* weights, const float* d_weights_d_lambda,
                              double normalizer, int64_t rows, float* seq_loss) {
  GrpoLossTotals t;
  bool any = false;
  for (int64_t i = 0; i < rows; ++i) {
    const double* s = row_stats + i * kRowStatCount;
    const double contribution = static_cast<double>(weights[i]) * s[kRowTokenLossSum] / normalizer;
    seq_loss[i] = static_cast<float>(contribution);
    t.loss += contribution;
    if (d_weights_d_lambda) t.grad_lambda += s[kRowTokenLossSum] * static_cast<double>(d_weights_d_lambda[i]) / normalizer;
    t.tokens += s[kRowTokens];
    t.clip_low += s[kRowClipLow];
    t.clip_high += s[kRowClipHigh];
    t.dual_clip += s[kRowDualClip];
    t.ratio_sum += s[kRowRatioSum];
    t.kl_sum += s[kRowKlSum];
    if (s[kRowTokens] == 0) {
      ++t.empty_rows;
    } else {
      t.weight_min = any ? std::min<double>(t.weight_min, weights[i]) : weights[i];
      t.weight_max = any ? std::max<double>(t.weight_max, weights[i]) : weights[i];
      any = true;
    }
  }
  return t;
}

}  // namespace lgrpo
