// The policy engine: a causal LM of the Qwen2/Llama family (token embedding → L × [RMSNorm
// → GQA self-attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm),
// written once over the leaf operations of a Backend table (backend.h).
//
// Parameters live in ONE flat f32 buffer in parameter_layout() order (the order of
// parameterShapes() in src/engine/config.ts, Hugging Face names), gradients in a second
// buffer of the same layout. Both belong to the caller and are passed to every call, so
// the model holds no weights of its own; it owns only its arenas:
//   training arena   the activations forward() saves for backward(), laid out for (B, T),
//                    allocated once and regrown only when a larger batch comes;
//   inference arena  one layer's scratch plus the KV cache, for generate() and
//                    sequence_logprobs(), so they never disturb a pending backward().
//
// The LM head is NOT applied in training: forward() returns the final normed hidden
// states, the caller runs the fused linearTokenLogprobs over them and adds its weight
// gradient into the LM-head gradient (the embedding's when tied).
//
// Padding: each row b of a [B, T] batch holds lengths[b] tokens followed by padding.
// Padded positions are never read from ids, their hidden outputs are 0, and gradients
// given for them are ignored.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend.h"

namespace lgrpo {

struct ModelConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0;
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t vocab = 0, max_positions = 0;
  double rms_eps = 1e-6, rope_theta = 10000.0;
  bool tie_embeddings = false, qkv_bias = false, o_bias = false;

  int64_t q_width() const { return q_heads * head_dim; }
  int64_t kv_width() const { return kv_heads * head_dim; }
  // Throws lgrpo::Error naming the field when the sizes cannot describe a model.
  void validate() const;
};

struct ParameterEntry {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in floats, into the flat buffer
  int64_t numel = 0;
};

// Every tensor with its Hugging Face name, shape and offset, in forward order.
std::vector<ParameterEntry> parameter_layout(const ModelConfig& c);
int64_t parameter_count(const ModelConfig& c);

struct GenerateOptions {
  int64_t max_new_tokens = 0;
  double temperature = 1.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;
  std::vector<int32_t> stop_ids;
  uint64_t seed = 0;
  // Every weight matrix of the call (prefill, decode, LM head) read from a bf16 copy of
  // the parameters (round to nearest even, made at the start of the call, so the output
  // is a pure function of the f32 parameters and the seed): half the bytes per step.
  // Norms, biases and the embedding gather stay f32. Ignored (f32) on a backend without
  // the bf16 entries. Log-probs are then those of the bf16 model, not bit-equal to
  // sequence_logprobs.
  bool bf16_weights = false;
};

struct GenerateOutput {
  std::vector<std::vector<int32_t>> tokens;  // new tokens per row, a stop id included
  std::vector<std::vector<float>> logprobs;  // per new token (see SampleArgs)
  std::vector<uint8_t> stopped;              // 1: ended on a stop id; 0: hit max_new_tokens
};

struct ArenaStats {
  int64_t training_bytes = 0, training_allocations = 0;
  int64_t inference_bytes = 0, inference_allocations = 0;
};

class Model {
 public:
  Model(const ModelConfig& config, const Backend& backend, bool recompute);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  // Offset (in floats) of the LM-head weight [V, D] in the flat buffers: the embedding's
  // when tied, where the caller adds linearTokenLogprobsBackward's weight gradient.
  int64_t lm_head_offset() const;
  bool recompute() const { return recompute_; }
  // With recomputation the forward keeps only each layer's input and the backward
  // recomputes a layer's activations just before its backward: memory O(L·N·D + one
  // layer) instead of O(L·N·(6D + 3I)), same bits.
  void set_recompute(bool on);

  // ids and lengths are host arrays ([B·T] and [B]); hidden_out is backend memory [B·T, D].
  void forward(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch, int64_t seq,
               float* hidden_out);
  // Accumulates (+=) the gradients of Σ grad_hidden·hidden into grads, through the last
  // forward's activations. grad_hidden is backend memory [B·T, D]; its padded rows are ignored.
  void backward(const float* params, float* grads, const float* grad_hidden);
  // grads[LM head] += grad_weight ([V, D], backend memory): where linearTokenLogprobsBackward's
  // weight gradient goes (the embedding's gradient when tied).
  void add_lm_head_grad(float* grads, const float* grad_weight);
  // The first row holding a NaN or ±Inf, or -1, probed on the model's device: of a
  // gradient w.r.t. the last forward's hidden states ([B·T, D], padding ignored), and of
  // a gradient w.r.t. the LM head ([V, D]).
  int64_t first_nonfinite_grad_hidden_row(const float* grad_hidden) const;
  int64_t first_nonfinite_lm_head_row(const float* grad_weight) const;
  bool has_activations() const { return has_activations_; }
  int64_t last_batch() const { return batch_; }
  int64_t last_seq() const { return seq_; }
  const std::vector<int32_t>& last_lengths() const { return host_lengths_; }

