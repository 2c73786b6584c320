// CUDA twin of embedding (CPU twin: native/ops/embedding.cc).
//
// Ids are checked on the host, with the CPU twin's words, before anything is written:
// both directions copy the n ids back (n int32s, never n×dim floats), which is also
// what the backward needs to group positions by id.
//
// The backward is deterministic without float atomics: positions are stably sorted by
// id on the host, and one block per distinct id walks that id's positions in increasing
// order, each thread adding its columns onto dtable's row in a register. Every dtable
// element so receives its contributions one at a time, in position order, starting from
// its prior value: exactly the CPU twin's sequence of additions, so the same bits.
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../native/cuda_backend.h"
#include "../native/ops/embedding.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 65535;

std::vector<int32_t> checked_ids(const int32_t* ids, int64_t n, int64_t vocab, int device) {
  std::vector<int32_t> host(static_cast<size_t>(n));
  if (n > 0) cuda_copy_to_host(host.data(), ids, sizeof(int32_t) * host.size(), device);
  check_embedding_ids(host.data(), n, vocab);
  return host;
}

__global__ void __launch_bounds__(kThreads)
forward_kernel(const float* __restrict__ table, const int32_t* __restrict__ ids, long long n, long long dim,
               float* __restrict__ out) {
  for (long long i = blockIdx.x; i < n; i += gridDim.x) {
    const float* src = table + static_cast<long long>(ids[i]) * dim;
    float* dst = out + i * dim;
    for (long long c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
  }
}

// Segment s holds positions order[start[s] .. start[s+1]), all with id seg_id[s].
__global__ void __launch_bounds__(kThreads)
backward_kernel(const int32_t* __restrict__ order, const int32_t* __restrict__ start,
                const int32_t* __restrict__ seg_id, long long segments, const float* __restrict__ dout,
                long long dim, float* __restrict__ dtable) {
  for (long long s = blockIdx.x; s < segments; s += gridDim.x) {
    float* row = dtable + static_cast<long long>(seg_id[s]) * dim;
    const int32_t begin = start[s], end = start[s + 1];
    for (long long c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = row[c];
      for (int32_t p = begin; p < end; ++p) acc += dout[static_cast<long long>(order[p]) * dim + c];
      row[c] = acc;
    }
  }
}

unsigned grid_for(int64_t blocks) { return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks); }

}  // namespace

void embedding_forward_cuda(const EmbeddingForwardArgs& a) {
  DeviceGuard guard(a.device);
  checked_ids(a.ids, a.n, a.vocab, a.device);
  if (a.n <= 0 || a.dim <= 0) return;
  forward_kernel<<<grid_for(a.n), kThreads>>>(a.table, a.ids, a.n, a.dim, a.out);
  check_launch("embedding forward_kernel");
}

void embedding_backward_cuda(const EmbeddingBackwardArgs& a) {
  DeviceGuard guard(a.device);
  const std::vector<int32_t> ids = checked_ids(a.ids, a.n, a.vocab, a.device);
  if (a.n <= 0 || a.dim <= 0) return;
  if (a.n > 2147483647LL) throw Error("ids: more than 2^31 - 1 positions in one call; split the batch", Error::Range);
  // order | start (segments + 1) | seg_id (segments), in one upload.
  std::vector<int32_t> packed(static_cast<size_t>(a.n));
  std::iota(packed.begin(), packed.end(), 0);
  std::stable_sort(packed.begin(), packed.end(), [&](int32_t x, int32_t y) { return ids[x] < ids[y]; });
  std::vector<int32_t> start, seg_id;
  for (int64_t p = 0; p < a.n; ++p) {
    if (p == 0 || ids[packed[p]] != ids[packed[p - 1]]) {
      start.push_back(static_cast<int32_t>(p));
      seg_id.push_back(ids[packed[p]]);
    }
  }
  const int64_t segments = static_cast<int64_t>(seg_id.size());
  start.push_back(static_cast<int32_t>(a.n));
  packed.insert(packed.end(), start.begin(), start.end());
  packed.insert(packed.end(), seg_id.begin(), seg_id.end());
  DeviceBuffer scratch(sizeof(int32_t) * packed.size(), a.device);
  cuda_copy_to_device(scratch.as(), packed.data(), sizeof(int32_t) * packed.size(), a.device);
  const int32_t* order = scratch.as<int32_t>();
  backward_kernel<<<grid_for(segments), kThreads>>>(order, order + a.n, order + a.n + segments + 1, segments, a.dout,
                                                    a.dim, a.dtable);
  check_launch("embedding backward_kernel");
}

}  // namespace lgrpo
