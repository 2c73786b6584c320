// CPU twin of rms_norm. Rows are independent, so the forward and the dx half of the
// backward split rows across threads. dweight needs a sum over rows; rather than
// per-thread partials (whose bits would depend on the thread count) a second pass
// splits the COLUMNS across threads and each column sums its rows in row order, so the
// result is the same for any thread count.
#include "rms_norm.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {

float sum_squares(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if LGRPO_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_loadu_ps(x + i);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  s = hsum_avx2(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) s = std::fma(x[i], x[i], s);
  return s;
}

// Σ g_i·x̂_i with g = dy·w and x̂ = x·r, the one reduction the dx formula needs.
float dot_gxhat(const float* dy, const float* w, const float* x, float r, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if LGRPO_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(w + i));
    acc = _mm256_fmadd_ps(g, _mm256_loadu_ps(x + i), acc);
  }
  s = hsum_avx2(acc);
#endif
  for (; i < n; ++i) s = std::fma(dy[i] * w[i], x[i], s);
  return s * r;
}

}  // namespace

int64_t rms_norm_forward_cpu(const RmsNormForwardArgs& a) {
  const int64_t D = a.dim;
  // Each range finds its first bad row; the minimum over ranges is the first overall,
  // whatever the split.
  int64_t first_bad = -1;
  std::mutex bad_mutex;
  parallel_for(a.rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    int64_t mine = -1;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = a.x + r * D;
      float* y = a.y + r * D;
      float ss = sum_squares(x, D);
      if (!std::isfinite(ss) && mine < 0) mine = r;
      float rstd = 1.0f / std::sqrt(ss / static_cast<float>(D) + a.eps);
      if (a.rstd) a.rstd[r] = rstd;
      int64_t i = 0;
#if LGRPO_AVX2
      const __m256 rv = _mm256_set1_ps(rstd);
      for (; i + 8 <= D; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv), _mm256_loadu_ps(a.weight + i)));
#endif
      for (; i < D; ++i) y[i] = (x[i] * rstd) * a.weight[i];
    }
    if (mine >= 0) {
      std::lock_guard<std::mutex> lock(bad_mutex);
      if (first_bad < 0 || mine < first_bad) first_bad = mine;
    }
  });
  return first_bad;
}

void rms_norm_backward_cpu(const RmsNormBackwardArgs& a) {
  const int64_t D = a.dim;
  const float inv_d = 1.0f / static_cast<float>(D);
  if (a.dweight) {
    // dweight first, because dx may alias dy. Column blocks of 8 keep every column in the
    // same vector lane position whatever the split, so the bits do not depend on the
    // thread count. Each column sums over rows in row order into a local accumulator that
    // is added to dweight once.
    const int64_t blocks = (D + 7) / 8;
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(a.rows, 1));
    parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
      const int64_t c0 = b0 * 8, c1 = std::min(D, b1 * 8);
      std::vector<float> acc(static_cast<size_t>(c1 - c0), 0.0f);
      for (int64_t r = 0; r < a.rows; ++r) {
        const float* x = a.x + r * D;
        const float* dy = a.dy + r * D;
        const float rstd = a.rstd[r];
        int64_t c = c0;
#if LGRPO_AVX2
        const __m256 rv = _mm256_set1_ps(rstd);
        for (; c + 8 <= c1; c += 8) {
          __m256 xhat = _mm256_mul_ps(_mm256_loadu_ps(x + c), rv);
          __m256 s = _mm256_loadu_ps(acc.data() + (c - c0));
          _mm256_storeu_ps(acc.data() + (c - c0), _mm256_fmadd_ps(_mm256_loadu_ps(dy + c), xhat, s));
        }
#endif
        for (; c < c1; ++c) acc[c - c0] = std::fma(dy[c], x[c] * rstd, acc[c - c0]);
      }
      for (int64_t c = c0; c < c1; ++c) a.dweight[c] += acc[c - c0];
    });
  }
  // dx = r·(g − x̂·mean(g·x̂)), g = dy·w, x̂ = x·r. The dot is taken before any dx is
  // written, and each dx element reads only its own dy element, so dx may alias dy.
  parallel_for(a.rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = a.x + r * D;
      const float* dy = a.dy + r * D;
      float* dx = a.dx + r * D;
      const float rstd = a.rstd[r];
      const float c = dot_gxhat(dy, a.weight, x, rstd, D) * inv_d;
      int64_t i = 0;
#if LGRPO_AVX2
      const __m256 rv = _mm256_set1_ps(rstd), cv = _mm256_set1_ps(c);
      for (; i + 8 <= D; i += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(a.weight + i));
        __m256 xhat = _mm256_mul_ps(_mm256_loadu_ps(x + i), rv);
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(rv, _mm256_fnmadd_ps(xhat, cv, g)));
      }
#endif
      for (; i < D; ++i) {
        float g = dy[i] * a.weight[i];
        float xhat = x[i] * rstd;
        dx[i] = rstd * std::fma(-xhat, c, g);
      }
    }
  });
}

}  // namespace lgrpo
