// CPU twin of the row gather/scatter (rows.h): rows split over the thread pool, each
// a plain copy, so the bits never depend on the thread count.
#include "rows.h"

#include <algorithm>
#include <cstring>

#include "../parallel.h"

namespace lgrpo {
namespace {
int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }
}  // namespace

void gather_rows_cpu(const RowsArgs& a) {
  parallel_for(a.n, rows_per_task(a.cols), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(a.dst + i * a.cols, a.src + a.host_index[i] * a.cols, static_cast<size_t>(a.cols) * sizeof(float));
  });
}

void scatter_rows_cpu(const RowsArgs& a) {
  parallel_for(a.n, rows_per_task(a.cols), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if (a.host_index[i] >= 0)
        std::memcpy(a.dst + a.host_index[i] * a.cols, a.src + i * a.cols, static_cast<size_t>(a.cols) * sizeof(float));
  });
}

}  // namespace lgrpo
