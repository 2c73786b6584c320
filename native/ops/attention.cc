// CPU twin of attention. Readable structure first:
//   forward   per position t and kv head: the group's query heads attend keys 0..t
//             (attend_rows): scores, softmax, weighted sum of v.
//   backward  per (row b, kv head): recompute each query row's probabilities from lse,
//             then dq (owned by the row), dk and dv (owned by this (b, kv head) item, so
//             no two threads ever add into the same gradient and the sum order is fixed).
//   decode    attend_rows against the cache, the same routine as the forward.
// Fast second: q·k dot products four keys and two query heads at a time (dot4<2>, eight
// independent FMA chains; eight keys in the two halves of zmm registers on the AVX-512 path,
// dot8), weighted sums of up to four query heads at a time over each key's row, key
// blocks shared by all query heads of a group while they sit in L1; forward work items pair
// early and late query blocks so they cost the same under the causal mask.
//
// Determinism and decode == forward rest on two properties of the helpers below:
//   - a key's score has the same bits whichever group of four (or eight) keys, and whichever pair of
//     query heads, it is computed in (each lane's arithmetic depends only on its own key
//     and head), and
//   - weighted sums add their terms in key order with one fused multiply-add per term,
//     whether four heads or one are handled per step.
// So every output row has one value, whatever the blocking, the thread count or the
// path (prefill or decode) that computed it.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "../parallel.h"
#include "../simd.h"

#if defined(__GNUC__) || defined(__clang__)
#define LGRPO_NOINLINE __attribute__((noinline))
#else
#define LGRPO_NOINLINE
#endif

namespace lgrpo {
namespace {

// Keys per block in the group loops: a block of k (or v) rows stays in L1 while every
// query head of the group uses it.
constexpr int64_t kKeyBlock = 16;
// The key block for a group of G heads over n keys: up to four heads go over the keys in one
// pass (dots_rows and accumulate_rows_group take four rows at a time), which leaves no later
// pass to keep a block in L1 for, so their keys go in one block (the forward 10% faster at 4
// heads of 32 per kv head over 256 positions). Blocks change no bit: scores are per key, and
// weighted sums run in key order either way.
inline int64_t key_block(int64_t G, int64_t n) { return G <= 4 ? std::max<int64_t>(n, 1) : kKeyBlock; }
// Query positions per forward work unit; units are paired (i, last − i) so that every
// work item costs the same under the causal mask.
constexpr int64_t kQueryBlock = 16;

// Floats of p (and as many of ds) the backward keeps per thread: a panel of query
// positions × G heads × T keys (256 KiB each).
constexpr int64_t kPanelFloats = int64_t(1) << 16;

#if LGRPO_AVX2
// r[h] = q_h·k0 .. q_h·k3 in four lanes, for the H query rows q_h = q + h·hd (4H independent
// FMA chains). Each (row, key)'s lanes, reduction tree and tail depend only on that row and
// key, so a score has the same bits whatever H it is computed with.
template <int H>
inline void dot4(const float* q, const float* k0, const float* k1, const float* k2, const float* k3, int64_t hd,
                 __m128* r) {
  __m256 acc[H][4];
  for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= hd; i += 8) {
    const __m256 x0 = _mm256_loadu_ps(k0 + i), x1 = _mm256_loadu_ps(k1 + i);
    const __m256 x2 = _mm256_loadu_ps(k2 + i), x3 = _mm256_loadu_ps(k3 + i);
    for (int h = 0; h < H; ++h) {
      const __m256 qv = _mm256_loadu_ps(q + h * hd + i);
      acc[h][0] = _mm256_fmadd_ps(qv, x0, acc[h][0]);
      acc[h][1] = _mm256_fmadd_ps(qv, x1, acc[h][1]);
      acc[h][2] = _mm256_fmadd_ps(qv, x2, acc[h][2]);
      acc[h][3] = _mm256_fmadd_ps(qv, x3, acc[h][3]);
    }
  }
  for (int h = 0; h < H; ++h) {
    // Same reduction tree for every lane: ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)).
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(acc[h][0], acc[h][1]), _mm256_hadd_ps(acc[h][2], acc[h][3]));
    r[h] = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    if (i < hd) {
      const float* qh = q + h * hd;
      alignas(16) float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t e = i; e < hd; ++e) {
        tail[0] = std::fma(qh[e], k0[e], tail[0]);
        tail[1] = std::fma(qh[e], k1[e], tail[1]);
        tail[2] = std::fma(qh[e], k2[e], tail[2]);
        tail[3] = std::fma(qh[e], k3[e], tail[3]);
      }
      r[h] = _mm_add_ps(r[h], _mm_load_ps(tail));
    }
  }
}

