// CUDA twin of linearTokenLogprobs (spec §1, fused-linear form); the CPU twin is
// native/ops/linear_token_logprobs.cc and the math is explained there. No cuBLAS: the
// logit tiles come from a plain shared-memory tiled GEMM (64 × 64 tile, 32-deep k
// slabs, 256 threads, 4 × 4 outputs per thread, fp32 accumulation from f32/bf16/f16
// loads), and no rows × vocab matrix is ever stored.
//
// Forward, two kernels:
//   partial  block (row tile, vocabulary slice): for each 64-wide vocabulary tile of its
//            slice, computes the 64 × 64 logit tile and folds it into per-thread online
//            (m, s = Σ e^(x−m), u = Σ e^(x−m)(x−m)); the 16 threads sharing a row merge
//            by shuffles in a fixed tree and write one partial per (row, slice). The
//            thread holding a row's target logit writes it (exactly one writer).
//   merge    one thread per row merges the slices in order (in double).
// Backward, atomics-free and deterministic, recomputing the logit tiles:
//   grad_weight  block per vocabulary tile, owns those rows of gradWeight and walks
//                every row tile in order: logits → dlogits (kept in shared memory) →
//                gradWeight[tile] (+)= dlogitsᵀ · hidden[row tile], 64 columns at a time.
//   grad_hidden  block (row tile, vocabulary slice), owns its rows of one partial
//                gradHidden (or of gradHidden itself when there is one slice): walks
//                its slice's vocabulary tiles in order, (+)= dlogits · weight[tile].
//   reduce       sums the slice partials in slice order.
// This costs one extra logit GEMM over a fused kernel with atomics (4 N·V·d FMAs
// instead of 3) and buys bit-reproducible gradients. Slice counts depend only on N and
// V (the forward's on V alone, so a row's results never depend on the other rows), so
// results do not depend on the GPU model either. linear_token_logits_cuda is the forward
// writing the scaled logits and the double lse instead: the LM head of the sampler.
//
// The recomputed logits are bit-identical to the forward's: same tile code, same k
// order, explicit fmaf chains and __fmul_rn for the 1/τ scaling (never contracted).
//
// Inputs the host cannot see are checked on the device: the first offending element of
// each kind goes into a flag word (atomicMin of its index), read back after the launch
// and thrown as a RangeError naming the argument, with the offending value.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "../native/ops/gemm.h"
#include "../native/ops/linear_token_logprobs.h"
#include "../native/ops/token_logprobs.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int BM = 64;   // rows of hidden per tile
constexpr int BN = 64;   // vocabulary rows per tile
constexpr int BK = 32;   // k slab staged in shared memory
constexpr int TM = 4, TN = 4;
constexpr int kThreads = 256;   // 16 × 16: tx = column group, ty = row group
constexpr int kPad = BM + 1;    // row stride of every shared tile (conflict-free transposed stores)
constexpr int64_t kTargetBlocks = 256;  // slices are chosen so a launch has about this many blocks

static_assert(BM == BN && BM == 16 * TM && BN == 16 * TN, "tile shape is tied to the 16 × 16 thread layout");
static_assert(2 * BK * kPad == BM * kPad, "the output-GEMM staging tile aliases the two k slabs");

enum Flag {
  kBadTarget, kBadHidden, kBadWeight, kBadLse, kBadGradLogprobs, kBadGradEntropy, kBadEntropy,
  kLseBelow,  // a row whose log p came out above kLinearLseSlack: its lse is too small
  kFlagCount
};

