// CPU twin of token_logprobs (spec §1).
//
// Forward, per row, ONE streaming pass in chunks that fit in L1: a vector max over
// the chunk, then an exp-sum of the chunk against the running max (rescaling the
// running sums when the max grows). The second sweep of a chunk reads L1, not
// memory, so the row is read from memory once. Kept per row:
//
//   m = running max,  s = Σ e^(x−m),  t = Σ e^(x−m)·(x−m)
//
// t is shifted by m (rather than Σ e^(x−m)·x) so that the entropy
// H = lse − Σ p x = log s − t/s never subtracts two lse-sized numbers: with logits
// near ±1e4 the unshifted form loses every digit of H in fp32.
//
// Backward, ONE pass: with d_v = x_v − lse = log p_v,
//   ∂L/∂x_v = (g·1[v=y] − p_v·(g + e·(d_v + H))) / τ
// since x_v − Σ p x = d_v + H. Only lse and H from the forward are needed.
//
// lse arrives rounded to f32 at its own magnitude, and at |lse| = 3e6 (logits ±30 at
// τ = 1e-5) or 1e8 that rounding swallows the whole of log Σ e^(x−m): three tied logits
// each got p = 1 instead of 1/3. So for rows with |lse| ≥ kLseRecheck the backward first
// measures what the rounding lost, δ = log Σ_v e^(x_v/τ − lse) (small: the terms are
// formed against lse itself, exactly near the top), and uses d_v = (x_v/τ − lse) − δ.
// Below that magnitude δ would be within f32 noise (≤ 2^-18 relative in p) and is not
// measured, so ordinary rows cost nothing extra and keep their bits.
//
// Both directions fold a finiteness probe into the pass (x·0 + acc stays 0 for
// finite x and turns NaN for NaN or ±Inf), so bad logits are reported exactly, not
// guessed from the outputs.
#include "token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {

// 2048 elements: 8 KiB of f32, so a chunk is still in L1 for its second sweep.
constexpr int64_t kChunk = 2048;
// A piece of a row smaller than this is not worth handing to another thread.
constexpr int64_t kMinPiece = 16384;
// Rows are split into pieces until there are this many work items (when rows are few
// and long), so a handful of 150k-wide rows still keep every thread busy.
constexpr int64_t kWantItems = 8;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// |lse| from which its f32 rounding (half an ulp, 2^-18 at 64) is worth measuring.
constexpr float kLseRecheck = 64.0f;
// How far above 0 a log-probability may come out before the given lse is refused.
constexpr float kLseSlack = 1e-3f;

// The piece length depends only on the shape, never on the thread count, so the
// results are the same bits whatever set_num_threads says.
int64_t piece_length(int64_t rows, int64_t vocab) {
  if (rows >= kWantItems || vocab < 2 * kMinPiece) return std::max<int64_t>(vocab, 1);
  int64_t pieces = std::min(ceil_div(kWantItems, rows), vocab / kMinPiece);
  return ceil_div(ceil_div(vocab, pieces), 64) * 64;
}

// Softmax statistics of part of a row, relative to its own max m (see top of file).
struct Stats {
  float m = -INFINITY;
  float s = 0.0f;
  float t = 0.0f;
  bool bad = false;  // saw NaN or ±Inf
};

// Moves the reference point of (s, t) from m to a larger m2:
//   s' = s·e^(m−m2),  t' = e^(m−m2)·(t + (m−m2)·s).
void raise_max(Stats& st, float m2) {
  if (!(m2 > st.m)) return;
  if (st.m == -INFINITY) {  // nothing accumulated yet
    st.m = m2;
    return;
  }
  const float d = st.m - m2, e = std::exp(d);
  st.t = e * (st.t + d * st.s);
  st.s *= e;
  st.m = m2;
}

void merge(Stats& a, const Stats& b) {
  a.bad = a.bad || b.bad;
  if (b.m == -INFINITY) return;
  Stats c = b;
  if (b.m > a.m) {
    raise_max(a, b.m);
  } else {
    raise_max(c, a.m);
  }
  a.s += c.s;
  a.t += c.t;
}