  // Log-prob of every completion token given everything before it, at a temperature:
  // row b holds lengths[b] tokens of which the first prompt_lengths[b] (>= 1) are the
  // prompt. out (host) receives Σ_b (lengths[b] − prompt_lengths[b]) values, row by row.
  void sequence_logprobs(const float* params, const int32_t* ids, const int32_t* lengths,
                         const int32_t* prompt_lengths, int64_t batch, int64_t seq, double temperature, float* out);

  // Batched sampling from padded prompts [B, T] (lengths[b] >= 1) with a KV cache.
  GenerateOutput generate(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch, int64_t seq,
                          const GenerateOptions& options);

  ArenaStats stats() const;
  // Whether generate() can honour bf16_weights on this backend.
  bool supports_bf16_weights() const { return be_.to_bf16 && be_.gemm_bf16_weights; }
  // Frees both arenas and the bf16 and panel copies (the next call reallocates).
  void release_arenas();

 private:
  struct Arena {
    void* base = nullptr;
    size_t capacity = 0;
    int64_t allocations = 0;
  };
  // One layer's saved activations over `rows` token rows; q, k, v, att and lse in the
  // attention kernels' padded layout (the same rows unless training packs the batch).
  struct LayerActs {
    float *xn1, *rstd1, *q, *k, *v, *att, *lse, *res_mid, *rstd2, *xn2, *gate, *up, *h;
  };
  struct LayerWeights {
    const float *in_norm, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *post_norm, *wg, *wu, *wd;
  };
  struct LayerGrads {
    float *in_norm, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *post_norm, *wg, *wu, *wd;
  };
  // Where a prefill also writes its keys and values: cache rows index[i] (or none).
  struct KvSink {
    float* k_cache;
    float* v_cache;
    const int64_t* index;  // host [rows], -1 to skip
  };

  class Planner;
  void plan_training(Planner& p, int64_t batch, int64_t seq, int64_t rows, int64_t unique_rows);
  void forward_shared(const float* params, float* hidden_out);
  void plan_inference(Planner& p, int64_t batch, int64_t seq, int64_t cache_seq, int64_t logit_rows);
  void plan_acts(Planner& p, LayerActs& a, int64_t rows, int64_t attention_rows);
  void reserve(Arena& arena, size_t bytes);
  void ensure_rope(int64_t positions);

  LayerWeights layer_weights(const float* params, int64_t l) const;
  LayerGrads layer_grads(float* grads, int64_t l) const;
  const float* lm_head(const float* params) const;