// flags[f]: the first offending element of kind f, per call.
__device__ __forceinline__ void flag(unsigned long long* flags, Flag f, long long index) {
  atomicMin(&flags[f], static_cast<unsigned long long>(index));
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// Stages rows [r0, r0 + 64) × columns [k0, k0 + BK) of a row-major [rows × d] matrix
// into S[k][r] as f32 (transposed, zero outside the matrix).
template <typename T>
__device__ __forceinline__ void stage_slab(const T* src, int64_t rows, int64_t d, int64_t r0, int64_t k0,
                                           float* S, Flag bad, unsigned long long* flags) {
#pragma unroll
  for (int it = 0; it < BM * BK / kThreads; ++it) {
    const int idx = threadIdx.x + it * kThreads;
    const int r = idx / BK, k = idx % BK;
    const int64_t gr = r0 + r, gk = k0 + k;
    float x = 0.0f;
    if (gr < rows && gk < d) {
      x = to_f32(src[gr * d + gk]);
      if (!isfinite(x)) flag(flags, bad, gr * d + gk);
    }
    S[k * kPad + r] = x;
  }
}

// Stages rows [r0, r0 + 64) × columns [c0, c0 + 64) of a row-major [rows × d] matrix
// into S[r][c] as f32 (zero outside): the B operand of the gradient GEMMs.
template <typename T>
__device__ __forceinline__ void stage_block(const T* src, int64_t rows, int64_t d, int64_t r0, int64_t c0, float* S) {
#pragma unroll
  for (int it = 0; it < BM * 64 / kThreads; ++it) {
    const int idx = threadIdx.x + it * kThreads;
    const int r = idx / 64, c = idx % 64;
    const int64_t gr = r0 + r, gc = c0 + c;
    S[r * kPad + c] = gr < rows && gc < d ? to_f32(src[gr * d + gc]) : 0.0f;
  }
}

// acc[i][j] = h_{r0 + 4ty + i} · w_{v0 + tx + 16j}, k in order 0..d−1 (unscaled).
// Ends with a barrier, so the slabs may be reused at once.
template <typename T>
__device__ __forceinline__ void logit_tile(const T* hidden, const T* weight, int64_t N, int64_t V, int64_t d,
                                           int64_t r0, int64_t v0, float* As, float* Bs, float (&acc)[TM][TN],
                                           unsigned long long* flags) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
  for (int64_t k0 = 0; k0 < d; k0 += BK) {
    stage_slab(hidden, N, d, r0, k0, As, kBadHidden, flags);
    stage_slab(weight, V, d, v0, k0, Bs, kBadWeight, flags);
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < BK; ++k) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[k * kPad + ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[k * kPad + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
}

struct Online {
  float m, s, u;
};

// Merges b into a; a side that saw nothing has m = −inf.
__device__ __forceinline__ Online merge(Online a, Online b) {
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  const float m = fmaxf(a.m, b.m);
  const float da = a.m - m, db = b.m - m;
  const float ea = expf(da), eb = expf(db);
  return Online{m, a.s * ea + b.s * eb, ea * (a.u + a.s * da) + eb * (b.u + b.s * db)};
}

__device__ __forceinline__ Online shuffle_xor(Online v, int mask) {
  return Online{__shfl_xor_sync(0xffffffffu, v.m, mask), __shfl_xor_sync(0xffffffffu, v.s, mask),
                __shfl_xor_sync(0xffffffffu, v.u, mask)};
}

// Tiles [t0, t1) of `tiles` split into `slices` contiguous ranges.
__device__ __forceinline__ int64_t slice_begin(int64_t tiles, int64_t slices, int64_t s) { return tiles * s / slices; }

// ---------------------------------------------------------------------------------
// Forward.

template <typename T, bool kEntropy>
__global__ void __launch_bounds__(kThreads)
forward_partial_kernel(const T* hidden, const T* weight, const int32_t* targets, int64_t N, int64_t d, int64_t V,
                       float inv_tau, int64_t slices, float* part_m, float* part_s, float* part_u, float* target_logit,
                       float* logits_out, unsigned long long* flags) {
  __shared__ float As[BK * kPad], Bs[BK * kPad];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * BM, slice = blockIdx.y;
  const int64_t vtiles = (V + BN - 1) / BN;
  const int64_t t0 = slice_begin(vtiles, slices, slice), t1 = slice_begin(vtiles, slices, slice + 1);

  Online st[TM];
  int32_t y[TM];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    st[i] = Online{-INFINITY, 0.0f, 0.0f};
    const int64_t row = r0 + ty * TM + i;
    y[i] = row < N && targets ? targets[row] : -1;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t v0 = t * BN;
    float acc[TM][TN];
    logit_tile(hidden, weight, N, V, d, r0, v0, As, Bs, acc, flags);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      float tmax = -INFINITY;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t v = v0 + tx + 16 * j;
        acc[i][j] = __fmul_rn(acc[i][j], inv_tau);
        if (v < V) {
          tmax = fmaxf(tmax, acc[i][j]);
          if (v == y[i]) target_logit[r0 + ty * TM + i] = acc[i][j];
          if (logits_out && r0 + ty * TM + i < N) logits_out[(r0 + ty * TM + i) * V + v] = acc[i][j];
        }
      }
      if (tmax == -INFINITY) continue;  // none of this thread's columns exist in this tile
      const float m = fmaxf(st[i].m, tmax);
      if (st[i].m != -INFINITY) {
        const float shift = st[i].m - m, r = expf(shift);
        if (kEntropy) st[i].u = r * (st[i].u + st[i].s * shift);
        st[i].s *= r;
      }
      st[i].m = m;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        if (v0 + tx + 16 * j >= V) continue;
        const float z = acc[i][j] - m, e = expf(z);
        st[i].s += e;
        if (kEntropy) st[i].u = fmaf(e, z, st[i].u);
      }
    }
  }
  // The 16 threads of a row group are lanes 16·(ty & 1) + tx of one warp.
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    Online o = st[i];
#pragma unroll
    for (int mask = 8; mask > 0; mask >>= 1) o = merge(o, shuffle_xor(o, mask));
    const int64_t row = r0 + ty * TM + i;
    if (tx == 0 && row < N) {
      part_m[slice * N + row] = o.m;
      part_s[slice * N + row] = o.s;
      if (kEntropy) part_u[slice * N + row] = o.u;
    }
  }
}