// Row views by storage dtype: scalar loads everywhere, 8-wide loads with AVX2.
struct F32Row {
  static constexpr double kMaxFinite = 3.4028234663852886e38;
  const float* in;
  float* out;
  float get(int64_t i) const { return in[i]; }
  void put(int64_t i, float v) const { out[i] = v; }
#if LGRPO_AVX2
  __m256 get8(int64_t i) const { return _mm256_loadu_ps(in + i); }
  void put8(int64_t i, __m256 v) const { _mm256_storeu_ps(out + i, v); }
  void prefetch32(int64_t i) const {  // 128 bytes: two cache lines
    _mm_prefetch(reinterpret_cast<const char*>(in + i), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(in + i + 16), _MM_HINT_T0);
  }
#endif
};
struct BF16Row {
  static constexpr double kMaxFinite = 3.3895313892515355e38;
  const uint16_t* in;
  uint16_t* out;
  float get(int64_t i) const { return bf16_to_f32(in[i]); }
  void put(int64_t i, float v) const { out[i] = f32_to_bf16(v); }
#if LGRPO_AVX2
  __m256 get8(int64_t i) const { return load8_bf16(in + i); }
  void put8(int64_t i, __m256 v) const { store8_bf16(out + i, v); }
  void prefetch32(int64_t i) const { _mm_prefetch(reinterpret_cast<const char*>(in + i), _MM_HINT_T0); }
#endif
};
struct F16Row {
  static constexpr double kMaxFinite = 65504.0;
  const uint16_t* in;
  uint16_t* out;
  float get(int64_t i) const { return f16_to_f32(in[i]); }
  void put(int64_t i, float v) const { out[i] = f32_to_f16(v); }
#if LGRPO_AVX2
  __m256 get8(int64_t i) const { return load8_f16(in + i); }
  void put8(int64_t i, __m256 v) const { store8_f16(out + i, v); }
  void prefetch32(int64_t i) const { _mm_prefetch(reinterpret_cast<const char*>(in + i), _MM_HINT_T0); }
#endif
};

inline bool finite(float r) { return r - r == 0.0f; }  // false for NaN and ±Inf

// The kernels compute the softmax of fl(x/τ): the product is rounded to float before
// any use, as `logits / τ` in PyTorch would be. `rounded` stops the compiler from fusing
// that product into the next subtraction (GCC does by default in gnu++ modes), which
// would mix exact and rounded products: then a one-hot row's lse, built from the
// rounded max, no longer cancels the target's exact product, and its gradient p_y − 1
// comes out as half an ulp of x/τ (5e-4 at 1e4) instead of 0.
inline float rounded(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float forced = v;
  v = forced;
#endif
  return v;
}
inline float scaled(float r, float inv_tau) { return rounded(r * inv_tau); }

// ---------------------------------------------------------------------------
// Scalar path: the readable version, and the one used without AVX2.

