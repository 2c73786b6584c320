// CPU twin of linearTokenLogprobs (spec §1, fused-linear form). The logits
// x[n, v] = (h_n · w_v) / τ are produced one tile at a time by a small GEMM and folded
// into per-row running statistics at once, so no rows × vocab matrix ever exists.
//
// Shapes of the work (names used throughout):
//   chunk  RC rows of hidden, held as Hᵀ packed in 16-row panels (the GEMM's B side)
//   tile   VC vocabulary rows × the chunk's rows: ct[v * ldc + n] = w_v · h_n
//   stats  per row: m (running max), s = Σ e^(x−m), u = Σ e^(x−m)(x−m).
//          u is kept relative to m so that Σ p x = m + u/s and H = log s − u/s never
//          subtract two large numbers.
//
// GEMM: a 6 × 16 register-blocked AVX2/FMA micro-kernel (12 accumulators, two loads of
// B and six broadcasts of A per step of k), BLIS-style: a KC-deep B micro-panel stays
// in L1 while the micro-kernel walks down the vocabulary tile, whose KC-wide slab
// stays in L2. The A side (weight rows) is read in place when it is f32 and converted
// per tile when it is bf16/f16; only the chunk of hidden is packed.
//
// Forward parallelism: work items are (row chunk, vocabulary shard) pairs. The number
// of shards depends only on V, each item folds its shard's tiles in order, and shards
// are merged in order, so the result is the same bits for any thread count.
//
// Backward: each thread owns a contiguous range of vocabulary tiles. It recomputes the
// logit tile, turns it into dlogits in place, and accumulates
//   gradWeight[tile] += dlogits · H_chunk        (rows disjoint between threads)
//   gradHidden_t[chunk] += dlogitsᵀ · W_tile     (one partial per thread)
// and the partials are summed in thread order afterwards. Same bits run after run
// for a given thread count.
//
// Non-finite hidden/weight elements are caught as the operands are converted or
// packed (Σ (x − x) is 0 for finite x and NaN otherwise), then located and reported
// after the pass.
#include "linear_token_logprobs.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../parallel.h"
#include "gemm.h"
#include "../simd.h"

namespace lgrpo {
namespace {

constexpr int MR = 6;          // micro-tile rows (vocabulary, or hidden rows in dH)
constexpr int NR = 16;         // micro-tile columns: two AVX2 vectors
constexpr int64_t KC = 256;    // depth of one micro-kernel pass: a B micro-panel is 16 KB
constexpr int64_t VC = 192;    // vocabulary rows per tile (multiple of MR, and of NR: whole weight panels)
static_assert(VC % MR == 0 && VC % NR == 0, "a tile is whole micro-tiles and whole weight panels");
constexpr int64_t RC = 256;    // hidden rows per chunk (multiple of NR)
constexpr int64_t kMaxShards = 16;

constexpr int kBadHidden = 1, kBadWeight = 2;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Where the tile of row chunk n0 (ldc padded rows) and vocabulary rows from v0 lies in
// saved_logits: each chunk holds its V vocabulary rows of ldc, the tiles in order.
int64_t saved_tile_offset(int64_t V, int64_t n0, int64_t v0, int64_t ldc) { return n0 * V + v0 * ldc; }

// 64-byte aligned f32 scratch, freed on scope exit (exceptions included).
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : p_(static_cast<float*>(::operator new(static_cast<size_t>(std::max<int64_t>(n, 16)) * sizeof(float),
                                              std::align_val_t{64}))) {}
  ~Scratch() { ::operator delete(p_, std::align_val_t{64}); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* get() const { return p_; }

 private:
  float* p_;
};

// ---------------------------------------------------------------------------------
// Micro-kernel: C[6×16] (+)= Σ_k A(i, k) · B(k, 0..15), B(k, j) = b[k·ldb + j].
// A comes either as six row pointers with k contiguous (RowsA) or packed with the six
// values of each k together (PackedA).

struct RowsA {
  const float* r[MR];
  float at(int i, int64_t k) const { return r[i][k]; }
};

struct PackedA {
  const float* p;
  float at(int i, int64_t k) const { return p[k * MR + i]; }
};

#if LGRPO_AVX2
template <class A>
inline void micro_kernel(int64_t kc, const A& a, const float* b, int64_t ldb, float* c, int64_t ldc,
                         bool accumulate) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (accumulate) {
    c00 = _mm256_loadu_ps(c + 0 * ldc); c01 = _mm256_loadu_ps(c + 0 * ldc + 8);
    c10 = _mm256_loadu_ps(c + 1 * ldc); c11 = _mm256_loadu_ps(c + 1 * ldc + 8);
    c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
    c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
    c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
    __m256 x = _mm256_set1_ps(a.at(0, k));
    c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_set1_ps(a.at(1, k));
    c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_set1_ps(a.at(2, k));
    c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_set1_ps(a.at(3, k));
    c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_set1_ps(a.at(4, k));
    c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_set1_ps(a.at(5, k));
    c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
  }
  _mm256_storeu_ps(c + 0 * ldc, c00); _mm256_storeu_ps(c + 0 * ldc + 8, c01);
  _mm256_storeu_ps(c + 1 * ldc, c10); _mm256_storeu_ps(c + 1 * ldc + 8, c11);
  _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
  _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}
#else
template <class A>
inline void micro_kernel(int64_t kc, const A& a, const float* b, int64_t ldb, float* c, int64_t ldc,
                         bool accumulate) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = accumulate ? c[i * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i) {
      const float x = a.at(i, k);
      for (int j = 0; j < NR; ++j) acc[i][j] += x * b[k * ldb + j];
    }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
}
#endif

#if LGRPO_X86_DISPATCH
// Two micro-tiles at once on the AVX-512 path: C rows 0..5 from a0, rows 6..11 from a1, 16
// columns in one zmm each, 12 accumulators. Each element is the same FMA chain over k as
// micro_kernel's (loaded from C when accumulating), so the same bits at twice the width.
template <class A>
LGRPO_TARGET_AVX512 __attribute__((noinline)) void micro_kernel_pair_avx512(int64_t kc, const A& a0, const A& a1,
                                                                            const float* b, int64_t ldb, float* c,
                                                                            int64_t ldc, bool accumulate) {
  __m512 acc[2 * MR];
  for (int i = 0; i < 2 * MR; ++i) acc[i] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 bk = _mm512_loadu_ps(b + k * ldb);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a0.at(i, k)), bk, acc[i]);
      acc[MR + i] = _mm512_fmadd_ps(_mm512_set1_ps(a1.at(i, k)), bk, acc[MR + i]);
    }
  }
  for (int i = 0; i < 2 * MR; ++i) _mm512_storeu_ps(c + i * ldc, acc[i]);
}
#endif