template <bool kEntropy>
__global__ void forward_merge_kernel(const int32_t* targets, int64_t N, int64_t V, int64_t slices,
                                     const float* part_m, const float* part_s, const float* part_u,
                                     const float* target_logit, float* logprobs, float* entropy, float* lse,
                                     float* lse_lo, double* lse_out, unsigned long long* flags) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  if (targets) {
    const int32_t y = targets[n];
    if (y < 0 || y >= V) flag(flags, kBadTarget, n);
  }
  double m = -INFINITY, s = 0.0, u = 0.0;
  for (int64_t sl = 0; sl < slices; ++sl) {
    const double mb = part_m[sl * N + n], sb = part_s[sl * N + n], ub = kEntropy ? part_u[sl * N + n] : 0.0;
    if (mb == -INFINITY) continue;
    if (m == -INFINITY) {
      m = mb, s = sb, u = ub;
      continue;
    }
    const double mn = fmax(m, mb), da = m - mn, db = mb - mn;
    const double ea = exp(da), eb = exp(db);
    u = ea * (u + s * da) + eb * (ub + sb * db);
    s = s * ea + sb * eb;
    m = mn;
  }
  const double log_s = log(s), l = m + log_s;
  if (lse_out) lse_out[n] = l;
  if (lse) lse[n] = static_cast<float>(l);
  if (lse && lse_lo) lse_lo[n] = static_cast<float>(l - static_cast<double>(lse[n]));
  if (logprobs) logprobs[n] = static_cast<float>(static_cast<double>(target_logit[n]) - l);
  if (kEntropy) entropy[n] = static_cast<float>(log_s - u / s);
}

// ---------------------------------------------------------------------------------
// Backward.

struct RowInputs {
  const int32_t* targets;
  const float *lse, *grad_logprobs, *grad_entropy, *entropy;
  const float* lse_shift;  // δ per row, or nullptr (all 0); see the CPU twin
};

// This thread's rows 4ty + i of row tile r0: what dlogits needs. Rows past N get g = e = 0,
// so their dlogits are 0.
template <bool kEntropy>
struct RowInfo {
  float lse[TM], shift[TM], g[TM], e[TM], h[TM];
  int32_t y[TM];
  bool valid[TM];

  __device__ __forceinline__ void load(const RowInputs& in, int64_t N, int64_t r0, bool check, int64_t V,
                                       unsigned long long* flags) {
    const int ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t row = r0 + ty * TM + i;
      valid[i] = row < N;
      lse[i] = valid[i] ? in.lse[row] : 0.0f;
      shift[i] = valid[i] && in.lse_shift ? in.lse_shift[row] : 0.0f;
      g[i] = valid[i] ? in.grad_logprobs[row] : 0.0f;
      e[i] = valid[i] && kEntropy ? in.grad_entropy[row] : 0.0f;
      h[i] = valid[i] && kEntropy ? in.entropy[row] : 0.0f;
      y[i] = valid[i] ? in.targets[row] : -1;
      if (check && valid[i]) {
        if (y[i] < 0 || y[i] >= V) flag(flags, kBadTarget, row);
        if (!isfinite(lse[i])) flag(flags, kBadLse, row);
        if (!isfinite(g[i])) flag(flags, kBadGradLogprobs, row);
        if (kEntropy && !isfinite(e[i])) flag(flags, kBadGradEntropy, row);
        if (kEntropy && !isfinite(h[i])) flag(flags, kBadEntropy, row);
      }
    }
  }
};