template <class Row, bool kEntropy>
Stats forward_piece_scalar(const Row& row, int64_t begin, int64_t end, float inv_tau) {
  Stats st;
  for (int64_t c = begin; c < end; c += kChunk) {
    const int64_t ce = std::min(c + kChunk, end);
    float chunk_max = -INFINITY;
    bool ok = true;
    for (int64_t i = c; i < ce; ++i) {
      const float r = row.get(i);
      ok = ok && finite(r);
      chunk_max = std::max(chunk_max, r);
    }
    st.bad = st.bad || !ok;
    raise_max(st, scaled(chunk_max, inv_tau));  // max commutes with multiplying by τ⁻¹ > 0
    // Eight interleaved sums per chunk, as the vector path keeps: one running float sum
    // over a 50k-wide row would lose ~1e-5 of lse.
    float s[8] = {}, t[8] = {};
    for (int64_t i = c; i < ce; ++i) {
      const float x = scaled(row.get(i), inv_tau);
      if (x == -INFINITY) continue;  // a finite logit that x/τ overflows: p = 0, no share of s or t
      const float d = x - st.m, e = std::exp(d);
      s[i & 7] += e;
      if (kEntropy) t[i & 7] += e * d;
    }
    st.s += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    if (kEntropy) st.t += ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
  return st;
}

// Also raises *max_d to the largest d = log p seen: above ~0 the lse was not this row's.
template <class Row>
bool backward_piece_scalar(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse, float shift, float c,
                           float k, float* max_d) {
  bool ok = true;
  float top = *max_d;
  for (int64_t i = begin; i < end; ++i) {
    const float r = row.get(i);
    ok = ok && finite(r);
    const float d = (scaled(r, inv_tau) - lse) - shift;
    top = std::max(top, d);
    row.put(i, std::exp(d) * std::fma(k, d, c));
  }
  *max_d = top;
  return !ok;
}

// Σ e^(x/τ − lse) over part of a row, for the δ of rows with a large |lse| (see top).
template <class Row>
float sum_exp_scalar(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse) {
  float s[8] = {};
  for (int64_t i = begin; i < end; ++i) s[i & 7] += std::exp(scaled(row.get(i), inv_tau) - lse);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// ---------------------------------------------------------------------------
// AVX2 path: the same arithmetic 32 lanes at a time (four independent accumulators
// hide the latency of the adds), with the tail of fewer than 8 elements done scalar.

#if LGRPO_AVX2
// One element (already divided by τ), online: the tail of fewer than 8 elements.
void push(Stats& st, float x) {
  if (x == -INFINITY) return;  // p = 0: no share of s or t (and −∞ − −∞ would be NaN)
  raise_max(st, x);
  const float d = x - st.m, e = std::exp(d);
  st.s += e;
  st.t += e * d;
}

inline __m256 scaled8(__m256 r, __m256 inv_tau) {
  __m256 v = _mm256_mul_ps(r, inv_tau);
  __asm__("" : "+x"(v));  // see rounded()
  return v;
}

inline bool any_nan(__m256 v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }

// kScaled: τ ≠ 1 (for τ = 1 the multiply is exact and skipped).
template <class Row, bool kEntropy, bool kScaled>
Stats forward_piece_avx2(const Row& row, int64_t begin, int64_t end, float inv_tau) {
  const int64_t vec_end = begin + ((end - begin) & ~int64_t{7});
  const __m256 zero = _mm256_setzero_ps(), tau = _mm256_set1_ps(inv_tau);
  __m256 s0 = zero, s1 = zero, s2 = zero, s3 = zero;
  __m256 t0 = zero, t1 = zero, t2 = zero, t3 = zero;
  __m256 probe0 = zero, probe1 = zero;
  float m = -INFINITY;
  for (int64_t c = begin; c < vec_end; c += kChunk) {
    const int64_t ce = std::min(c + kChunk, vec_end);
    // Sweep 1: chunk max and finiteness probe.
    const __m256 lowest = _mm256_set1_ps(-INFINITY);
    __m256 m0 = lowest, m1 = lowest, m2 = lowest, m3 = lowest;
    int64_t i = c;
    for (; i + 32 <= ce; i += 32) {
      const __m256 x0 = row.get8(i), x1 = row.get8(i + 8), x2 = row.get8(i + 16), x3 = row.get8(i + 24);
      m0 = _mm256_max_ps(m0, x0);
      m1 = _mm256_max_ps(m1, x1);
      m2 = _mm256_max_ps(m2, x2);
      m3 = _mm256_max_ps(m3, x3);
      // Each x on its own: x0 + x1 could overflow to Inf for finite x.
      probe0 = _mm256_fmadd_ps(x0, zero, probe0);
      probe1 = _mm256_fmadd_ps(x1, zero, probe1);
      probe0 = _mm256_fmadd_ps(x2, zero, probe0);
      probe1 = _mm256_fmadd_ps(x3, zero, probe1);
    }
    for (; i < ce; i += 8) {
      const __m256 x = row.get8(i);
      m0 = _mm256_max_ps(m0, x);
      probe0 = _mm256_fmadd_ps(x, zero, probe0);
    }
    const float chunk_max = scaled(hmax_avx2(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3))), inv_tau);
    if (chunk_max > m) {
      if (m == -INFINITY) {
        m = chunk_max;
      } else {
        const float d = m - chunk_max;
        const __m256 scale = _mm256_set1_ps(std::exp(d)), shift = _mm256_set1_ps(d);
        if (kEntropy) {
          t0 = _mm256_mul_ps(scale, _mm256_fmadd_ps(shift, s0, t0));
          t1 = _mm256_mul_ps(scale, _mm256_fmadd_ps(shift, s1, t1));
          t2 = _mm256_mul_ps(scale, _mm256_fmadd_ps(shift, s2, t2));
          t3 = _mm256_mul_ps(scale, _mm256_fmadd_ps(shift, s3, t3));
        }
        s0 = _mm256_mul_ps(s0, scale);
        s1 = _mm256_mul_ps(s1, scale);
        s2 = _mm256_mul_ps(s2, scale);
        s3 = _mm256_mul_ps(s3, scale);
        m = chunk_max;
      }
    }
    // Sweep 2 (from L1): Σ e^(x/τ − m) and, for the entropy, Σ e^(x/τ − m)·(x/τ − m).
    // Every d ≤ 0 here (m is at least this chunk's max), which is all exp_nonpositive_avx2 handles.
    // A chunk whose every x/τ overflowed to −∞ adds nothing (and −∞ − −∞ would be NaN).
    if (m == -INFINITY) continue;
    const __m256 vm = _mm256_set1_ps(m);
    // e·d for the entropy takes d clamped at −86, as exp_nonpositive_avx2 clamps it: below
    // that e·d is under 4e-36 either way, while an unclamped d of −1e38 (or the −∞ of an
    // overflowed x/τ) times the clamped e ≈ 4.5e-38 would add −4.5 (or NaN) to t.
    const __m256 lowest_d = _mm256_set1_ps(-86.0f);
    const auto shifted = [&](int64_t at) {
      return _mm256_sub_ps(kScaled ? scaled8(row.get8(at), tau) : row.get8(at), vm);
    };
    // Sweep 2 is where the time goes, and it touches no new memory: ask for the next
    // chunk meanwhile, so the row keeps streaming in (prefetches past the end are harmless).
    i = c;
    for (; i + 32 <= ce; i += 32) {
      row.prefetch32(i + kChunk);
      const __m256 d0 = shifted(i), d1 = shifted(i + 8), d2 = shifted(i + 16), d3 = shifted(i + 24);
      const __m256 e0 = exp_nonpositive_avx2(d0), e1 = exp_nonpositive_avx2(d1);
      const __m256 e2 = exp_nonpositive_avx2(d2), e3 = exp_nonpositive_avx2(d3);
      s0 = _mm256_add_ps(s0, e0);
      s1 = _mm256_add_ps(s1, e1);
      s2 = _mm256_add_ps(s2, e2);
      s3 = _mm256_add_ps(s3, e3);
      if (kEntropy) {
        t0 = _mm256_fmadd_ps(e0, _mm256_max_ps(d0, lowest_d), t0);
        t1 = _mm256_fmadd_ps(e1, _mm256_max_ps(d1, lowest_d), t1);
        t2 = _mm256_fmadd_ps(e2, _mm256_max_ps(d2, lowest_d), t2);
        t3 = _mm256_fmadd_ps(e3, _mm256_max_ps(d3, lowest_d), t3);
      }
    }
    for (; i < ce; i += 8) {
      const __m256 d = shifted(i), e = exp_nonpositive_avx2(d);
      s0 = _mm256_add_ps(s0, e);
      if (kEntropy) t0 = _mm256_fmadd_ps(e, _mm256_max_ps(d, lowest_d), t0);
    }
  }
  Stats st;
  st.m = m;
  st.s = hsum_avx2(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  st.t = kEntropy ? hsum_avx2(_mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3))) : 0.0f;
  st.bad = any_nan(_mm256_add_ps(probe0, probe1));
  for (int64_t i = vec_end; i < end; ++i) {
    const float r = row.get(i);
    st.bad = st.bad || !finite(r);
    push(st, scaled(r, inv_tau));
  }
  return st;
}

