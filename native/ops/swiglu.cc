// CPU twin of swiglu: one elementwise pass, chunks across threads. Every element loads
// its inputs before storing its outputs, which is what makes the documented aliasing safe.
// σ(g) = 1/(1 + e^(−g)): e^(−g) overflows to +Inf (scalar) or a huge finite value (AVX2
// exp clamps) for g < −88, and both give σ → 0 and silu → −0, never NaN.
#include "swiglu.h"

#include <algorithm>
#include <cmath>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {
// Work is split in blocks of 8 so that an element's path (vector lane or scalar tail)
// does not depend on where a thread's range starts: same bits for any thread count.
constexpr int64_t kGrainBlocks = 2048;
template <typename F>
void for_blocks_of_8(int64_t n, F body) {
  parallel_for((n + 7) / 8, kGrainBlocks, [&](int64_t b0, int64_t b1) { body(b0 * 8, std::min(n, b1 * 8)); });
}
}  // namespace

void swiglu_forward_cpu(const SwigluForwardArgs& a) {
  for_blocks_of_8(a.n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#if LGRPO_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= i1; i += 8) {
      __m256 g = _mm256_loadu_ps(a.gate + i), u = _mm256_loadu_ps(a.up + i);
      __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      _mm256_storeu_ps(a.h + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), u));
    }
#endif
    for (; i < i1; ++i) {
      float g = a.gate[i];
      float sig = 1.0f / (1.0f + std::exp(-g));
      a.h[i] = (g * sig) * a.up[i];
    }
  });
}

// dh/dg of silu(g)·u is u·σ(g)·(1 + g·(1 − σ(g))); dh/du is silu(g).
void swiglu_backward_cpu(const SwigluBackwardArgs& a) {
  for_blocks_of_8(a.n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#if LGRPO_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= i1; i += 8) {
      __m256 g = _mm256_loadu_ps(a.gate + i), u = _mm256_loadu_ps(a.up + i), d = _mm256_loadu_ps(a.dh + i);
      __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      __m256 silu = _mm256_mul_ps(g, sig);
      __m256 dsilu = _mm256_mul_ps(sig, _mm256_fmadd_ps(g, _mm256_sub_ps(one, sig), one));
      _mm256_storeu_ps(a.dgate + i, _mm256_mul_ps(_mm256_mul_ps(d, u), dsilu));
      _mm256_storeu_ps(a.dup + i, _mm256_mul_ps(d, silu));
    }
#endif
    for (; i < i1; ++i) {
      float g = a.gate[i], u = a.up[i], d = a.dh[i];
      float sig = 1.0f / (1.0f + std::exp(-g));
      float silu = g * sig;
      float dsilu = sig * std::fma(g, 1.0f - sig, 1.0f);
      a.dgate[i] = (d * u) * dsilu;
      a.dup[i] = d * silu;
    }
  });
}

}  // namespace lgrpo