// Logit tile → dlogits, written to Ds[row][vocab] (zero outside the problem), with
// d = (x − lse) − δ = log p:
//   ∂L/∂x_v = g(1[v=y] − p_v) − e p_v (d_v + H),  then / τ   (x_v − Σ p x = d_v + H).
// With `check`, a d above kLinearLseSlack flags its row (the lse is too small).
template <bool kEntropy>
__device__ __forceinline__ void dlogits_to_shared(float (&acc)[TM][TN], const RowInfo<kEntropy>& ri, int64_t v0,
                                                  int64_t V, float inv_tau, float* Ds, int64_t r0, bool check,
                                                  unsigned long long* flags) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t v = v0 + tx + 16 * j;
      float grad = 0.0f;
      if (ri.valid[i] && v < V) {
        const float x = __fmul_rn(acc[i][j], inv_tau);
        const float dl = (x - ri.lse[i]) - ri.shift[i];
        if (check && dl > kLinearLseSlack) flag(flags, kLseBelow, r0 + ty * TM + i);
        const float p = expf(dl);
        float coef = ri.g[i];
        if (kEntropy) coef = fmaf(ri.e[i], dl + ri.h[i], coef);
        grad = __fmul_rn((v == ri.y[i] ? ri.g[i] : 0.0f) - p * coef, inv_tau);
      }
      Ds[(ty * TM + i) * kPad + tx + 16 * j] = grad;
    }
}

template <typename T, bool kEntropy>
__global__ void __launch_bounds__(kThreads)
grad_weight_kernel(const T* hidden, const T* weight, RowInputs in, int64_t N, int64_t d, int64_t V, float inv_tau,
                   float* grad_weight, unsigned long long* flags) {
  __shared__ float smem[2 * BK * kPad + BM * kPad];
  float *As = smem, *Bs = smem + BK * kPad, *Xs = smem, *Ds = smem + 2 * BK * kPad;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t v0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t rtiles = (N + BM - 1) / BM;
  for (int64_t rt = 0; rt < rtiles; ++rt) {
    const int64_t r0 = rt * BM;
    RowInfo<kEntropy> ri;
    ri.load(in, N, r0, false, V, flags);
    float acc[TM][TN];
    __syncthreads();  // the previous tile's readers of Ds and Xs are done
    logit_tile(hidden, weight, N, V, d, r0, v0, As, Bs, acc, flags);
    dlogits_to_shared(acc, ri, v0, V, inv_tau, Ds, r0, false, flags);
    // gradWeight[v0 + 4ty + i][c0 + tx + 16j] (+)= Σ_r D[r][4ty + i] · h[r0 + r][c0 + tx + 16j]
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
      __syncthreads();  // Ds complete; Xs free
      stage_block(hidden, N, d, r0, c0, Xs);
      __syncthreads();
      float out[TM][TN] = {};
#pragma unroll 8
      for (int r = 0; r < BM; ++r) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = Ds[r * kPad + ty * TM + i];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = Xs[r * kPad + tx + 16 * j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) out[i][j] = fmaf(a[i], b[j], out[i][j]);
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const int64_t v = v0 + ty * TM + i, c = c0 + tx + 16 * j;
          if (v < V && c < d) {
            float* dst = grad_weight + v * d + c;
            *dst = rt == 0 ? out[i][j] : *dst + out[i][j];
          }
        }
    }
  }
}

template <typename T, bool kEntropy>
__global__ void __launch_bounds__(kThreads)
grad_hidden_kernel(const T* hidden, const T* weight, RowInputs in, int64_t N, int64_t d, int64_t V, float inv_tau,
                   int64_t slices, float* out_base, unsigned long long* flags) {
  __shared__ float smem[2 * BK * kPad + BM * kPad];
  float *As = smem, *Bs = smem + BK * kPad, *Xs = smem, *Ds = smem + 2 * BK * kPad;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * BM, slice = blockIdx.y;
  const int64_t vtiles = (V + BN - 1) / BN;
  const int64_t t0 = slice_begin(vtiles, slices, slice), t1 = slice_begin(vtiles, slices, slice + 1);
  float* out_rows = out_base + slice * N * d;
  RowInfo<kEntropy> ri;
  ri.load(in, N, r0, slice == 0 && tx == 0, V, flags);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t v0 = t * BN;
    float acc[TM][TN];
    __syncthreads();
    logit_tile(hidden, weight, N, V, d, r0, v0, As, Bs, acc, flags);
    dlogits_to_shared(acc, ri, v0, V, inv_tau, Ds, r0, true, flags);
    // gradHidden[r0 + 4ty + i][c0 + tx + 16j] (+)= Σ_v D[4ty + i][v] · w[v0 + v][c0 + tx + 16j]
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
      __syncthreads();
      stage_block(weight, V, d, v0, c0, Xs);
      __syncthreads();
      float out[TM][TN] = {};
#pragma unroll 8
      for (int v = 0; v < BN; ++v) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = Ds[(ty * TM + i) * kPad + v];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = Xs[v * kPad + tx + 16 * j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) out[i][j] = fmaf(a[i], b[j], out[i][j]);
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const int64_t row = r0 + ty * TM + i, c = c0 + tx + 16 * j;
          if (row < N && c < d) {
            float* dst = out_rows + row * d + c;
            *dst = t == t0 ? out[i][j] : *dst + out[i][j];
          }
        }
    }
  }
}

