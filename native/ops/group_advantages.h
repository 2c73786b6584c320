// Group-normalised advantages (spec §2): per-group mean and std of rewards, then
// A_i by mode. Groups are given by id, not by position, so rows of a group need not
// be adjacent. CPU twin: group_advantages.cc; CUDA twin: kernels/group_advantages.cu.
#pragma once

#include "../common.h"

namespace lgrpo {

enum class AdvantageMode : int32_t { Std = 0, Mean = 1, Batch = 2, Rloo = 3 };

struct GroupAdvantagesArgs {
  const float* rewards;     // [rows]
  const int32_t* group_ids; // [rows], each in [0, groups)
  int64_t rows;
  int32_t groups;
  AdvantageMode mode;
  float eps;
  bool unbiased;            // std with N-1 (TRL, verl) or N
  float* advantages;        // [rows] out
  float* group_mean;        // [groups] out
  float* group_std;         // [groups] out
  uint8_t* degenerate;      // [groups] out: 1 if the group has < 2 rows or equal rewards
  int device = 0;            // CUDA twin: the device every pointer lives on (CPU twin: unused)
};

void group_advantages_cpu(const GroupAdvantagesArgs& a);
void group_advantages_cuda(const GroupAdvantagesArgs& a);

}  // namespace lgrpo
