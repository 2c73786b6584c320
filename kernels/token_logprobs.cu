// CUDA twin of token_logprobs (spec §1); the CPU twin is native/ops/token_logprobs.cc
// and the math is explained there. One block per row:
//
//   forward:  each thread folds its strided share of the row into an online
//             (m, s = Σ e^(x−m), t = Σ e^(x−m)(x−m)); warps merge by shuffles, then
//             warp 0 merges the warps' results; thread 0 writes lse, logp and H.
//   backward: each thread writes (g·1[v=y] − p_v (g + e (d_v + H))) / τ for its share,
//             d_v = x_v/τ − lse. Reads and writes the same element, so it may run in
//             place.
//
// x/τ is always fl(x·τ⁻¹) via __fmul_rn, which nvcc never contracts into an FMA: the
// softmax is that of the rounded scaled logits, consistently in both kernels (the CPU
// twin explains why a one-hot row needs this).
//
// fp32 accumulation for every storage dtype. Inputs the host cannot see (targets,
// logits, the per-row vectors) are checked on the device: the first offending row of
// each kind goes into a flag word, read back after the launch and thrown as a
// RangeError naming the argument.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <string>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "../native/ops/token_logprobs.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
// |lse| from which the backward measures what its f32 rounding lost (the CPU twin's rule).
constexpr float kLseRecheck = 64.0f;
// A log-probability above this means the lse came from other logits or another
// temperature (the CPU twin's rule): an error rather than gradients that blow up.
constexpr float kLseSlack = 1e-3f;

enum Flag {
  kBadTarget, kBadLogits, kOverflow, kBadLse, kBadGradLogprobs, kBadGradEntropy, kBadEntropy, kLseBelow,
  kGradOverflow,  // a gradient from finite logits beyond the output dtype's range
  kFlagCount
};
constexpr unsigned long long kNoRow = kNoProblem;

// flags[f]: the first offending row of kind f (kNoRow when none), per call.
__device__ __forceinline__ void flag_row(unsigned long long* flags, Flag f, long long row) {
  atomicMin(&flags[f], static_cast<unsigned long long>(row));
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ void from_f32(float v, float* p) { *p = v; }
__device__ __forceinline__ void from_f32(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void from_f32(float v, __half* p) { *p = __float2half_rn(v); }

struct Online {
  float m, s, t;
};

// Merges b into a; an empty side has m = −inf.
__device__ __forceinline__ Online merge(Online a, Online b) {
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  const float m = fmaxf(a.m, b.m);
  const float da = a.m - m, db = b.m - m;
  const float ea = __expf(da), eb = __expf(db);
  return Online{m, a.s * ea + b.s * eb, ea * (a.t + da * a.s) + eb * (b.t + db * b.s)};
}

template <bool kEntropy>
__device__ __forceinline__ void push(Online& st, float x) {
  if (x == -INFINITY) return;  // a finite logit that x/τ overflows: p = 0 (and −∞ − −∞ would be NaN)
  if (x > st.m) {
    const float d = st.m - x, e = __expf(d);  // e = 0 while st is empty (m = −inf)
    if (kEntropy) st.t = st.s == 0.0f ? 0.0f : e * (st.t + d * st.s);
    st.s = st.s * e + 1.0f;
    st.m = x;
  } else {
    const float d = x - st.m, e = __expf(d);
    st.s += e;
    if (kEntropy) st.t += e * d;
  }
}

__device__ __forceinline__ Online shuffle_xor(Online v, int mask) {
  return Online{__shfl_xor_sync(0xffffffffu, v.m, mask), __shfl_xor_sync(0xffffffffu, v.s, mask),
                __shfl_xor_sync(0xffffffffu, v.t, mask)};
}

__device__ __forceinline__ Online warp_merge(Online v) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v = merge(v, shuffle_xor(v, mask));
  return v;
}

template <typename T, bool kEntropy>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ logits, long long vocab, const int32_t* __restrict__ targets, float inv_tau,
               float* __restrict__ logprobs, float* __restrict__ entropy, float* __restrict__ lse,
               unsigned long long* flags) {
  const long long row = blockIdx.x;
  const int y = targets[row];
  if (y < 0 || y >= vocab) {  // uniform across the block, so returning here is safe
    if (threadIdx.x == 0) {
      flag_row(flags, kBadTarget, row);
      logprobs[row] = lse[row] = NAN;
      if (kEntropy) entropy[row] = NAN;
    }
    return;
  }
  const T* x = logits + row * vocab;
  Online st{-INFINITY, 0.0f, 0.0f};
  bool bad = false;
  const long long stride = blockDim.x;
  long long i = threadIdx.x;
  // Four loads in flight per thread before any arithmetic depends on them.
  for (; i + 3 * stride < vocab; i += 4 * stride) {
    const float r0 = to_f32(x[i]), r1 = to_f32(x[i + stride]), r2 = to_f32(x[i + 2 * stride]),
                r3 = to_f32(x[i + 3 * stride]);
    bad |= !(isfinite(r0) && isfinite(r1) && isfinite(r2) && isfinite(r3));
    push<kEntropy>(st, __fmul_rn(r0, inv_tau));
    push<kEntropy>(st, __fmul_rn(r1, inv_tau));
    push<kEntropy>(st, __fmul_rn(r2, inv_tau));
    push<kEntropy>(st, __fmul_rn(r3, inv_tau));
  }
  for (; i < vocab; i += stride) {
    const float r = to_f32(x[i]);
    bad |= !isfinite(r);
    push<kEntropy>(st, __fmul_rn(r, inv_tau));
  }

  __shared__ Online warp_results[kWarps];
  st = warp_merge(st);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_results[warp] = st;
  bad = __syncthreads_or(bad);
  if (warp != 0) return;
  st = lane < kWarps ? warp_results[lane] : Online{-INFINITY, 0.0f, 0.0f};
  st = warp_merge(st);
  if (lane != 0) return;

  if (bad) flag_row(flags, kBadLogits, row);
  if (!isfinite(st.m)) flag_row(flags, kOverflow, row);
  const float log_s = logf(st.s);
  lse[row] = st.m + log_s;
  // (x_y − m) − log s keeps logp accurate when |lse| is large (see the CPU twin).
  logprobs[row] = (__fmul_rn(to_f32(x[y]), inv_tau) - st.m) - log_s;
  if (kEntropy) entropy[row] = fmaxf(0.0f, log_s - st.t / st.s);
}