#if LGRPO_X86_DISPATCH
// dot4<H> for eight keys: key m and key m + 4 share a zmm, one in each 256-bit half, and every
// step below acts on the two halves as dot4's ymm step acts on one (its hadds are per 128-bit
// lane; the last add pairs each half's two 128-bit lanes), so each key's score has dot4's bits.
// Half the instructions per key: the scores are the reduction-heavy part of attention.
LGRPO_TARGET_AVX512 inline __m512 hadd_lanes(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

template <int H>
LGRPO_TARGET_AVX512 void dot8(const float* q, const float* const* k, int64_t hd, __m128* r /* [H][2] */) {
  __m512 acc[H][4];
  for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= hd; i += 8) {
    __m512 x[4];
    for (int m = 0; m < 4; ++m)
      x[m] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(k[m] + i)), _mm256_loadu_ps(k[m + 4] + i), 1);
    for (int h = 0; h < H; ++h) {
      const __m512 qv = _mm512_broadcast_f32x8(_mm256_loadu_ps(q + h * hd + i));
      for (int m = 0; m < 4; ++m) acc[h][m] = _mm512_fmadd_ps(qv, x[m], acc[h][m]);
    }
  }
  for (int h = 0; h < H; ++h) {
    const __m512 t = hadd_lanes(hadd_lanes(acc[h][0], acc[h][1]), hadd_lanes(acc[h][2], acc[h][3]));
    const __m512 sum = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    r[2 * h] = _mm512_castps512_ps128(sum);
    r[2 * h + 1] = _mm512_extractf32x4_ps(sum, 2);
    if (i < hd) {
      const float* qh = q + h * hd;
      for (int half = 0; half < 2; ++half) {
        alignas(16) float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t e = i; e < hd; ++e)
          for (int m = 0; m < 4; ++m) tail[m] = std::fma(qh[e], k[4 * half + m][e], tail[m]);
        r[2 * h + half] = _mm_add_ps(r[2 * h + half], _mm_load_ps(tail));
      }
    }
  }
}

// dots_keys' whole groups of eight keys through dot8; returns the keys done.
template <int H>
LGRPO_TARGET_AVX512 int64_t dots_keys8(const float* q, const float* rows, int64_t stride, int64_t n, int64_t hd,
                                       float scale, float* out, int64_t ld) {
  const __m128 sv = _mm_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const float* k[8];
    for (int m = 0; m < 8; ++m) k[m] = rows + (j + m) * stride;
    __m128 r[2 * H];
    dot8<H>(q, k, hd, r);
    for (int h = 0; h < H; ++h) {
      _mm_storeu_ps(out + h * ld + j, _mm_mul_ps(r[2 * h], sv));
      _mm_storeu_ps(out + h * ld + j + 4, _mm_mul_ps(r[2 * h + 1], sv));
    }
  }
  return j;
}
#endif

// out[h·ld + j] = scale · (q_h·rows_j) for j < n and the H query rows q_h = q + h·hd, rows_j
// at rows + j·stride, four keys at a time (eight on the AVX-512 path); from key j0 on when
// j0 >= 0 (the caller ran dots_keys8 on the keys before it).
template <int H>
void dots_keys(const float* q, const float* rows, int64_t stride, int64_t n, int64_t hd, float scale, float* out,
               int64_t ld, int64_t j0 = -1) {
  const __m128 sv = _mm_set1_ps(scale);
#if LGRPO_X86_DISPATCH
  // One query row gains nothing from eight keys in zmm halves (each key row is assembled for
  // a single head): measured no faster at head size 24 and 32.
  if (H >= 2 && j0 < 0 && simd_avx512()) j0 = dots_keys8<H>(q, rows, stride, n, hd, scale, out, ld);
#endif
  for (int64_t j = std::max<int64_t>(j0, 0); j < n; j += 4) {
    // A short last group repeats its first key; the extra lanes are discarded.
    const float* k0 = rows + j * stride;
    const float* k1 = j + 1 < n ? k0 + stride : k0;
    const float* k2 = j + 2 < n ? k0 + 2 * stride : k0;
    const float* k3 = j + 3 < n ? k0 + 3 * stride : k0;
    __m128 r[H];
    dot4<H>(q, k0, k1, k2, k3, hd, r);
    for (int h = 0; h < H; ++h) {
      alignas(16) float d[4];
      _mm_store_ps(d, _mm_mul_ps(r[h], sv));
      for (int64_t m = 0; m < 4 && j + m < n; ++m) out[h * ld + j + m] = d[m];
    }
  }
}
#endif

