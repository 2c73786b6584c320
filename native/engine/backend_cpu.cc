// The CPU backend table: the *_cpu twins of native/ops/ plus the engine helpers below
// (residual adds, bias sums, row gathers, the next-token sampler). Helpers split work
// over fixed ranges (parallel_for) and reduce in a fixed order, so their bits never
// depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "../parallel.h"
#include "../simd.h"
#include "backend.h"
#include "../ops/rows.h"

namespace lgrpo {
namespace {

constexpr size_t kAlign = 64;

void* cpu_alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  // Big blocks (arenas, the rollout panels: streamed whole, once per token) aligned to 2 MB,
  // so that the huge pages cover them whole.
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes >= kHugePageMinBytes) {
    const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, size);
    if (!p) throw std::bad_alloc();
    advise_huge_pages(p, size);
    return p;
  }
  // Rounded up so that the size is a multiple of the alignment, as aligned_alloc requires.
  void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  if (!p) throw std::bad_alloc();
  return p;
}
void cpu_free(void* p) { std::free(p); }
void cpu_copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void cpu_zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

// Elementwise work in blocks of 8 so that each element takes the same path (vector lane
// or scalar tail) whatever the split.
template <typename F>
void for_blocks(int64_t n, F body) {
  parallel_for((n + 7) / 8, 4096, [&](int64_t b0, int64_t b1) { body(b0 * 8, std::min(n, b1 * 8)); });
}

void cpu_add(float* out, const float* a, const float* b, int64_t n) {
  for_blocks(n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#if LGRPO_AVX2
    for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
    for (; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

void cpu_add_bias(float* y, const float* bias, int64_t rows, int64_t cols) {
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = y + r * cols;
      int64_t c = 0;
#if LGRPO_AVX2
      for (; c + 8 <= cols; c += 8)
        _mm256_storeu_ps(row + c, _mm256_add_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(bias + c)));
#endif
      for (; c < cols; ++c) row[c] += bias[c];
    }
  });
}

// Columns split over threads in blocks of 8; each column sums its rows in row order
// into a local accumulator, added to dbias once.
void cpu_bias_grad(const float* dy, int64_t rows, int64_t cols, float* dbias) {
  const int64_t blocks = (cols + 7) / 8;
  parallel_for(blocks, std::max<int64_t>(1, 2048 / std::max<int64_t>(rows, 1)), [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * 8, c1 = std::min(cols, b1 * 8);
    std::vector<float> acc(static_cast<size_t>(c1 - c0), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * cols;
      int64_t c = c0;
#if LGRPO_AVX2
      for (; c + 8 <= c1; c += 8) {
        float* s = acc.data() + (c - c0);
        _mm256_storeu_ps(s, _mm256_add_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(row + c)));
      }
#endif
      for (; c < c1; ++c) acc[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) dbias[c] += acc[c - c0];
  });
}

void cpu_mask_padding(float* x, int64_t batch, int64_t seq, int64_t cols, const int32_t* lengths) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = std::clamp<int64_t>(lengths[b], 0, seq);
    if (len < seq) std::memset(x + (b * seq + len) * cols, 0, static_cast<size_t>((seq - len) * cols) * sizeof(float));
  }
}

// x − x is 0 for finite x and NaN otherwise. Eight independent sums vectorise (one
// serial sum ran 4-5x slower: ~90 ms over a 151936 × 896 LM head, vs ~21 ms).
bool all_finite(const float* p, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += p[i + k] - p[i + k];
  for (; i < n; ++i) acc[0] += p[i] - p[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) == 0.0f;
}

int64_t cpu_first_nonfinite_row(const float* x, int64_t rows, int64_t stride, const int64_t* host_counts) {
  std::atomic<int64_t> first{rows};
  parallel_for(rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(stride, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1 && r < first.load(std::memory_order_relaxed); ++r) {
      if (!all_finite(x + r * stride, host_counts ? host_counts[r] : stride)) {
        int64_t seen = first.load();
        while (r < seen && !first.compare_exchange_weak(seen, r)) {
        }
        return;
      }
    }
  });
  return first.load() == rows ? -1 : first.load();
}

void cpu_gather_rows(const float* src, int64_t cols, const int64_t* index, int64_t n, float* dst) {
  gather_rows_cpu(RowsArgs{src, dst, cols, index, n});
}

void cpu_scatter_rows(const float* src, int64_t cols, const int64_t* index, int64_t n, float* dst) {
  scatter_rows_cpu(RowsArgs{src, dst, cols, index, n});
}

// ---------------------------------------------------------------------------------------
// Sampling

// SplitMix64's finaliser: a bijection on 64 bits with full avalanche, so hashing the
// counter (seed, row, step) gives independent-looking streams without any state.
uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