__global__ void reduce_slices_kernel(const float* partial, int64_t count, int64_t slices, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  float sum = partial[i];
  for (int64_t s = 1; s < slices; ++s) sum += partial[s * count + i];
  out[i] = sum;
}

// ---------------------------------------------------------------------------------
// Host side.

// The backward's gradHidden partials cost slices · N · d floats: at most 2^25 (128 MB),
// trading blocks for memory. LGRPO_LINEAR_PARTIAL_FLOATS lowers the budget so that tests
// reach the cap at sizes an emulated device runs in seconds.
int64_t partial_float_budget() {
  const char* env = std::getenv("LGRPO_LINEAR_PARTIAL_FLOATS");
  const long long v = env ? std::atoll(env) : 0;
  return v > 0 && v < (int64_t{1} << 25) ? v : int64_t{1} << 25;
}

// The forward's slices depend on the vocabulary only, never on the number of rows, so a
// row's log-prob, entropy and lse do not depend on the other rows of the call (batch
// invariance): a rollout's log-probs (linear_token_logits_cuda, a handful of rows) are
// then bit for bit those sequence_logprobs computes over whole sequences.
constexpr int64_t kForwardSlices = 128;
int64_t forward_slices(int64_t vtiles) { return std::max<int64_t>(1, std::min(vtiles, kForwardSlices)); }

// Slices of the vocabulary per row tile so that a launch has about kTargetBlocks blocks.
int64_t slices_for(int64_t rtiles, int64_t vtiles) {
  int64_t s = (kTargetBlocks + rtiles - 1) / rtiles;
  if (s > vtiles) s = vtiles;
  return s < 1 ? 1 : s;
}

struct FlagSources {
  const int32_t* targets;
  int64_t vocab, dim;
  const void* hidden;
  const void* weight;
  DType dtype;
  const float *lse, *grad_logprobs, *grad_entropy, *entropy;
};

// Reads the flags back (after cuda_synchronize) and throws for the first kind raised.
void report_flags(const DeviceFlags<kFlagCount>& flags, const FlagSources& src, int dev) {
  const auto f = flags.read();
  if (f[kBadTarget] != kNoProblem) {
    int32_t y = 0;
    cuda_copy_to_host(&y, src.targets + f[kBadTarget], sizeof(y), dev);
    throw Error("targets: target " + std::to_string(y) + " at index " + std::to_string(f[kBadTarget]) +
                    " is outside [0, " + std::to_string(src.vocab) + ")",
                Error::Range);
  }
  const struct { Flag flag; const char* name; const void* data; DType t; bool matrix; } checks[] = {
      // The per-row inputs before the matrices, as the CPU twin checks them.
      {kBadLse, "lse", src.lse, DType::F32, false},
      {kBadGradLogprobs, "gradLogprobs", src.grad_logprobs, DType::F32, false},
      {kBadGradEntropy, "gradEntropy", src.grad_entropy, DType::F32, false},
      {kBadEntropy, "entropy", src.entropy, DType::F32, false},
      {kBadHidden, "hidden", src.hidden, src.dtype, true},
      {kBadWeight, "weight", src.weight, src.dtype, true},
  };
  for (const auto& c : checks) {
    const unsigned long long i = f[c.flag];
    if (i == kNoProblem) continue;
    const std::string where = c.matrix ? "[" + std::to_string(i / src.dim) + ", " + std::to_string(i % src.dim) + "]"
                                       : std::to_string(i);
    uint32_t raw = 0;
    cuda_copy_to_host(&raw, static_cast<const char*>(c.data) + i * dtype_size(c.t), dtype_size(c.t), dev);
    throw not_finite(c.name, where, load_float(&raw, c.t, 0));
  }
  if (f[kLseBelow] != kNoProblem) throw lse_below_error(static_cast<int64_t>(f[kLseBelow]));
}

