// CUDA twin of the engine's next-token sampler (SampleArgs in native/engine/backend.h;
// the CPU twin is sample_row in native/engine/backend_cpu.cc, whose semantics this
// follows step for step). One block per row; the logits stay on the device, the row's
// uniform comes from the host's counter_uniform (the very function the CPU twin calls),
// and only the token and its log-prob come back.
//
// Per row: max and first argmax (with the finiteness check), then the weights
// e_i = exp((x_i − max)/τ) in f32 (recomputed on every pass, never stored) and
// Z = Σ e_i in double. Then, as the CPU twin:
//   no top-k, no top-p  inverse CDF in index order;
//   top-k               the k best by (logit desc, index asc), found by radix select on
//                       that order's 64-bit key; sorted in shared memory, then top-p and
//                       the inverse CDF run sequentially on one thread over the sorted
//                       list (the CPU twin's very loops and sum order);
//   top-p alone         the CPU twin's nucleus: the boundary weight bin (top 12 bits of
//                       e's float pattern) by bisection, tokens of higher bins in index
//                       order, then the boundary bin's tokens sorted by the same key.
// Sets too large to sort in shared memory (more than kSortCap tokens) take a slower
// path that finds each cut by bisection on the key instead of sorting.
//
// Draws equal the CPU twin's up to ties: the two compute e with different exp
// implementations (last-bit differences) and add the same terms in other orders,
// which can only change a draw when u·mass falls within rounding of a CDF step or a
// weight sits at a bin edge. Every sum here runs in a fixed order: the same bits run
// after run.
#include <cuda_runtime.h>

#include <climits>
#include <string>
#include <vector>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "../native/engine/backend.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr int kSortCap = 4096;  // tokens a block sorts in shared memory (32 KiB of keys)
constexpr int kBins = 4096;
enum Flag { kBadRow, kFlagCount };

// The CPU twin's total order, as one integer: larger key = earlier (higher logit, then
// lower index). −0 is read as +0, as the CPU's comparisons do.
__device__ __forceinline__ unsigned long long order_key(float x, int i) {
  unsigned u = __float_as_uint(x == 0.0f ? 0.0f : x);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(u) << 32) | (0xffffffffu - static_cast<unsigned>(i));
}
__device__ __forceinline__ int key_index(unsigned long long key) {
  return static_cast<int>(0xffffffffu - static_cast<unsigned>(key & 0xffffffffu));
}

// e = exp((x − shift)·scale) in f32, as the CPU twin's exp_weights (the product kept a
// product: no fused multiply-add under the exp).
__device__ __forceinline__ float weight(float x, float shift, float scale) { return expf(__fmul_rn(x - shift, scale)); }

__device__ __forceinline__ int weight_bin(float e) { return static_cast<int>(__float_as_uint(e) >> 19); }

// Fixed-order block reductions (a tree over thread slots): the same bits every run.
__device__ double block_sum(double v, double* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const double total = red[0];
  __syncthreads();
  return total;
}

struct Row {
  const float* x;
  int V;
  float mx, inv_t;
};

// What a search or scan counts: all tokens, or those of a key range, or of a bin range.
struct Pred {
  unsigned long long key_lo;  // key >= key_lo
  int bin_lo, bin_hi;         // bin in [bin_lo, bin_hi]
  __device__ bool operator()(float e, unsigned long long key) const {
    const int b = weight_bin(e);
    return key >= key_lo && b >= bin_lo && b <= bin_hi;
  }
};
__device__ __forceinline__ Pred all_tokens() { return Pred{0ull, 0, kBins - 1}; }

// Σ e over the tokens of p, in a fixed order.
__device__ double mass_of(const Row& r, const Pred& p, double* red) {
  double s = 0.0;
  for (int i = threadIdx.x; i < r.V; i += kThreads) {
    const float x = r.x[i], e = weight(x, r.mx, r.inv_t);
    if (p(e, order_key(x, i))) s += e;
  }
  return block_sum(s, red);
}