// Whether micro-tiles ir and ir + MR, both whole (their rows < rows_end, NR columns), can go
// through micro_kernel_pair_avx512.
inline bool pair_of_tiles(int64_t ir, int64_t rows_end, int64_t nc) {
#if LGRPO_X86_DISPATCH
  return nc == NR && ir + 2 * MR <= rows_end && simd_avx512();
#else
  (void)ir, (void)rows_end, (void)nc;
  return false;
#endif
}

template <class A>
inline void micro_kernel_pair(int64_t kc, const A& a0, const A& a1, const float* b, int64_t ldb, float* c,
                              int64_t ldc, bool accumulate) {
#if LGRPO_X86_DISPATCH
  micro_kernel_pair_avx512(kc, a0, a1, b, ldb, c, ldc, accumulate);
#else
  (void)kc, (void)a0, (void)a1, (void)b, (void)ldb, (void)c, (void)ldc, (void)accumulate;
#endif
}

// A micro-tile whose C block may be cut short (mr < 6 rows or nc < 16 columns): the
// kernel then writes a local tile and only the valid part reaches C. The A rows and B
// columns beyond the cut must still be readable (callers clamp or pad them).
template <class A>
inline void edge_tile(int64_t kc, const A& a, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t mr,
                      int64_t nc, bool accumulate) {
  if (mr == MR && nc == NR) {
    micro_kernel(kc, a, b, ldb, c, ldc, accumulate);
    return;
  }
  alignas(32) float t[MR * NR];
  micro_kernel(kc, a, b, ldb, t, NR, false);
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nc; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + t[i * NR + j] : t[i * NR + j];
}

// ---------------------------------------------------------------------------------
// Conversions. Each returns Σ (x − x) over what it read: 0 when every element is finite.

template <DType T>
inline float element(const void* src, int64_t i) {
  if constexpr (T == DType::F32) return static_cast<const float*>(src)[i];
  else if constexpr (T == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
}

// dst[0..n) = src[offset .. offset + n) as f32.
template <DType T>
float convert_span(const void* src, int64_t offset, int64_t n, float* dst) {
  int64_t i = 0;
  float poison = 0.0f;
#if LGRPO_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 x;
    if constexpr (T == DType::F32) x = _mm256_loadu_ps(static_cast<const float*>(src) + offset + i);
    else if constexpr (T == DType::BF16) x = load8_bf16(static_cast<const uint16_t*>(src) + offset + i);
    else x = load8_f16(static_cast<const uint16_t*>(src) + offset + i);
    _mm256_storeu_ps(dst + i, x);
    acc = _mm256_add_ps(acc, _mm256_sub_ps(x, x));
  }
  poison = hsum_avx2(acc);
#endif
  for (; i < n; ++i) {
    const float x = element<T>(src, offset + i);
    dst[i] = x;
    poison += x - x;
  }
  return poison;
}

// Scans without copying (f32 weight, which the forward reads in place).
float poison_f32(const float* p, int64_t n) {
  int64_t i = 0;
  float poison = 0.0f;
#if LGRPO_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 x = _mm256_loadu_ps(p + i), y = _mm256_loadu_ps(p + i + 8);
    acc0 = _mm256_add_ps(acc0, _mm256_sub_ps(x, x));
    acc1 = _mm256_add_ps(acc1, _mm256_sub_ps(y, y));
  }
  poison = hsum_avx2(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) poison += p[i] - p[i];
  return poison;
}

// Packs hidden rows [n0, n0 + nr) as Hᵀ in 16-row panels (unless hpack is null): hpack[(p·d
// + k)·16 + r] = h[n0 + 16p + r][k], zero for rows past nr. With hnat, also writes the rows in natural
// layout with stride dpad (columns d..dpad zero), the B operand of dW += dlogits · H.
template <DType T>
float pack_hidden(const void* hidden, int64_t d, int64_t n0, int64_t nr, float* hpack, float* row,
                  float* hnat, int64_t dpad) {
  const int64_t panels = ceil_div(nr, NR);
  float poison = 0.0f;
  for (int64_t p = 0; p < panels; ++p) {
    float* panel = hpack ? hpack + p * NR * d : nullptr;
    for (int r = 0; r < NR; ++r) {
      const int64_t n = p * NR + r;
      if (n < nr) {
        poison += convert_span<T>(hidden, (n0 + n) * d, d, row);
        if (hpack)
          for (int64_t k = 0; k < d; ++k) panel[k * NR + r] = row[k];
        if (hnat) {
          std::copy(row, row + d, hnat + n * dpad);
          std::fill(hnat + n * dpad + d, hnat + (n + 1) * dpad, 0.0f);
        }
      } else if (hpack) {
        for (int64_t k = 0; k < d; ++k) panel[k * NR + r] = 0.0f;
      }
    }
  }
  return poison;
}

// ct[v·ldc + n] = w_v · h_n for the tile's nv vocabulary rows (w_v = w + v·ws) and
// `panels` 16-row panels of packed hidden. Rows of ct past nv (up to a multiple of 6)
// hold copies of row nv − 1: the micro-kernel always computes six.
// With `rows` <= 16 valid hidden rows in one panel (decoding's LM head) the weight rows are
// read in place with the hidden rows in vector lanes (few_rows_dots): half or less of the
// 6×16 tile's FMAs, the same chain per element, so the same bits.
void logits_tile(const float* w, int64_t ws, int64_t nv, const float* hpack, int64_t panels, int64_t d, float* ct,
                 int64_t ldc, int64_t rows = NR + 1) {
#if LGRPO_AVX2
  if (panels == 1 && rows <= NR) {
    const int rv = rows > 8 ? 2 : 1, J = few_rows_j(rv);
    alignas(32) float out[kFewRowsJ1 * 16];
    const float* wr[kFewRowsJ1];
    for (int64_t v0 = 0; v0 < nv; v0 += J) {
      for (int j = 0; j < J; ++j) wr[j] = w + std::min<int64_t>(v0 + j, nv - 1) * ws;
      few_rows_dots(rv, wr, hpack, NR, d, out);
      for (int j = 0; j < J && v0 + j < nv; ++j) {
        float* dst = ct + (v0 + j) * ldc;
        std::memcpy(dst, out + j * 8 * rv, sizeof(float) * 8 * rv);
        if (rv == 1) std::memset(dst + 8, 0, sizeof(float) * 8);  // padding rows of the panel: 0, as the tile gives
      }
    }
    return;
  }
#endif
  const int64_t depth = std::max<int64_t>(d, 1);  // d = 0 still runs once, writing zeros
  const int64_t tile_rows = round_up(nv, MR);  // ct's rows: past nv, copies of row nv − 1
  for (int64_t pc = 0; pc < depth; pc += KC) {
    const int64_t kc = std::min(KC, d - pc);
    for (int64_t jr = 0; jr < panels; ++jr) {
      const float* b = hpack + jr * NR * d + pc * NR;
      for (int64_t ir = 0; ir < nv; ir += MR) {
        RowsA a;
        for (int i = 0; i < MR; ++i) a.r[i] = w + std::min<int64_t>(ir + i, nv - 1) * ws + pc;
        if (pair_of_tiles(ir, tile_rows, NR)) {
          RowsA a1;
          for (int i = 0; i < MR; ++i) a1.r[i] = w + std::min<int64_t>(ir + MR + i, nv - 1) * ws + pc;
          micro_kernel_pair(kc, a, a1, b, NR, ct + ir * ldc + jr * NR, ldc, pc > 0);
          ir += MR;
          continue;
        }
        micro_kernel(kc, a, b, NR, ct + ir * ldc + jr * NR, ldc, pc > 0);
      }
    }
  }
}