template <class Row>
float sum_exp_avx2(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse) {
  const int64_t vec_end = begin + ((end - begin) & ~int64_t{7});
  const __m256 tau = _mm256_set1_ps(inv_tau), vlse = _mm256_set1_ps(lse);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = begin; i < vec_end; i += 8)
    acc = _mm256_add_ps(acc, exp_avx2(_mm256_sub_ps(scaled8(row.get8(i), tau), vlse)));
  return hsum_avx2(acc) + sum_exp_scalar(row, vec_end, end, inv_tau, lse);
}

template <class Row>
bool backward_piece_avx2(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse, float shift, float c,
                         float k, float* max_d) {
  const int64_t vec_end = begin + ((end - begin) & ~int64_t{7});
  // d = (x/τ − lse) − δ; δ is exactly 0 for ordinary rows, so their bits do not change.
  const __m256 zero = _mm256_setzero_ps(), tau = _mm256_set1_ps(inv_tau), vlse = _mm256_set1_ps(lse);
  const __m256 vshift = _mm256_set1_ps(shift);
  const __m256 vc = _mm256_set1_ps(c), vk = _mm256_set1_ps(k);
  __m256 probe0 = zero, probe1 = zero;
  __m256 top = _mm256_set1_ps(-INFINITY);
  int64_t i = begin;
  for (; i + 16 <= vec_end; i += 16) {
    const __m256 x0 = row.get8(i), x1 = row.get8(i + 8);
    probe0 = _mm256_fmadd_ps(x0, zero, probe0);
    probe1 = _mm256_fmadd_ps(x1, zero, probe1);
    const __m256 d0 = _mm256_sub_ps(_mm256_sub_ps(scaled8(x0, tau), vlse), vshift);
    const __m256 d1 = _mm256_sub_ps(_mm256_sub_ps(scaled8(x1, tau), vlse), vshift);
    top = _mm256_max_ps(top, _mm256_max_ps(d0, d1));
    row.put8(i, _mm256_mul_ps(exp_avx2(d0), _mm256_fmadd_ps(vk, d0, vc)));
    row.put8(i + 8, _mm256_mul_ps(exp_avx2(d1), _mm256_fmadd_ps(vk, d1, vc)));
  }
  for (; i < vec_end; i += 8) {
    const __m256 x = row.get8(i);
    probe0 = _mm256_fmadd_ps(x, zero, probe0);
    const __m256 d = _mm256_sub_ps(_mm256_sub_ps(scaled8(x, tau), vlse), vshift);
    top = _mm256_max_ps(top, d);
    row.put8(i, _mm256_mul_ps(exp_avx2(d), _mm256_fmadd_ps(vk, d, vc)));
  }
  bool bad = any_nan(_mm256_add_ps(probe0, probe1));
  *max_d = std::max(*max_d, hmax_avx2(top));
  bad = backward_piece_scalar(row, vec_end, end, inv_tau, lse, shift, c, k, max_d) || bad;
  return bad;
}
#endif

