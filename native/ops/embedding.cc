// CPU twin of embedding. The forward copies rows, rows across threads. The backward is
// a scatter-add where many positions may share an id; to stay deterministic without
// atomics the COLUMNS are split across threads and every thread walks all ids in order,
// adding its column slice. Each dtable element thus receives its contributions in id
// order whatever the thread count, and the split is balanced however skewed the ids are.
#include "embedding.h"

#include <algorithm>
#include <cstring>

#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {

void check_embedding_ids(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error("ids: token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) + " is outside [0, " +
                      std::to_string(vocab) + ")",
                  Error::Range);
}

void embedding_forward_cpu(const EmbeddingForwardArgs& a) {
  check_embedding_ids(a.ids, a.n, a.vocab);
  const int64_t D = a.dim;
  parallel_for(a.n, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(a.out + i * D, a.table + static_cast<int64_t>(a.ids[i]) * D, static_cast<size_t>(D) * sizeof(float));
  });
}

void embedding_backward_cpu(const EmbeddingBackwardArgs& a) {
  check_embedding_ids(a.ids, a.n, a.vocab);
  const int64_t D = a.dim;
  // Blocks of 16 columns (one cache line) so threads never write the same line.
  const int64_t blocks = (D + 15) / 16;
  parallel_for(blocks, std::max<int64_t>(1, 1024 / std::max<int64_t>(a.n, 1)), [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * 16, c1 = std::min(D, b1 * 16);
    for (int64_t i = 0; i < a.n; ++i) {
      float* dst = a.dtable + static_cast<int64_t>(a.ids[i]) * D;
      const float* src = a.dout + i * D;
      int64_t c = c0;
#if LGRPO_AVX2
      for (; c + 8 <= c1; c += 8)
        _mm256_storeu_ps(dst + c, _mm256_add_ps(_mm256_loadu_ps(dst + c), _mm256_loadu_ps(src + c)));
#endif
      for (; c < c1; ++c) dst[c] += src[c];
    }
  });
}

}  // namespace lgrpo
