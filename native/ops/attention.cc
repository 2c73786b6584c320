// CPU twin of attention: forward, backward and decode together.
//
// Query rows go in tiles, one row per SIMD lane (attention_tiles.h): up to L rows of one
// (row b, kv head), taken position by position with the group's heads side by side, so a
// tile of the forward holds a few positions × G heads and the decode's tile one position's
// G heads. Keys stream through one at a time, each element a broadcast, and every score,
// exp, sum and weighted sum is a per-lane FMA chain: no horizontal sums, no shuffles, and
// the key/value rows are read once per tile instead of once per query row.
//
// Determinism and decode == forward rest on that lane-wise arithmetic: a row's result
// depends only on its own query, its keys and the fixed order of each chain (elements in
// order for a score, keys in order for the sum and the weighted sums), never on the lane,
// the tile, the lane count (the AVX-512 path's 16 lanes and the AVX2 path's 8 compute the
// same bits: exp_avx512 is exp_avx2 lane for lane), the thread count or the path (prefill
// or decode). Causal masking sets the scores a lane must not see to −∞, whose exp is
// exactly 0, and leaves its sums untouched.
//
//   forward   work items (kv head, row b, pair of tiles); pairs match an early tile with a
//             late one so items cost the same under the causal mask.
//   backward  work items (row b, kv head): an item owns its dk and dv outright (no float
//             atomics), summed over its tiles' rows in position-then-head order.
//   decode    work items (row b, kv head), the forward's tile kernel on the cache; with one
//             or two query heads per kv head, decode_one_row (the same bits, lanes filled).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <type_traits>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace attention_lanes {

