// CPU twin of group_advantages. Rows number in the thousands at most, so this is
// written to be read: accumulate per-group sums in double, then one pass for A_i.
#include "group_advantages.h"

#include <cmath>
#include <string>
#include <vector>

namespace lgrpo {

void group_advantages_cpu(const GroupAdvantagesArgs& a) {
  // Checked in row order, an id before its reward, as the CUDA twin reports them.
  for (int64_t i = 0; i < a.rows; ++i) {
    if (a.group_ids[i] < 0 || a.group_ids[i] >= a.groups) throw group_id_outside(a.group_ids[i], i, a.groups);
    if (!std::isfinite(a.rewards[i])) throw not_finite("rewards", std::to_string(i), a.rewards[i]);
  }
  const int64_t G = a.groups;
  std::vector<double> sum(G, 0.0), count(G, 0.0), min_r(G, INFINITY), max_r(G, -INFINITY);
  double batch_sum = 0.0;
  for (int64_t i = 0; i < a.rows; ++i) {
    int32_t g = a.group_ids[i];
    double r = a.rewards[i];
    sum[g] += r;
    count[g] += 1.0;
    min_r[g] = std::fmin(min_r[g], r);
    max_r[g] = std::fmax(max_r[g], r);
    batch_sum += r;
  }
  std::vector<double> mean(G, 0.0), squares(G, 0.0);
  for (int64_t g = 0; g < G; ++g) mean[g] = count[g] > 0 ? sum[g] / count[g] : 0.0;
  const double batch_mean = a.rows > 0 ? batch_sum / static_cast<double>(a.rows) : 0.0;
  double batch_squares = 0.0;
  for (int64_t i = 0; i < a.rows; ++i) {
    double d = a.rewards[i] - mean[a.group_ids[i]];
    squares[a.group_ids[i]] += d * d;
    double db = a.rewards[i] - batch_mean;
    batch_squares += db * db;
  }
  std::vector<double> stddev(G, 0.0);
  for (int64_t g = 0; g < G; ++g) {
    double denom = a.unbiased ? count[g] - 1.0 : count[g];
    stddev[g] = denom > 0 ? std::sqrt(squares[g] / denom) : 0.0;
    a.group_mean[g] = static_cast<float>(mean[g]);
    a.group_std[g] = static_cast<float>(stddev[g]);
    // Fewer than two rows, or all rewards equal: no signal to learn from.
    a.degenerate[g] = (count[g] < 2 || min_r[g] == max_r[g]) ? 1 : 0;
  }
  double batch_denom = a.unbiased ? static_cast<double>(a.rows) - 1.0 : static_cast<double>(a.rows);
  double batch_std = batch_denom > 0 ? std::sqrt(batch_squares / batch_denom) : 0.0;

  for (int64_t i = 0; i < a.rows; ++i) {
    int32_t g = a.group_ids[i];
    if (a.degenerate[g]) {
      a.advantages[i] = 0.0f;
      continue;
    }
    double centred = a.rewards[i] - mean[g];
    double adv = 0.0;
    switch (a.mode) {
      case AdvantageMode::Std: adv = centred / (stddev[g] + a.eps); break;
      case AdvantageMode::Mean: adv = centred; break;
      case AdvantageMode::Batch: adv = centred / (batch_std + a.eps); break;
      case AdvantageMode::Rloo: adv = a.rewards[i] - (sum[g] - a.rewards[i]) / (count[g] - 1.0); break;
    }
    a.advantages[i] = static_cast<float>(adv);
  }
}

}  // namespace lgrpo