// No __restrict__ on logits / grad: they alias when the caller asks for in place.
template <typename T>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const T* logits, T* grad, long long vocab, const int32_t* __restrict__ targets,
                const float* __restrict__ lse, const float* __restrict__ grad_logprobs,
                const float* __restrict__ grad_entropy, const float* __restrict__ entropy, float inv_tau,
                unsigned long long* flags, float* row_top) {
  const long long row = blockIdx.x;
  const int y = targets[row];
  if (y < 0 || y >= vocab) {
    if (threadIdx.x == 0) flag_row(flags, kBadTarget, row);
    return;
  }
  const float g = grad_logprobs[row];
  const float ge = grad_entropy ? grad_entropy[row] : 0.0f;
  const float H = grad_entropy ? entropy[row] : 0.0f;
  const float L = lse[row];
  if (threadIdx.x == 0) {
    if (!isfinite(L)) flag_row(flags, kBadLse, row);
    if (!isfinite(g)) flag_row(flags, kBadGradLogprobs, row);
    if (!isfinite(ge)) flag_row(flags, kBadGradEntropy, row);
    if (!isfinite(H)) flag_row(flags, kBadEntropy, row);
  }
  const float c = g + ge * H;
  const T* x = logits + row * vocab;
  T* out = grad + row * vocab;
  // δ (as in the CPU twin): what the f32 rounding of a large |lse| swallowed of log Σ,
  // measured over the row so that p = e^(x/τ − lse − δ) sums to 1. The branch is the
  // same for the whole block (one row), so its barriers are safe.
  float shift = 0.0f;
  if (fabsf(L) >= kLseRecheck) {
    float part = 0.0f;
    for (long long i = threadIdx.x; i < vocab; i += blockDim.x) part += __expf(__fmul_rn(to_f32(x[i]), inv_tau) - L);
    for (int mask = 16; mask > 0; mask >>= 1) part += __shfl_xor_sync(0xffffffffu, part, mask);
    __shared__ float warp_sums[kWarps];
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = part;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];  // fixed order: every thread gets the same bits
    // 0 or ∞ means this lse is not the forward's (or the row holds NaN, reported below).
    if (total > 0.0f && isfinite(total)) shift = logf(total);
  }
  bool bad = false, overflow = false;
  float top = -INFINITY;  // the largest d = log p: above ~0 the lse was not this row's
  for (long long i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float r = to_f32(x[i]);
    bad |= !isfinite(r);
    const float d = (__fmul_rn(r, inv_tau) - L) - shift, p = __expf(d);
    top = fmaxf(top, d);
    const float gv = ((i == y ? g : 0.0f) - p * fmaf(ge, d, c)) * inv_tau;
    T stored;
    from_f32(gv, &stored);
    out[i] = stored;
    // The gradient takes the logits' dtype: float16 ends at 65504 (e.g. 1/τ past it).
    overflow |= !isfinite(to_f32(stored));
  }
  for (int mask = 16; mask > 0; mask >>= 1) top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, mask));
  __shared__ float warp_tops[kWarps];
  if (threadIdx.x % 32 == 0) warp_tops[threadIdx.x / 32] = top;
  bad = __syncthreads_or(bad);
  overflow = __syncthreads_or(overflow);
  if (threadIdx.x != 0) return;
  if (bad) flag_row(flags, kBadLogits, row);
  if (overflow && !bad) flag_row(flags, kGradOverflow, row);
  for (int w = 0; w < kWarps; ++w) top = fmaxf(top, warp_tops[w]);
  row_top[row] = top;
  if (top > kLseSlack) flag_row(flags, kLseBelow, row);
}