// out[j] = scale · (x·rows_j) for j < n, rows_j at rows + j·stride.
void dots_row(const float* x, const float* rows, int64_t stride, int64_t n, int64_t hd, float scale, float* out) {
#if LGRPO_AVX2
  dots_keys<1>(x, rows, stride, n, hd, scale, out, 0);
#else
  for (int64_t j = 0; j < n; ++j) {
    const float* r = rows + j * stride;
    float s = 0.0f;
    for (int64_t i = 0; i < hd; ++i) s = std::fma(x[i], r[i], s);
    out[j] = s * scale;
  }
#endif
}

float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if LGRPO_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = hsum_avx2(acc);
#endif
  for (; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

#if LGRPO_X86_DISPATCH
// exp_shifted's loop, 16 at a time: the same exp lane for lane, and each 8-block added to the
// 8-lane sum in turn, as the AVX2 loop does. Returns the elements done.
LGRPO_TARGET_AVX512 int64_t exp_shifted_avx512(float* x, int64_t n, float shift, __m256* acc) {
  const __m512 sh = _mm512_set1_ps(shift);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + j), sh));
    _mm512_storeu_ps(x + j, e);
    *acc = _mm256_add_ps(*acc, _mm512_castps512_ps256(e));
    *acc = _mm256_add_ps(*acc, _mm512_extractf32x8_ps(e, 1));
  }
  return j;
}
#endif

