// The seam between the policy engine's orchestration (model.cc: layer sequence, arena
// layout, decode loop) and the leaf operations it runs. The orchestration calls ONLY
// through a Backend table and never touches activation memory itself, so a CUDA engine
// is a second table (device memory, kernel launches) under the same orchestration.
//
// cpu_backend() fills the table from the *_cpu twins in native/ops/ plus the small engine
// helpers of backend_cpu.cc (residual adds, bias sums, row gathers, the sampler). Every
// entry is deterministic: same inputs → same bits, whatever the thread count.
//
// Pointers named "host" are ordinary host memory owned by the caller; every other
// pointer is backend memory from alloc().
#pragma once

#include <cstddef>
#include <cstdint>

#include "../ops/attention.h"
#include "../ops/embedding.h"
#include "../ops/gemm.h"
#include "../ops/gemm_bf16.h"
#include "../ops/linear_token_logprobs.h"
#include "../ops/rms_norm.h"
#include "../ops/rope.h"
#include "../ops/swiglu.h"

namespace lgrpo {

// Next-token sampling over rows of logits, one independent draw per row.
//   temperature 0: greedy, the lowest index among the largest logits; its log-prob is
//                  reported under the unscaled model distribution softmax(logits).
//   temperature τ > 0: x = logits/τ; top_k > 0 keeps the k largest x (ties broken by the
//                  lower index); top_p < 1 then keeps the smallest prefix of the survivors,
//                  by decreasing probability, whose mass reaches top_p; a token is drawn
//                  from the renormalised survivors and its log-prob under that same
//                  distribution is reported.
// The uniform variate of row r is a counter-based hash of (seed, row_keys[r], step), so a
// row's draw never depends on the other rows, the batch layout or the thread count.
struct SampleArgs {
  const float* logits;        // [rows, vocab]
  int64_t rows, vocab;
  double temperature, top_p;
  int64_t top_k;              // 0: no top-k
  uint64_t seed;
  const int64_t* row_keys;    // host [rows]: the identity of each row for the generator
  int64_t step;
  int32_t* tokens;            // host [rows] out
  float* logprobs;            // host [rows] out
  int device = 0;             // CUDA twin: the device `logits` lives on (CPU twin: unused)
  // Optional, host [rows]: the logits are already divided by τ (τ = 1 when greedy) and
  // lse[r] is row r's logsumexp from Backend::linear_token_logits. An untruncated draw
  // (greedy, or τ > 0 without top-k/top-p) then reports float(double(x[r, token]) − lse[r]):
  // the bits sequence_logprobs gives the same token. Truncated draws report their
  // renormalised log-prob as without it.
  const double* lse = nullptr;
};

// The sampler of each backend, also reachable outside the tables (sampleRows in
// native/bindings/sample.cc, for tests). The CUDA twin is kernels/sample.cu.
void sample_cpu(const SampleArgs& a);
void sample_cuda(const SampleArgs& a);

struct Backend {
  const char* name;

  // Memory. alloc returns 64-byte aligned memory (nullptr for 0 bytes is allowed).
  void* (*alloc)(size_t bytes);
  void (*free)(void* p);
  void (*upload)(void* dst, const void* host_src, size_t bytes);
  void (*download)(void* host_dst, const void* src, size_t bytes);
  void (*copy)(void* dst, const void* src, size_t bytes);
  void (*zero)(void* dst, size_t bytes);

  // Leaf operations (argument structs in native/ops/*.h).
  void (*gemm)(const GemmArgs&);
  // gemm_f32_k_segments (gemm.h): one GEMM per K segment, accumulated into C.
  void (*gemm_k_segments)(const GemmArgs&, const int64_t* bounds, int64_t count);
  int64_t (*rms_norm_forward)(const RmsNormForwardArgs&);
  void (*rms_norm_backward)(const RmsNormBackwardArgs&);
  void (*rope_table)(double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out);
  void (*rope_forward)(const RopeArgs&);
  void (*rope_backward)(const RopeArgs&);
  int64_t (*attention_forward)(const AttentionForwardArgs&);
  void (*attention_backward)(const AttentionBackwardArgs&);
  int64_t (*attention_decode)(const AttentionDecodeArgs&);
  void (*swiglu_forward)(const SwigluForwardArgs&);
  void (*swiglu_backward)(const SwigluBackwardArgs&);
  void (*embedding_forward)(const EmbeddingForwardArgs&);
  void (*embedding_backward)(const EmbeddingBackwardArgs&);
  void (*linear_token_logprobs_forward)(const LinearTokenLogprobsForwardArgs&);
  // The LM head of sampling: logits [rows, vocab] divided by τ and each row's logsumexp
  // (host, double), with the arithmetic of linear_token_logprobs_forward, so a sampled
  // token's log-prob is exactly the one sequence_logprobs reports (linear_token_logits_cpu).
  // Both tables have it (the CUDA twin: linear_token_logits_cuda). Where null, generate
  // takes gemm + the sampler's own log-softmax, which match sequence_logprobs only to rounding.
  void (*linear_token_logits)(const LinearTokenLogprobsForwardArgs&, float* logits, double* host_lse);