// logits_out [N, V] and lse_out [N] (device, double) are optional: linear_token_logits_cuda.
template <typename T>
void forward_typed(const LinearTokenLogprobsForwardArgs& a, int dev, unsigned long long* flags,
                   float* logits_out = nullptr, double* lse_out = nullptr) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  const int64_t rtiles = (N + BM - 1) / BM, vtiles = (V + BN - 1) / BN;
  const int64_t slices = forward_slices(vtiles);
  const bool entropy = a.entropy != nullptr;
  DeviceBuffer scratch(sizeof(float) * static_cast<size_t>((entropy ? 3 : 2) * slices * N + N), dev);
  float* part_m = scratch.as<float>();
  float* part_s = part_m + slices * N;
  float* target_logit = part_s + slices * N;
  float* part_u = entropy ? target_logit + N : nullptr;
  const T* hidden = static_cast<const T*>(a.hidden);
  const T* weight = static_cast<const T*>(a.weight);
  const float inv_tau = 1.0f / a.temperature;
  const dim3 grid(static_cast<unsigned>(rtiles), static_cast<unsigned>(slices));
  if (entropy)
    forward_partial_kernel<T, true><<<grid, kThreads>>>(hidden, weight, a.targets, N, d, V, inv_tau, slices, part_m,
                                                        part_s, part_u, target_logit, logits_out, flags);
  else
    forward_partial_kernel<T, false><<<grid, kThreads>>>(hidden, weight, a.targets, N, d, V, inv_tau, slices, part_m,
                                                         part_s, part_u, target_logit, logits_out, flags);
  check_launch("linear_token_logprobs forward_partial_kernel");
  const unsigned blocks = blocks_for(N, 256);
  if (entropy)
    forward_merge_kernel<true><<<blocks, 256>>>(a.targets, N, V, slices, part_m, part_s, part_u, target_logit,
                                                a.logprobs, a.entropy, a.lse, a.lse_lo, lse_out, flags);
  else
    forward_merge_kernel<false><<<blocks, 256>>>(a.targets, N, V, slices, part_m, part_s, part_u, target_logit,
                                                 a.logprobs, a.entropy, a.lse, a.lse_lo, lse_out, flags);
  check_launch("linear_token_logprobs forward_merge_kernel");
  cuda_synchronize(dev);
}

template <typename T>
void backward_typed(const LinearTokenLogprobsBackwardArgs& a, int dev, unsigned long long* flags) {
  const int64_t N = a.rows, d = a.dim, V = a.vocab;
  const int64_t rtiles = (N + BM - 1) / BM, vtiles = (V + BN - 1) / BN;
  const int64_t cap = std::max<int64_t>(1, partial_float_budget() / std::max<int64_t>(1, N * d));
  const int64_t slices = std::min(slices_for(rtiles, vtiles), cap);
  const bool entropy = a.grad_entropy != nullptr;
  const T* hidden = static_cast<const T*>(a.hidden);
  const T* weight = static_cast<const T*>(a.weight);
  const float inv_tau = 1.0f / a.temperature;
  const RowInputs in{a.targets, a.lse, a.grad_logprobs, a.grad_entropy, a.entropy, a.lse_shift};

  if (entropy)
    grad_weight_kernel<T, true><<<static_cast<unsigned>(vtiles), kThreads>>>(hidden, weight, in, N, d, V, inv_tau,
                                                                             a.grad_weight, flags);
  else
    grad_weight_kernel<T, false><<<static_cast<unsigned>(vtiles), kThreads>>>(hidden, weight, in, N, d, V, inv_tau,
                                                                              a.grad_weight, flags);
  check_launch("linear_token_logprobs grad_weight_kernel");

  // One slice writes gradHidden directly; several write partials summed in order.
  DeviceBuffer partial(slices > 1 ? sizeof(float) * static_cast<size_t>(slices * N * d) : 0, dev);
  float* out = slices > 1 ? partial.as<float>() : a.grad_hidden;
  const dim3 grid(static_cast<unsigned>(rtiles), static_cast<unsigned>(slices));
  if (entropy)
    grad_hidden_kernel<T, true><<<grid, kThreads>>>(hidden, weight, in, N, d, V, inv_tau, slices, out, flags);
  else
    grad_hidden_kernel<T, false><<<grid, kThreads>>>(hidden, weight, in, N, d, V, inv_tau, slices, out, flags);
  check_launch("linear_token_logprobs grad_hidden_kernel");
  if (slices > 1 && N * d > 0) {
    reduce_slices_kernel<<<blocks_for(N * d, 256), 256>>>(partial.as<float>(), N * d, slices, a.grad_hidden);
    check_launch("linear_token_logprobs reduce_slices_kernel");
  }
  cuda_synchronize(dev);
}