#if LGRPO_AVX2
// logits_tile over weight panels (the tile's nv vocabulary rows from wpan, 16 per panel,
// panel stride 16·d): the chains of gemm.h's panel_dots — per element one FMA chain over
// all of d in increasing order from 0, as logits_tile's — for `rows` hidden rows of hpack,
// 8 at a time; columns of ct from rows up to the padded width are zero, as the tile gives.
void logits_panels(const float* wpan, int64_t nv, const float* hpack, int64_t panels, int64_t rows, int64_t d,
                   float* ct, int64_t ldc) {
  const int64_t vpanels = ceil_div(nv, NR), groups = ceil_div(rows, 8);
  alignas(64) float out[8 * kPanelAccStride];
  // kPanelStreams panels at a time, one from each part of the tile (gemm.h, for_panel_steps).
  for_panel_steps(vpanels, [&](int64_t i, int count, int64_t part) {
    for (int64_t g = 0; g < groups; ++g) {
      panel_dots(count, hpack + (g / 2) * NR * d + (g % 2) * 8, NR, wpan + i * NR * d, part * NR * d, d, out);
      for (int q = 0; q < count; ++q) {
        const int64_t vp = i + q * part, v_end = std::min<int64_t>(nv, (vp + 1) * NR);
        for (int64_t v = vp * NR; v < v_end; ++v) {
          const int64_t j = q * NR + v - vp * NR;  // q·16 + lane
          float* dst = ct + v * ldc + g * 8;
          for (int r = 0; r < 8; ++r) dst[r] = out[r * kPanelAccStride + j];
        }
      }
    }
  });
  for (int64_t v = 0; v < nv; ++v)
    std::fill(ct + v * ldc + groups * 8, ct + v * ldc + panels * NR, 0.0f);
}
#endif

// ---------------------------------------------------------------------------------
// Forward.

// Copies a logit tile (n floats) from the cache-resident scratch tile to saved_logits with
// stores that bypass the cache, which the backward reads only much later. (The GEMM writing
// its tile straight into saved_logits, padded for its whole 6-row micro-tiles, was no faster:
// alternating, 84.1 ms against 83.1 for the small config's LM head forward + backward.) dst
// is 64-byte aligned and n a multiple of 16 (tiles of 16-row panels in an aligned buffer).
void save_tile(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
#if LGRPO_AVX2
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#endif
  std::copy(src + i, src + n, dst + i);
}

// Running statistics of one chunk's rows over one shard (width = padded chunk rows).
struct ChunkStats {
  float *m, *s, *u;      // running
  float *tm, *ts, *tu;   // this tile
};

// Divides a tile by τ in place, in its own pass: every later use then reads the same
// rounded x (a fused multiply-subtract would otherwise see the unrounded product, and
// V = 1 would not give logp = 0 exactly).
void scale_tile(float* ct, int64_t ldc, int64_t nv, int64_t width, float inv_tau) {
  if (inv_tau == 1.0f) return;
  for (int64_t v = 0; v < nv; ++v)
    for (int64_t n = 0; n < width; ++n) ct[v * ldc + n] *= inv_tau;
}

// Folds one scaled logit tile (nv vocabulary rows × width hidden rows) into the
// running statistics. Columns past the chunk's rows hold zeros and are folded
// harmlessly; the caller ignores them.
#if LGRPO_AVX2
// fold_tile's vector part over columns [0, width) (a multiple of 8): the tile's max per
// column (and the running one's), its sums relative to that, Σ e^z·z with entropy.
template <bool kEntropy>
void fold_columns_avx2(const float* ct, int64_t ldc, int64_t nv, int64_t width, const ChunkStats& st, bool first) {
  int64_t n;
  for (n = 0; n + 8 <= width; n += 8) _mm256_storeu_ps(st.tm + n, _mm256_set1_ps(-INFINITY));
  for (int64_t v = 0; v < nv; ++v)
    for (n = 0; n + 8 <= width; n += 8)
      _mm256_storeu_ps(st.tm + n, _mm256_max_ps(_mm256_loadu_ps(st.tm + n), _mm256_loadu_ps(ct + v * ldc + n)));
  // The tile's sums are taken relative to the new running max.
  for (n = 0; n + 8 <= width; n += 8) {
    const __m256 tm = _mm256_loadu_ps(st.tm + n);
    _mm256_storeu_ps(st.tm + n, first ? tm : _mm256_max_ps(tm, _mm256_loadu_ps(st.m + n)));
    _mm256_storeu_ps(st.ts + n, _mm256_setzero_ps());
    if (kEntropy) _mm256_storeu_ps(st.tu + n, _mm256_setzero_ps());
  }
  for (int64_t v = 0; v < nv; ++v)
    for (n = 0; n + 8 <= width; n += 8) {
      const __m256 z = _mm256_sub_ps(_mm256_loadu_ps(ct + v * ldc + n), _mm256_loadu_ps(st.tm + n));
      const __m256 e = exp_avx2(z);
      _mm256_storeu_ps(st.ts + n, _mm256_add_ps(_mm256_loadu_ps(st.ts + n), e));
      if (kEntropy) _mm256_storeu_ps(st.tu + n, _mm256_fmadd_ps(e, z, _mm256_loadu_ps(st.tu + n)));
    }
}

