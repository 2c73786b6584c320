// CPU twin of rope. Tokens are split across threads; each token's cos/sin row (table or
// computed) is applied to all of its q and k heads.
#include "rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {

float inv_freq(double theta, int64_t j, int64_t head_dim) {
  return static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(head_dim)));
}

void angles_at(int64_t pos, const float* freq, int64_t half, float* c, float* s) {
  for (int64_t j = 0; j < half; ++j) {
    double angle = static_cast<double>(pos) * static_cast<double>(freq[j]);
    c[j] = static_cast<float>(std::cos(angle));
    s[j] = static_cast<float>(std::sin(angle));
  }
}

// sign = +1 rotates by +angle, −1 by −angle (sin negated).
void rotate_heads(float* x, int64_t heads, int64_t hd, const float* c, const float* s, float sign) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x1 = x + h * hd;
    float* x2 = x1 + half;
    int64_t j = 0;
#if LGRPO_AVX2
    const __m256 sg = _mm256_set1_ps(sign);
    for (; j + 8 <= half; j += 8) {
      __m256 a = _mm256_loadu_ps(x1 + j), b = _mm256_loadu_ps(x2 + j);
      __m256 cv = _mm256_loadu_ps(c + j), sv = _mm256_mul_ps(sg, _mm256_loadu_ps(s + j));
      _mm256_storeu_ps(x1 + j, _mm256_fmsub_ps(a, cv, _mm256_mul_ps(b, sv)));
      _mm256_storeu_ps(x2 + j, _mm256_fmadd_ps(b, cv, _mm256_mul_ps(a, sv)));
    }
#endif
    for (; j < half; ++j) {
      float a = x1[j], b = x2[j], sv = sign * s[j];
      x1[j] = std::fma(a, c[j], -(b * sv));
      x2[j] = std::fma(b, c[j], a * sv);
    }
  }
}

void rope_apply(const RopeArgs& a, float sign) {
  const int64_t half = a.head_dim / 2;
  const bool table = a.cos_table != nullptr;
  for (int64_t i = 0; i < a.tokens; ++i) {
    int32_t p = a.positions[i];
    if (p < 0 || (table && p >= a.table_positions))
      throw Error("positions: position " + std::to_string(p) + " at token " + std::to_string(i) + " is outside [0, " +
                      (table ? std::to_string(a.table_positions) : std::string("2^31")) + ")",
                  Error::Range);
  }
  std::vector<float> freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) freq[j] = inv_freq(a.theta, j, a.head_dim);
  const int64_t per_token = (a.q_heads + (a.k ? a.kv_heads : 0)) * a.head_dim;
  parallel_for(a.tokens, std::max<int64_t>(1, 8192 / std::max<int64_t>(per_token, 1)), [&](int64_t t0, int64_t t1) {
    std::vector<float> cbuf(static_cast<size_t>(half)), sbuf(static_cast<size_t>(half));
    for (int64_t i = t0; i < t1; ++i) {
      const int64_t pos = a.positions[i];
      const float *c, *s;
      if (table) {
        c = a.cos_table + pos * half;
        s = a.sin_table + pos * half;
      } else {
        angles_at(pos, freq.data(), half, cbuf.data(), sbuf.data());
        c = cbuf.data();
        s = sbuf.data();
      }
      rotate_heads(a.q + i * a.q_heads * a.head_dim, a.q_heads, a.head_dim, c, s, sign);
      if (a.k) rotate_heads(a.k + i * a.kv_heads * a.head_dim, a.kv_heads, a.head_dim, c, s, sign);
    }
  });
}

}  // namespace

void rope_table_cpu(double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out) {
  const int64_t half = head_dim / 2;
  std::vector<float> freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) freq[j] = inv_freq(theta, j, head_dim);
  parallel_for(positions, std::max<int64_t>(1, 4096 / std::max<int64_t>(half, 1)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) angles_at(p, freq.data(), half, cos_out + p * half, sin_out + p * half);
  });
}

void rope_forward_cpu(const RopeArgs& a) { rope_apply(a, 1.0f); }
void rope_backward_cpu(const RopeArgs& a) { rope_apply(a, -1.0f); }

}  // namespace lgrpo
