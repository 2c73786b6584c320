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

#if LGRPO_AVX2
namespace {
inline __m256 sigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

inline void forward8(const float* gate, const float* up, float* h) {
  __m256 g = _mm256_loadu_ps(gate), u = _mm256_loadu_ps(up);
  _mm256_storeu_ps(h, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), u));
}

inline void backward8(const float* gate, const float* up, const float* dh, float* dgate, float* dup) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 g = _mm256_loadu_ps(gate), u = _mm256_loadu_ps(up), d = _mm256_loadu_ps(dh);
  __m256 sig = sigmoid8(g);
  __m256 silu = _mm256_mul_ps(g, sig);
  __m256 dsilu = _mm256_mul_ps(sig, _mm256_fmadd_ps(g, _mm256_sub_ps(one, sig), one));
  _mm256_storeu_ps(dgate, _mm256_mul_ps(_mm256_mul_ps(d, u), dsilu));
  _mm256_storeu_ps(dup, _mm256_mul_ps(d, silu));
}
}  // namespace
#endif

// The last partial block goes through the same vector code via padded copies, so an
// element's bits never depend on the array length (the engine calls this on a whole
// batch or on single rows).
void swiglu_forward_cpu(const SwigluForwardArgs& a) {
  for_blocks_of_8(a.n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#if LGRPO_AVX2
    for (; i + 8 <= i1; i += 8) forward8(a.gate + i, a.up + i, a.h + i);
    if (i < i1) {
      float g[8] = {0}, u[8] = {0}, h[8];
      const int64_t r = i1 - i;
      std::copy(a.gate + i, a.gate + i1, g);
      std::copy(a.up + i, a.up + i1, u);
      forward8(g, u, h);
      std::copy(h, h + r, a.h + i);
    }
#else
    for (; i < i1; ++i) {
      float g = a.gate[i];
      float sig = 1.0f / (1.0f + std::exp(-g));
      a.h[i] = (g * sig) * a.up[i];
    }
#endif
  });
}

// dh/dg of silu(g)·u is u·σ(g)·(1 + g·(1 − σ(g))); dh/du is silu(g).
void swiglu_backward_cpu(const SwigluBackwardArgs& a) {
  for_blocks_of_8(a.n, [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
#if LGRPO_AVX2
    for (; i + 8 <= i1; i += 8) backward8(a.gate + i, a.up + i, a.dh + i, a.dgate + i, a.dup + i);
    if (i < i1) {
      float g[8] = {0}, u[8] = {0}, d[8] = {0}, dg[8], du[8];
      const int64_t r = i1 - i;
      std::copy(a.gate + i, a.gate + i1, g);
      std::copy(a.up + i, a.up + i1, u);
      std::copy(a.dh + i, a.dh + i1, d);
      backward8(g, u, d, dg, du);
      std::copy(dg, dg + r, a.dgate + i);
      std::copy(du, du + r, a.dup + i);
    }
#else
    for (; i < i1; ++i) {
      float g = a.gate[i], u = a.up[i], d = a.dh[i];
      float sig = 1.0f / (1.0f + std::exp(-g));
      float silu = g * sig;
      float dsilu = sig * std::fma(g, 1.0f - sig, 1.0f);
      a.dgate[i] = (d * u) * dsilu;
      a.dup[i] = d * silu;
    }
#endif
  });
}

}  // namespace lgrpo