// ---------------------------------------------------------------------------------
// The LM head through the device GEMM, chunk by chunk of rows
//
// Where cuBLASLt runs the GEMMs, the LM head is faster as chunks of C rows through it
// than as the fused tiles above (H200, one run: cuBLASLt's f32 GEMM 50.8 TFLOP/s, these
// kernels 12.4 forward and 6.4 backward; docs/bench/gpu-h200.md). Per chunk: its logits
// [C, V] (one GEMM), the token log-prob kernels on them (kernels/token_logprobs.cu:
// forward, or the gradient of the logits written over them), then gradHidden = G·W
// and gradWeight += Gᵀ·H (two GEMMs). C·V floats stay under kChunkBytes, so the N × V
// logits are still never held. Liger-Kernel's fused-linear losses chunk the same way.
//
// The fused kernels stay the path of the own GEMM (the emulator's too): their row
// results do not depend on the other rows, which cuBLASLt's (kernel chosen by shape) do
// not promise. They also give every error its words, so the chunked path reruns them
// whenever it throws, and they serve what the chunks do not: bf16/f16 inputs, the
// forward's lse_lo and the backward's lse_shift (rows with |lse| ≥ kLinearLseRecheck).
// LGRPO_CUDA_LM_HEAD=fused forces the fused kernels, =chunked the chunks, =chunked:R
// chunks of R rows (tests run the chunked path on the emulated device this way, several
// chunks at small sizes).
constexpr int64_t kChunkBytes = int64_t{1} << 30;
constexpr int64_t kChunkMinRows = 256;  // below this the fused kernels' launches are few anyway

// 0: the fused kernels; else the rows per chunk.
int64_t chunk_rows(DType dtype, int64_t rows, int64_t vocab, bool fused_only) {
  if (dtype != DType::F32 || fused_only || vocab == 0) return 0;
  const int64_t fit = std::max<int64_t>(1, std::min(rows, kChunkBytes / (static_cast<int64_t>(sizeof(float)) * vocab)));
  const char* forced = std::getenv("LGRPO_CUDA_LM_HEAD");
  if (forced && std::strcmp(forced, "fused") == 0) return 0;
  if (forced && std::strcmp(forced, "chunked") == 0) return fit;
  if (forced && std::strncmp(forced, "chunked:", 8) == 0) return std::max<int64_t>(1, std::min<int64_t>(fit, std::atoll(forced + 8)));
  return rows >= kChunkMinRows && cuda_matmul_is_cublaslt() ? fit : 0;
}

// logits[c, V] = hidden[r0 : r0 + c] · weightᵀ, for the forward's and the backward's args alike
template <class Args>
void chunk_logits(const Args& a, int64_t r0, int64_t c, float* logits) {
  GemmArgs g;
  g.trans_b = true;
  g.m = c, g.n = a.vocab, g.k = a.dim;
  g.a = static_cast<const float*>(a.hidden) + r0 * a.dim, g.lda = a.dim;
  g.b = static_cast<const float*>(a.weight), g.ldb = a.dim;
  g.c = logits, g.ldc = a.vocab;
  g.device = a.device;
  gemm_f32_cuda(g);
}

void forward_chunked(const LinearTokenLogprobsForwardArgs& a, int64_t C) {
  DeviceBuffer logits(sizeof(float) * static_cast<size_t>(C * a.vocab), a.device);
  for (int64_t r0 = 0; r0 < a.rows; r0 += C) {
    const int64_t c = std::min(C, a.rows - r0);
    chunk_logits(a, r0, c, logits.as<float>());
    TokenLogprobsForwardArgs t{};
    t.logits = logits.as(), t.dtype = DType::F32, t.rows = c, t.vocab = a.vocab;
    t.targets = a.targets + r0, t.temperature = a.temperature;
    t.logprobs = a.logprobs + r0, t.entropy = a.entropy ? a.entropy + r0 : nullptr, t.lse = a.lse + r0;
    t.device = a.device;
    token_logprobs_forward_cuda(t);
  }
}

void backward_chunked(const LinearTokenLogprobsBackwardArgs& a, int64_t C) {
  const int64_t V = a.vocab, d = a.dim;
  DeviceBuffer logits(sizeof(float) * static_cast<size_t>(C * V), a.device);
  float* G = logits.as<float>();
  for (int64_t r0 = 0; r0 < a.rows; r0 += C) {
    const int64_t c = std::min(C, a.rows - r0);
    chunk_logits(a, r0, c, G);
    TokenLogprobsBackwardArgs t{};
    t.logits = G, t.dtype = DType::F32, t.rows = c, t.vocab = V, t.targets = a.targets + r0;
    t.lse = a.lse + r0, t.grad_logprobs = a.grad_logprobs + r0;
    t.grad_entropy = a.grad_entropy ? a.grad_entropy + r0 : nullptr;
    t.entropy = a.entropy ? a.entropy + r0 : nullptr;
    t.temperature = a.temperature, t.grad_logits = G, t.device = a.device;
    token_logprobs_backward_cuda(t);  // G = ∂L/∂logits, 1/τ included, over the logits
    const float* h = static_cast<const float*>(a.hidden) + r0 * d;
    GemmArgs gh;  // gradHidden[r0 : r0 + c] = G · W
    gh.m = c, gh.n = d, gh.k = V;
    gh.a = G, gh.lda = V, gh.b = static_cast<const float*>(a.weight), gh.ldb = d;
    gh.c = a.grad_hidden + r0 * d, gh.ldc = d, gh.device = a.device;
    gemm_f32_cuda(gh);
    GemmArgs gw;  // gradWeight (+)= Gᵀ · hidden[r0 : r0 + c]
    gw.trans_a = true;
    gw.m = V, gw.n = d, gw.k = c;
    gw.a = G, gw.lda = V, gw.b = h, gw.ldb = d;
    gw.beta = r0 == 0 ? 0.0f : 1.0f;
    gw.c = a.grad_weight, gw.ldc = d, gw.device = a.device;
    gemm_f32_cuda(gw);
  }
  cuda_synchronize(a.device);
}

}  // namespace