#if LGRPO_X86_DISPATCH
// fold_columns_avx2's operations 16 columns at a time (width a multiple of 16): the same bits.
template <bool kEntropy>
LGRPO_TARGET_AVX512 void fold_columns_avx512(const float* ct, int64_t ldc, int64_t nv, int64_t width,
                                             const ChunkStats& st, bool first) {
  for (int64_t n = 0; n < width; n += 16) _mm512_storeu_ps(st.tm + n, _mm512_set1_ps(-INFINITY));
  for (int64_t v = 0; v < nv; ++v)
    for (int64_t n = 0; n < width; n += 16)
      _mm512_storeu_ps(st.tm + n, _mm512_max_ps(_mm512_loadu_ps(st.tm + n), _mm512_loadu_ps(ct + v * ldc + n)));
  for (int64_t n = 0; n < width; n += 16) {
    const __m512 tm = _mm512_loadu_ps(st.tm + n);
    _mm512_storeu_ps(st.tm + n, first ? tm : _mm512_max_ps(tm, _mm512_loadu_ps(st.m + n)));
    _mm512_storeu_ps(st.ts + n, _mm512_setzero_ps());
    if (kEntropy) _mm512_storeu_ps(st.tu + n, _mm512_setzero_ps());
  }
  for (int64_t v = 0; v < nv; ++v)
    for (int64_t n = 0; n < width; n += 16) {
      const __m512 z = _mm512_sub_ps(_mm512_loadu_ps(ct + v * ldc + n), _mm512_loadu_ps(st.tm + n));
      const __m512 e = exp_avx512(z);
      _mm512_storeu_ps(st.ts + n, _mm512_add_ps(_mm512_loadu_ps(st.ts + n), e));
      if (kEntropy) _mm512_storeu_ps(st.tu + n, _mm512_fmadd_ps(e, z, _mm512_loadu_ps(st.tu + n)));
    }
}
#endif
#endif

// Folds one scaled logit tile (nv vocabulary rows × width hidden rows) into the
// running statistics. Columns past the chunk's rows hold zeros and are folded
// harmlessly; the caller ignores them.
template <bool kEntropy>
void fold_tile(const float* ct, int64_t ldc, int64_t nv, int64_t width, const ChunkStats& st, bool first) {
  int64_t n = 0;
#if LGRPO_AVX2
#if LGRPO_X86_DISPATCH
  if (width % 16 == 0 && simd_avx512()) fold_columns_avx512<kEntropy>(ct, ldc, nv, width, st, first);
  else
#endif
    fold_columns_avx2<kEntropy>(ct, ldc, nv, width, st, first);
  n = width - width % 8;  // width is a multiple of 16: nothing is left
#endif
  for (int64_t i = n; i < width; ++i) st.tm[i] = -INFINITY;
  for (int64_t v = 0; v < nv; ++v)
    for (int64_t i = n; i < width; ++i) st.tm[i] = std::max(st.tm[i], ct[v * ldc + i]);
  for (int64_t i = n; i < width; ++i) {
    if (!first) st.tm[i] = std::max(st.tm[i], st.m[i]);
    st.ts[i] = 0.0f;
    st.tu[i] = 0.0f;
  }
  for (int64_t v = 0; v < nv; ++v)
    for (int64_t i = n; i < width; ++i) {
      const float z = ct[v * ldc + i] - st.tm[i];
      const float e = std::exp(z);
      st.ts[i] += e;
      if (kEntropy) st.tu[i] += e * z;
    }
  // Rescale the running sums to the new max and add the tile's.
  for (int64_t i = 0; i < width; ++i) {
    if (first) {
      st.m[i] = st.tm[i];
      st.s[i] = st.ts[i];
      if (kEntropy) st.u[i] = st.tu[i];
      continue;
    }
    const float shift = st.m[i] - st.tm[i];  // <= 0
    const float r = std::exp(shift);
    if (kEntropy) st.u[i] = r * (st.u[i] + st.s[i] * shift) + st.tu[i];
    st.s[i] = st.s[i] * r + st.ts[i];
    st.m[i] = st.tm[i];
  }
}

struct ForwardPlan {
  int64_t blocks, shards, chunks;
  int64_t shard_begin(int64_t s) const { return blocks * s / shards; }
};

template <DType T, bool kEntropy>
void forward_items(const LinearTokenLogprobsForwardArgs& a, const ForwardPlan& plan, int64_t item_begin,
                   int64_t item_end, float* m_all, float* s_all, float* u_all, float* target_logit,
                   float* logits_out, std::atomic<int>& bad) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  const float inv_tau = 1.0f / a.temperature;
  Scratch hpack(RC * d), row(d), ct(VC * RC), wconv(T == DType::F32 ? 0 : VC * d), stats(6 * RC);
  ChunkStats st{stats.get(), stats.get() + RC, stats.get() + 2 * RC, stats.get() + 3 * RC, stats.get() + 4 * RC,
                stats.get() + 5 * RC};
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t chunk = item / plan.shards, shard = item % plan.shards;
    const int64_t n0 = chunk * RC, nr = std::min(RC, N - n0);
    const int64_t panels = ceil_div(nr, NR), ldc = panels * NR;
    if (pack_hidden<T>(a.hidden, d, n0, nr, hpack.get(), row.get(), nullptr, 0) != 0.0f) bad |= kBadHidden;
    const int64_t b0 = plan.shard_begin(shard), b1 = plan.shard_begin(shard + 1);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t v0 = blk * VC, nv = std::min(VC, V - v0);
      const float* w;
      bool computed = false;
      if constexpr (T == DType::F32) {
        w = static_cast<const float*>(a.weight) + v0 * d;
#if LGRPO_AVX2
        if (a.weight_panels) {
          // The panels hold W's values, so a non-finite weight shows in every logit of its
          // vocabulary row: W itself is scanned only then (for the error naming it).
          logits_panels(a.weight_panels + v0 * d, nv, hpack.get(), panels, nr, d, ct.get(), ldc);
          computed = true;
          bool finite = true;
          for (int64_t v = 0; v < nv && finite; ++v)
            for (int64_t n = 0; n < nr; ++n) finite = finite && std::isfinite(ct.get()[v * ldc + n]);
          if (!finite && poison_f32(w, nv * d) != 0.0f) bad |= kBadWeight;
        }
#endif
        if (!computed && chunk == 0 && poison_f32(w, nv * d) != 0.0f) bad |= kBadWeight;
      } else {
        if (convert_span<T>(a.weight, v0 * d, nv * d, wconv.get()) != 0.0f) bad |= kBadWeight;
        w = wconv.get();
      }
      if (!computed) logits_tile(w, d, nv, hpack.get(), panels, d, ct.get(), ldc, nr);
      scale_tile(ct.get(), ldc, nv, ldc, inv_tau);
      fold_tile<kEntropy>(ct.get(), ldc, nv, ldc, st, blk == b0);
      if (a.saved_logits) save_tile(ct.get(), nv * ldc, a.saved_logits + saved_tile_offset(V, n0, v0, ldc));
      if (a.targets)
        for (int64_t n = 0; n < nr; ++n) {
          const int64_t y = a.targets[n0 + n];
          if (y >= v0 && y < v0 + nv) target_logit[n0 + n] = ct.get()[(y - v0) * ldc + n];
        }
      if (logits_out)
        for (int64_t n = 0; n < nr; ++n) {
          float* dst = logits_out + (n0 + n) * V + v0;
          for (int64_t v = 0; v < nv; ++v) dst[v] = ct.get()[v * ldc + n];
        }
    }
    float* m = m_all + shard * N + n0;
    std::copy(st.m, st.m + nr, m);