#if LGRPO_X86_DISPATCH
// exp_weights' AVX2 loop, two of its 8-blocks per iteration: each lane's sum takes the same
// terms in the same order (lo: lanes 0-3 of each 8-block, hi: lanes 4-7), so the same bits.
// Returns the elements done; the AVX2 loop takes the rest.
LGRPO_TARGET_AVX512 int64_t exp_weights_avx512(const float* x, float* e, int64_t n, float shift, float scale,
                                               __m256d* lo, __m256d* hi) {
  const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale);
  __m512d acc = _mm512_insertf64x4(_mm512_castpd256_pd512(*lo), *hi, 1);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = exp_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh), sc));
    _mm512_storeu_ps(e + i, v);
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
  }
  *lo = _mm512_castpd512_pd256(acc);
  *hi = _mm512_extractf64x4_pd(acc, 1);
  return i;
}
#endif

// e[i] = exp((x[i] − shift)·scale) in f32 (relative error < 2e-7, far below what
// sampling can resolve); returns Σ e[i] in double, summed in a fixed order (eight
// lane sums, then the lanes in order, then the tail) so the bits depend on n only.
double exp_weights(const float* x, float* e, int64_t n, float shift, float scale) {
  int64_t i = 0;
  double z = 0.0;
#if LGRPO_AVX2
  const __m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) i = exp_weights_avx512(x, e, n, shift, scale, &lo, &hi);
#endif
  for (; i + 8 <= n; i += 8) {
    const __m256 v = exp_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh), sc));
    _mm256_storeu_ps(e + i, v);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  alignas(32) double lanes[8];
  _mm256_store_pd(lanes, lo);
  _mm256_store_pd(lanes + 4, hi);
  for (double l : lanes) z += l;
#endif
  for (; i < n; ++i) {
    e[i] = std::exp((x[i] - shift) * scale);
    z += e[i];
  }
  return z;
}

// The inverse CDF's running sum skips whole blocks of kScanBlock weights: a block's sum
// is taken in a fixed order (eight lane sums over its 8-float groups, then the lanes
// pairwise: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))), added to the running sum
// unless that would pass the target; the block that would is walked weight by weight. A
// weight-by-weight sum over the whole row was a chain of V dependent double additions,
// most of the sampler's time at V = 151,936.
constexpr int64_t kScanBlock = 64;

double block_sum(const float* e) {
  alignas(32) double lane[8] = {};
#if LGRPO_AVX2
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (int64_t g = 0; g < kScanBlock; g += 8) {
    const __m256 v = _mm256_loadu_ps(e + g);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  _mm256_store_pd(lane, lo);
  _mm256_store_pd(lane + 4, hi);
#else
  for (int64_t g = 0; g < kScanBlock; g += 8)
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(e[g + l]);
#endif
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Inverse CDF in index order over the positive weights: the first i whose running sum
// passes target, or the last positive weight if rounding keeps the sum at or below it.
int64_t inverse_cdf(const float* e, int64_t V, double target, int64_t none_positive) {
  double cum = 0.0;
  int64_t i = 0;
  for (; i + kScanBlock <= V; i += kScanBlock) {
    const double s = block_sum(e + i);
    if (cum + s > target) break;
    cum += s;
  }
  for (; i < V; ++i) {
    if (e[i] <= 0.0f) continue;
    cum += e[i];
    if (cum > target) return i;
  }
  int64_t last = V - 1;
  while (last >= 0 && !(e[last] > 0.0f)) --last;
  return last >= 0 ? last : none_positive;
}

#if LGRPO_X86_DISPATCH
// row_max's vector loop, 16 lanes (a maximum, and a probe that is 0 or NaN: no order to keep).
LGRPO_TARGET_AVX512 int64_t row_max_avx512(const float* x, int64_t n, float* mx, float* probe) {
  __m512 vmax = _mm512_set1_ps(-INFINITY), vprobe = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vmax = _mm512_max_ps(vmax, v);
    vprobe = _mm512_add_ps(vprobe, _mm512_sub_ps(v, v));
  }
  *mx = _mm512_reduce_max_ps(vmax);
  *probe = _mm512_reduce_add_ps(vprobe);
  return i;
}
#endif

// The largest value and the lowest index holding it; false if any value is NaN or ±Inf.
bool row_max(const float* x, int64_t n, float* max_out, int64_t* arg_out) {
  int64_t i = 0;
  float mx = -INFINITY, probe = 0.0f;  // x − x is 0 for finite x, NaN otherwise
#if LGRPO_X86_DISPATCH
  if (simd_avx512()) i = row_max_avx512(x, n, &mx, &probe);
#endif
#if LGRPO_AVX2
  __m256 vmax = _mm256_set1_ps(mx), vprobe = _mm256_set1_ps(probe);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vmax = _mm256_max_ps(vmax, v);
    vprobe = _mm256_add_ps(vprobe, _mm256_sub_ps(v, v));
  }
  mx = hmax_avx2(vmax);
  probe = hsum_avx2(vprobe);
#endif
  for (; i < n; ++i) {
    mx = std::max(mx, x[i]);
    probe += x[i] - x[i];
  }
  if (probe != 0.0f || n == 0) return false;
  int64_t arg = 0;
  while (x[arg] != mx) ++arg;
  *max_out = mx;
  *arg_out = arg;
  return true;
}

