// CUDA twin of attention (native/ops/attention.h; the CPU twin, native/ops/attention.cc,
// explains the math). f32 throughout, head_dim up to 256.
//
//   forward   flash-attention style: a block owns kWarps consecutive query rows of one
//             (row b, kv head), rows ordered (position t, query head g) so that the rows of
//             a block share their kv head; each warp runs one row's online softmax over
//             key tiles the block stages in shared memory. Only lse [B, Hq, T] is saved;
//             no T×T scores ever exist, in global or shared memory.
//   backward  two kernels, so that every gradient element has one owner and a fixed sum
//             order (no float atomics): dq by query rows (as the forward: each warp
//             recomputes its row's probabilities from q, k and lse), and dk/dv by key
//             tiles (a block owns kKeys keys of one (row b, kv head) and walks the query
//             rows that attend them in the CPU twin's order: position t, then head g).
//   decode    the forward's row routine (attend_block) over the cache.
//
// Decode gives the forward's exact bits on the device: both kernels call the same
// non-inlined attend_block, whose result for a row depends only on that row's q, keys
// and key count n (tiles start at key 0 in steps of kKeys whatever the block's other
// rows need; keys past n are masked out, never multiplied by 0), and whose arithmetic
// is spelled out (fmaf, __fmul_rn; no a·b + c left for nvcc to contract differently).
// It does not give the CPU twin's bits (different sum orders and exp): compare with
// a tolerance.
//
// Lengths live on the device: a first kernel checks them and every other kernel returns
// at once when it found one out of range, so a bad length throws (the CPU twin's words)
// before anything is written.
#include <cuda_runtime.h>

#include <array>
#include <climits>
#include <string>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "../native/ops/attention.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr unsigned kFull = 0xffffffffu;
enum Flag { kBadLength, kNonFinite, kFlagCount };

// kKeys keys per tile; K and V tiles are padded to kMaxHd + 1 floats per key so that
// lane j reading key j's row hits bank (j + d) % 32: no conflicts. 256-wide heads take
// half tiles and (in the backward) half blocks to stay under 48 KiB of shared memory.
template <int kMaxHd>
struct Cfg {
  static constexpr int kKeys = kMaxHd <= 128 ? 32 : 16;
  static constexpr int kPad = kMaxHd + 1;
  static constexpr int kDims = kMaxHd / 32;  // head dims per lane: d = lane + 32·i
  static constexpr int kWarps = 8;           // forward and decode rows per block
  static constexpr int kBwdWarps = kMaxHd <= 128 ? 8 : 4;
  static constexpr int kKeysPerWarp = kKeys / kBwdWarps;  // dk/dv keys each warp owns
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, m));
  return v;
}

// Butterfly: every lane ends with the same bits (each pairwise add is commutative).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = __fadd_rn(v, __shfl_xor_sync(kFull, v, m));
  return v;
}

// a·b over n floats, four independent chains (latency), combined in a fixed tree.
__device__ __forceinline__ float dot_row(const float* a, const float* b, int n) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int d = 0;
  for (; d + 4 <= n; d += 4) {
    s0 = fmaf(a[d], b[d], s0);
    s1 = fmaf(a[d + 1], b[d + 1], s1);
    s2 = fmaf(a[d + 2], b[d + 2], s2);
    s3 = fmaf(a[d + 3], b[d + 3], s3);
  }
  for (; d < n; ++d) s0 = fmaf(a[d], b[d], s0);
  return __fadd_rn(__fadd_rn(s0, s1), __fadd_rn(s2, s3));
}

// Keys [j0, j0 + count) of k and v (token stride `stride`) into the padded tiles; keys
// in [count, kKeys) get 0 so that masked lanes still read finite numbers.
template <int kMaxHd>
__device__ __forceinline__ void load_tiles(const float* __restrict__ k, const float* __restrict__ v, long long stride,
                                           int j0, int count, int hd, float* ks, float* vs) {
  using C = Cfg<kMaxHd>;
  for (int idx = threadIdx.x; idx < C::kKeys * hd; idx += blockDim.x) {
    const int j = idx / hd, d = idx - j * hd;
    const long long at = static_cast<long long>(j0 + j) * stride + d;
    ks[j * C::kPad + d] = j < count ? k[at] : 0.0f;
    vs[j * C::kPad + d] = j < count ? v[at] : 0.0f;
  }
}

