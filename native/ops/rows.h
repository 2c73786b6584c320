// Row gather and scatter between a padded [rows, cols] layout and a packed one, by a host
// index: the token pass picks the hidden states that predict completion tokens out of
// [B·T, D] and puts their gradients back. f32. CPU twin: rows.cc; CUDA twin:
// kernels/rows.cu (one launch, the index uploaded once).
#pragma once

#include "../common.h"

namespace lgrpo {

struct RowsArgs {
  const float* src;
  float* dst;
  int64_t cols;
  const int64_t* host_index;  // [n]: gather reads src row index[i]; scatter writes dst row index[i] (if >= 0)
  int64_t n;
  int device = 0;             // CUDA twin: the device src and dst live on (CPU twin: unused)
};

// dst[i, :] = src[index[i], :]
void gather_rows_cpu(const RowsArgs& a);
void gather_rows_cuda(const RowsArgs& a);
// dst[index[i], :] = src[i, :] for index[i] >= 0 (distinct targets); other rows untouched.
void scatter_rows_cpu(const RowsArgs& a);
void scatter_rows_cuda(const RowsArgs& a);

}  // namespace lgrpo