#if LGRPO_AVX2
    if (a.saved_logits) _mm_sfence();  // save_tile's stores, before the job's join publishes them
#endif
    std::copy(st.s, st.s + nr, s_all + shard * N + n0);
    if (kEntropy) std::copy(st.u, st.u + nr, u_all + shard * N + n0);
  }
}

// Index of the first non-finite element, or -1.
int64_t first_non_finite(const void* data, DType t, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(load_float(data, t, static_cast<size_t>(i)))) return i;
  return -1;
}

[[noreturn]] void throw_non_finite(const char* name, const void* data, DType t, int64_t cols, int64_t i) {
  const float x = load_float(data, t, static_cast<size_t>(i));
  throw Error(std::string(name) + ": element [" + std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                  "] is " + (std::isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity") + "; inputs must be finite",
              Error::Range);
}

void report_bad(int bad, const void* hidden, const void* weight, DType t, int64_t N, int64_t V, int64_t d) {
  if (!bad) return;
  int64_t i = first_non_finite(hidden, t, N * d);
  if (i >= 0) throw_non_finite("hidden", hidden, t, d, i);
  i = first_non_finite(weight, t, V * d);
  if (i >= 0) throw_non_finite("weight", weight, t, d, i);
  throw Error("hidden/weight: a non-finite element was seen but could not be located", Error::Range);
}

// logits_out / lse_out (optional): the scaled logits [rows, vocab] and each row's lse in
// double, before it is rounded (linear_token_logits_cpu).
template <DType T>
void forward_typed(const LinearTokenLogprobsForwardArgs& a, float* logits_out = nullptr, double* lse_out = nullptr) {
  const int64_t N = a.rows, V = a.vocab;
  ForwardPlan plan;
  plan.blocks = ceil_div(V, VC);
  plan.shards = std::min(plan.blocks, kMaxShards);
  plan.chunks = ceil_div(N, RC);
  const bool entropy = a.entropy != nullptr;
  std::vector<float> m(plan.shards * N), s(plan.shards * N), u(entropy ? plan.shards * N : 0), target(N);
  std::atomic<int> bad{0};
  parallel_for(plan.chunks * plan.shards, 1, [&](int64_t begin, int64_t end) {
    if (entropy)
      forward_items<T, true>(a, plan, begin, end, m.data(), s.data(), u.data(), target.data(), logits_out, bad);
    else forward_items<T, false>(a, plan, begin, end, m.data(), s.data(), nullptr, target.data(), logits_out, bad);
  });
  report_bad(bad.load(), a.hidden, a.weight, a.dtype, N, V, a.dim);

  // Shards merge in order, in double: O(N · shards), negligible.
  parallel_for(N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      double mm = m[n], ss = s[n], uu = entropy ? u[n] : 0.0;
      for (int64_t sh = 1; sh < plan.shards; ++sh) {
        const double mb = m[sh * N + n], sb = s[sh * N + n], ub = entropy ? u[sh * N + n] : 0.0;
        const double mn = std::max(mm, mb), da = mm - mn, db = mb - mn;
        const double ea = std::exp(da), eb = std::exp(db);
        uu = ea * (uu + ss * da) + eb * (ub + sb * db);
        ss = ss * ea + sb * eb;
        mm = mn;
      }
      const double log_s = std::log(ss), lse = mm + log_s;
      if (lse_out) lse_out[n] = lse;
      if (a.lse) a.lse[n] = static_cast<float>(lse);
      if (a.lse && a.lse_lo) a.lse_lo[n] = static_cast<float>(lse - static_cast<double>(a.lse[n]));
      if (a.logprobs) a.logprobs[n] = static_cast<float>(static_cast<double>(target[n]) - lse);
      if (entropy) a.entropy[n] = static_cast<float>(log_s - uu / ss);
    }
  });
}

// ---------------------------------------------------------------------------------
// Backward.

// Per-row inputs of one chunk, padded to RC rows with zeros (target −1) so the vector
// loops run over whole padded widths.
struct ChunkRows {
  float *lse, *shift, *g, *e, *h;
  int32_t* y;
};

// x (logits already divided by τ) → dlogits in ct (x itself, or the forward's saved tile
// read into the scratch tile), with d = (x − lse) − δ = log p:
//   ∂L/∂x_v = g(1[v=y] − p_v) − e p_v (x_v − Σ p x),  then / τ,
// where x_v − Σ p x = d_v + H never subtracts two lse-sized numbers. δ is 0 except on
// rows whose lse was recomputed, so other rows' d is x − lse, as before. Returns the
// first column whose d exceeds kLinearLseSlack (a probability above 1: the lse is not
// this row's), or -1.
#if LGRPO_X86_DISPATCH
// dlogits_tile's row v (vocabulary id vid) over columns [0, ldc) (a multiple of 16), the AVX2
// loop's operations 16 lanes at a time: the same bits. first_bad as there.
template <bool kEntropy>
LGRPO_TARGET_AVX512 void dlogits_row_avx512(const float* xv, float* c, int64_t ldc, int32_t vid, const ChunkRows& r,
                                            float inv_tau, int64_t& first_bad) {
  const __m512 scale = _mm512_set1_ps(inv_tau), slack = _mm512_set1_ps(kLinearLseSlack);
  const __m512i id = _mm512_set1_epi32(vid);
  for (int64_t n = 0; n < ldc; n += 16) {
    const __m512 x = _mm512_loadu_ps(xv + n);
    const __m512 d = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_loadu_ps(r.lse + n)), _mm512_loadu_ps(r.shift + n));
    const __mmask16 above = _mm512_cmp_ps_mask(d, slack, _CMP_GT_OQ);
    if (above != 0 && (first_bad < 0 || n + __builtin_ctz(above) < first_bad)) first_bad = n + __builtin_ctz(above);
    const __m512 p = exp_avx512(d);
    const __m512 g = _mm512_loadu_ps(r.g + n);
    __m512 coef = g;
    if (kEntropy) coef = _mm512_fmadd_ps(_mm512_loadu_ps(r.e + n), _mm512_add_ps(d, _mm512_loadu_ps(r.h + n)), coef);
    const __mmask16 hit = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(r.y + n), id);
    const __m512 grad = _mm512_sub_ps(_mm512_maskz_mov_ps(hit, g), _mm512_mul_ps(p, coef));
    _mm512_storeu_ps(c + n, _mm512_mul_ps(grad, scale));
  }
}
#endif