template <class Row, bool kEntropy>
Stats forward_piece(const Row& row, int64_t begin, int64_t end, float inv_tau) {
#if LGRPO_AVX2
  return inv_tau == 1.0f ? forward_piece_avx2<Row, kEntropy, false>(row, begin, end, inv_tau)
                         : forward_piece_avx2<Row, kEntropy, true>(row, begin, end, inv_tau);
#else
  return forward_piece_scalar<Row, kEntropy>(row, begin, end, inv_tau);
#endif
}

template <class Row>
bool backward_piece(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse, float shift, float c, float k,
                    float* max_d) {
#if LGRPO_AVX2
  return backward_piece_avx2(row, begin, end, inv_tau, lse, shift, c, k, max_d);
#else
  return backward_piece_scalar(row, begin, end, inv_tau, lse, shift, c, k, max_d);
#endif
}

template <class Row>
float sum_exp(const Row& row, int64_t begin, int64_t end, float inv_tau, float lse) {
#if LGRPO_AVX2
  return sum_exp_avx2(row, begin, end, inv_tau, lse);
#else
  return sum_exp_scalar(row, begin, end, inv_tau, lse);
#endif
}

template <class Row>
Row row_at(const void* in, void* out, int64_t offset) {
  using T = std::remove_const_t<std::remove_pointer_t<decltype(Row::in)>>;
  return Row{static_cast<const T*>(in) + offset, out ? static_cast<T*>(out) + offset : nullptr};
}

// Runs body(piece_index, row, begin, end) over every piece of every row, in parallel.
template <class Body>
void for_each_piece(int64_t rows, int64_t vocab, const Body& body) {
  const int64_t piece = piece_length(rows, vocab);
  const int64_t pieces = std::max<int64_t>(ceil_div(vocab, piece), 1);
  const int64_t grain = std::max<int64_t>(1, 65536 / piece);  // at least ~64k elements per thread
  parallel_for(rows * pieces, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t n = item / pieces, k = item % pieces;
      body(item, n, k * piece, std::min(vocab, (k + 1) * piece));
    }
  });
}