// The largest key K of a token of p with base + Σ{e_i : i in p, key_i >= K} reaching
// `limit` (>= when !strict, > when strict), found by bisection on the key; 0 when none.
// The sum only grows at keys of tokens of p, so the answer is such a key.
__device__ unsigned long long find_cut(const Row& r, const Pred& p, double base, double limit, bool strict, double* red) {
  unsigned long long lo = p.key_lo, hi = ~0ull;
  auto reaches = [&](unsigned long long k) {
    Pred q = p;
    q.key_lo = k;
    const double m = base + mass_of(r, q, red);
    return strict ? m > limit : m >= limit;
  };
  if (!reaches(lo)) return 0ull;
  while (lo < hi) {  // invariant: reaches(lo)
    const unsigned long long mid = lo + (hi - lo) / 2 + 1;
    if (reaches(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The last token of p in key order with e > 0 (-1 when none): the largest key at which
// the sum over keys >= K still holds all of p's mass (the same terms, in the same order,
// so the same bits).
__device__ int last_positive(const Row& r, const Pred& p, double* red) {
  const double total = mass_of(r, p, red);
  if (!(total > 0.0)) return -1;
  return key_index(find_cut(r, p, 0.0, total, false, red));
}

struct Scan {
  int pick;      // first token of p in index order whose running sum exceeds target, or -1
  double total;  // base + Σ e over p, summed in index-order chunks
  int last;      // the last token of p (index order) with e > 0, or -1
};

// Inverse CDF over the tokens of p in index order, starting from `base`: each thread
// sums a contiguous chunk, one thread adds the chunk sums in order, and the thread
// whose chunk crosses the target walks it again term by term.
__device__ Scan index_scan(const Row& r, const Pred& p, double base, double target, double* csum, int* clast,
                           int* shared_pick) {
  const int chunk = (r.V + kThreads - 1) / kThreads;
  const int i0 = min(r.V, static_cast<int>(threadIdx.x) * chunk), i1 = min(r.V, i0 + chunk);
  double s = 0.0;
  int last = -1;
  for (int i = i0; i < i1; ++i) {
    const float x = r.x[i], e = weight(x, r.mx, r.inv_t);
    if (e > 0.0f && p(e, order_key(x, i))) {
      s += e;
      last = i;
    }
  }
  csum[threadIdx.x] = s;
  clast[threadIdx.x] = last;
  __syncthreads();
  __shared__ int crossing;
  __shared__ double start, total;
  __shared__ int last_all;
  if (threadIdx.x == 0) {
    double cum = base;
    crossing = -1;
    last_all = -1;
    for (int t = 0; t < kThreads; ++t) {
      if (crossing < 0 && cum + csum[t] > target) {
        crossing = t;
        start = cum;
      }
      cum += csum[t];
      if (clast[t] >= 0) last_all = clast[t];
    }
    total = cum;
    *shared_pick = -1;
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) == crossing) {
    double cum = start;
    int pick = last;  // the chunk's sum crossed; rounding of the walk may not
    for (int i = i0; i < i1; ++i) {
      const float x = r.x[i], e = weight(x, r.mx, r.inv_t);
      if (!(e > 0.0f && p(e, order_key(x, i)))) continue;
      cum += e;
      if (cum > target) {
        pick = i;
        break;
      }
    }
    *shared_pick = pick;
  }
  __syncthreads();
  Scan out{*shared_pick, total, last_all};
  __syncthreads();
  return out;
}

// The tokens of p (at most kSortCap) into keys[0, n), sorted by decreasing key; the
// slots up to the next power of two hold 0, which sorts last. Returns n.
__device__ int gather_sorted(const Row& r, const Pred& p, unsigned long long* keys, int* counter) {
  if (threadIdx.x == 0) *counter = 0;
  for (int i = threadIdx.x; i < kSortCap; i += kThreads) keys[i] = 0ull;
  __syncthreads();
  for (int i = threadIdx.x; i < r.V; i += kThreads) {
    const float x = r.x[i], e = weight(x, r.mx, r.inv_t);
    const unsigned long long key = order_key(x, i);
    if (p(e, key)) keys[atomicAdd(counter, 1)] = key;  // slot order varies; the sort below fixes it
  }
  __syncthreads();
  const int n = *counter;
  int n2 = 1;
  while (n2 < n) n2 <<= 1;
  for (int k = 2; k <= n2; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n2; i += kThreads) {
        const int l = i ^ j;
        if (l > i) {
          const unsigned long long a = keys[i], b = keys[l];
          if (((i & k) == 0) ? a < b : a > b) {
            keys[i] = b;
            keys[l] = a;
          }
        }
      }
      __syncthreads();
    }
  return n;
}

// How many tokens of p there are (exact integer count).
// The inverse-CDF walk of the CPU twin over the first `kept` sorted keys: the cumulative
// weight starts at `cum`, and the last positive-weight index reached is picked (`fallback`
// when none is). One thread.
__device__ int draw_sorted(const Row& r, const unsigned long long* keys, int kept, double cum, int fallback,
                           double target) {
  int p = fallback;
  for (int j = 0; j < kept; ++j) {
    const int i = key_index(keys[j]);
    const float w = weight(r.x[i], r.mx, r.inv_t);
    if (w <= 0.0f) continue;
    cum += w;
    p = i;
    if (cum > target) break;
  }
  return p;
}

__device__ int count_of(const Row& r, const Pred& p, double* red) {
  double c = 0.0;
  for (int i = threadIdx.x; i < r.V; i += kThreads) {
    const float x = r.x[i];
    if (p(weight(x, r.mx, r.inv_t), order_key(x, i))) c += 1.0;
  }
  return static_cast<int>(block_sum(c, red));
}

// The k-th largest key of the row (radix select, 8 bits at a time from the top).
__device__ unsigned long long kth_key(const Row& r, int k, int* hist) {
  __shared__ unsigned long long prefix;
  __shared__ int need;
  if (threadIdx.x == 0) {
    prefix = 0ull;
    need = k;
  }
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) hist[d] = 0;
    __syncthreads();
    const unsigned long long high_mask = shift == 56 ? 0ull : ~0ull << (shift + 8);
    for (int i = threadIdx.x; i < r.V; i += kThreads) {
      const unsigned long long key = order_key(r.x[i], i);
      if ((key & high_mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int d = 255;
      while (hist[d] < need) need -= hist[d--];
      prefix |= static_cast<unsigned long long>(d) << shift;
    }
    __syncthreads();
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(const float* __restrict__ logits, int V, bool greedy, float inv_t, int top_k, double top_p,
              const double* __restrict__ uniforms, int32_t* __restrict__ tokens, float* __restrict__ logprobs,
              unsigned long long* flags) {
  __shared__ double red[kThreads];
  __shared__ int clast[kThreads];
  __shared__ float max_val[kThreads];
  __shared__ int max_arg[kThreads];
  __shared__ unsigned long long keys[kSortCap];
  __shared__ int small[256];
  __shared__ int pick_slot;
  __shared__ double result_mass;
  __shared__ int result_pick;
  const int row = blockIdx.x;
  Row r{logits + static_cast<long long>(row) * V, V, 0.0f, greedy ? 1.0f : inv_t};

  // Max, first argmax, finiteness.
  float mx = -INFINITY;
  int arg = INT_MAX;
  bool bad = V == 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float x = r.x[i];
    bad |= !isfinite(x);
    if (x > mx) {
      mx = x;
      arg = i;
    }
  }
  max_val[threadIdx.x] = mx;
  max_arg[threadIdx.x] = arg;
  if (__syncthreads_or(bad)) {
    if (threadIdx.x == 0) atomicMin(&flags[kBadRow], static_cast<unsigned long long>(row));
    return;
  }
  if (threadIdx.x == 0) {
    for (int t = 1; t < kThreads; ++t)
      if (max_val[t] > max_val[0] || (max_val[t] == max_val[0] && max_arg[t] < max_arg[0])) {
        max_val[0] = max_val[t];
        max_arg[0] = max_arg[t];
      }
  }
  __syncthreads();
  r.mx = max_val[0];
  arg = max_arg[0];
  const double z = mass_of(r, all_tokens(), red);
  if (greedy) {
    if (threadIdx.x == 0) {
      tokens[row] = arg;
      logprobs[row] = static_cast<float>(-log(z));  // x[arg] − lse, x[arg] being the max
    }
    return;
  }
  const double u = uniforms[row];
  double mass = z;
  int pick = arg;

  if (top_k == 0 && top_p >= 1.0) {
    const Scan s = index_scan(r, all_tokens(), 0.0, u * z, red, clast, &pick_slot);
    pick = s.pick >= 0 ? s.pick : s.last >= 0 ? s.last : arg;
  } else if (top_k > 0) {
    const unsigned long long kth = kth_key(r, top_k, small);
    const Pred in_k{kth, 0, kBins - 1};
    if (top_k <= kSortCap) {
      gather_sorted(r, in_k, keys, &pick_slot);
      if (threadIdx.x == 0) {  // the CPU twin's loops, over the same sorted list
        double m = 0.0;
        for (int j = 0; j < top_k; ++j) m += weight(r.x[key_index(keys[j])], r.mx, r.inv_t);
        int kept = top_k;
        if (top_p < 1.0) {
          const double limit = top_p * m;
          double cum = 0.0;
          kept = 0;
          while (kept < top_k && (kept == 0 || cum < limit)) cum += weight(r.x[key_index(keys[kept++])], r.mx, r.inv_t);
          m = cum;
        }
        result_mass = m;
        result_pick = draw_sorted(r, keys, kept, 0.0, arg, u * m);
      }
      __syncthreads();
      mass = result_mass;
      pick = result_pick;
    } else {
      mass = mass_of(r, in_k, red);
      Pred kept = in_k;
      if (top_p < 1.0) {
        const unsigned long long cut = find_cut(r, in_k, 0.0, top_p * mass, false, red);
        if (cut) kept.key_lo = cut;
        mass = mass_of(r, kept, red);
      }
      const unsigned long long at = find_cut(r, kept, 0.0, u * mass, true, red);
      if (at) {
        pick = key_index(at);
      } else {
        const int last = last_positive(r, kept, red);
        if (last >= 0) pick = last;
      }
    }
  } else {
    // Top-p alone: the boundary bin is the highest b >= 1 whose bins b.. hold at least
    // limit (0 when none), as the CPU twin's downward walk over bin masses finds it.
    const double limit = top_p * z;
    int lo = 0, hi = kBins - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (mass_of(r, Pred{0ull, mid, kBins - 1}, red) >= limit) lo = mid;
      else hi = mid - 1;
    }
    const int boundary = lo;
    const Pred above{0ull, boundary + 1, kBins - 1}, edge{0ull, boundary, boundary};
    const double above_mass = boundary + 1 < kBins ? mass_of(r, above, red) : 0.0;
    const int above_count = boundary + 1 < kBins ? count_of(r, above, red) : 0;
    const int edge_count = count_of(r, edge, red);
    // Kept: every token above, then edge tokens in key order until the mass reaches limit.
    if (edge_count <= kSortCap) {
      gather_sorted(r, edge, keys, &pick_slot);
      if (threadIdx.x == 0) {
        double cum = above_mass;
        int kept = 0;
        while (kept < edge_count && (above_count + kept == 0 || cum < limit))
          cum += weight(r.x[key_index(keys[kept++])], r.mx, r.inv_t);
        result_mass = cum;
        result_pick = kept;
      }
      __syncthreads();
      mass = result_mass;
      const int kept = result_pick;
      const double target = u * mass;
      const Scan s = index_scan(r, above, 0.0, target, red, clast, &pick_slot);
      if (s.pick >= 0) {
        pick = s.pick;
      } else {
        if (threadIdx.x == 0) {
          result_pick = draw_sorted(r, keys, kept, s.total, s.last >= 0 ? s.last : arg, target);
        }
        __syncthreads();
        pick = result_pick;
      }
    } else {
      // Too many edge tokens to sort: the cut and the draw by bisection on the key.
      // above_mass < limit (the boundary bin is where the limit is crossed), so with no
      // token above the cut keeps at least one edge token, as the CPU twin's loop does.
      Pred kept_edge = edge;
      const unsigned long long cut = find_cut(r, edge, above_mass, limit, false, red);
      if (cut) kept_edge.key_lo = cut;  // 0: the limit is never reached; every edge token is kept
      mass = above_mass + mass_of(r, kept_edge, red);
      const double target = u * mass;
      const Scan s = index_scan(r, above, 0.0, target, red, clast, &pick_slot);
      if (s.pick >= 0) {
        pick = s.pick;
      } else {
        const unsigned long long at = find_cut(r, kept_edge, s.total, target, true, red);
        const int last = at ? -1 : last_positive(r, kept_edge, red);
        pick = at ? key_index(at) : last >= 0 ? last : s.last >= 0 ? s.last : arg;
      }
    }
  }
  if (threadIdx.x == 0) {
    tokens[row] = pick;
    // log p = log e − log mass; e of the picked token is never 0 (zero weights are skipped).
    logprobs[row] = static_cast<float>(log(static_cast<double>(weight(r.x[pick], r.mx, r.inv_t))) - log(mass));
  }
}

// out[r] = logits[r, tokens[r]]: the picked logit, for a log-prob taken from a given lse.
__global__ void picked_logit_kernel(const float* logits, int64_t vocab, const int32_t* tokens, int64_t rows, float* out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < rows) out[r] = logits[r * vocab + tokens[r]];
}

}  // namespace