// x[j] ← e^(x[j] − shift) for j < n; returns Σ_j x[j].
float exp_shifted(float* x, int64_t n, float shift) {
  int64_t j = 0;
  float sum = 0.0f;
#if LGRPO_AVX2
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
#if LGRPO_X86_DISPATCH
  if (n >= 16 && simd_avx512()) j = exp_shifted_avx512(x, n, shift, &acc);
#endif
  for (; j + 8 <= n; j += 8) {
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
    _mm256_storeu_ps(x + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum_avx2(acc);
#endif
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

bool all_finite(const float* x, int64_t n) {
  float probe = 0.0f;  // x − x is 0 for finite x and NaN for NaN or ±Inf (in any order)
  int64_t i = 0;
#if LGRPO_AVX2
  __m256 lanes = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    lanes = _mm256_add_ps(lanes, _mm256_sub_ps(v, v));
  }
  probe = hsum_avx2(lanes);
#endif
  for (; i < n; ++i) probe += x[i] - x[i];
  return probe == 0.0f;
}

// The largest of x[0..n) (n > 0) for the softmax shift; which of two equal-valued zeros
// or which value beside a NaN it picks changes no output (a NaN score fails all_finite).
float row_max(const float* x, int64_t n) {
  float mx = -INFINITY;
  int64_t i = 0;
#if LGRPO_AVX2
  if (n >= 8) {
    __m256 lanes = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) lanes = _mm256_max_ps(lanes, _mm256_loadu_ps(x + i));
    mx = hmax_avx2(lanes);
  }
#endif
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

// dots_row for the G query rows of a group (q: G rows of hd floats, contiguous), into
// out[g·ld + j]: four or two rows at a time, the same bits as dots_row row by row.
void dots_rows(const float* q, int64_t G, const float* rows, int64_t stride, int64_t n, int64_t hd, float scale,
               float* out, int64_t ld) {
  int64_t g = 0;
#if LGRPO_X86_DISPATCH
  // Four heads per pass over the keys on the AVX-512 path (16 zmm chains, each key row loaded
  // once for the four), the keys dot8 leaves two heads at a time (dot4<4> would spill ymm).
  if (simd_avx512())
    for (; g + 4 <= G; g += 4) {
      const int64_t j0 = dots_keys8<4>(q + g * hd, rows, stride, n, hd, scale, out + g * ld, ld);
      for (int64_t h = g; h < g + 4; h += 2) dots_keys<2>(q + h * hd, rows, stride, n, hd, scale, out + h * ld, ld, j0);
    }
#endif
#if LGRPO_AVX2
  for (; g + 2 <= G; g += 2) dots_keys<2>(q + g * hd, rows, stride, n, hd, scale, out + g * ld, ld);
#endif
  for (; g < G; ++g) dots_row(q + g * hd, rows, stride, n, hd, scale, out + g * ld);
}

#if LGRPO_AVX2
// acc[h·hd + i, 16 floats from i) += Σ_j w[h·ws + j]·rows_j for H rows of acc at once, one
// FMA per term in j order for every element (2H chains in flight).
template <int H>
inline void accumulate_slice16(float* acc, int64_t hd, const float* w, int64_t ws, const float* rows, int64_t stride,
                               int64_t n, int64_t i) {
  __m256 lo[H], hi[H];
  for (int h = 0; h < H; ++h) {
    lo[h] = _mm256_loadu_ps(acc + h * hd + i);
    hi[h] = _mm256_loadu_ps(acc + h * hd + i + 8);
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* x = rows + j * stride + i;
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    for (int h = 0; h < H; ++h) {
      const __m256 wv = _mm256_broadcast_ss(w + h * ws + j);
      lo[h] = _mm256_fmadd_ps(wv, x0, lo[h]);
      hi[h] = _mm256_fmadd_ps(wv, x1, hi[h]);
    }
  }
  for (int h = 0; h < H; ++h) {
    _mm256_storeu_ps(acc + h * hd + i, lo[h]);
    _mm256_storeu_ps(acc + h * hd + i + 8, hi[h]);
  }
}
#endif

// acc[g·hd + i] += Σ_j w[g·ws + j]·rows_j[i] for the G rows of a group (acc: G rows of hd
// floats, contiguous), one fused multiply-add per term in j order for every element, so each
// row's bits are what it gets alone (G = 1); up to four rows at a time share each load of
// rows_j, eight FMA chains in flight.
void accumulate_rows_group(float* acc, int64_t G, const float* w, int64_t ws, const float* rows, int64_t stride,
                           int64_t n, int64_t hd) {
  int64_t i = 0;
#if LGRPO_AVX2
  for (; i + 16 <= hd; i += 16) {
    int64_t g = 0;
    for (; g + 4 <= G; g += 4) accumulate_slice16<4>(acc + g * hd, hd, w + g * ws, ws, rows, stride, n, i);
    switch (G - g) {
      case 3: accumulate_slice16<3>(acc + g * hd, hd, w + g * ws, ws, rows, stride, n, i); break;
      case 2: accumulate_slice16<2>(acc + g * hd, hd, w + g * ws, ws, rows, stride, n, i); break;
      case 1: accumulate_slice16<1>(acc + g * hd, hd, w + g * ws, ws, rows, stride, n, i); break;
      default: break;
    }
  }
#endif
  if (i == hd) return;
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < n; ++j) {
      const float wj = w[g * ws + j];
      const float* x = rows + j * stride;
      for (int64_t e = i; e < hd; ++e) acc[g * hd + e] = std::fma(wj, x[e], acc[g * hd + e]);
    }
}

// The G query rows of one kv head at one position (q: G rows of hd floats, contiguous, as
// the heads of a group sit side by side) against keys/values 0..n-1 (token stride
// `stride`): writes out (G rows, contiguous) and lse[g·lse_stride], NaN where a score is
// not finite. Loops run key blocks outside and queries inside, so each block of k and v
// rows is fetched once for the whole group (grouped-query attention's saving).
// Each query's result is exactly what a lone query would get: scores are per-lane and
// sums run in key order. Not inlined, so forward and decode run the same instructions.
LGRPO_NOINLINE void attend_rows(const float* q, int64_t G, const float* k, const float* v, int64_t stride, int64_t n,
                                int64_t hd, float scale, float* scores, float* out, float* lse, int64_t lse_stride) {
  std::fill(out, out + G * hd, 0.0f);
  if (n == 0) {
    for (int64_t g = 0; g < G; ++g) lse[g * lse_stride] = 0.0f;
    return;
  }
  const int64_t block = key_block(G, n);
  for (int64_t j = 0; j < n; j += block)
    dots_rows(q, G, k + j * stride, stride, std::min(block, n - j), hd, scale, scores + j, n);
  float inv_small[64];
  std::vector<float> inv_large(G > 64 ? static_cast<size_t>(G) : 0);
  float* inv = G > 64 ? inv_large.data() : inv_small;
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * n;
    const float mx = row_max(s, n);
    const bool finite = all_finite(s, n);
    const float sum = exp_shifted(s, n, mx);
    inv[g] = 1.0f / sum;
    lse[g * lse_stride] = finite ? mx + std::log(sum) : NAN;
  }
  for (int64_t j = 0; j < n; j += block)
    accumulate_rows_group(out, G, scores + j, n, v + j * stride, stride, std::min(block, n - j), hd);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < hd; ++i) out[g * hd + i] *= inv[g];
}