template <bool kEntropy>
int64_t dlogits_tile(const float* xt, float* ct, int64_t ldc, int64_t nv, int64_t v0, const ChunkRows& r,
                     float inv_tau) {
  int64_t first_bad = -1;
#if LGRPO_X86_DISPATCH
  if (ldc % 16 == 0 && simd_avx512()) {
    for (int64_t v = 0; v < nv; ++v)
      dlogits_row_avx512<kEntropy>(xt + v * ldc, ct + v * ldc, ldc, static_cast<int32_t>(v0 + v), r, inv_tau,
                                   first_bad);
    return first_bad;
  }
#endif
  for (int64_t v = 0; v < nv; ++v) {
    const float* xv = xt + v * ldc;
    float* c = ct + v * ldc;
    int64_t n = 0;
#if LGRPO_AVX2
    const __m256 scale = _mm256_set1_ps(inv_tau), slack = _mm256_set1_ps(kLinearLseSlack);
    const __m256i vid = _mm256_set1_epi32(static_cast<int32_t>(v0 + v));
    for (; n + 8 <= ldc; n += 8) {
      const __m256 x = _mm256_loadu_ps(xv + n);
      const __m256 d = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_loadu_ps(r.lse + n)), _mm256_loadu_ps(r.shift + n));
      const int above = _mm256_movemask_ps(_mm256_cmp_ps(d, slack, _CMP_GT_OQ));
      if (above != 0 && (first_bad < 0 || n + __builtin_ctz(above) < first_bad)) first_bad = n + __builtin_ctz(above);
      const __m256 p = exp_avx2(d);
      const __m256 g = _mm256_loadu_ps(r.g + n);
      __m256 coef = g;  // ∂/∂x = −p (g + e (d + H)) + g·1[v=y]
      if (kEntropy)
        coef = _mm256_fmadd_ps(_mm256_loadu_ps(r.e + n), _mm256_add_ps(d, _mm256_loadu_ps(r.h + n)), coef);
      const __m256 hit = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.y + n)), vid));
      const __m256 grad = _mm256_sub_ps(_mm256_and_ps(hit, g), _mm256_mul_ps(p, coef));
      _mm256_storeu_ps(c + n, _mm256_mul_ps(grad, scale));
    }
#endif
    for (; n < ldc; ++n) {
      const float x = xv[n];
      const float d = (x - r.lse[n]) - r.shift[n];
      if (d > kLinearLseSlack && (first_bad < 0 || n < first_bad)) first_bad = n;
      const float p = std::exp(d);
      float coef = r.g[n];
      if (kEntropy) coef += r.e[n] * (d + r.h[n]);
      const float grad = (r.y[n] == v0 + v ? r.g[n] : 0.0f) - p * coef;
      c[n] = grad * inv_tau;
    }
  }
  return first_bad;
}

// A chunk's rows (n0 .. n0 + nr − 1 of RC) as dlogits_tile reads them; rows past nr inert.
template <bool kEntropy>
void load_chunk_rows(const LinearTokenLogprobsBackwardArgs& a, int64_t n0, int64_t nr, const ChunkRows& cr) {
  for (int64_t n = 0; n < RC; ++n) {
    const bool in = n < nr;
    cr.lse[n] = in ? a.lse[n0 + n] : 0.0f;
    cr.shift[n] = in && a.lse_shift ? a.lse_shift[n0 + n] : 0.0f;
    cr.g[n] = in ? a.grad_logprobs[n0 + n] : 0.0f;
    cr.e[n] = in && kEntropy ? a.grad_entropy[n0 + n] : 0.0f;
    cr.h[n] = in && kEntropy ? a.entropy[n0 + n] : 0.0f;
    cr.y[n] = in ? a.targets[n0 + n] : -1;
  }
}

// Weight rows [v0, v0 + nv) in f32, each padded with zeros to dpad; returns their poison
// (nonzero when one is not finite).
template <DType T>
float convert_weight_rows(const void* weight, int64_t v0, int64_t nv, int64_t d, int64_t dpad, float* dst) {
  float poison = 0.0f;
  for (int64_t v = 0; v < nv; ++v, dst += dpad) {
    poison += convert_span<T>(weight, (v0 + v) * d, d, dst);
    std::fill(dst + d, dst + dpad, 0.0f);
  }
  return poison;
}

// gradWeight rows [0, nv) (gw points at the tile's first) += Σ_n D[v][n] h_n for a chunk's
// nr rows (D: dlogits [nv][ldc], hnat: the rows' hidden [nr][dpad]), over the column tiles
// [jt_begin, jt_end) of NR: each element's chain continued row block after row block.
void add_grad_weight(const float* D, int64_t ldc, int64_t nv, int64_t nr, const float* hnat, int64_t dpad, int64_t d,
                     int64_t jt_begin, int64_t jt_end, float* gw) {
  for (int64_t pc = 0; pc < nr; pc += KC) {
    const int64_t kc = std::min(KC, nr - pc);
    for (int64_t jt = jt_begin; jt < jt_end; ++jt) {
      const int64_t jr = jt * NR;
      const float* b = hnat + pc * dpad + jr;
      for (int64_t ir = 0; ir < nv; ir += MR) {
        RowsA A;
        for (int i = 0; i < MR; ++i) A.r[i] = D + std::min<int64_t>(ir + i, nv - 1) * ldc + pc;
        if (pair_of_tiles(ir, nv, std::min<int64_t>(NR, d - jr))) {
          RowsA A1;
          for (int i = 0; i < MR; ++i) A1.r[i] = D + (ir + MR + i) * ldc + pc;
          micro_kernel_pair(kc, A, A1, b, dpad, gw + ir * d + jr, d, true);
          ir += MR;
          continue;
        }
        edge_tile(kc, A, b, dpad, gw + ir * d + jr, d, std::min<int64_t>(MR, nv - ir), std::min<int64_t>(NR, d - jr),
                  true);
      }
    }
  }
}