struct SampleScratch {
  std::vector<float> e;
  std::vector<int32_t> order, edge;
  std::vector<double> bin_mass;
};

// Top-p without top-k: the fewest most probable tokens whose weights sum to at least
// `limit`, written to s.order[0, kept); returns kept and sets *mass to their sum.
// Sorting all V tokens per row would dominate decoding at large V, so tokens are first
// binned by the top 12 bits of their weight's float pattern (monotone in the weight:
// 16 bins per octave). Bins wholly above the boundary bin are in, in index order; only
// the boundary bin is sorted (decreasing logit, ties by index) and cut.
int64_t nucleus(const float* x, const float* e, int64_t V, double limit, SampleScratch& s, double* mass) {
  constexpr int kBins = 4096;
  auto bin = [](float w) {
    uint32_t bits;
    std::memcpy(&bits, &w, sizeof bits);
    return static_cast<int>(bits >> 19);  // w >= 0: sign bit clear, so < 4096
  };
  s.bin_mass.assign(kBins, 0.0);
  for (int64_t i = 0; i < V; ++i) s.bin_mass[bin(e[i])] += e[i];
  double above = 0.0;
  int boundary = kBins - 1;
  for (; boundary > 0; --boundary) {
    if (above + s.bin_mass[boundary] >= limit) break;
    above += s.bin_mass[boundary];
  }
  std::vector<int32_t>& order = s.order;
  std::vector<int32_t>& edge = s.edge;
  int64_t n = 0;
  edge.clear();
  for (int64_t i = 0; i < V; ++i) {
    const int b = bin(e[i]);
    if (b > boundary) order[n++] = static_cast<int32_t>(i);
    else if (b == boundary) edge.push_back(static_cast<int32_t>(i));
  }
  std::sort(edge.begin(), edge.end(), [&](int32_t i, int32_t j) { return x[i] > x[j] || (x[i] == x[j] && i < j); });
  double cum = above;
  for (size_t j = 0; j < edge.size() && (n == 0 || cum < limit); ++j) {
    order[n++] = edge[j];
    cum += e[edge[j]];
  }
  *mass = cum;
  return n;
}