void check_lengths(const int32_t* lengths, int64_t batch, int64_t limit, const char* limit_name) {
  for (int64_t b = 0; b < batch; ++b)
    if (lengths[b] < 0 || lengths[b] > limit)
      throw Error("lengths: length " + std::to_string(lengths[b]) + " of row " + std::to_string(b) + " is outside [0, " +
                      std::to_string(limit) + "] (" + limit_name + ")",
                  Error::Range);
}

void keep_first(std::mutex& m, int64_t& first, int64_t mine) {
  if (mine < 0) return;
  std::lock_guard<std::mutex> lock(m);
  if (first < 0 || mine < first) first = mine;
}

}  // namespace

int64_t attention_forward_cpu(const AttentionForwardArgs& a) {
  check_lengths(a.lengths, a.batch, a.seq, "the sequence length");
  const int64_t B = a.batch, T = a.seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim;
  const int64_t G = Hq / Hkv, kv_stride = Hkv * hd;
  const int64_t blocks = (T + kQueryBlock - 1) / kQueryBlock, pairs = (blocks + 1) / 2;
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(Hkv * B * pairs, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(G * std::max<int64_t>(T, 1)));
    int64_t mine = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t pair = item % pairs, b = (item / pairs) % B, kvh = item / pairs / B, len = a.lengths[b];
      const float* kb = a.k + (b * T * Hkv + kvh) * hd;
      const float* vb = a.v + (b * T * Hkv + kvh) * hd;
      float* lse = a.lse + (b * Hq + kvh * G) * T;  // [G rows of T], stride T between heads
      for (int64_t blk : {pair, blocks - 1 - pair}) {
        for (int64_t t = blk * kQueryBlock; t < std::min(T, (blk + 1) * kQueryBlock); ++t) {
          const int64_t off = ((b * T + t) * Hq + kvh * G) * hd;  // the group's G heads, contiguous
          if (t >= len) {
            std::fill(a.out + off, a.out + off + G * hd, 0.0f);
            for (int64_t g = 0; g < G; ++g) lse[g * T + t] = 0.0f;
            continue;
          }
          attend_rows(a.q + off, G, kb, vb, kv_stride, t + 1, hd, a.scale, scores.data(), a.out + off, lse + t, T);
          for (int64_t g = 0; g < G; ++g) {
            const int64_t row = (b * Hq + kvh * G + g) * T + t;
            if (!(std::isfinite(lse[g * T + t]) && all_finite(a.out + off + g * hd, hd)) && (mine < 0 || row < mine))
              mine = row;
          }
        }
        if (blocks - 1 - pair == pair) break;  // the middle block of an odd count is its own pair
      }
    }
    keep_first(bad_mutex, first_bad, mine);
  });
  return first_bad;
}