void linear_token_logprobs_forward_cuda(const LinearTokenLogprobsForwardArgs& a) {
  if (a.rows == 0) return;
  if (a.vocab == 0) throw Error("targets: the vocabulary is empty (weight has 0 rows)", Error::Range);
  const int dev = a.device;
  DeviceGuard guard(dev);
  if (const int64_t C = chunk_rows(a.dtype, a.rows, a.vocab, a.lse_lo != nullptr)) {
    try {
      forward_chunked(a, C);
      return;
    } catch (const Error&) {
      // the fused kernels below find the same problem and name it in their words
    }
  }
  DeviceFlags<kFlagCount> flags(dev);
  switch (a.dtype) {
    case DType::F32: forward_typed<float>(a, dev, flags.words()); break;
    case DType::BF16: forward_typed<__nv_bfloat16>(a, dev, flags.words()); break;
    case DType::F16: forward_typed<__half>(a, dev, flags.words()); break;
    default: throw Error("hidden: expected dtype f32, bf16 or f16", Error::Type);
  }
  report_flags(flags, FlagSources{a.targets, a.vocab, a.dim, a.hidden, a.weight, a.dtype, nullptr, nullptr, nullptr, nullptr},
               dev);
}

void linear_token_logits_cuda(const LinearTokenLogprobsForwardArgs& a, float* logits, double* host_lse) {
  if (a.rows == 0) return;
  if (a.vocab == 0) throw Error("weight: the vocabulary is empty (weight has 0 rows)", Error::Range);
  if (a.dtype != DType::F32) throw Error("hidden: linear_token_logits expects f32", Error::Type);
  const int dev = a.device;
  DeviceGuard guard(dev);
  DeviceFlags<kFlagCount> flags(dev);
  DeviceBuffer lse(sizeof(double) * static_cast<size_t>(a.rows), dev);
  LinearTokenLogprobsForwardArgs b = a;
  b.targets = nullptr;
  b.logprobs = nullptr;
  b.entropy = nullptr;
  b.lse = nullptr;
  b.lse_lo = nullptr;
  forward_typed<float>(b, dev, flags.words(), logits, lse.as<double>());
  report_flags(flags, FlagSources{nullptr, a.vocab, a.dim, a.hidden, a.weight, a.dtype, nullptr, nullptr, nullptr, nullptr},
               dev);
  cuda_copy_to_host(host_lse, lse.as(), sizeof(double) * static_cast<size_t>(a.rows), dev);
}

void linear_token_logprobs_backward_cuda(const LinearTokenLogprobsBackwardArgs& a) {
  const int dev = a.device;
  DeviceGuard guard(dev);
  if (a.rows == 0 || a.vocab == 0) {  // nothing flows: both gradients are zero
    if (a.rows > 0) throw Error("targets: the vocabulary is empty (weight has 0 rows)", Error::Range);
    if (a.vocab * a.dim > 0) cuda_memset_zero(a.grad_weight, sizeof(float) * static_cast<size_t>(a.vocab * a.dim), dev);
    return;
  }
  if (const int64_t C = chunk_rows(a.dtype, a.rows, a.vocab, a.lse_shift != nullptr)) {
    try {
      backward_chunked(a, C);
      return;
    } catch (const Error&) {
      // as in the forward: the fused kernels name the problem
    }
  }
  DeviceFlags<kFlagCount> flags(dev);
  switch (a.dtype) {
    case DType::F32: backward_typed<float>(a, dev, flags.words()); break;
    case DType::BF16: backward_typed<__nv_bfloat16>(a, dev, flags.words()); break;
    case DType::F16: backward_typed<__half>(a, dev, flags.words()); break;
    default: throw Error("hidden: expected dtype f32, bf16 or f16", Error::Type);
  }
  report_flags(flags, FlagSources{a.targets, a.vocab, a.dim, a.hidden, a.weight, a.dtype, a.lse, a.grad_logprobs,
                                  a.grad_entropy, a.entropy},
               dev);
}

}  // namespace lgrpo