  void embed(const float* params, const int32_t* ids_dev, int64_t rows, float* x);
  void check_finite(int64_t bad_row, const char* where, int64_t layer) const;
  // Forward of one layer over a [B, T] batch. x_out may alias x_in; nullptr stops
  // after the MLP's SwiGLU (all the backward needs, when recomputing).
  void layer_forward(const LayerWeights& w, int64_t layer, int64_t batch, int64_t seq, const int32_t* lengths_dev,
                     const int32_t* positions_dev, const float* x_in, LayerActs& a, float* tmp, float* x_out,
                     const KvSink* kv, bool packed = false);
  int64_t padded_row(int64_t packed_row) const;
  void project_qkv(const LayerWeights& w, int64_t rows, LayerActs& a);
  void attention_output(const LayerWeights& w, int64_t rows, const float* x_in, LayerActs& a, float* tmp);
  void mlp(const LayerWeights& w, int64_t layer, int64_t rows, LayerActs& a, float* tmp, float* x_out,
           bool packed = false);
  void layer_backward(const LayerWeights& w, const LayerGrads& g, int64_t layer, const float* x_in, LayerActs& a,
                      float* d_res);
  void linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in, int64_t out, float* y);
  // linear() for products of one input x [rows, in], the same bits; over rollout panels
  // one backend job where the backend has it (gemm_group, gemm_bf16_weights_group).
  struct LinearOut {
    const float* w;
    const float* bias;
    int64_t out;
    float* y;
  };
  void linear_group(const float* x, int64_t rows, int64_t in, std::initializer_list<LinearOut> outs);
  void linear_backward(const float* dy, const float* x, const float* w, int64_t rows, int64_t in, int64_t out,
                       float* dx, float beta_dx, float* dw, float* dbias);
  // Embedding and every layer over a [B, T] batch in the inference arena, leaving the last
  // layer's output in inf_.x; with cache_seq > 0 keys and values also go to the KV cache
  // ([L][B, cache_seq, Hkv, hd]).
  void inference_forward(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch, int64_t seq,
                         int64_t cache_seq);

  ModelConfig cfg_;
  const Backend& be_;
  bool recompute_;

  Arena train_, infer_;
  // Training arena views (valid for batch_ × seq_ after a forward).
  int64_t batch_ = 0, seq_ = 0;
  bool has_activations_ = false;
  std::vector<int32_t> host_lengths_, host_ids_, host_positions_;
  int32_t *ids_ = nullptr, *positions_ = nullptr, *lengths_ = nullptr;
  // Training runs every row-wise op (norms, GEMMs, SwiGLU, residual adds) on the real
  // tokens only, packed row after row ([R, D], R = Σ lengths); only attention sees the
  // padded [B·T] layout. pad_index_[r]: the padded row b·T + t of packed row r;
  // row_offsets_[b]: row b's first packed row. packed_: the batch has padding at all.
  int64_t rows_ = 0;
  bool packed_ = false;
  std::vector<int64_t> pad_index_, row_offsets_, dw_blocks_;
  // Rows that begin alike (GRPO's G completions of one prompt) have the same activations
  // over their common prefix: when that saves enough, the forward computes each distinct
  // prefix token once (unique_rows_ rows) and copies its activations to every packed row
  // (expand_[r]: the unique row of packed row r; unique_pad_[u]: unique row u's padded row;
  // pad_unique_[b·T + t]: the unique row of a padded row, 0 for padding). shared_: the
  // forward is running on the unique rows.
  int64_t unique_rows_ = 0;
  bool shared_ = false;
  std::vector<int64_t> expand_, unique_pad_, pad_unique_;
  std::vector<int32_t> unique_ids_, unique_positions_;
  int32_t *uids_ = nullptr, *upos_ = nullptr;
  float* ux_[2] = {nullptr, nullptr};
  LayerActs uacts_{};
  std::vector<float*> res_;  // L+1 residual streams [R, D]
  float* rstd_final_ = nullptr;
  std::vector<LayerActs> acts_;  // L, or 1 when recomputing
  float *tmp_ = nullptr, *d_res_ = nullptr, *d_xn_ = nullptr, *d_att_ = nullptr, *dq_ = nullptr, *dk_ = nullptr,
        *dv_ = nullptr, *d_h_ = nullptr, *d_up_ = nullptr;
  // Packed q/k/v/attention output (and their gradients' padded twins) when packed_.
  float *pq_ = nullptr, *pk_ = nullptr, *pv_ = nullptr, *patt_ = nullptr, *d_att_pad_ = nullptr, *dq_pad_ = nullptr,
        *dk_pad_ = nullptr, *dv_pad_ = nullptr;

  // Inference arena views.
  struct Inference {
    int32_t *ids, *positions, *lengths, *targets;
    float *x, *tmp, *logprobs, *lse, *logits, *k_cache, *v_cache;
    LayerActs acts;
  } inf_{};

  // A generate call's copy of the weights it reads (grown on demand): either every weight
  // matrix in panels (below) or, where the backend has no bf16 panels, a bf16 copy of the
  // parameters; made per call from that call's parameters, never reused by a later call.
  Arena rollout_copy_;
  // While a bf16 generate with the bf16 copy runs: the f32 parameters it mirrors.
  // linear() reads a weight inside [bf16_source_, bf16_source_ + bf16_count_) from the copy.
  const float* bf16_source_ = nullptr;
  int64_t bf16_count_ = 0;

  // Rollouts where the backend has pack_panels (f32) or pack_panels_bf16: while a generate
  // runs, each weight matrix's panels in rollout_copy_ by its address in the parameters;
  // linear() and the LM head read them (bf16 panels when panels_bf16_).
  std::unordered_map<const float*, const void*> panels_;
  bool panels_bf16_ = false;
  // f32 panels not written yet: the first product with the matrix (the prefill's) writes them
  // as it reads W (GemmArgs::panels_out), instead of a copy pass over every matrix up front.
  std::unordered_set<const float*> panels_pending_;

  // RoPE cos/sin table [rope_positions_, head_dim/2], grown on demand.
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr;
  int64_t rope_positions_ = 0;
};

}  // namespace lgrpo