template <class Row>
void forward_typed(const TokenLogprobsForwardArgs& a) {
  const int64_t N = a.rows, V = a.vocab;
  const float inv_tau = 1.0f / a.temperature;
  const int64_t pieces = std::max<int64_t>(ceil_div(V, piece_length(N, V)), 1);
  std::vector<Stats> parts(static_cast<size_t>(N * pieces));
  for_each_piece(N, V, [&](int64_t item, int64_t n, int64_t begin, int64_t end) {
    const Row row = row_at<Row>(a.logits, nullptr, n * V);
    parts[item] = a.entropy ? forward_piece<Row, true>(row, begin, end, inv_tau)
                            : forward_piece<Row, false>(row, begin, end, inv_tau);
  });

  // Pieces merge in a fixed order, so the bits do not depend on the thread count.
  int64_t bad_row = -1, overflow_row = -1;
  for (int64_t n = 0; n < N; ++n) {
    Stats st = parts[n * pieces];
    for (int64_t k = 1; k < pieces; ++k) merge(st, parts[n * pieces + k]);
    if (st.bad && bad_row < 0) bad_row = n;
    if (!std::isfinite(st.m) && overflow_row < 0) overflow_row = n;
    const float log_s = std::log(st.s);
    const Row row = row_at<Row>(a.logits, nullptr, n * V);
    a.lse[n] = st.m + log_s;
    // (x_y − m) − log s rather than x_y − lse: lse is rounded to fp32 at its own
    // magnitude, which for logits near 1e4 would cost ~1e-3 of absolute accuracy.
    a.logprobs[n] = (scaled(row.get(a.targets[n]), inv_tau) - st.m) - log_s;
    // H ≥ 0 exactly; rounding can leave −1e-8 for a one-hot row.
    if (a.entropy) a.entropy[n] = std::max(0.0f, log_s - st.t / st.s);
  }
  if (bad_row >= 0) throw Error("logits: row " + std::to_string(bad_row) + " contains NaN or Inf", Error::Range);
  if (overflow_row >= 0)
    throw Error("logits: row " + std::to_string(overflow_row) + " overflows float32 when divided by temperature " +
                    std::to_string(a.temperature), Error::Range);
}