// gradHidden rows [0, nr) (gh points at the chunk's first) += Σ_v D[v][i] w_v, with Dᵀ packed
// MR rows at a time into dpack (wnat: the tile's weights [nv][dpad]).
void add_grad_hidden(const float* D, int64_t ldc, int64_t nv, int64_t nr, const float* wnat, int64_t dpad, int64_t d,
                     float* dpack, float* gh) {
  float* dp = dpack;
  for (int64_t ir = 0; ir < nr; ir += MR)
    for (int64_t v = 0; v < nv; ++v)
      for (int i = 0; i < MR; ++i) *dp++ = ir + i < nr ? D[v * ldc + ir + i] : 0.0f;
  for (int64_t jr = 0; jr < d; jr += NR) {
    const float* b = wnat + jr;
    for (int64_t ir = 0; ir < nr; ir += MR) {
      const PackedA A{dpack + (ir / MR) * MR * nv};
      if (pair_of_tiles(ir, nr, std::min<int64_t>(NR, d - jr))) {
        micro_kernel_pair(nv, A, PackedA{dpack + (ir / MR + 1) * MR * nv}, b, dpad, gh + ir * d + jr, d, true);
        ir += MR;
        continue;
      }
      edge_tile(nv, A, b, dpad, gh + ir * d + jr, d, std::min<int64_t>(MR, nr - ir), std::min<int64_t>(NR, d - jr), true);
    }
  }
}

// A backward tile's scaled logits: the forward's saved tile, or recomputed into ct with the
// forward's GEMM, blocking and operands, so bit-identical to the ones its lse came from.
const float* backward_logits(const LinearTokenLogprobsBackwardArgs& a, const float* wnat, int64_t dpad, int64_t nv,
                             const float* hpack, int64_t panels, int64_t n0, int64_t v0, int64_t ldc, float* ct) {
  if (a.saved_logits) return a.saved_logits + saved_tile_offset(a.vocab, n0, v0, ldc);
  logits_tile(wnat, dpad, nv, hpack, panels, a.dim, ct, ldc);
  scale_tile(ct, ldc, nv, ldc, 1.0f / a.temperature);
  return ct;
}

template <DType T, bool kEntropy>
void backward_worker(const LinearTokenLogprobsBackwardArgs& a, int64_t blk_begin, int64_t blk_end, float* gh,
                     std::atomic<int>& bad, int64_t& lse_below_row) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  const int64_t dpad = round_up(std::max<int64_t>(d, 1), NR);
  const float inv_tau = 1.0f / a.temperature;
  const int64_t v_begin = blk_begin * VC, v_end = std::min(V, blk_end * VC);
  std::fill(gh, gh + N * d, 0.0f);
  std::fill(a.grad_weight + v_begin * d, a.grad_weight + v_end * d, 0.0f);

  Scratch hpack(RC * d), hnat(RC * dpad), row(d), ct(VC * RC), wnat(VC * dpad), dpack(round_up(RC, MR) * VC),
      rows_f(5 * RC);
  std::vector<int32_t> rows_y(RC);
  float* f = rows_f.get();
  const ChunkRows cr{f, f + RC, f + 2 * RC, f + 3 * RC, f + 4 * RC, rows_y.data()};

  for (int64_t n0 = 0; n0 < N; n0 += RC) {
    const int64_t nr = std::min(RC, N - n0);
    const int64_t panels = ceil_div(nr, NR), ldc = panels * NR;
    float* hp = a.saved_logits ? nullptr : hpack.get();  // only the logits GEMM reads it
    if (pack_hidden<T>(a.hidden, d, n0, nr, hp, row.get(), hnat.get(), dpad) != 0.0f) bad |= kBadHidden;
    load_chunk_rows<kEntropy>(a, n0, nr, cr);

    for (int64_t blk = blk_begin; blk < blk_end; ++blk) {
      const int64_t v0 = blk * VC, nv = std::min(VC, V - v0);
      if (convert_weight_rows<T>(a.weight, v0, nv, d, dpad, wnat.get()) != 0.0f) bad |= kBadWeight;

      const float* x = backward_logits(a, wnat.get(), dpad, nv, hpack.get(), panels, n0, v0, ldc, ct.get());
      const int64_t below = dlogits_tile<kEntropy>(x, ct.get(), ldc, nv, v0, cr, inv_tau);
      if (below >= 0 && below < nr && (lse_below_row < 0 || n0 + below < lse_below_row)) lse_below_row = n0 + below;
      add_grad_weight(ct.get(), ldc, nv, nr, hnat.get(), dpad, d, 0, ceil_div(d, NR), a.grad_weight + v0 * d);
      add_grad_hidden(ct.get(), ldc, nv, nr, wnat.get(), dpad, d, dpack.get(), gh + n0 * d);
    }
  }
}

// One vocabulary tile (V <= VC: the tiny model's LM head) on several threads, with the
// bits of backward_worker over that one tile: backward_worker walks the row chunks in
// order, and per chunk computes dlogits, adds the chunk's share to every gradWeight
// element (one FMA chain continued chunk after chunk) and writes the chunk's gradHidden
// rows. Here the chunks' dlogits and gradHidden run in parallel (they depend on nothing
// but the chunk), and then gradWeight is split by columns, each thread continuing its
// elements' chains over the chunks in the same order with the same tiles. Without this
// the whole backward ran on one thread (there is one tile to hand out).
template <DType T, bool kEntropy>
void backward_one_tile(const LinearTokenLogprobsBackwardArgs& a, std::atomic<int>& bad, int64_t& lse_below_row) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  const int64_t dpad = round_up(std::max<int64_t>(d, 1), NR);
  const float inv_tau = 1.0f / a.temperature;
  const int64_t chunks = ceil_div(N, RC), nv = V;
  std::fill(a.grad_weight, a.grad_weight + V * d, 0.0f);
  // Every chunk's dlogits (nv × its padded rows) and natural-layout hidden rows, kept for
  // the gradWeight pass.
  Scratch dall(chunks * VC * RC), hall(chunks * RC * dpad), wnat(VC * dpad);
  if (convert_weight_rows<T>(a.weight, 0, nv, d, dpad, wnat.get()) != 0.0f) bad |= kBadWeight;
  std::vector<int64_t> below_of(static_cast<size_t>(chunks), -1);
  parallel_for(chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    Scratch hpack(RC * d), row(d), dpack(round_up(RC, MR) * VC), rows_f(5 * RC);
    std::vector<int32_t> rows_y(RC);
    float* f = rows_f.get();
    const ChunkRows cr{f, f + RC, f + 2 * RC, f + 3 * RC, f + 4 * RC, rows_y.data()};
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t n0 = c * RC, nr = std::min(RC, N - n0);
      const int64_t panels = ceil_div(nr, NR), ldc = panels * NR;
      float* hnat = hall.get() + c * RC * dpad;
      float* ct = dall.get() + c * VC * RC;
      std::fill(a.grad_hidden + n0 * d, a.grad_hidden + (n0 + nr) * d, 0.0f);
      float* hp = a.saved_logits ? nullptr : hpack.get();  // only the logits GEMM reads it
      if (pack_hidden<T>(a.hidden, d, n0, nr, hp, row.get(), hnat, dpad) != 0.0f) bad |= kBadHidden;
      load_chunk_rows<kEntropy>(a, n0, nr, cr);
      const float* x = backward_logits(a, wnat.get(), dpad, nv, hpack.get(), panels, n0, 0, ldc, ct);
      const int64_t below = dlogits_tile<kEntropy>(x, ct, ldc, nv, 0, cr, inv_tau);
      if (below >= 0 && below < nr) below_of[static_cast<size_t>(c)] = n0 + below;
      add_grad_hidden(ct, ldc, nv, nr, wnat.get(), dpad, d, dpack.get(), a.grad_hidden + n0 * d);
    }
  });
  for (int64_t row : below_of)
    if (row >= 0 && (lse_below_row < 0 || row < lse_below_row)) lse_below_row = row;
  // gradWeight[v][j] += Σ_n D[v][n] h_n[j], chunk after chunk, columns split by threads.
  parallel_for(ceil_div(d, NR), 1, [&](int64_t j_begin, int64_t j_end) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n0 = c * RC, nr = std::min(RC, N - n0);
      const int64_t ldc = ceil_div(nr, NR) * NR;
      add_grad_weight(dall.get() + c * VC * RC, ldc, nv, nr, hall.get() + c * RC * dpad, dpad, d, j_begin, j_end,
                      a.grad_weight);
    }
  });
}