// One query row per warp against keys 0..n-1 (n = 0: a padded row, or none when out is
// null); block_keys is the largest n in the block (block-uniform, as every barrier here
// must be reached by all threads). Writes out[0, hd) and *lse; returns whether a score
// or the output is not finite (warp-uniform).
template <int kMaxHd>
__device__ __noinline__ bool attend_block(const float* __restrict__ k, const float* __restrict__ v, long long stride,
                                          int hd, float scale, int block_keys, const float* __restrict__ q, int n,
                                          float* __restrict__ out, float* __restrict__ lse) {
  using C = Cfg<kMaxHd>;
  __shared__ float ks[C::kKeys * C::kPad];
  __shared__ float vs[C::kKeys * C::kPad];
  __shared__ float qs[C::kWarps][kMaxHd];
  __shared__ float ps[C::kWarps][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n > 0)
    for (int d = lane; d < hd; d += 32) qs[warp][d] = q[d];
  float o[C::kDims];
#pragma unroll
  for (int i = 0; i < C::kDims; ++i) o[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  bool bad = false;
  for (int j0 = 0; j0 < block_keys; j0 += C::kKeys) {
    __syncthreads();  // the previous tile is consumed (first pass: qs is written)
    load_tiles<kMaxHd>(k, v, stride, j0, min(C::kKeys, block_keys - j0), hd, ks, vs);
    __syncthreads();
    if (j0 >= n) continue;  // warp-uniform: this row is done
    const int keys = min(C::kKeys, n - j0);
    const bool valid = lane < keys;
    float s = -INFINITY;
    if (valid) {
      s = __fmul_rn(dot_row(qs[warp], ks + lane * C::kPad, hd), scale);
      bad |= !isfinite(s);
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float alpha = __expf(m - m_new);  // 0 on the first tile (m = −inf)
    const float p = valid ? __expf(s - m_new) : 0.0f;
    l = fmaf(l, alpha, p);
    ps[warp][lane] = p;
    __syncwarp();
#pragma unroll
    for (int i = 0; i < C::kDims; ++i) {
      const int d = lane + 32 * i;
      if (d >= hd) break;
      float acc = __fmul_rn(o[i], alpha);
      for (int j = 0; j < keys; ++j) acc = fmaf(ps[warp][j], vs[j * C::kPad + d], acc);
      o[i] = acc;
    }
    __syncwarp();  // ps is rewritten by the next tile
    m = m_new;
  }
  if (!out) return false;
  if (n == 0) {
    for (int d = lane; d < hd; d += 32) out[d] = 0.0f;
    if (lane == 0) *lse = 0.0f;
    return false;
  }
  l = warp_sum(l);
  const bool scores_bad = __any_sync(kFull, bad);
  const float inv = 1.0f / l;
  bool out_bad = false;
#pragma unroll
  for (int i = 0; i < C::kDims; ++i) {
    const int d = lane + 32 * i;
    if (d >= hd) break;
    const float x = __fmul_rn(o[i], inv);
    out_bad |= !isfinite(x);
    out[d] = x;
  }
  // As the CPU twin: lse is NaN when a score is not finite; the row is reported when
  // lse or any output is not finite.
  const float row_lse = scores_bad ? NAN : m + logf(l);
  if (lane == 0) *lse = row_lse;
  return __any_sync(kFull, out_bad) || !isfinite(row_lse);
}

__device__ __forceinline__ bool lengths_bad(const unsigned long long* flags) { return flags[kBadLength] != kNoProblem; }

__global__ void check_lengths_kernel(const int32_t* __restrict__ lengths, long long batch, long long limit,
                                     unsigned long long* flags) {
  for (long long b = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; b < batch;
       b += static_cast<long long>(gridDim.x) * blockDim.x)
    if (lengths[b] < 0 || lengths[b] > limit) atomicMin(&flags[kBadLength], static_cast<unsigned long long>(b));
}

// Blocks: (b·Hkv + kv head) × chunks of kWarps rows, the heaviest chunks (latest
// positions) first. Row r of a (b, kv head) is position r / G, head g = r % G.
template <int kMaxHd>
__global__ void __launch_bounds__(Cfg<kMaxHd>::kWarps * 32)
forward_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
               const int32_t* __restrict__ lengths, int T, int Hq, int Hkv, int hd, float scale, int chunks,
               float* __restrict__ out, float* __restrict__ lse, unsigned long long* flags) {
  using C = Cfg<kMaxHd>;
  if (lengths_bad(flags)) return;
  const int G = Hq / Hkv;
  const int bk = blockIdx.x / chunks, chunk = chunks - 1 - static_cast<int>(blockIdx.x % chunks);
  const int b = bk / Hkv, kvh = bk % Hkv, len = lengths[b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long rows = static_cast<long long>(T) * G;
  const long long r = static_cast<long long>(chunk) * C::kWarps + warp;
  const bool has_row = r < rows;
  const int t = has_row ? static_cast<int>(r / G) : 0, g = has_row ? static_cast<int>(r % G) : 0;
  const int n = has_row && t < len ? t + 1 : 0;
  const long long r_last = min(rows, static_cast<long long>(chunk + 1) * C::kWarps) - 1;
  const int block_keys = min(static_cast<int>(r_last / G) + 1, len);
  const long long tok = static_cast<long long>(b) * T;
  const long long kv_off = (tok * Hkv + kvh) * hd, q_off = ((tok + t) * Hq + kvh * G + g) * hd;
  const long long lse_at = (static_cast<long long>(b) * Hq + kvh * G + g) * T + t;
  const bool bad = attend_block<kMaxHd>(k + kv_off, v + kv_off, static_cast<long long>(Hkv) * hd, hd, scale, block_keys,
                                        q + q_off, n, has_row ? out + q_off : nullptr, lse + lse_at);
  if (bad && lane == 0) atomicMin(&flags[kNonFinite], static_cast<unsigned long long>(lse_at));
}

// Blocks: (b·Hkv + kv head) × chunks of kWarps query heads of the group.
template <int kMaxHd>
__global__ void __launch_bounds__(Cfg<kMaxHd>::kWarps * 32)
decode_kernel(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
              const int32_t* __restrict__ lengths, int S, int Hq, int Hkv, int hd, float scale, int chunks,
              float* __restrict__ out, unsigned long long* flags) {
  using C = Cfg<kMaxHd>;
  __shared__ float lse_sink[C::kWarps];
  if (lengths_bad(flags)) return;
  const int G = Hq / Hkv;
  const int bk = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int b = bk / Hkv, kvh = bk % Hkv, len = lengths[b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = chunk * C::kWarps + warp;
  const bool has_row = g < G;
  const long long kv_off = (static_cast<long long>(b) * S * Hkv + kvh) * hd;
  const long long row = static_cast<long long>(b) * Hq + kvh * G + (has_row ? g : 0);
  const bool bad = attend_block<kMaxHd>(k_cache + kv_off, v_cache + kv_off, static_cast<long long>(Hkv) * hd, hd, scale,
                                        len, q + row * hd, has_row ? len : 0, has_row ? out + row * hd : nullptr,
                                        &lse_sink[warp]);
  if (bad && lane == 0) atomicMin(&flags[kNonFinite], static_cast<unsigned long long>(row));
}

// The rows of a (b, kv head) as the forward numbers them; row → (t, g, offsets).
struct RowAt {
  bool live;
  int t, g;
  long long q_off, lse_at;
};

__device__ __forceinline__ RowAt row_at(long long r, long long r_end, int b, int kvh, int T, int Hq, int G, int hd) {
  RowAt x{};
  x.live = r < r_end;
  if (!x.live) return x;
  x.t = static_cast<int>(r / G);
  x.g = static_cast<int>(r % G);
  x.q_off = ((static_cast<long long>(b) * T + x.t) * Hq + kvh * G + x.g) * hd;
  x.lse_at = (static_cast<long long>(b) * Hq + kvh * G + x.g) * T + x.t;
  return x;
}

// dout·out of one row, by the whole warp (every lane gets it).
__device__ __forceinline__ float row_delta(const float* __restrict__ dout, const float* __restrict__ out, int hd) {
  const int lane = threadIdx.x % 32;
  float s = 0.0f;
  for (int d = lane; d < hd; d += 32) s = fmaf(dout[d], out[d], s);
  return warp_sum(s);
}

// ds = p·(dp − delta) for lane `lane`'s key of the current tile (0 when masked), and p.
struct Probs {
  float p, ds;
};

template <int kMaxHd>
__device__ __forceinline__ Probs row_probs(const float* qs, const float* dos, const float* ks, const float* vs, int hd,
                                            float scale, float lse, float delta, bool valid) {
  using C = Cfg<kMaxHd>;
  const int lane = threadIdx.x % 32;
  if (!valid) return Probs{0.0f, 0.0f};
  const float s = __fmul_rn(dot_row(qs, ks + lane * C::kPad, hd), scale);
  const float p = __expf(s - lse);
  const float dp = dot_row(dos, vs + lane * C::kPad, hd);
  return Probs{p, __fmul_rn(p, dp - delta)};
}

// dq: rows and blocks as in the forward; dq = scale·Σ_j ds_j k_j in key order.
template <int kMaxHd>
__global__ void __launch_bounds__(Cfg<kMaxHd>::kBwdWarps * 32)
dq_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
          const int32_t* __restrict__ lengths, int T, int Hq, int Hkv, int hd, float scale, int chunks,
          const float* __restrict__ out, const float* __restrict__ lse, const float* __restrict__ dout,
          float* __restrict__ dq, const unsigned long long* flags) {
  using C = Cfg<kMaxHd>;
  constexpr int W = C::kBwdWarps;
  __shared__ float ks[C::kKeys * C::kPad];
  __shared__ float vs[C::kKeys * C::kPad];
  __shared__ float qs[W][kMaxHd];
  __shared__ float dos[W][kMaxHd];
  __shared__ float dss[W][32];
  if (lengths_bad(flags)) return;
  const int G = Hq / Hkv;
  const int bk = blockIdx.x / chunks, chunk = chunks - 1 - static_cast<int>(blockIdx.x % chunks);
  const int b = bk / Hkv, kvh = bk % Hkv, len = lengths[b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long rows = static_cast<long long>(T) * G;
  const RowAt row = row_at(static_cast<long long>(chunk) * W + warp, rows, b, kvh, T, Hq, G, hd);
  const int n = row.live && row.t < len ? row.t + 1 : 0;
  const long long r_last = min(rows, static_cast<long long>(chunk + 1) * W) - 1;
  const int block_keys = min(static_cast<int>(r_last / G) + 1, len);
  const long long kv_off = (static_cast<long long>(b) * T * Hkv + kvh) * hd, stride = static_cast<long long>(Hkv) * hd;
  float delta = 0.0f, row_lse = 0.0f;
  if (n > 0) {
    for (int d = lane; d < hd; d += 32) {
      qs[warp][d] = q[row.q_off + d];
      dos[warp][d] = dout[row.q_off + d];
    }
    delta = row_delta(dout + row.q_off, out + row.q_off, hd);
    row_lse = lse[row.lse_at];
  }
  float acc[C::kDims];
#pragma unroll
  for (int i = 0; i < C::kDims; ++i) acc[i] = 0.0f;
  for (int j0 = 0; j0 < block_keys; j0 += C::kKeys) {
    __syncthreads();
    load_tiles<kMaxHd>(k + kv_off, v + kv_off, stride, j0, min(C::kKeys, block_keys - j0), hd, ks, vs);
    __syncthreads();
    if (j0 >= n) continue;
    const int keys = min(C::kKeys, n - j0);
    dss[warp][lane] = row_probs<kMaxHd>(qs[warp], dos[warp], ks, vs, hd, scale, row_lse, delta, lane < keys).ds;
    __syncwarp();
#pragma unroll
    for (int i = 0; i < C::kDims; ++i) {
      const int d = lane + 32 * i;
      if (d >= hd) break;
      for (int j = 0; j < keys; ++j) acc[i] = fmaf(dss[warp][j], ks[j * C::kPad + d], acc[i]);
    }
    __syncwarp();
  }
  if (!row.live) return;
#pragma unroll
  for (int i = 0; i < C::kDims; ++i) {
    const int d = lane + 32 * i;
    if (d >= hd) break;
    dq[row.q_off + d] = n > 0 ? __fmul_rn(acc[i], scale) : 0.0f;
  }
}

// dk, dv: a block owns keys [j0, j0 + kKeys) of one (b, kv head) and walks the rows that
// attend them (positions j0..len-1, every head of the group) kBwdWarps at a time: each
// warp computes one row's p and ds for the tile's keys, then warp w adds the chunk's
// rows, in order, into the keys w, w + kBwdWarps, ... it owns.
template <int kMaxHd>
__global__ void __launch_bounds__(Cfg<kMaxHd>::kBwdWarps * 32)
dkdv_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
            const int32_t* __restrict__ lengths, int T, int Hq, int Hkv, int hd, float scale, int tiles,
            const float* __restrict__ out, const float* __restrict__ lse, const float* __restrict__ dout,
            float* __restrict__ dk, float* __restrict__ dv, const unsigned long long* flags) {
  using C = Cfg<kMaxHd>;
  constexpr int W = C::kBwdWarps;
  __shared__ float ks[C::kKeys * C::kPad];
  __shared__ float vs[C::kKeys * C::kPad];
  __shared__ float qs[W][kMaxHd];
  __shared__ float dos[W][kMaxHd];
  __shared__ float ps[W][32];
  __shared__ float dss[W][32];
  if (lengths_bad(flags)) return;
  const int G = Hq / Hkv;
  const int bk = blockIdx.x / tiles, tile = blockIdx.x % tiles;  // early tiles have the most rows: first
  const int b = bk / Hkv, kvh = bk % Hkv, len = lengths[b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j0 = tile * C::kKeys;
  const long long kv_off = (static_cast<long long>(b) * T * Hkv + kvh) * hd, stride = static_cast<long long>(Hkv) * hd;
  float dka[C::kKeysPerWarp][C::kDims], dva[C::kKeysPerWarp][C::kDims];
#pragma unroll
  for (int m = 0; m < C::kKeysPerWarp; ++m)
#pragma unroll
    for (int i = 0; i < C::kDims; ++i) dka[m][i] = dva[m][i] = 0.0f;
  if (j0 < len) {  // block-uniform
    load_tiles<kMaxHd>(k + kv_off, v + kv_off, stride, j0, min(C::kKeys, len - j0), hd, ks, vs);
    const long long r_end = static_cast<long long>(len) * G;
    for (long long r0 = static_cast<long long>(j0) * G; r0 < r_end; r0 += W) {
      __syncthreads();  // the tiles are loaded / the previous chunk is consumed
      const RowAt row = row_at(r0 + warp, r_end, b, kvh, T, Hq, G, hd);
      if (row.live) {  // warp-uniform
        for (int d = lane; d < hd; d += 32) {
          qs[warp][d] = q[row.q_off + d];
          dos[warp][d] = dout[row.q_off + d];
        }
        const float delta = row_delta(dout + row.q_off, out + row.q_off, hd);
        __syncwarp();
        const Probs pd = row_probs<kMaxHd>(qs[warp], dos[warp], ks, vs, hd, scale, lse[row.lse_at], delta,
                                            lane < C::kKeys && j0 + lane <= row.t);
        ps[warp][lane] = pd.p;
        dss[warp][lane] = __fmul_rn(scale, pd.ds);
      }
      __syncthreads();
      const int live = static_cast<int>(min(static_cast<long long>(W), r_end - r0));
#pragma unroll
      for (int m = 0; m < C::kKeysPerWarp; ++m) {
        const int j = warp + W * m;
#pragma unroll
        for (int i = 0; i < C::kDims; ++i) {
          const int d = lane + 32 * i;
          if (d >= hd) break;
          for (int rr = 0; rr < live; ++rr) {
            dva[m][i] = fmaf(ps[rr][j], dos[rr][d], dva[m][i]);
            dka[m][i] = fmaf(dss[rr][j], qs[rr][d], dka[m][i]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < C::kKeysPerWarp; ++m) {
    const int key = j0 + warp + W * m;
    if (key >= T) continue;
    const long long at = kv_off + static_cast<long long>(key) * stride;
#pragma unroll
    for (int i = 0; i < C::kDims; ++i) {
      const int d = lane + 32 * i;
      if (d >= hd) break;
      dk[at + d] = dka[m][i];
      dv[at + d] = dva[m][i];
    }
  }
}

// ---- host side ----

void launch_length_check(const int32_t* lengths, int64_t batch, int64_t limit, unsigned long long* flags) {
  const unsigned threads = 256;
  const unsigned grid = blocks_for(batch, threads) < 1024 ? blocks_for(batch, threads) : 1024;
  check_lengths_kernel<<<grid, threads>>>(lengths, batch, limit, flags);
  check_launch("attention check_lengths_kernel");
}

// Throws the CPU twin's words for the first length out of range (after a sync).
void raise_lengths(const std::array<unsigned long long, kFlagCount>& f, const int32_t* lengths, int64_t limit,
                   const char* limit_name, int device) {
  if (f[kBadLength] == kNoProblem) return;
  const int32_t len = fetch_element(lengths, f[kBadLength], device);
  throw Error("lengths: length " + std::to_string(len) + " of row " + std::to_string(f[kBadLength]) + " is outside [0, " +
                  std::to_string(limit) + "] (" + limit_name + ")",
              Error::Range);
}

void check_sizes(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim, int64_t units) {
  if (head_dim > 256)
    throw Error("q: headDim " + std::to_string(head_dim) + " is above 256, the largest the CUDA attention supports",
                Error::Range);
  if (q_heads < 1 || kv_heads < 1 || q_heads % kv_heads != 0)
    throw Error("k: kv heads (" + std::to_string(kv_heads) + ") must be >= 1 and divide the query heads (" +
                    std::to_string(q_heads) + ")",
                Error::Range);
  if (seq > INT_MAX / 2 || batch * kv_heads * units > INT_MAX || batch * seq * q_heads > (1LL << 40))
    throw Error("q: too large for one CUDA attention call; split the batch", Error::Range);
}

template <int kMaxHd>
int forward_chunks(int64_t T, int64_t G) { return static_cast<int>((T * G + Cfg<kMaxHd>::kWarps - 1) / Cfg<kMaxHd>::kWarps); }

template <int kMaxHd>
void forward_typed(const AttentionForwardArgs& a, unsigned long long* flags) {
  const int chunks = forward_chunks<kMaxHd>(a.seq, a.q_heads / a.kv_heads);
  check_sizes(a.batch, a.seq, a.q_heads, a.kv_heads, a.head_dim, chunks);
  const unsigned grid = static_cast<unsigned>(a.batch * a.kv_heads * chunks);
  forward_kernel<kMaxHd><<<grid, Cfg<kMaxHd>::kWarps * 32>>>(
      a.q, a.k, a.v, a.lengths, static_cast<int>(a.seq), static_cast<int>(a.q_heads), static_cast<int>(a.kv_heads),
      static_cast<int>(a.head_dim), a.scale, chunks, a.out, a.lse, flags);
  check_launch("attention forward_kernel");
}

template <int kMaxHd>
void decode_typed(const AttentionDecodeArgs& a, unsigned long long* flags) {
  const int64_t G = a.q_heads / a.kv_heads;
  const int chunks = static_cast<int>((G + Cfg<kMaxHd>::kWarps - 1) / Cfg<kMaxHd>::kWarps);
  check_sizes(a.batch, a.max_seq, a.q_heads, a.kv_heads, a.head_dim, chunks);
  const unsigned grid = static_cast<unsigned>(a.batch * a.kv_heads * chunks);
  decode_kernel<kMaxHd><<<grid, Cfg<kMaxHd>::kWarps * 32>>>(
      a.q, a.k_cache, a.v_cache, a.lengths, static_cast<int>(a.max_seq), static_cast<int>(a.q_heads),
      static_cast<int>(a.kv_heads), static_cast<int>(a.head_dim), a.scale, chunks, a.out, flags);
  check_launch("attention decode_kernel");
}

template <int kMaxHd>
void backward_typed(const AttentionBackwardArgs& a, const unsigned long long* flags) {
  using C = Cfg<kMaxHd>;
  const int64_t G = a.q_heads / a.kv_heads;
  const int chunks = static_cast<int>((a.seq * G + C::kBwdWarps - 1) / C::kBwdWarps);
  const int tiles = static_cast<int>((a.seq + C::kKeys - 1) / C::kKeys);
  check_sizes(a.batch, a.seq, a.q_heads, a.kv_heads, a.head_dim, chunks > tiles ? chunks : tiles);
  const int T = static_cast<int>(a.seq), Hq = static_cast<int>(a.q_heads), Hkv = static_cast<int>(a.kv_heads),
            hd = static_cast<int>(a.head_dim);
  dq_kernel<kMaxHd><<<static_cast<unsigned>(a.batch * a.kv_heads * chunks), C::kBwdWarps * 32>>>(
      a.q, a.k, a.v, a.lengths, T, Hq, Hkv, hd, a.scale, chunks, a.out, a.lse, a.dout, a.dq, flags);
  check_launch("attention dq_kernel");
  dkdv_kernel<kMaxHd><<<static_cast<unsigned>(a.batch * a.kv_heads * tiles), C::kBwdWarps * 32>>>(
      a.q, a.k, a.v, a.lengths, T, Hq, Hkv, hd, a.scale, tiles, a.out, a.lse, a.dout, a.dk, a.dv, flags);
  check_launch("attention dkdv_kernel");
}

}  // namespace

int64_t attention_forward_cuda(const AttentionForwardArgs& a) {
  if (a.batch == 0) return -1;
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  launch_length_check(a.lengths, a.batch, a.seq, flags.words());
  if (a.seq > 0) {
    if (a.head_dim <= 64) forward_typed<64>(a, flags.words());
    else if (a.head_dim <= 128) forward_typed<128>(a, flags.words());
    else forward_typed<256>(a, flags.words());
  }
  cuda_synchronize(a.device);
  const auto f = flags.read();
  raise_lengths(f, a.lengths, a.seq, "the sequence length", a.device);
  return f[kNonFinite] == kNoProblem ? -1 : static_cast<int64_t>(f[kNonFinite]);
}

void attention_backward_cuda(const AttentionBackwardArgs& a) {
  if (a.batch == 0) return;
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  launch_length_check(a.lengths, a.batch, a.seq, flags.words());
  if (a.seq > 0) {
    if (a.head_dim <= 64) backward_typed<64>(a, flags.words());
    else if (a.head_dim <= 128) backward_typed<128>(a, flags.words());
    else backward_typed<256>(a, flags.words());
  }
  cuda_synchronize(a.device);
  raise_lengths(flags.read(), a.lengths, a.seq, "the sequence length", a.device);
}

int64_t attention_decode_cuda(const AttentionDecodeArgs& a) {
  if (a.batch == 0) return -1;
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  launch_length_check(a.lengths, a.batch, a.max_seq, flags.words());
  if (a.head_dim <= 64) decode_typed<64>(a, flags.words());
  else if (a.head_dim <= 128) decode_typed<128>(a, flags.words());
  else decode_typed<256>(a, flags.words());
  cuda_synchronize(a.device);
  const auto f = flags.read();
  raise_lengths(f, a.lengths, a.max_seq, "the cache size", a.device);
  return f[kNonFinite] == kNoProblem ? -1 : static_cast<int64_t>(f[kNonFinite]);
}

}  // namespace lgrpo