// One float per lane: the portable build's path.
struct ScalarLanes {
  static constexpr int L = 1;
  static constexpr int kChains = 8;  // independent FMA chains a kernel keeps in flight
  using V = float;
  static V zero() { return 0.0f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V max(V a, V b) { return b > a ? b : a; }
  static V exp(V x) { return std::exp(x); }
  static bool less(V a, V b) { return a < b; }
  static V select(bool m, V a, V b) { return m ? a : b; }
};

#if LGRPO_AVX2
struct Avx2Lanes {
  static constexpr int L = 8;
  static constexpr int kChains = 8;  // of 16 ymm registers
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V exp(V x) { return exp_avx2(x); }
  static V less(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static V select(V m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
};
#endif

#include "attention_tiles.h"

}  // namespace attention_lanes

#if LGRPO_X86_DISPATCH
// The same kernels compiled for AVX-512: 16 lanes, the same operations per lane.
LGRPO_BEGIN_AVX512_REGION
namespace attention_lanes_avx512 {

struct Avx512Lanes {
  static constexpr int L = 16;
  static constexpr int kChains = 16;  // of 32 zmm registers: twice the FMA latency × units
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V exp(V x) { return exp_avx512(x); }
  static __mmask16 less(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static V select(__mmask16 m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
};

#include "attention_tiles.h"

}  // namespace attention_lanes_avx512
LGRPO_END_AVX512_REGION
#endif

namespace {

#if LGRPO_AVX2
using BaseLanes = attention_lanes::Avx2Lanes;
#else
using BaseLanes = attention_lanes::ScalarLanes;
#endif

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

bool use_avx512() {
#if LGRPO_X86_DISPATCH
  return simd_avx512();
#else
  return false;
#endif
}

#if LGRPO_X86_DISPATCH
using WideLanes = attention_lanes_avx512::Avx512Lanes;
#endif

// Lanes per forward or backward tile on this process's path.
int64_t tile_lanes() {
#if LGRPO_X86_DISPATCH
  if (use_avx512()) return WideLanes::L;
#endif
  return BaseLanes::L;
}

// A thread's scratch for one call (TileScratch; uninitialised: a zeroed vector cost a memset
// of the backward's buffers on every decoding step's every layer).
std::unique_ptr<float[]> tile_scratch(int64_t T, int64_t hd, bool backward) {
  int64_t floats = attention_lanes::TileScratch<BaseLanes>::floats(T, hd, backward);
#if LGRPO_X86_DISPATCH
  if (use_avx512()) floats = attention_lanes_avx512::TileScratch<WideLanes>::floats(T, hd, backward);
#endif
  return std::unique_ptr<float[]>(new float[static_cast<size_t>(floats)]);
}

#if LGRPO_AVX2
// The decode of one query row q against keys/values 0..n-1 (row stride `stride`), for groups
// of one or two heads per kv head, where a tile would leave six or seven of its eight lanes
// empty. Keys go in lanes for the scores (8 keys at a time, their rows transposed 8×8) and
// head elements in lanes for the weighted sum, but every value is the tile kernel's per-lane
// chain (attention_tiles.h, top): each score one FMA per element in order from 0, then
// · scale; the same exp; the sum in key order; each output element one FMA per key in order,
// then · (1/sum); so the bits are attend_tile's. s: scratch of n + 8 floats. Returns whether
// every score and output is finite (the tile kernel's lse test).
bool decode_one_row(const float* q, const float* k, const float* v, int64_t stride, int64_t n, int64_t hd, float scale,
                    float* s, float* out) {
  alignas(32) float kt[64];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 acc = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= hd; d += 8) {
      transpose8x8(k + j * stride + d, stride, kt, 8);  // kt[e·8 + key] = k_{j+key}[d + e]
      for (int e = 0; e < 8; ++e) acc = _mm256_fmadd_ps(_mm256_set1_ps(q[d + e]), _mm256_load_ps(kt + 8 * e), acc);
    }
    for (; d < hd; ++d) {
      for (int key = 0; key < 8; ++key) kt[key] = k[(j + key) * stride + d];
      acc = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), _mm256_load_ps(kt), acc);
    }
    _mm256_storeu_ps(s + j, _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
  }
  for (; j < n; ++j) {
    float acc = 0.0f;
    for (int64_t d = 0; d < hd; ++d) acc = std::fma(q[d], k[j * stride + d], acc);
    s[j] = acc * scale;
  }
  float mx = -INFINITY, probe = 0.0f;
  for (j = 0; j < n; ++j) {
    probe += s[j] - s[j];
    mx = std::max(mx, s[j]);
  }
  for (j = n; j < (n + 7) / 8 * 8; ++j) s[j] = -INFINITY;  // exp gives 0 past the keys
  const __m256 m = _mm256_set1_ps(mx);
  for (j = 0; j < n; j += 8) _mm256_storeu_ps(s + j, exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), m)));
  float sum = 0.0f;
  for (j = 0; j < n; ++j) sum += s[j];
  const float inv = 1.0f / sum;
  int64_t d = 0;
  for (; d + 32 <= hd; d += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (j = 0; j < n; ++j) {
      const __m256 w = _mm256_set1_ps(s[j]);
      const float* x = v + j * stride + d;
      a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x), a0);
      a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 16), a2);
      a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 24), a3);
    }
    const __m256 iv = _mm256_set1_ps(inv);
    _mm256_storeu_ps(out + d, _mm256_mul_ps(a0, iv));
    _mm256_storeu_ps(out + d + 8, _mm256_mul_ps(a1, iv));
    _mm256_storeu_ps(out + d + 16, _mm256_mul_ps(a2, iv));
    _mm256_storeu_ps(out + d + 24, _mm256_mul_ps(a3, iv));
  }
  for (; d + 8 <= hd; d += 8) {
    __m256 a = _mm256_setzero_ps();
    for (j = 0; j < n; ++j) a = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(v + j * stride + d), a);
    _mm256_storeu_ps(out + d, _mm256_mul_ps(a, _mm256_set1_ps(inv)));
  }
  for (; d < hd; ++d) {
    float a = 0.0f;
    for (j = 0; j < n; ++j) a = std::fma(s[j], v[j * stride + d], a);
    out[d] = a * inv;
  }
  bool finite = probe == 0.0f && std::isfinite(mx + std::log(sum));
  for (d = 0; d < hd; ++d) finite = finite && std::isfinite(out[d]);
  return finite;
}
#endif

}  // namespace

