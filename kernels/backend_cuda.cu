// The CUDA backend table of the policy engine: the same orchestration (model.cc) as the
// CPU table, with device memory and the *_cuda twins of native/ops/, plus the engine
// helpers below. The table has no device argument: every entry works on the device of
// the innermost EngineDeviceScope on this thread (the binding opens one per call).
//
// mask_padding issues one memset per padded row (host lengths, no upload); gather_rows
// and scatter_rows are the rows twins (kernels/rows.cu: the index uploaded, one launch).
#include <cuda_runtime.h>

#include <algorithm>

#include "../native/cuda_backend.h"
#include "../native/engine/backend.h"
#include "../native/ops/adamw.h"
#include "../native/ops/gemm_bf16.h"
#include "../native/ops/rows.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

thread_local int t_engine_device = 0;

constexpr int kThreads = 256;

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += bias[i % cols];
}

// One thread per column, rows summed in increasing order into a local, then added to
// dbias once: the CPU twin's order, so the same bits.
__global__ void bias_grad_kernel(const float* dy, int64_t rows, int64_t cols, float* dbias) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float acc = 0.0f;
  for (int64_t r = 0; r < rows; ++r) acc += dy[r * cols + c];
  dbias[c] += acc;
}

// Rows are walked by blocks (grid-stride); a lane that sees a NaN or ±Inf lowers the
// flag to its row, so the flag ends as the first bad row whatever the schedule.
__global__ void first_nonfinite_row_kernel(const float* x, int64_t rows, int64_t stride, const int64_t* counts,
                                           unsigned long long* first) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = x + r * stride;
    const int64_t n = counts ? counts[r] : stride;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      if (!isfinite(row[i])) {
        atomicMin(first, static_cast<unsigned long long>(r));
        break;
      }
  }
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>((n + kThreads - 1) / kThreads, 1), 65535)); }

void* cuda_engine_alloc(size_t bytes) { return bytes ? cuda_alloc(bytes, t_engine_device) : nullptr; }
void cuda_engine_free(void* p) { cuda_free(p, t_engine_device); }
void cuda_engine_upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes) cuda_copy_to_device(dst, host_src, bytes, t_engine_device);
}
void cuda_engine_download(void* host_dst, const void* src, size_t bytes) {
  if (bytes) cuda_copy_to_host(host_dst, src, bytes, t_engine_device);
}
void cuda_engine_copy(void* dst, const void* src, size_t bytes) {
  if (bytes) cuda_copy_device_to_device(dst, src, bytes, t_engine_device);
}
void cuda_engine_zero(void* dst, size_t bytes) { cuda_memset_zero(dst, bytes, t_engine_device); }

void cuda_add(float* out, const float* a, const float* b, int64_t n) {
  if (n <= 0) return;
  DeviceGuard guard(t_engine_device);
  add_kernel<<<grid_for(n), kThreads>>>(out, a, b, n);
  check_launch("engine add_kernel");
}

void cuda_add_bias(float* y, const float* bias, int64_t rows, int64_t cols) {
  if (rows * cols <= 0) return;
  DeviceGuard guard(t_engine_device);
  add_bias_kernel<<<grid_for(rows * cols), kThreads>>>(y, bias, rows, cols);
  check_launch("engine add_bias_kernel");
}

void cuda_bias_grad(const float* dy, int64_t rows, int64_t cols, float* dbias) {
  if (cols <= 0) return;
  DeviceGuard guard(t_engine_device);
  bias_grad_kernel<<<blocks_for(cols, kThreads), kThreads>>>(dy, rows, cols, dbias);
  check_launch("engine bias_grad_kernel");
}

void cuda_mask_padding(float* x, int64_t batch, int64_t seq, int64_t cols, const int32_t* host_lengths) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = std::clamp<int64_t>(host_lengths[b], 0, seq);
    if (len < seq)
      cuda_memset_zero(x + (b * seq + len) * cols, static_cast<size_t>((seq - len) * cols) * sizeof(float), t_engine_device);
  }
}

void cuda_gather_rows(const float* src, int64_t cols, const int64_t* host_index, int64_t n, float* dst) {
  gather_rows_cuda(RowsArgs{src, dst, cols, host_index, n, t_engine_device});
}

void cuda_scatter_rows(const float* src, int64_t cols, const int64_t* host_index, int64_t n, float* dst) {
  scatter_rows_cuda(RowsArgs{src, dst, cols, host_index, n, t_engine_device});
}

