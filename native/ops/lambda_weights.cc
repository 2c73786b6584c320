// CPU twin of lambda_weights (spec §4). Rows number in the thousands at most, so this
// is written to be read: per-group statistics in double, then the per-group softmax.
#include "lambda_weights.h"

#include <cmath>
#include <string>
#include <vector>

namespace lgrpo {

namespace {
double length_at(const LambdaWeightsArgs& a, int64_t i) {
  return a.lengths_dtype == DType::I32 ? static_cast<double>(static_cast<const int32_t*>(a.lengths)[i])
                                       : static_cast<double>(static_cast<const float*>(a.lengths)[i]);
}
}  // namespace

void lambda_weights_cpu(const LambdaWeightsArgs& a) {
  if (a.lengths_dtype != DType::F32 && a.lengths_dtype != DType::I32)
    throw Error("lengths: expected dtype i32 or f32", Error::Type);
  const int64_t G = a.groups;
  std::vector<double> count(G, 0.0), sum(G, 0.0);
  for (int64_t i = 0; i < a.rows; ++i) {
    const int32_t g = a.group_ids[i];
    if (g < 0 || g >= a.groups) throw group_id_outside(g, i, a.groups);
    const double len = length_at(a, i);
    if (!(len >= 0.0) || std::isinf(len)) throw bad_length(i, len);
    count[g] += 1.0;
    sum[g] += len;
  }
  std::vector<double> mean(G, 0.0), squares(G, 0.0);
  for (int64_t g = 0; g < G; ++g) mean[g] = count[g] > 0 ? sum[g] / count[g] : 0.0;
  for (int64_t i = 0; i < a.rows; ++i) {
    const double d = length_at(a, i) - mean[a.group_ids[i]];
    squares[a.group_ids[i]] += d * d;
  }
  // Population std (spec §4), floored at 1e-8 so equal lengths give z = 0, f = 1.
  std::vector<double> scale(G, 1e-8);
  for (int64_t g = 0; g < G; ++g)
    if (count[g] > 0) scale[g] = std::fmax(std::sqrt(squares[g] / count[g]), 1e-8);

  // q_i = h_i^λ and q_i ln h_i, then a max-shifted softmax of q within each group.
  std::vector<double> q(a.rows), q_log_h(a.rows), q_max(G, -INFINITY);
  for (int64_t i = 0; i < a.rows; ++i) {
    const int32_t g = a.group_ids[i];
    const double z = (length_at(a, i) - mean[g]) / scale[g];
    const double h = std::fmax(1.0 + a.r * z, 1e-6);
    const double log_h = std::log(h);
    q[i] = std::exp(a.lambda * log_h);
    if (!std::isfinite(q[i]))
      throw lambda_overflow("h^lambda", i, a.lambda);
    q_log_h[i] = q[i] * log_h;
    q_max[g] = std::fmax(q_max[g], q[i]);
  }
  std::vector<double> e(a.rows), e_sum(G, 0.0), e_q_log_h_sum(G, 0.0);
  for (int64_t i = 0; i < a.rows; ++i) {
    const int32_t g = a.group_ids[i];
    e[i] = std::exp(q[i] - q_max[g]);
    e_sum[g] += e[i];
    e_q_log_h_sum[g] += e[i] * q_log_h[i];
  }
  for (int64_t i = 0; i < a.rows; ++i) {
    const int32_t g = a.group_ids[i];
    const double s = e[i] / e_sum[g];  // e_sum >= 1: the maximum contributes e^0
    const double expected_q_log_h = e_q_log_h_sum[g] / e_sum[g];
    const float f = static_cast<float>(count[g] * s);
    const float df = static_cast<float>(count[g] * s * (q_log_h[i] - expected_q_log_h));
    if (!std::isfinite(df))
      throw lambda_overflow("the weight derivative", i, a.lambda);
    a.weights[i] = f;
    a.d_weights_d_lambda[i] = df;
  }
}

}  // namespace lgrpo