int64_t attention_forward_cpu(const AttentionForwardArgs& a) {
  check_lengths(a.lengths, a.batch, a.seq, "the sequence length");
  const int64_t B = a.batch, T = a.seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim;
  const int64_t G = Hq / Hkv, L = tile_lanes();
  const int64_t max_tiles = (T * G + L - 1) / L, pairs = std::max<int64_t>((max_tiles + 1) / 2, 1);
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(Hkv * B * pairs, 1, [&](int64_t i0, int64_t i1) {
    const std::unique_ptr<float[]> scratch = tile_scratch(T, hd, false);
    int64_t mine = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t pair = item % pairs, b = (item / pairs) % B, kvh = item / pairs / B, len = a.lengths[b];
      if (pair == 0)  // rows past the length: 0, with lse 0
        for (int64_t t = len; t < T; ++t) {
          float* out = a.out + ((b * T + t) * Hq + kvh * G) * hd;
          std::fill(out, out + G * hd, 0.0f);
          for (int64_t g = 0; g < G; ++g) a.lse[(b * Hq + kvh * G + g) * T + t] = 0.0f;
        }
      const int64_t tiles_b = (len * G + L - 1) / L;
      if (pair >= (tiles_b + 1) / 2) continue;
      const int64_t tiles[2] = {pair, tiles_b - 1 - pair};
      const int count = tiles[1] == tiles[0] ? 1 : 2;
      int64_t bad;
#if LGRPO_X86_DISPATCH
      if (use_avx512())
        bad = attention_lanes_avx512::forward_tiles<WideLanes>(a, b, kvh, tiles, count,
                                                                                           scratch.get());
      else
#endif
        bad = attention_lanes::forward_tiles<BaseLanes>(a, b, kvh, tiles, count, scratch.get());
      if (bad >= 0 && (mine < 0 || bad < mine)) mine = bad;
    }
    keep_first(bad_mutex, first_bad, mine);
  });
  return first_bad;
}

// With p = softmax(s), s = scale·q·k, o = Σ p_j v_j and upstream dO:
//   dv_j += p_j·dO,  dp_j = dO·v_j,  ds_j = p_j·(dp_j − dO·o),
//   dq = scale·Σ_j ds_j k_j,  dk_j += scale·ds_j·q.
void attention_backward_cpu(const AttentionBackwardArgs& a) {
  check_lengths(a.lengths, a.batch, a.seq, "the sequence length");
  const int64_t B = a.batch, T = a.seq, Hkv = a.kv_heads, hd = a.head_dim;
  parallel_for(Hkv * B, 1, [&](int64_t i0, int64_t i1) {
    const std::unique_ptr<float[]> scratch = tile_scratch(T, hd, true);
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t b = item % B, kvh = item / B;
#if LGRPO_X86_DISPATCH
      if (use_avx512()) {
        attention_lanes_avx512::backward_item<WideLanes>(a, b, kvh, scratch.get());
        continue;
      }
#endif
      attention_lanes::backward_item<BaseLanes>(a, b, kvh, scratch.get());
    }
  });
}

int64_t attention_decode_cpu(const AttentionDecodeArgs& a) {
  check_lengths(a.lengths, a.batch, a.max_seq, "the cache size");
  const int64_t B = a.batch, T = a.max_seq, Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim;
  const int64_t G = Hq / Hkv;
  // Groups of up to eight heads take eight lanes on the AVX-512 path too (the same bits:
  // see the top), not half-empty tiles of 16; groups of one or two, decode_one_row.
  const bool wide = use_avx512() && G > BaseLanes::L;
  const int64_t L = wide ? tile_lanes() : BaseLanes::L;
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(Hkv * B, 1, [&](int64_t i0, int64_t i1) {
    const std::unique_ptr<float[]> scratch = tile_scratch(T, hd, false);
    int64_t mine = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t b = item % B, kvh = item / B;
#if LGRPO_AVX2
      if (G <= 2) {
        const int64_t len = a.lengths[b];
        for (int64_t g = 0; g < G; ++g) {
          const int64_t row = b * Hq + kvh * G + g;
          float* out = a.out + row * hd;
          if (len == 0) {
            std::fill(out, out + hd, 0.0f);
            continue;
          }
          const bool finite = decode_one_row(a.q + row * hd, a.k_cache + (b * T * Hkv + kvh) * hd,
                                             a.v_cache + (b * T * Hkv + kvh) * hd, Hkv * hd, len, hd, a.scale, scratch.get(), out);
          if (!finite && (mine < 0 || row < mine)) mine = row;
        }
        continue;
      }
#endif
      for (int64_t g0 = 0; g0 < G; g0 += L) {
        int64_t bad;
#if LGRPO_X86_DISPATCH
        if (wide)
          bad = attention_lanes_avx512::decode_tile<WideLanes>(a, b, kvh, g0, scratch.get());
        else
#endif
          bad = attention_lanes::decode_tile<BaseLanes>(a, b, kvh, g0, scratch.get());
        if (bad >= 0 && (mine < 0 || bad < mine)) mine = bad;
      }
    }
    keep_first(bad_mutex, first_bad, mine);
  });
  return first_bad;
}

}  // namespace lgrpo