  // bf16 rollouts (generate with bf16_weights): a bf16 copy of the parameters and the
  // GEMM over it (gemm_bf16.h; both tables have them). Null in a table without them:
  // generate then runs in f32 whatever was asked.
  void (*to_bf16)(const float* src, uint16_t* dst, int64_t n);
  void (*gemm_bf16_weights)(const GemmBf16Args&);

  // Decoding's products that share their input (q, k and v; gate and up): gemm /
  // gemm_bf16_weights for each of args[0..count), the same bits, as one job where the
  // backend can (the CPU: one pool join instead of one per product). Null where a backend
  // has no such job (CUDA): the engine then calls gemm / gemm_bf16_weights for each.
  void (*gemm_group)(const GemmArgs* args, int count);
  void (*gemm_bf16_weights_group)(const GemmBf16Args* args, int count);

  // f32 rollouts: W [n, k] (row stride ldw) copied into 16-column panels (gemm.h), which
  // gemm reads with GemmArgs::b_panels and linear_token_logits with weight_panels — the
  // same bits as from W, one contiguous stream per panel. Null where a backend reads its
  // weights in place (CUDA): generate then does.
  void (*pack_panels)(const float* w, int64_t ldw, int64_t n, int64_t k, float* panels);
  // bf16 rollouts: W into bf16 panels (gemm_bf16.h) that gemm_bf16_weights reads with
  // GemmBf16Args::w_panels, the same bits as from the bf16 copy. Null where the bf16 GEMM
  // has no panel kernel (CUDA; CPUs without AVX512-BF16): generate then uses to_bf16.
  void (*pack_panels_bf16)(const float* w, int64_t ldw, int64_t n, int64_t k, uint16_t* panels);

  // Engine helpers.
  // out = a + b, elementwise over n (out may alias a or b).
  void (*add)(float* out, const float* a, const float* b, int64_t n);
  // y[r, :] += bias for r < rows.
  void (*add_bias)(float* y, const float* bias, int64_t rows, int64_t cols);
  // dbias[c] += Σ_r dy[r, c], rows summed in increasing order (the bias gradient).
  void (*bias_grad)(const float* dy, int64_t rows, int64_t cols, float* dbias);
  // x[b, t, :] = 0 for t >= lengths[b] (host lengths), x laid out [batch, seq, cols].
  void (*mask_padding)(float* x, int64_t batch, int64_t seq, int64_t cols, const int32_t* host_lengths);
  // dst[i, :] = src[index[i], :] (host index, each in range).
  void (*gather_rows)(const float* src, int64_t cols, const int64_t* host_index, int64_t n, float* dst);
  // dst[index[i], :] = src[i, :] for index[i] >= 0 (host index; targets distinct).
  void (*scatter_rows)(const float* src, int64_t cols, const int64_t* host_index, int64_t n, float* dst);
  // Throws lgrpo::Error (Range) naming the first row whose logits are not finite.
  void (*sample)(const SampleArgs&);
  // The first r < rows whose values x[r·stride, r·stride + count_r) hold a NaN or ±Inf,
  // or -1; count_r = host_counts[r] (host memory), or stride when host_counts is null.
  // A gradient from the user is probed where it lies: no copy to the host.
  int64_t (*first_nonfinite_row)(const float* x, int64_t rows, int64_t stride, const int64_t* host_counts);
};

const Backend& cpu_backend();

// The CUDA table (kernels/backend_cuda.cu; throws where CUDA is not compiled in). Its
// entries run on the device of the innermost EngineDeviceScope of the calling thread.
const Backend& cuda_backend();
class EngineDeviceScope {
 public:
  explicit EngineDeviceScope(int device);
  ~EngineDeviceScope();
  EngineDeviceScope(const EngineDeviceScope&) = delete;
  EngineDeviceScope& operator=(const EngineDeviceScope&) = delete;

 private:
  int previous_;
};

// The engine's counter-based generator: a uniform in [0, 1) with 53 random bits, a pure
// function of (seed, key, counter), so draws never depend on order or threads. The
// sampler uses key = row, counter = step; random initialisation key = tensor, counter = pair.
double counter_uniform(uint64_t seed, uint64_t key, uint64_t counter);

}  // namespace lgrpo