// Waits for the launch, then throws for the first flag raised, in the CPU twin's order
// of checks: targets, the per-row inputs, then the logits.
void raise_flags(const DeviceFlags<kFlagCount>& flags, const int32_t* targets, const TokenLogprobsBackwardArgs* backward,
                 int64_t vocab, float temperature, int device) {
  cuda_synchronize(device);
  const auto f = flags.read();
  auto row = [&](Flag k) { return std::to_string(f[k]); };
  if (f[kBadTarget] != kNoRow)
    throw Error("targets: target " + std::to_string(fetch_element(targets, f[kBadTarget], device)) + " at index " +
                    row(kBadTarget) + " is outside [0, " + std::to_string(vocab) + ")",
                Error::Range);
  if (backward) {
    const struct { Flag flag; const char* name; const float* data; } vectors[] = {
        {kBadLse, "lse", backward->lse},
        {kBadGradLogprobs, "gradLogprobs", backward->grad_logprobs},
        {kBadGradEntropy, "gradEntropy", backward->grad_entropy},
        {kBadEntropy, "entropy", backward->entropy},
    };
    for (const auto& v : vectors)
      if (f[v.flag] != kNoRow) throw not_finite(v.name, row(v.flag), fetch_element(v.data, f[v.flag], device));
  }
  if (f[kBadLogits] != kNoRow) throw Error("logits: row " + row(kBadLogits) + " contains NaN or Inf", Error::Range);
  if (f[kOverflow] != kNoRow)
    throw Error("logits: row " + row(kOverflow) + " overflows float32 when divided by temperature " +
                    std::to_string(temperature), Error::Range);
}

void check_grid(int64_t rows) {
  if (rows > 2147483647LL) throw Error("targets: more than 2^31 - 1 rows in one call; split the batch", Error::Range);
}

template <typename T>
void forward_typed(const TokenLogprobsForwardArgs& a, unsigned long long* flags) {
  const T* logits = static_cast<const T*>(a.logits);
  const float inv_tau = 1.0f / a.temperature;
  const unsigned grid = static_cast<unsigned>(a.rows);
  if (a.entropy)
    forward_kernel<T, true><<<grid, kThreads>>>(logits, a.vocab, a.targets, inv_tau, a.logprobs, a.entropy, a.lse, flags);
  else
    forward_kernel<T, false><<<grid, kThreads>>>(logits, a.vocab, a.targets, inv_tau, a.logprobs, nullptr, a.lse, flags);
  check_launch("token_logprobs forward_kernel");
}

template <typename T>
void backward_typed(const TokenLogprobsBackwardArgs& a, unsigned long long* flags, float* row_top) {
  const unsigned grid = static_cast<unsigned>(a.rows);
  backward_kernel<T><<<grid, kThreads>>>(static_cast<const T*>(a.logits), static_cast<T*>(a.grad_logits), a.vocab,
                                         a.targets, a.lse, a.grad_logprobs, a.grad_entropy, a.entropy,
                                         1.0f / a.temperature, flags, row_top);
  check_launch("token_logprobs backward_kernel");
}

}  // namespace

void token_logprobs_forward_cuda(const TokenLogprobsForwardArgs& a) {
  if (a.rows == 0) return;
  check_grid(a.rows);
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  switch (a.dtype) {
    case DType::F32: forward_typed<float>(a, flags.words()); break;
    case DType::BF16: forward_typed<__nv_bfloat16>(a, flags.words()); break;
    case DType::F16: forward_typed<__half>(a, flags.words()); break;
    default: throw Error("logits: expected dtype f32, bf16 or f16", Error::Type);
  }
  raise_flags(flags, a.targets, nullptr, a.vocab, a.temperature, a.device);
}

void token_logprobs_backward_cuda(const TokenLogprobsBackwardArgs& a) {
  if (a.rows == 0) return;
  check_grid(a.rows);
  if (a.grad_entropy && !a.entropy) throw Error("gradEntropy: needs `entropy` from the forward", Error::Type);
  DeviceGuard guard(a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  DeviceBuffer row_top(sizeof(float) * static_cast<size_t>(a.rows), a.device);
  switch (a.dtype) {
    case DType::F32: backward_typed<float>(a, flags.words(), row_top.as<float>()); break;
    case DType::BF16: backward_typed<__nv_bfloat16>(a, flags.words(), row_top.as<float>()); break;
    case DType::F16: backward_typed<__half>(a, flags.words(), row_top.as<float>()); break;
    default: throw Error("logits: expected dtype f32, bf16 or f16", Error::Type);
  }
  raise_flags(flags, a.targets, &a, a.vocab, a.temperature, a.device);
  const unsigned long long below = flags.read()[kLseBelow];
  if (below != kNoRow) {
    const float top = fetch_element(row_top.as<float>(), below, a.device);
    throw Error("lse: row " + std::to_string(below) + " is below the log-sum-exp of logits / temperature (a probability would be " +
                    std::to_string(std::exp(static_cast<double>(top))) +
                    "); pass the lse tokenLogprobs returned for these logits with the same temperature",
                Error::Range);
  }
  const unsigned long long overflow = flags.read()[kGradOverflow];
  if (overflow != kNoRow) throw gradient_overflow_error(static_cast<int64_t>(overflow), a.dtype);
}

}  // namespace lgrpo