int64_t cuda_first_nonfinite_row(const float* x, int64_t rows, int64_t stride, const int64_t* host_counts) {
  if (rows <= 0) return -1;
  DeviceGuard guard(t_engine_device);
  DeviceBuffer counts(host_counts ? sizeof(int64_t) * static_cast<size_t>(rows) : 0, t_engine_device);
  if (host_counts) cuda_copy_to_device(counts.as(), host_counts, sizeof(int64_t) * static_cast<size_t>(rows), t_engine_device);
  DeviceFlags<1> first(t_engine_device);
  first_nonfinite_row_kernel<<<static_cast<unsigned>(std::min<int64_t>(rows, 4096)), kThreads>>>(
      x, rows, stride, counts.as<int64_t>(), first.words());
  check_launch("engine first_nonfinite_row_kernel");
  const unsigned long long row = first.read()[0];
  return row == kNoProblem ? -1 : static_cast<int64_t>(row);
}

// The twins take their device from their arguments: stamp this scope's device on a copy.
template <class Args>
Args on_device(const Args& a) {
  Args b = a;
  b.device = t_engine_device;
  return b;
}

}  // namespace

EngineDeviceScope::EngineDeviceScope(int device) : previous_(t_engine_device) { t_engine_device = device; }
EngineDeviceScope::~EngineDeviceScope() { t_engine_device = previous_; }

const Backend& cuda_backend() {
  static const Backend table = [] {
    Backend b{};
    b.name = "cuda";
    b.alloc = cuda_engine_alloc;
    b.free = cuda_engine_free;
    b.upload = cuda_engine_upload;
    b.download = cuda_engine_download;
    b.copy = cuda_engine_copy;
    b.zero = cuda_engine_zero;
    b.gemm = [](const GemmArgs& a) { gemm_f32_cuda(on_device(a)); };
    b.gemm_k_segments = [](const GemmArgs& a, const int64_t* bounds, int64_t count) {
      // Kernels on one stream run in order: the per-segment launches are the whole job.
      for (int64_t s = 0; s < count; ++s) {
        GemmArgs seg = gemm_k_range(on_device(a), bounds[s], bounds[s + 1]);
        if (s > 0) seg.beta = 1.0f;
        if (seg.k > 0 || s == 0) gemm_f32_cuda(seg);
      }
    };
    b.rms_norm_forward = [](const RmsNormForwardArgs& a) { return rms_norm_forward_cuda(on_device(a)); };
    b.rms_norm_backward = [](const RmsNormBackwardArgs& a) { rms_norm_backward_cuda(on_device(a)); };
    b.rope_table = [](double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out) {
      rope_table_cuda(theta, head_dim, positions, cos_out, sin_out, t_engine_device);
    };
    b.rope_forward = [](const RopeArgs& a) { rope_forward_cuda(on_device(a)); };
    b.rope_backward = [](const RopeArgs& a) { rope_backward_cuda(on_device(a)); };
    b.attention_forward = [](const AttentionForwardArgs& a) { return attention_forward_cuda(on_device(a)); };
    b.attention_backward = [](const AttentionBackwardArgs& a) { attention_backward_cuda(on_device(a)); };
    b.attention_decode = [](const AttentionDecodeArgs& a) { return attention_decode_cuda(on_device(a)); };
    b.swiglu_forward = [](const SwigluForwardArgs& a) { swiglu_forward_cuda(on_device(a)); };
    b.swiglu_backward = [](const SwigluBackwardArgs& a) { swiglu_backward_cuda(on_device(a)); };
    b.embedding_forward = [](const EmbeddingForwardArgs& a) { embedding_forward_cuda(on_device(a)); };
    b.embedding_backward = [](const EmbeddingBackwardArgs& a) { embedding_backward_cuda(on_device(a)); };
    b.linear_token_logprobs_forward = [](const LinearTokenLogprobsForwardArgs& a) {
      linear_token_logprobs_forward_cuda(on_device(a));
    };
    b.linear_token_logits = [](const LinearTokenLogprobsForwardArgs& a, float* logits, double* host_lse) {
      linear_token_logits_cuda(on_device(a), logits, host_lse);
    };
    b.add = cuda_add;
    b.add_bias = cuda_add_bias;
    b.bias_grad = cuda_bias_grad;
    b.mask_padding = cuda_mask_padding;
    b.gather_rows = cuda_gather_rows;
    b.scatter_rows = cuda_scatter_rows;
    b.sample = [](const SampleArgs& a) { sample_cuda(on_device(a)); };
    b.first_nonfinite_row = cuda_first_nonfinite_row;
    b.to_bf16 = [](const float* src, uint16_t* dst, int64_t n) { f32_to_bf16_cuda(src, dst, n, t_engine_device); };
    b.gemm_bf16_weights = [](const GemmBf16Args& a) { gemm_bf16_weights_cuda(on_device(a)); };
    return b;
  }();
  return table;
}

}  // namespace lgrpo
