// CUDA twin of the row gather/scatter (native/ops/rows.h): the index goes up once, then
// one thread per element copies (coalesced along a row).
#include <cuda_runtime.h>

#include <algorithm>

#include "../native/cuda_backend.h"
#include "../native/ops/rows.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 256;

template <bool kScatter>
__global__ void rows_kernel(const float* src, float* dst, int64_t cols, const int64_t* index, int64_t n) {
  const int64_t total = n * cols;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, c = e % cols, r = index[i];
    if (kScatter) {
      if (r >= 0) dst[r * cols + c] = src[i * cols + c];
    } else {
      dst[i * cols + c] = src[r * cols + c];
    }
  }
}

template <bool kScatter>
void run(const RowsArgs& a) {
  if (a.n <= 0 || a.cols <= 0) return;
  DeviceGuard guard(a.device);
  DeviceBuffer index(sizeof(int64_t) * static_cast<size_t>(a.n), a.device);
  cuda_copy_to_device(index.as(), a.host_index, sizeof(int64_t) * static_cast<size_t>(a.n), a.device);
  const int64_t total = a.n * a.cols;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
  rows_kernel<kScatter><<<blocks, kThreads>>>(a.src, a.dst, a.cols, index.as<int64_t>(), a.n);
  check_launch(kScatter ? "scatter_rows kernel" : "gather_rows kernel");
  cuda_synchronize(a.device);  // the index buffer is freed on return
}

}  // namespace

void gather_rows_cuda(const RowsArgs& a) { run<false>(a); }
void scatter_rows_cuda(const RowsArgs& a) { run<true>(a); }

}  // namespace lgrpo
