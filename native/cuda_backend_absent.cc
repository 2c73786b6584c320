// Built only when CUDA is not compiled in: every query says "no GPU" and every
// allocation request explains how to get a CUDA build.
#include "common.h"
#include "cuda_backend.h"
#include "engine/backend.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/gemm_bf16.h"
#include "ops/grpo_loss.h"
#include "ops/group_advantages.h"
#include "ops/lambda_weights.h"
#include "ops/linear_token_logprobs.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/rows.h"
#include "ops/swiglu.h"
#include "ops/token_logprobs.h"

namespace lgrpo {
namespace {
[[noreturn]] void no_cuda() {
  throw Error(
      "lgrpo-native was built without CUDA; rebuild with nvcc on PATH (npm run build:addon) "
      "or use device 'cpu'");
}
}  // namespace

bool cuda_compiled() { return false; }
bool cuda_emulated() { return false; }
std::string cuda_unavailable_reason() { return "this addon was built without CUDA (nvcc was not on PATH at install)"; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }
void* cuda_alloc(size_t, int) { no_cuda(); }
void cuda_free(void*, int) noexcept {}
CudaMemoryStats cuda_memory_stats(int) { no_cuda(); }
bool gemm_f32_cublaslt(const GemmArgs&) { return false; }
void gemm_bf16_weights_cuda(const GemmBf16Args&) { no_cuda(); }
void f32_to_bf16_cuda(const float*, uint16_t*, int64_t, int) { no_cuda(); }
void set_cuda_matmul_precision(const std::string& precision) {
  if (precision != "highest" && precision != "high" && precision != "medium")
    throw Error("precision: expected 'highest', 'high' or 'medium', got '" + precision + "'", Error::Range);
}
std::string cuda_matmul_description() { return "none (built without CUDA)"; }
void cuda_empty_cache(int) { no_cuda(); }
void cuda_copy_to_device(void*, const void*, size_t, int) { no_cuda(); }
void cuda_copy_to_host(void*, const void*, size_t, int) { no_cuda(); }
void cuda_copy_device_to_device(void*, const void*, size_t, int) { no_cuda(); }
void cuda_memset_zero(void*, size_t, int) { no_cuda(); }
void cuda_check_device(int) { no_cuda(); }
void cuda_synchronize(int) { no_cuda(); }

void token_logprobs_forward_cuda(const TokenLogprobsForwardArgs&) { no_cuda(); }
void token_logprobs_backward_cuda(const TokenLogprobsBackwardArgs&) { no_cuda(); }
void linear_token_logprobs_forward_cuda(const LinearTokenLogprobsForwardArgs&) { no_cuda(); }
void linear_token_logits_cuda(const LinearTokenLogprobsForwardArgs&, float*, double*) { no_cuda(); }
void linear_token_logprobs_backward_cuda(const LinearTokenLogprobsBackwardArgs&) { no_cuda(); }
void group_advantages_cuda(const GroupAdvantagesArgs&) { no_cuda(); }
void lambda_weights_cuda(const LambdaWeightsArgs&) { no_cuda(); }
void grpo_token_pass_cuda(const GrpoTokenPassArgs&) { no_cuda(); }
int64_t attention_forward_cuda(const AttentionForwardArgs&) { no_cuda(); }
void attention_backward_cuda(const AttentionBackwardArgs&) { no_cuda(); }
int64_t attention_decode_cuda(const AttentionDecodeArgs&) { no_cuda(); }
const Backend& cuda_backend() { no_cuda(); }
void gather_rows_cuda(const RowsArgs&) { no_cuda(); }
void scatter_rows_cuda(const RowsArgs&) { no_cuda(); }
EngineDeviceScope::EngineDeviceScope(int) : previous_(0) {}
EngineDeviceScope::~EngineDeviceScope() {}
void sample_cuda(const SampleArgs&) { no_cuda(); }
void mask_lengths_cuda(const void*, DType, int64_t, int64_t, float*, int) { no_cuda(); }
void gemm_f32_cuda(const GemmArgs&) { no_cuda(); }
int64_t rms_norm_forward_cuda(const RmsNormForwardArgs&) { no_cuda(); }
void rms_norm_backward_cuda(const RmsNormBackwardArgs&) { no_cuda(); }
void swiglu_forward_cuda(const SwigluForwardArgs&) { no_cuda(); }
void swiglu_backward_cuda(const SwigluBackwardArgs&) { no_cuda(); }
void embedding_forward_cuda(const EmbeddingForwardArgs&) { no_cuda(); }
void embedding_backward_cuda(const EmbeddingBackwardArgs&) { no_cuda(); }
void rope_table_cuda(double, int64_t, int64_t, float*, float*, int) { no_cuda(); }
void rope_forward_cuda(const RopeArgs&) { no_cuda(); }
void rope_backward_cuda(const RopeArgs&) { no_cuda(); }
void adamw_step_cuda(const AdamwArgs&) { no_cuda(); }
double grad_sum_squares_cuda(const float*, int64_t, int) { no_cuda(); }
void scale_in_place_cuda(float*, int64_t, float, int) { no_cuda(); }

}  // namespace lgrpo
