// CPU twin of the row gather/scatter (rows.h).
#include "rows.h"

#include <cstring>

namespace lgrpo {

void gather_rows_cpu(const RowsArgs& a) {
  for (int64_t i = 0; i < a.n; ++i)
    std::memcpy(a.dst + i * a.cols, a.src + a.host_index[i] * a.cols, static_cast<size_t>(a.cols) * sizeof(float));
}

void scatter_rows_cpu(const RowsArgs& a) {
  for (int64_t i = 0; i < a.n; ++i)
    if (a.host_index[i] >= 0)
      std::memcpy(a.dst + a.host_index[i] * a.cols, a.src + i * a.cols, static_cast<size_t>(a.cols) * sizeof(float));
}

}  // namespace lgrpo