// Returns false if the row holds a NaN or ±Inf.
bool sample_row(const float* x, int64_t V, const SampleArgs& a, int64_t row, SampleScratch& s, int32_t* token,
                float* logprob) {
  float mx;
  int64_t arg;
  if (!row_max(x, V, &mx, &arg)) return false;
  s.e.resize(static_cast<size_t>(V));
  float* e = s.e.data();
  // With a.lse the logits come divided by τ, and the untruncated log-prob is x − lse.
  const double* lse = a.lse ? a.lse + row : nullptr;
  if (a.temperature == 0.0) {
    *token = static_cast<int32_t>(arg);
    if (lse) {
      *logprob = static_cast<float>(static_cast<double>(x[arg]) - *lse);
      return true;
    }
    const double z = exp_weights(x, e, V, mx, 1.0f);
    *logprob = static_cast<float>(-std::log(z));  // x[arg] − lse, with x[arg] the max
    return true;
  }
  const float inv_t = lse ? 1.0f : static_cast<float>(1.0 / a.temperature);
  const double z = exp_weights(x, e, V, mx, inv_t);
  const double u = counter_uniform(a.seed, static_cast<uint64_t>(a.row_keys[row]), static_cast<uint64_t>(a.step));
  const bool top_k = a.top_k > 0 && a.top_k < V;
  const bool top_p = a.top_p < 1.0;
  // log p = log e − log Z; e of the picked token is never 0 (zero weights are skipped).
  auto finish = [&](int64_t pick, double mass) {
    *token = static_cast<int32_t>(pick);
    *logprob = static_cast<float>(std::log(static_cast<double>(e[pick])) - std::log(mass));
  };

  if (!top_k && !top_p) {
    const int64_t pick = inverse_cdf(e, V, u * z, arg);
    if (lse) {
      *token = static_cast<int32_t>(pick);
      *logprob = static_cast<float>(static_cast<double>(x[pick]) - *lse);
      return true;
    }
    finish(pick, z);
    return true;
  }

  std::vector<int32_t>& order = s.order;
  order.resize(static_cast<size_t>(V));
  int64_t kept = 0;
  double mass = 0.0;
  if (top_k) {
    // The k best in decreasing logit order, ties by index (a strict total order, so the
    // set is unique), then top-p as the shortest prefix reaching top_p of their mass.
    auto before = [&](int32_t i, int32_t j) { return x[i] > x[j] || (x[i] == x[j] && i < j); };
    for (int64_t i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
    std::nth_element(order.begin(), order.begin() + (a.top_k - 1), order.end(), before);
    std::sort(order.begin(), order.begin() + a.top_k, before);
    for (int64_t j = 0; j < a.top_k; ++j) mass += e[order[j]];
    kept = a.top_k;
    if (top_p) {
      const double limit = a.top_p * mass;
      double cum = 0.0;
      kept = 0;
      while (kept < a.top_k && (kept == 0 || cum < limit)) cum += e[order[kept++]];
      mass = cum;
    }
  } else {
    kept = nucleus(x, e, V, a.top_p * z, s, &mass);
  }
  // Inverse CDF over the kept tokens in their fixed order.
  const double target = u * mass;
  double cum = 0.0;
  int64_t pick = arg;
  for (int64_t j = 0; j < kept; ++j) {
    const float w = e[order[j]];
    if (w <= 0.0f) continue;
    cum += w;
    pick = order[j];
    if (cum > target) break;
  }
  finish(pick, mass);
  return true;
}

void cpu_sample(const SampleArgs& a) {
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(a.rows, 1, [&](int64_t r0, int64_t r1) {
    SampleScratch scratch;
    for (int64_t r = r0; r < r1; ++r) {
      if (!sample_row(a.logits + r * a.vocab, a.vocab, a, r, scratch, a.tokens + r, a.logprobs + r)) {
        std::lock_guard<std::mutex> lock(bad_mutex);
        if (first_bad < 0 || r < first_bad) first_bad = r;
      }
    }
  });
  if (first_bad >= 0)
    throw Error("generate: the logits of row " + std::to_string(first_bad) +
                    " are not finite (are the parameters finite?)",
                Error::Range);
}

}  // namespace

void sample_cpu(const SampleArgs& a) { cpu_sample(a); }

double counter_uniform(uint64_t seed, uint64_t key, uint64_t counter) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (key * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull));
  h = mix64(h ^ (counter * 0xaef17502108ef2d9ull + 0x2545f4914f6cdd1dull));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

const Backend& cpu_backend() {
  static const Backend table = [] {
    Backend b{};
    b.name = "cpu";
    b.alloc = cpu_alloc;
    b.free = cpu_free;
    b.upload = cpu_copy;
    b.download = cpu_copy;
    b.copy = cpu_copy;
    b.zero = cpu_zero;
    b.gemm = [](const GemmArgs& g) { gemm_f32(g); };
    b.gemm_k_segments = gemm_f32_k_segments;
    b.rms_norm_forward = rms_norm_forward_cpu;
    b.rms_norm_backward = rms_norm_backward_cpu;
    b.rope_table = rope_table_cpu;
    b.rope_forward = rope_forward_cpu;
    b.rope_backward = rope_backward_cpu;
    b.attention_forward = attention_forward_cpu;
    b.attention_backward = attention_backward_cpu;
    b.attention_decode = attention_decode_cpu;
    b.swiglu_forward = swiglu_forward_cpu;
    b.swiglu_backward = swiglu_backward_cpu;
    b.embedding_forward = embedding_forward_cpu;
    b.embedding_backward = embedding_backward_cpu;
    b.linear_token_logprobs_forward = linear_token_logprobs_forward_cpu;
    b.linear_token_logits = linear_token_logits_cpu;
    b.to_bf16 = f32_to_bf16_cpu;
    b.gemm_bf16_weights = gemm_bf16_rollout_cpu;  // bf16 dot products where the CPU has them
    b.gemm_group = gemm_f32_group;
    b.gemm_bf16_weights_group = gemm_bf16_rollout_group_cpu;
#if LGRPO_AVX2
    b.pack_panels = pack_panels_cpu;  // only the vector kernels stream panels faster than W
#endif
    if (gemm_bf16_dot_available()) b.pack_panels_bf16 = pack_panels_bf16_cpu;
    b.add = cpu_add;
    b.add_bias = cpu_add_bias;
    b.bias_grad = cpu_bias_grad;
    b.mask_padding = cpu_mask_padding;
    b.gather_rows = cpu_gather_rows;
    b.scatter_rows = cpu_scatter_rows;
    b.sample = cpu_sample;
    b.first_nonfinite_row = cpu_first_nonfinite_row;
    return b;
  }();
  return table;
}

}  // namespace lgrpo