template <class Row>
void backward_typed(const TokenLogprobsBackwardArgs& a) {
  const int64_t N = a.rows, V = a.vocab;
  const float inv_tau = 1.0f / a.temperature;
  const int64_t pieces = std::max<int64_t>(ceil_div(V, piece_length(N, V)), 1);
  std::vector<char> bad(static_cast<size_t>(N * pieces), 0);
  std::vector<float> max_d(static_cast<size_t>(N * pieces), -INFINITY);
  for (int64_t n = 0; n < N; ++n)
    if (!std::isfinite(a.lse[n]))
      throw Error("lse: row " + std::to_string(n) + " is " + std::to_string(a.lse[n]) + "; it must be finite", Error::Range);

  // δ per row (see top): measured only where |lse| is large enough for its rounding to show.
  std::vector<float> shift(static_cast<size_t>(N), 0.0f);
  bool any_large = false;
  for (int64_t n = 0; n < N && !any_large; ++n) any_large = std::fabs(a.lse[n]) >= kLseRecheck;
  if (any_large) {
    std::vector<float> partial(static_cast<size_t>(N * pieces), 0.0f);
    for_each_piece(N, V, [&](int64_t item, int64_t n, int64_t begin, int64_t end) {
      if (std::fabs(a.lse[n]) >= kLseRecheck)
        partial[item] = sum_exp(row_at<Row>(a.logits, nullptr, n * V), begin, end, inv_tau, a.lse[n]);
    });
    for (int64_t n = 0; n < N; ++n) {
      if (!(std::fabs(a.lse[n]) >= kLseRecheck)) continue;
      float total = 0.0f;
      for (int64_t k = 0; k < pieces; ++k) total += partial[n * pieces + k];  // fixed order: same bits per thread count
      // A sum of 0 or ∞ means this lse is not the forward's for these logits (or they
      // hold NaN, reported below); keep the lse as given rather than invent a shift.
      if (total > 0.0f && std::isfinite(total)) shift[n] = std::log(total);
    }
  }

  for_each_piece(N, V, [&](int64_t item, int64_t n, int64_t begin, int64_t end) {
    const Row row = row_at<Row>(a.logits, a.grad_logits, n * V);
    const float g = a.grad_logprobs[n];
    const float ge = a.grad_entropy ? a.grad_entropy[n] : 0.0f;
    const float H = a.grad_entropy ? a.entropy[n] : 0.0f;
    const float lse = a.lse[n];
    const int32_t y = a.targets[n];
    // grad_v = p_v·(c + k·d_v), the target then gets g/τ more.
    const float c = -(g + ge * H) * inv_tau, k = -ge * inv_tau;
    const bool has_target = y >= begin && y < end;
    const float x_y = has_target ? row.get(y) : 0.0f;  // read before an in-place pass overwrites it
    bad[item] = backward_piece(row, begin, end, inv_tau, lse, shift[n], c, k, &max_d[item]);
    if (has_target) {
      const float d = (scaled(x_y, inv_tau) - lse) - shift[n], p = std::exp(d);
      row.put(y, (g - p * (g + ge * (d + H))) * inv_tau);
    }
  });
  for (int64_t item = 0; item < N * pieces; ++item)
    if (bad[item])
      throw Error("logits: row " + std::to_string(item / pieces) + " contains NaN or Inf", Error::Range);
  // p = e^d ≤ 1 for the forward's lse (up to its rounding, far below this slack); a larger
  // d means an lse from other logits or another temperature, and gradients that grow
  // without bound (they reached ±Inf) rather than an error.
  for (int64_t item = 0; item < N * pieces; ++item)
    if (max_d[item] > kLseSlack)
      throw Error("lse: row " + std::to_string(item / pieces) + " is below the log-sum-exp of logits / temperature (a probability would be " +
                      std::to_string(std::exp(static_cast<double>(max_d[item]))) +
                      "); pass the lse tokenLogprobs returned for these logits with the same temperature", Error::Range);
  // The gradient takes the logits' dtype, and float16 ends at 65504 (e.g. 1/τ past it):
  // a larger value would come back as ±Infinity. |∂/∂x| ≤ (2|g| + |e|(|H| + 1))/τ with
  // p ≤ 1 and p·|log p| ≤ 1/e, so only rows whose bound passes the range are read again.
  for (int64_t n = 0; n < N; ++n) {
    const double ge = a.grad_entropy ? std::fabs(a.grad_entropy[n]) : 0.0;
    const double H = a.grad_entropy ? std::fabs(a.entropy[n]) : 0.0;
    const double bound = (2.0 * std::fabs(a.grad_logprobs[n]) + ge * (H + 1.0)) * inv_tau * 1.01;
    if (bound <= Row::kMaxFinite) continue;
    const Row out = row_at<Row>(a.grad_logits, nullptr, n * V);
    for (int64_t v = 0; v < V; ++v)
      if (!finite(out.get(v))) throw gradient_overflow_error(n, a.dtype);
  }
}

}  // namespace

Error gradient_overflow_error(int64_t row, DType dtype) {
  const bool half = dtype == DType::F16;
  return Error(std::string("logits: the gradient of row ") + std::to_string(row) + " is beyond " +
                   (half ? "float16's range (±65504)" : "float32's range") +
                   " and would be ±Infinity; " +
                   (half ? "pass f32 or bf16 logits (the gradient takes the logits' dtype) or use a larger temperature"
                         : "scale gradLogprobs/gradEntropy down or use a larger temperature"),
               Error::Range);
}

void token_logprobs_forward_cpu(const TokenLogprobsForwardArgs& a) {
  if (a.rows == 0) return;
  switch (a.dtype) {
    case DType::F32: return forward_typed<F32Row>(a);
    case DType::BF16: return forward_typed<BF16Row>(a);
    case DType::F16: return forward_typed<F16Row>(a);
    default: throw Error("logits: expected dtype f32, bf16 or f16", Error::Type);
  }
}

void token_logprobs_backward_cpu(const TokenLogprobsBackwardArgs& a) {
  if (a.rows == 0) return;
  // The per-row inputs first, in the order and words of the CUDA twin.
  check_finite_rows(a.lse, a.rows, "lse");
  check_finite_rows(a.grad_logprobs, a.rows, "gradLogprobs");
  check_finite_rows(a.grad_entropy, a.rows, "gradEntropy");
  check_finite_rows(a.grad_entropy ? a.entropy : nullptr, a.rows, "entropy");
  switch (a.dtype) {
    case DType::F32: return backward_typed<F32Row>(a);
    case DType::BF16: return backward_typed<BF16Row>(a);
    case DType::F16: return backward_typed<F16Row>(a);
    default: throw Error("logits: expected dtype f32, bf16 or f16", Error::Type);
  }
}

}  // namespace lgrpo