void sample_cuda(const SampleArgs& a) {
  if (a.rows == 0) return;
  if (a.rows > INT_MAX || a.vocab > INT_MAX / 2)
    throw Error("logits: too large for one CUDA sampling call; split the batch", Error::Range);
  DeviceGuard guard(a.device);
  const bool greedy = a.temperature == 0.0;
  std::vector<double> u(static_cast<size_t>(a.rows), 0.0);
  if (!greedy)
    for (int64_t r = 0; r < a.rows; ++r)
      u[r] = counter_uniform(a.seed, static_cast<uint64_t>(a.row_keys[r]), static_cast<uint64_t>(a.step));
  DeviceBuffer uniforms(sizeof(double) * a.rows, a.device), tokens(sizeof(int32_t) * a.rows, a.device),
      logprobs(sizeof(float) * a.rows, a.device);
  DeviceFlags<kFlagCount> flags(a.device);
  cuda_copy_to_device(uniforms.as(), u.data(), sizeof(double) * a.rows, a.device);
  const int top_k = a.top_k > 0 && a.top_k < a.vocab ? static_cast<int>(a.top_k) : 0;
  sample_kernel<<<static_cast<unsigned>(a.rows), kThreads>>>(
      a.logits, static_cast<int>(a.vocab), greedy, a.lse ? 1.0f : static_cast<float>(1.0 / a.temperature), top_k, a.top_p,
      uniforms.as<double>(), tokens.as<int32_t>(), logprobs.as<float>(), flags.words());
  check_launch("sample_kernel");
  cuda_synchronize(a.device);
  const auto f = flags.read();
  if (f[kBadRow] != kNoProblem)
    throw Error("generate: the logits of row " + std::to_string(f[kBadRow]) + " are not finite (are the parameters finite?)",
                Error::Range);
  cuda_copy_to_host(a.tokens, tokens.as(), sizeof(int32_t) * a.rows, a.device);
  cuda_copy_to_host(a.logprobs, logprobs.as(), sizeof(float) * a.rows, a.device);
  // With a.lse (logits already divided by τ, see SampleArgs) an untruncated draw reports
  // x − lse, as the CPU twin: the log-prob sequence_logprobs gives the same token.
  if (a.lse && (greedy || (top_k == 0 && !(a.top_p < 1.0)))) {
    DeviceBuffer picked(sizeof(float) * a.rows, a.device);
    picked_logit_kernel<<<blocks_for(a.rows, 256), 256>>>(a.logits, a.vocab, tokens.as<int32_t>(), a.rows, picked.as<float>());
    check_launch("picked_logit_kernel");
    std::vector<float> x(static_cast<size_t>(a.rows));
    cuda_copy_to_host(x.data(), picked.as(), sizeof(float) * a.rows, a.device);
    for (int64_t r = 0; r < a.rows; ++r) a.logprobs[r] = static_cast<float>(static_cast<double>(x[r]) - a.lse[r]);
  }
}

}  // namespace lgrpo