template <DType T>
void backward_typed(const LinearTokenLogprobsBackwardArgs& a) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  if (N == 0 || V == 0 || d == 0) {  // nothing flows: both gradients are zero
    std::fill(a.grad_hidden, a.grad_hidden + N * d, 0.0f);
    std::fill(a.grad_weight, a.grad_weight + V * d, 0.0f);
    return;
  }
  const int64_t blocks = ceil_div(V, VC);
  const int64_t workers = std::min<int64_t>(num_threads(), blocks);
  // Worker 0 accumulates straight into gradHidden; the others into partials.
  std::vector<std::unique_ptr<Scratch>> partial(workers);
  for (int64_t w = 1; w < workers; ++w) partial[w] = std::make_unique<Scratch>(N * d);
  std::atomic<int> bad{0};
  std::vector<int64_t> lse_below(workers, -1);  // per worker: the first row whose lse was too small
  const bool entropy = a.grad_entropy != nullptr;
  if (blocks == 1) {
    if (entropy) backward_one_tile<T, true>(a, bad, lse_below[0]);
    else backward_one_tile<T, false>(a, bad, lse_below[0]);
  } else parallel_for(workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      float* gh = w == 0 ? a.grad_hidden : partial[w]->get();
      const int64_t b0 = blocks * w / workers, b1 = blocks * (w + 1) / workers;
      if (entropy) backward_worker<T, true>(a, b0, b1, gh, bad, lse_below[w]);
      else backward_worker<T, false>(a, b0, b1, gh, bad, lse_below[w]);
    }
  });
  report_bad(bad.load(), a.hidden, a.weight, a.dtype, N, V, d);
  int64_t below = -1;
  for (int64_t row : lse_below)
    if (row >= 0 && (below < 0 || row < below)) below = row;
  // An lse below the row's log-sum-exp makes probabilities above 1, and the gradients
  // grow without bound (they reached ±Inf): an error, not a result.
  if (below >= 0) throw lse_below_error(below);
  if (workers > 1)
    parallel_for(N * d, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t w = 1; w < workers; ++w) {
        const float* p = partial[w]->get();
        for (int64_t i = begin; i < end; ++i) a.grad_hidden[i] += p[i];
      }
    });
}

}  // namespace

int64_t linear_saved_logits_floats(int64_t rows, int64_t vocab) {
  if (rows == 0) return 0;
  const int64_t n0_last = (rows - 1) / RC * RC;
  return saved_tile_offset(vocab, n0_last, vocab, round_up(rows - n0_last, NR));
}

Error lse_below_error(int64_t row) {
  return Error("lse: row " + std::to_string(row) +
                   " is below the log-sum-exp of hidden · weightᵀ / temperature (probabilities above 1); pass the "
                   "lse linearTokenLogprobs returned for these inputs with the same temperature",
               Error::Range);
}

void linear_token_logprobs_forward_cpu(const LinearTokenLogprobsForwardArgs& a) {
  if (a.rows == 0) return;
  if (a.vocab == 0) throw Error("targets: the vocabulary is empty (weight has 0 rows)", Error::Range);
  switch (a.dtype) {
    case DType::F32: return forward_typed<DType::F32>(a);
    case DType::BF16: return forward_typed<DType::BF16>(a);
    case DType::F16: return forward_typed<DType::F16>(a);
    default: throw Error("hidden: expected dtype f32, bf16 or f16", Error::Type);
  }
}

void linear_token_logits_cpu(const LinearTokenLogprobsForwardArgs& a, float* logits, double* lse) {
  if (a.rows == 0) return;
  if (a.vocab == 0) throw Error("weight: the vocabulary is empty (weight has 0 rows)", Error::Range);
  if (a.dtype != DType::F32) throw Error("hidden: linear_token_logits expects f32", Error::Type);
  LinearTokenLogprobsForwardArgs b = a;
  b.targets = nullptr;
  b.logprobs = nullptr;
  b.entropy = nullptr;
  b.lse = nullptr;
  forward_typed<DType::F32>(b, logits, lse);
}

void linear_token_logprobs_backward_cpu(const LinearTokenLogprobsBackwardArgs& a) {
  if (a.rows > 0 && a.vocab == 0) throw Error("targets: the vocabulary is empty (weight has 0 rows)", Error::Range);
  // The per-row inputs before the matrices, in the order and words of the CUDA twin.
  check_finite_rows(a.lse, a.rows, "lse");
  check_finite_rows(a.grad_logprobs, a.rows, "gradLogprobs");
  check_finite_rows(a.grad_entropy, a.rows, "gradEntropy");
  check_finite_rows(a.grad_entropy ? a.entropy : nullptr, a.rows, "entropy");
  switch (a.dtype) {
    case DType::F32: return backward_typed<DType::F32>(a);
    case DType::BF16: return backward_typed<DType::BF16>(a);
    case DType::F16: return backward_typed<DType::F16>(a);
    default: throw Error("hidden: expected dtype f32, bf16 or f16", Error::Type);
  }
}

}  // namespace lgrpo
