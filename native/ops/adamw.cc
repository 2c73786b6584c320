// CPU twins of the optimiser leaves. All memory-bound elementwise passes: the vector
// body and the scalar tail do the same operations in the same order (explicit FMAs on
// both sides), so an element's bits never depend on where a range boundary falls.
#include "adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {

constexpr int64_t kGrainBlocks = 2048;  // 8-float blocks per thread at least: 64 KiB

inline void adamw_one(const AdamwConstants& k, float& p, float g, float& m, float& v) {
  const float decayed = p * k.decay;
  m = std::fma(k.one_minus_beta1, g - m, m);
  v = std::fma(k.one_minus_beta2, g * g, v * k.beta2);
  const float denom = std::sqrt(v) / k.bias2_sqrt + k.eps;
  p = std::fma(k.neg_step_size, m / denom, decayed);
}

void adamw_range(const AdamwArgs& a, const AdamwConstants& k, int64_t begin, int64_t end) {
  int64_t i = begin;
#if LGRPO_AVX2
  const __m256 decay = _mm256_set1_ps(k.decay), omb1 = _mm256_set1_ps(k.one_minus_beta1);
  const __m256 beta2 = _mm256_set1_ps(k.beta2), omb2 = _mm256_set1_ps(k.one_minus_beta2);
  const __m256 neg_step = _mm256_set1_ps(k.neg_step_size), bias2_sqrt = _mm256_set1_ps(k.bias2_sqrt);
  const __m256 eps = _mm256_set1_ps(k.eps);
  for (; i + 8 <= end; i += 8) {
    const __m256 g = _mm256_loadu_ps(a.grad + i);
    const __m256 decayed = _mm256_mul_ps(_mm256_loadu_ps(a.param + i), decay);
    __m256 m = _mm256_loadu_ps(a.exp_avg + i), v = _mm256_loadu_ps(a.exp_avg_sq + i);
    m = _mm256_fmadd_ps(omb1, _mm256_sub_ps(g, m), m);
    v = _mm256_fmadd_ps(omb2, _mm256_mul_ps(g, g), _mm256_mul_ps(v, beta2));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bias2_sqrt), eps);
    _mm256_storeu_ps(a.param + i, _mm256_fmadd_ps(neg_step, _mm256_div_ps(m, denom), decayed));
    _mm256_storeu_ps(a.exp_avg + i, m);
    _mm256_storeu_ps(a.exp_avg_sq + i, v);
  }
#endif
  for (; i < end; ++i) adamw_one(k, a.param[i], a.grad[i], a.exp_avg[i], a.exp_avg_sq[i]);
}

// Runs body over [0, n) in ranges that start on multiples of 8.
template <class Body>
void parallel_blocks(int64_t n, const Body& body) {
  const int64_t blocks = (n + 7) / 8;
  parallel_for(blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) { body(b0 * 8, std::min(n, b1 * 8)); });
}

// Σ x² of one chunk. Sixteen double accumulators, element i feeding lane i mod 16, then
// a fixed pairwise fold; the scalar path below is the same computation lane by lane.
double chunk_sum_squares(const float* x, int64_t n) {
  int64_t i = 0;
  double lanes[16] = {};
#if LGRPO_AVX2
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  for (; i + 16 <= n; i += 16) {
    for (int q = 0; q < 4; ++q) {
      const __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * q));
      acc[q] = _mm256_fmadd_pd(d, d, acc[q]);
    }
  }
  for (int q = 0; q < 4; ++q) _mm256_storeu_pd(lanes + 4 * q, acc[q]);
#else
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) {
      const double d = x[i + l];
      lanes[l] = std::fma(d, d, lanes[l]);
    }
#endif
  for (int l = 0; i < n; ++i, ++l) {
    const double d = x[i];
    lanes[l] = std::fma(d, d, lanes[l]);
  }
  for (int width = 8; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

}  // namespace

AdamwConstants adamw_constants(const AdamwArgs& a) {
  const double step = static_cast<double>(a.step);
  const double bias1 = 1.0 - std::pow(a.beta1, step);
  const double bias2 = 1.0 - std::pow(a.beta2, step);
  AdamwConstants k;
  k.decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  k.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  k.beta2 = static_cast<float>(a.beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  k.neg_step_size = static_cast<float>(-(a.lr / bias1));
  k.bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  k.eps = static_cast<float>(a.eps);
  return k;
}

void adamw_step_cpu(const AdamwArgs& a) {
  if (a.n <= 0) return;
  const AdamwConstants k = adamw_constants(a);
  parallel_blocks(a.n, [&](int64_t begin, int64_t end) { adamw_range(a, k, begin, end); });
}

double grad_sum_squares_cpu(const float* x, int64_t n) {
  constexpr int64_t kChunk = kGradSumSquaresChunk;
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks));
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      partial[c] = chunk_sum_squares(x + c * kChunk, std::min(kChunk, n - c * kChunk));
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

void scale_in_place_cpu(float* x, int64_t n, float c) {
  if (n <= 0) return;
  parallel_blocks(n, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
#if LGRPO_AVX2
    const __m256 s = _mm256_set1_ps(c);
    for (; i + 8 <= end; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), s));
#endif
    for (; i < end; ++i) x[i] *= c;
  });
}

}  // namespace lgrpo