// With p = softmax(s), s = scale·q·k, o = Σ p_j v_j and upstream dO:
//   dv_j += p_j·dO,  dp_j = dO·v_j,  ds_j = p_j·(dp_j − dO·o),
//   dq = scale·Σ_j ds_j k_j,  dk_j += scale·ds_j·q.
// Work items are (row b, kv head): an item owns its dk and dv rows outright, so sums
// into them run in one fixed order (position t, then head g) on one thread.
// Query positions go in panels: each position's p and ds are kept for the panel, then
// every key's dk and dv rows take the panel's terms in that same order, in registers
// (rather than a load and store of the row per term). The panel size changes no bit.
#if LGRPO_AVX2
namespace {
// What key j's dk/dv rows sum over a panel of query positions t (attention_backward_cpu):
// p and ds at [(t − t0)·panel_stride + g·T] (offset to key j), q and dO of the key's group of
// G heads at t·q_stride + g·hd.
struct KeyTerms {
  const float *p, *ds, *q, *dout;
  int64_t panel_stride, q_stride, t0, T, G, hd;
  float scale;
};

// dk[i, i + 8S) += Σ_t Σ_g scale·ds·q and dv[i, i + 8S) += Σ_t Σ_g p·dO, t in [t_begin, t_end).
template <int S>
inline void accumulate_key(const KeyTerms& k, int64_t t_begin, int64_t t_end, int64_t i, float* dk, float* dv) {
  __m256 ak[S], av[S];
  for (int s = 0; s < S; ++s) {
    ak[s] = _mm256_loadu_ps(dk + i + 8 * s);
    av[s] = _mm256_loadu_ps(dv + i + 8 * s);
  }
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float *pt = k.p + (t - k.t0) * k.panel_stride, *dst = k.ds + (t - k.t0) * k.panel_stride;
    const float *q = k.q + t * k.q_stride + i, *dout = k.dout + t * k.q_stride + i;
    for (int64_t g = 0; g < k.G; ++g) {
      const __m256 wk = _mm256_set1_ps(k.scale * dst[g * k.T]), wv = _mm256_set1_ps(pt[g * k.T]);
      for (int s = 0; s < S; ++s) {
        ak[s] = _mm256_fmadd_ps(wk, _mm256_loadu_ps(q + g * k.hd + 8 * s), ak[s]);
        av[s] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(dout + g * k.hd + 8 * s), av[s]);
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    _mm256_storeu_ps(dk + i + 8 * s, ak[s]);
    _mm256_storeu_ps(dv + i + 8 * s, av[s]);
  }
}

#if LGRPO_X86_DISPATCH
// accumulate_key for keys j and j + 1 at once (k's p and ds offset to key j), both over t in
// [t_begin, t_end), S 16-float slices of the head from i in zmm: each q and dO load serves
// both keys, 4S FMA chains in flight. Each element's chain over (t, g) is accumulate_key's,
// so the bits are the AVX2 path's.
template <int S>
LGRPO_TARGET_AVX512 void accumulate_key_pair_avx512(const KeyTerms& k, int64_t t_begin, int64_t t_end, int64_t i,
                                                    float* dk0, float* dv0, float* dk1, float* dv1) {
  __m512 ak0[S], av0[S], ak1[S], av1[S];
  for (int s = 0; s < S; ++s) {
    ak0[s] = _mm512_loadu_ps(dk0 + i + 16 * s);
    av0[s] = _mm512_loadu_ps(dv0 + i + 16 * s);
    ak1[s] = _mm512_loadu_ps(dk1 + i + 16 * s);
    av1[s] = _mm512_loadu_ps(dv1 + i + 16 * s);
  }
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float *pt = k.p + (t - k.t0) * k.panel_stride, *dst = k.ds + (t - k.t0) * k.panel_stride;
    const float *q = k.q + t * k.q_stride + i, *dout = k.dout + t * k.q_stride + i;
    for (int64_t g = 0; g < k.G; ++g) {
      const __m512 wk0 = _mm512_set1_ps(k.scale * dst[g * k.T]), wk1 = _mm512_set1_ps(k.scale * dst[g * k.T + 1]);
      const __m512 wv0 = _mm512_set1_ps(pt[g * k.T]), wv1 = _mm512_set1_ps(pt[g * k.T + 1]);
      for (int s = 0; s < S; ++s) {
        const __m512 qv = _mm512_loadu_ps(q + g * k.hd + 16 * s), ov = _mm512_loadu_ps(dout + g * k.hd + 16 * s);
        ak0[s] = _mm512_fmadd_ps(wk0, qv, ak0[s]);
        ak1[s] = _mm512_fmadd_ps(wk1, qv, ak1[s]);
        av0[s] = _mm512_fmadd_ps(wv0, ov, av0[s]);
        av1[s] = _mm512_fmadd_ps(wv1, ov, av1[s]);
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    _mm512_storeu_ps(dk0 + i + 16 * s, ak0[s]);
    _mm512_storeu_ps(dv0 + i + 16 * s, av0[s]);
    _mm512_storeu_ps(dk1 + i + 16 * s, ak1[s]);
    _mm512_storeu_ps(dv1 + i + 16 * s, av1[s]);
  }
}

// Keys j and j + 1 of a panel [t0, t_end): key j's term at t = j alone (when the panel holds
// it), then both keys over the positions they share. Needs hd a multiple of 16.
void accumulate_key_pair(const KeyTerms& k, int64_t j, int64_t t_end, float* dk0, float* dv0, float* dk1, float* dv1) {
  const int64_t both = std::max(j + 1, k.t0);
  if (std::max(j, k.t0) < both)
    for (int64_t i = 0; i < k.hd; i += 16) accumulate_key<2>(k, j, both, i, dk0, dv0);
  int64_t i = 0;
  for (; i + 64 <= k.hd; i += 64) accumulate_key_pair_avx512<4>(k, both, t_end, i, dk0, dv0, dk1, dv1);
  switch ((k.hd - i) / 16) {
    case 3: accumulate_key_pair_avx512<3>(k, both, t_end, i, dk0, dv0, dk1, dv1); break;
    case 2: accumulate_key_pair_avx512<2>(k, both, t_end, i, dk0, dv0, dk1, dv1); break;
    case 1: accumulate_key_pair_avx512<1>(k, both, t_end, i, dk0, dv0, dk1, dv1); break;
    default: break;
  }
}
#endif
}  // namespace
#endif

void attention_backward_cpu(const AttentionBackwardArgs& a) {
  check_lengths(a.lengths, a.batch, a.seq, "the sequence length");
  const int64_t B = a.batch, T = a.seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim;
  const int64_t G = Hq / Hkv, kv_stride = Hkv * hd, q_stride = Hq * hd;
  const int64_t panel = std::min(std::max<int64_t>(T, 1), std::max<int64_t>(1, kPanelFloats / std::max<int64_t>(G * T, 1)));
#if LGRPO_X86_DISPATCH
  const bool pairs_avx512 = simd_avx512() && hd % 16 == 0;
#endif
  parallel_for(Hkv * B, 1, [&](int64_t i0, int64_t i1) {
    // [position in panel][g][key j], stride T between heads.
    const size_t scratch = static_cast<size_t>(panel * G * std::max<int64_t>(T, 1));
    std::vector<float> p(scratch), ds(scratch);
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t b = item % B, kvh = item / B, len = a.lengths[b];
      const float* kb = a.k + (b * T * Hkv + kvh) * hd;
      const float* vb = a.v + (b * T * Hkv + kvh) * hd;
      float* dkb = a.dk + (b * T * Hkv + kvh) * hd;
      float* dvb = a.dv + (b * T * Hkv + kvh) * hd;
      const int64_t first = (b * T * Hq + kvh * G) * hd;  // position 0's group of G heads
      for (int64_t t = 0; t < T; ++t) {
        std::fill(dkb + t * kv_stride, dkb + t * kv_stride + hd, 0.0f);
        std::fill(dvb + t * kv_stride, dvb + t * kv_stride + hd, 0.0f);
      }
      for (int64_t t0 = 0; t0 < T; t0 += panel) {
        const int64_t t1 = std::min(T, t0 + panel);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t off = first + t * q_stride, n = t + 1;
          float* dq = a.dq + off;
          std::fill(dq, dq + G * hd, 0.0f);
          if (t >= len) continue;
          const float *q = a.q + off, *o = a.out + off, *dout = a.dout + off;
          const float* lse = a.lse + (b * Hq + kvh * G) * T + t;
          float* pt = p.data() + (t - t0) * G * T;
          float* dst = ds.data() + (t - t0) * G * T;
          const int64_t block = key_block(G, n);
          for (int64_t j = 0; j < n; j += block) {
            const int64_t m = std::min(block, n - j);
            dots_rows(q, G, kb + j * kv_stride, kv_stride, m, hd, a.scale, pt + j, T);
            dots_rows(dout, G, vb + j * kv_stride, kv_stride, m, hd, 1.0f, dst + j, T);
          }
          for (int64_t g = 0; g < G; ++g) {
            float *pg = pt + g * T, *dsg = dst + g * T;
            exp_shifted(pg, n, lse[g * T]);
            const float d_o = dot(dout + g * hd, o + g * hd, hd);
            for (int64_t j = 0; j < n; ++j) dsg[j] = pg[j] * (dsg[j] - d_o);
          }
          for (int64_t j0 = 0; j0 < n; j0 += block) {
            const int64_t m = std::min(block, n - j0);
            accumulate_rows_group(dq, G, dst + j0, T, kb + j0 * kv_stride, kv_stride, m, hd);
          }
          for (int64_t i = 0; i < G * hd; ++i) dq[i] *= a.scale;
        }
        // dk_j += scale·ds_j·q and dv_j += p_j·dO over the panel's positions t ≥ j.
        const int64_t t_end = std::min(t1, len);
        for (int64_t j = 0; j < t_end; ++j) {
          const int64_t t_begin = std::max(j, t0);
          float* dk = dkb + j * kv_stride;
          float* dv = dvb + j * kv_stride;
          int64_t i = 0;
#if LGRPO_X86_DISPATCH
          // Two keys at a time in zmm where the head splits into 16-float slices.
          if (pairs_avx512 && j + 1 < t_end) {
            const KeyTerms terms{p.data() + j, ds.data() + j, a.q + first, a.dout + first, G * T, q_stride, t0, T, G, hd, a.scale};
            accumulate_key_pair(terms, j, t_end, dk, dv, dk + kv_stride, dv + kv_stride);
            ++j;  // key j + 1 is done too
            continue;
          }
#endif
#if LGRPO_AVX2
          // Up to four 8-float slices of the head at once: eight FMA chains in flight (one
          // slice at a time, two chains, waited on the FMA latency), each element's chain
          // over (t, g) in the same order.
          const KeyTerms terms{p.data() + j, ds.data() + j, a.q + first, a.dout + first, G * T, q_stride, t0, T, G, hd, a.scale};
          for (; i + 32 <= hd; i += 32) accumulate_key<4>(terms, t_begin, t_end, i, dk, dv);
          if (i + 24 <= hd) accumulate_key<3>(terms, t_begin, t_end, i, dk, dv), i += 24;
          else if (i + 16 <= hd) accumulate_key<2>(terms, t_begin, t_end, i, dk, dv), i += 16;
          else if (i + 8 <= hd) accumulate_key<1>(terms, t_begin, t_end, i, dk, dv), i += 8;
#endif
          for (; i < hd; ++i) {
            float ak = dk[i], av = dv[i];
            for (int64_t t = t_begin; t < t_end; ++t) {
              const float *pt = p.data() + (t - t0) * G * T + j, *dst = ds.data() + (t - t0) * G * T + j;
              const float *q = a.q + first + t * q_stride + i, *dout = a.dout + first + t * q_stride + i;
              for (int64_t g = 0; g < G; ++g) {
                ak = std::fma(a.scale * dst[g * T], q[g * hd], ak);
                av = std::fma(pt[g * T], dout[g * hd], av);
              }
            }
            dk[i] = ak;
            dv[i] = av;
          }
        }
      }
    }
  });
}

int64_t attention_decode_cpu(const AttentionDecodeArgs& a) {
  check_lengths(a.lengths, a.batch, a.max_seq, "the cache size");
  const int64_t B = a.batch, T = a.max_seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim;
  const int64_t G = Hq / Hkv, kv_stride = Hkv * hd;
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(Hkv * B, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(G * std::max<int64_t>(T, 1))), lse(static_cast<size_t>(G));
    int64_t mine = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t b = item % B, kvh = item / B;
      const int64_t off = (b * Hq + kvh * G) * hd;
      attend_rows(a.q + off, G, a.k_cache + (b * T * Hkv + kvh) * hd, a.v_cache + (b * T * Hkv + kvh) * hd, kv_stride,
                  a.lengths[b], hd, a.scale, scores.data(), a.out + off, lse.data(), 1);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t row = b * Hq + kvh * G + g;
        if (!(std::isfinite(lse[g]) && all_finite(a.out + off + g * hd, hd)) && (mine < 0 || row < mine)) mine = row;
      }
    }
    keep_first(bad_mutex, first_bad, mine);
  });
  return first_bad;
}

}  // namespace lgrpo
