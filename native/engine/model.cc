// The policy engine's orchestration: arenas, the layer sequence (forward, explicit
// per-layer backward, optional recomputation), sequence log-probs and the KV-cache decode
// loop. Every numeric step goes through the Backend table; this file only decides what
// runs on which buffers.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

namespace lgrpo {
namespace {

std::string range_message(const char* arg, const std::string& what) { return std::string(arg) + ": " + what; }

[[noreturn]] void range_error(const char* arg, const std::string& what) {
  throw Error(range_message(arg, what), Error::Range);
}

// Host-side checks of a padded batch: lengths in [min_len, seq], ids of real tokens in
// [0, vocab). Padded ids are never read, so they may hold anything.
void check_batch(const int32_t* ids, const int32_t* lengths, int64_t batch, int64_t seq, int64_t vocab,
                 int64_t min_len) {
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] < min_len || lengths[b] > seq)
      range_error("lengths", "length " + std::to_string(lengths[b]) + " of row " + std::to_string(b) +
                                 " is outside [" + std::to_string(min_len) + ", " + std::to_string(seq) + "]");
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int32_t id = ids[b * seq + t];
      if (id < 0 || id >= vocab)
        range_error("ids", "token id " + std::to_string(id) + " at row " + std::to_string(b) + ", position " +
                               std::to_string(t) + " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Configuration and parameter layout

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) range_error(name, "expected a positive integer, got " + std::to_string(v));
  };
  positive(hidden, "hiddenSize");
  positive(intermediate, "intermediateSize");
  positive(layers, "numHiddenLayers");
  positive(q_heads, "numAttentionHeads");
  positive(kv_heads, "numKeyValueHeads");
  positive(head_dim, "headDim");
  positive(vocab, "vocabSize");
  positive(max_positions, "maxPositionEmbeddings");
  if (q_heads % kv_heads != 0)
    range_error("numKeyValueHeads", std::to_string(kv_heads) + " does not divide numAttentionHeads=" +
                                        std::to_string(q_heads));
  if (head_dim % 2 != 0) range_error("headDim", "must be even for RoPE, got " + std::to_string(head_dim));
  if (!(rms_eps > 0) || !std::isfinite(rms_eps)) range_error("rmsNormEps", "expected a positive finite number");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) range_error("ropeTheta", "expected a positive finite number");
  if (max_positions > (int64_t(1) << 30)) range_error("maxPositionEmbeddings", "is larger than 2^30");
}

std::vector<ParameterEntry> parameter_layout(const ModelConfig& c) {
  std::vector<ParameterEntry> out;
  int64_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    out.push_back({std::move(name), std::move(shape), offset, n});
    offset += n;
  };
  const int64_t D = c.hidden, I = c.intermediate, V = c.vocab, Q = c.q_width(), KV = c.kv_width();
  add("model.embed_tokens.weight", {V, D});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    add(p + ".input_layernorm.weight", {D});
    add(p + ".self_attn.q_proj.weight", {Q, D});
    if (c.qkv_bias) add(p + ".self_attn.q_proj.bias", {Q});
    add(p + ".self_attn.k_proj.weight", {KV, D});
    if (c.qkv_bias) add(p + ".self_attn.k_proj.bias", {KV});
    add(p + ".self_attn.v_proj.weight", {KV, D});
    if (c.qkv_bias) add(p + ".self_attn.v_proj.bias", {KV});
    add(p + ".self_attn.o_proj.weight", {D, Q});
    if (c.o_bias) add(p + ".self_attn.o_proj.bias", {D});
    add(p + ".post_attention_layernorm.weight", {D});
    add(p + ".mlp.gate_proj.weight", {I, D});
    add(p + ".mlp.up_proj.weight", {I, D});
    add(p + ".mlp.down_proj.weight", {D, I});
  }
  add("model.norm.weight", {D});
  if (!c.tie_embeddings) add("lm_head.weight", {V, D});
  return out;
}

int64_t parameter_count(const ModelConfig& c) {
  const auto layout = parameter_layout(c);
  return layout.back().offset + layout.back().numel;
}

// Offsets of one layer's tensors relative to the layer's first tensor, and the layer stride.
namespace {
struct LayerOffsets {
  int64_t in_norm, wq, bq, wk, bk, wv, bv, wo, bo, post_norm, wg, wu, wd, stride;
};
LayerOffsets layer_offsets(const ModelConfig& c) {
  const int64_t D = c.hidden, I = c.intermediate, Q = c.q_width(), KV = c.kv_width();
  LayerOffsets o{};
  int64_t at = 0;
  auto take = [&](int64_t n) { const int64_t here = at; at += n; return here; };
  o.in_norm = take(D);
  o.wq = take(Q * D);
  o.bq = c.qkv_bias ? take(Q) : -1;
  o.wk = take(KV * D);
  o.bk = c.qkv_bias ? take(KV) : -1;
  o.wv = take(KV * D);
  o.bv = c.qkv_bias ? take(KV) : -1;
  o.wo = take(D * Q);
  o.bo = c.o_bias ? take(D) : -1;
  o.post_norm = take(D);
  o.wg = take(I * D);
  o.wu = take(I * D);
  o.wd = take(D * I);
  o.stride = at;
  return o;
}
}  // namespace

Model::LayerWeights Model::layer_weights(const float* params, int64_t l) const {
  const LayerOffsets o = layer_offsets(cfg_);
  const float* base = params + cfg_.vocab * cfg_.hidden + l * o.stride;
  auto at = [&](int64_t off) { return off < 0 ? nullptr : base + off; };
  return {at(o.in_norm), at(o.wq), at(o.bq), at(o.wk), at(o.bk), at(o.wv), at(o.bv),
          at(o.wo),      at(o.bo), at(o.post_norm), at(o.wg), at(o.wu), at(o.wd)};
}

Model::LayerGrads Model::layer_grads(float* grads, int64_t l) const {
  const LayerOffsets o = layer_offsets(cfg_);
  float* base = grads + cfg_.vocab * cfg_.hidden + l * o.stride;
  auto at = [&](int64_t off) { return off < 0 ? nullptr : base + off; };
  return {at(o.in_norm), at(o.wq), at(o.bq), at(o.wk), at(o.bk), at(o.wv), at(o.bv),
          at(o.wo),      at(o.bo), at(o.post_norm), at(o.wg), at(o.wu), at(o.wd)};
}

namespace {
int64_t final_norm_offset(const ModelConfig& c) {
  return c.vocab * c.hidden + c.layers * layer_offsets(c).stride;
}
}  // namespace

int64_t Model::lm_head_offset() const {
  return cfg_.tie_embeddings ? 0 : final_norm_offset(cfg_) + cfg_.hidden;
}

const float* Model::lm_head(const float* params) const { return params + lm_head_offset(); }

// ---------------------------------------------------------------------------------------
// Arenas

// Carves an arena into 64-byte aligned pieces. Run once without a base to measure, then
// again over the reserved block to hand out the pointers: both passes take the same
// pieces in the same order, so one function describes the layout.
class Model::Planner {
 public:
  explicit Planner(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* take(int64_t count) {
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 0)) * sizeof(T);
    T* p = base_ ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += (bytes + 63) / 64 * 64;
    return p;
  }
  size_t size() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

Model::Model(const ModelConfig& config, const Backend& backend, bool recompute)
    : cfg_(config), be_(backend), recompute_(recompute) {
  cfg_.validate();
}

Model::~Model() {
  release_arenas();
  be_.free(rope_cos_);
  be_.free(rope_sin_);
}

void Model::release_arenas() {
  for (Arena* a : {&train_, &infer_, &rollout_copy_}) {
    be_.free(a->base);
    a->base = nullptr;
    a->capacity = 0;
  }
  has_activations_ = false;
}

void Model::set_recompute(bool on) {
  if (on == recompute_) return;
  recompute_ = on;
  has_activations_ = false;  // the saved activations no longer match the layout
}

void Model::reserve(Arena& arena, size_t bytes) {
  if (bytes <= arena.capacity) return;
  be_.free(arena.base);
  arena.base = nullptr;
  arena.capacity = 0;
  arena.base = be_.alloc(bytes);
  arena.capacity = bytes;
  ++arena.allocations;
}

void Model::plan_acts(Planner& p, LayerActs& a, int64_t rows, int64_t attention_rows) {
  const int64_t D = cfg_.hidden, I = cfg_.intermediate, Q = cfg_.q_width(), KV = cfg_.kv_width();
  a.xn1 = p.take<float>(rows * D);
  a.rstd1 = p.take<float>(rows);
  a.q = p.take<float>(attention_rows * Q);
  a.k = p.take<float>(attention_rows * KV);
  a.v = p.take<float>(attention_rows * KV);
  a.att = p.take<float>(attention_rows * Q);
  a.lse = p.take<float>(attention_rows * cfg_.q_heads);
  a.res_mid = p.take<float>(rows * D);
  a.rstd2 = p.take<float>(rows);
  a.xn2 = p.take<float>(rows * D);
  a.gate = p.take<float>(rows * I);
  a.up = p.take<float>(rows * I);
  a.h = p.take<float>(rows * I);
}

// rows: the real tokens (R ≤ batch·seq) that every row-wise buffer holds.
void Model::plan_training(Planner& p, int64_t batch, int64_t seq, int64_t rows, int64_t unique_rows) {
  const int64_t N = batch * seq, R = rows, D = cfg_.hidden, I = cfg_.intermediate, Q = cfg_.q_width(),
                KV = cfg_.kv_width();
  const bool packed = R < N;
  ids_ = p.take<int32_t>(R);
  positions_ = p.take<int32_t>(R);
  lengths_ = p.take<int32_t>(batch);
  res_.assign(static_cast<size_t>(cfg_.layers + 1), nullptr);
  for (auto& r : res_) r = p.take<float>(R * D);
  rstd_final_ = p.take<float>(R);
  acts_.assign(recompute_ ? 1 : static_cast<size_t>(cfg_.layers), LayerActs{});
  for (auto& a : acts_) plan_acts(p, a, R, N);
  tmp_ = p.take<float>(R * D);
  d_res_ = p.take<float>(R * D);
  d_xn_ = p.take<float>(R * D);
  d_att_ = p.take<float>(R * Q);
  dq_ = p.take<float>(R * Q);
  dk_ = p.take<float>(R * KV);
  dv_ = p.take<float>(R * KV);
  d_h_ = p.take<float>(R * I);
  d_up_ = p.take<float>(R * I);
  const int64_t pr = packed || unique_rows > 0 ? R : 0, pn = packed ? N : 0;
  pq_ = p.take<float>(pr * Q);
  pk_ = p.take<float>(pr * KV);
  pv_ = p.take<float>(pr * KV);
  patt_ = p.take<float>(pr * Q);
  d_att_pad_ = p.take<float>(pn * Q);
  dq_pad_ = p.take<float>(pn * Q);
  dk_pad_ = p.take<float>(pn * KV);
  dv_pad_ = p.take<float>(pn * KV);
  const int64_t U = unique_rows;
  uids_ = p.take<int32_t>(U);
  upos_ = p.take<int32_t>(U);
  ux_[0] = p.take<float>(U * D);
  ux_[1] = p.take<float>(U * D);
  plan_acts(p, uacts_, U, 0);
}

void Model::plan_inference(Planner& p, int64_t batch, int64_t seq, int64_t cache_seq, int64_t logit_rows) {
  const int64_t N = batch * seq, D = cfg_.hidden;
  const int64_t cache = cfg_.layers * batch * cache_seq * cfg_.kv_width();
  inf_.ids = p.take<int32_t>(N);
  inf_.positions = p.take<int32_t>(N);
  inf_.lengths = p.take<int32_t>(batch);
  inf_.targets = p.take<int32_t>(N);
  inf_.x = p.take<float>(N * D);
  inf_.tmp = p.take<float>(N * D);
  inf_.logprobs = p.take<float>(N);
  inf_.lse = p.take<float>(N);
  inf_.logits = p.take<float>(logit_rows * cfg_.vocab);
  inf_.k_cache = p.take<float>(cache);
  inf_.v_cache = p.take<float>(cache);
  plan_acts(p, inf_.acts, N, N);
}

void Model::ensure_rope(int64_t positions) {
  if (positions <= rope_positions_) return;
  // Doubling keeps regrowth rare; never past max_positions, which callers enforce.
  int64_t grown = std::max<int64_t>(64, rope_positions_);
  while (grown < positions) grown *= 2;
  grown = std::min(std::max(grown, positions), std::max(positions, cfg_.max_positions));
  const int64_t half = cfg_.head_dim / 2;
  float* c = static_cast<float*>(be_.alloc(static_cast<size_t>(grown * half) * sizeof(float)));
  float* s = nullptr;
  try {
    s = static_cast<float*>(be_.alloc(static_cast<size_t>(grown * half) * sizeof(float)));
  } catch (...) {
    be_.free(c);
    throw;
  }
  be_.rope_table(cfg_.rope_theta, cfg_.head_dim, grown, c, s);
  be_.free(rope_cos_);
  be_.free(rope_sin_);
  rope_cos_ = c;
  rope_sin_ = s;
  rope_positions_ = grown;
}

ArenaStats Model::stats() const {
  ArenaStats s;
  s.training_bytes = static_cast<int64_t>(train_.capacity);
  s.training_allocations = train_.allocations;
  s.inference_bytes = static_cast<int64_t>(infer_.capacity);
  s.inference_allocations = infer_.allocations;
  return s;
}

// ---------------------------------------------------------------------------------------
// Building blocks

void Model::check_finite(int64_t bad_row, const char* where, int64_t layer) const {
  if (bad_row < 0) return;
  std::string at = layer >= 0 ? "layer " + std::to_string(layer) + " " + where : std::string(where);
  throw Error("forward: non-finite activations at " + at + " (row " + std::to_string(bad_row) +
                  "); are the parameters finite?",
              Error::Range);
}

void Model::linear(const float* x, const float* w, const float* bias, int64_t rows, int64_t in, int64_t out, float* y) {
  const auto at = reinterpret_cast<uintptr_t>(w), base = reinterpret_cast<uintptr_t>(bf16_source_);
  if (bf16_source_ && at >= base && at < base + static_cast<uintptr_t>(bf16_count_) * sizeof(float)) {
    GemmBf16Args g;
    g.x = x;
    g.ldx = in;
    g.w = static_cast<const uint16_t*>(rollout_copy_.base) + (w - bf16_source_);
    g.ldw = in;
    g.y = y;
    g.ldy = out;
    g.m = rows;
    g.n = out;
    g.k = in;
    be_.gemm_bf16_weights(g);
  } else {
    const auto panels = panels_.empty() ? panels_.end() : panels_.find(w);
    if (panels != panels_.end() && panels_bf16_) {
      GemmBf16Args g;
      g.x = x;
      g.ldx = in;
      g.w = static_cast<const uint16_t*>(panels->second);
      g.w_panels = true;
      g.y = y;
      g.ldy = out;
      g.m = rows;
      g.n = out;
      g.k = in;
      be_.gemm_bf16_weights(g);
    } else {
      GemmArgs g{false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, y, out};
      if (panels != panels_.end() && panels_pending_.erase(w) > 0) {
        g.panels_out = static_cast<float*>(const_cast<void*>(panels->second));
      } else if (panels != panels_.end()) {
        g.b = static_cast<const float*>(panels->second);
        g.b_panels = true;
      }
      be_.gemm(g);
    }
  }
  if (bias) be_.add_bias(y, bias, rows, out);
}

void Model::linear_group(const float* x, int64_t rows, int64_t in, std::initializer_list<LinearOut> outs) {
  constexpr int kMaxGroup = 4;
  bool grouped = outs.size() > 1 && outs.size() <= kMaxGroup && !panels_.empty() &&
                 (panels_bf16_ ? be_.gemm_bf16_weights_group != nullptr : be_.gemm_group != nullptr);
  const void* panels[kMaxGroup] = {};
  int count = 0;
  for (const LinearOut& o : outs) {
    if (!grouped) break;
    const auto it = panels_.find(o.w);
    grouped = it != panels_.end() && panels_pending_.count(o.w) == 0;
    if (grouped) panels[count++] = it->second;
  }
  if (!grouped) {
    for (const LinearOut& o : outs) linear(x, o.w, o.bias, rows, in, o.out, o.y);
    return;
  }
  if (panels_bf16_) {
    GemmBf16Args g[kMaxGroup];
    count = 0;
    for (const LinearOut& o : outs) {
      GemmBf16Args& a = g[count];
      a.x = x;
      a.ldx = in;
      a.w = static_cast<const uint16_t*>(panels[count]);
      a.w_panels = true;
      a.y = o.y;
      a.ldy = o.out;
      a.m = rows;
      a.n = o.out;
      a.k = in;
      ++count;
    }
    be_.gemm_bf16_weights_group(g, count);
  } else {
    GemmArgs g[kMaxGroup];
    count = 0;
    for (const LinearOut& o : outs) {
      g[count] = GemmArgs{false, true, rows, o.out, in, 1.0f, x, in, static_cast<const float*>(panels[count]), in, 0.0f,
                          o.y, o.out};
      g[count].b_panels = true;
      ++count;
    }
    be_.gemm_group(g, count);
  }
  for (const LinearOut& o : outs)
    if (o.bias) be_.add_bias(o.y, o.bias, rows, o.out);
}

// y = x·Wᵀ + b:  dx (=|+=) dy·W,  dW += dyᵀ·x,  db += Σ_rows dy.
// dW sums over the token rows, which the GEMM restarts every kGemmKC of them: with a packed
// batch it is one GEMM per K block of the padded layout (dw_blocks_), so each block sums the
// same tokens in the same order and the gradient has the padded computation's bits (the
// padding's rows only ever added zeros).
void Model::linear_backward(const float* dy, const float* x, const float* w, int64_t rows, int64_t in, int64_t out,
                            float* dx, float beta_dx, float* dw, float* dbias) {
  if (dx) be_.gemm(GemmArgs{false, false, rows, in, out, 1.0f, dy, out, w, in, beta_dx, dx, in});
  if (!packed_) {
    be_.gemm(GemmArgs{true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, in});
  } else {
    be_.gemm_k_segments(GemmArgs{true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, in}, dw_blocks_.data(),
                        static_cast<int64_t>(dw_blocks_.size()) - 1);
  }
  if (dbias) be_.bias_grad(dy, rows, out, dbias);
}

void Model::embed(const float* params, const int32_t* ids_dev, int64_t rows, float* x) {
  be_.embedding_forward(EmbeddingForwardArgs{params, ids_dev, rows, cfg_.vocab, cfg_.hidden, x});
}

void Model::project_qkv(const LayerWeights& w, int64_t rows, LayerActs& a) {
  const int64_t D = cfg_.hidden;
  linear_group(a.xn1, rows, D,
               {{w.wq, w.bq, cfg_.q_width(), a.q}, {w.wk, w.bk, cfg_.kv_width(), a.k}, {w.wv, w.bv, cfg_.kv_width(), a.v}});
}

void Model::attention_output(const LayerWeights& w, int64_t rows, const float* x_in, LayerActs& a, float* tmp) {
  linear(a.att, w.wo, w.bo, rows, cfg_.q_width(), cfg_.hidden, tmp);
  be_.add(a.res_mid, x_in, tmp, rows * cfg_.hidden);
}

void Model::mlp(const LayerWeights& w, int64_t layer, int64_t rows, LayerActs& a, float* tmp, float* x_out,
                bool packed) {
  const int64_t D = cfg_.hidden, I = cfg_.intermediate;
  const int64_t bad = be_.rms_norm_forward(
      RmsNormForwardArgs{a.res_mid, w.post_norm, rows, D, static_cast<float>(cfg_.rms_eps), a.xn2, a.rstd2});
  check_finite(packed ? padded_row(bad) : bad, "post_attention_layernorm", layer);
  linear_group(a.xn2, rows, D, {{w.wg, nullptr, I, a.gate}, {w.wu, nullptr, I, a.up}});
  // Elementwise with per-element bits independent of the array length, so a row gives
  // the same result in a batch, alone, or in decode.
  be_.swiglu_forward(SwigluForwardArgs{a.gate, a.up, rows * I, a.h});
  if (!x_out) return;
  linear(a.h, w.wd, nullptr, rows, I, D, tmp);
  be_.add(x_out, a.res_mid, tmp, rows * D);
}

// packed (training): x_in/x_out and every row-wise buffer hold the rows_ real tokens
// packed; q, k and v are scattered into the padded layout for attention and its output
// gathered back, so a token's bits are those of the padded computation.
void Model::layer_forward(const LayerWeights& w, int64_t layer, int64_t batch, int64_t seq, const int32_t* lengths_dev,
                          const int32_t* positions_dev, const float* x_in, LayerActs& a, float* tmp, float* x_out,
                          const KvSink* kv, bool packed) {
  const int64_t N = packed ? (shared_ ? unique_rows_ : rows_) : batch * seq, D = cfg_.hidden, Q = cfg_.q_width(),
                KV = cfg_.kv_width();
  const int64_t bad = be_.rms_norm_forward(
      RmsNormForwardArgs{x_in, w.in_norm, N, D, static_cast<float>(cfg_.rms_eps), a.xn1, a.rstd1});
  check_finite(packed ? padded_row(bad) : bad, "input_layernorm", layer);
  LayerActs p = a;  // a with q, k, v and att on the rows the other buffers hold
  if (packed) {
    p.q = pq_;
    p.k = pk_;
    p.v = pv_;
    p.att = patt_;
  }
  project_qkv(w, N, p);
  be_.rope_forward(RopeArgs{p.q, p.k, positions_dev, N, cfg_.q_heads, cfg_.kv_heads, cfg_.head_dim, cfg_.rope_theta,
                            rope_cos_, rope_sin_, rope_positions_});
  if (kv) {
    be_.scatter_rows(a.k, cfg_.kv_width(), kv->index, N, kv->k_cache);
    be_.scatter_rows(a.v, cfg_.kv_width(), kv->index, N, kv->v_cache);
  }
  if (packed && shared_) {  // a unique row fills every padded row that shares it
    be_.gather_rows(p.q, Q, pad_unique_.data(), batch * seq, a.q);
    be_.gather_rows(p.k, KV, pad_unique_.data(), batch * seq, a.k);
    be_.gather_rows(p.v, KV, pad_unique_.data(), batch * seq, a.v);
  } else if (packed) {
    be_.scatter_rows(p.q, Q, pad_index_.data(), N, a.q);
    be_.scatter_rows(p.k, KV, pad_index_.data(), N, a.k);
    be_.scatter_rows(p.v, KV, pad_index_.data(), N, a.v);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)));
  check_finite(be_.attention_forward(AttentionForwardArgs{a.q, a.k, a.v, lengths_dev, batch, seq, cfg_.q_heads,
                                                          cfg_.kv_heads, cfg_.head_dim, scale, a.att, a.lse}),
               "self_attn", layer);
  if (packed) be_.gather_rows(a.att, Q, (shared_ ? unique_pad_ : pad_index_).data(), N, p.att);
  attention_output(w, N, x_in, p, tmp);
  mlp(w, layer, N, p, tmp, x_out, packed);
}

int64_t Model::padded_row(int64_t packed_row) const {
  if (packed_row < 0 || !packed_) return packed_row;
  return (shared_ ? unique_pad_ : pad_index_)[static_cast<size_t>(packed_row)];
}

void Model::layer_backward(const LayerWeights& w, const LayerGrads& g, int64_t layer, const float* x_in, LayerActs& a,
                           float* d_res) {
  const int64_t N = rows_, D = cfg_.hidden, I = cfg_.intermediate, Q = cfg_.q_width(), KV = cfg_.kv_width();
  // MLP: x_out = res_mid + (silu(xn2·Wgᵀ) ⊙ xn2·Wuᵀ)·Wdᵀ,  xn2 = rmsnorm(res_mid).
  linear_backward(d_res, a.h, w.wd, N, I, D, d_h_, 0.0f, g.wd, nullptr);
  be_.swiglu_backward(SwigluBackwardArgs{a.gate, a.up, d_h_, N * I, d_h_, d_up_});
  linear_backward(d_h_, a.xn2, w.wg, N, D, I, d_xn_, 0.0f, g.wg, nullptr);
  linear_backward(d_up_, a.xn2, w.wu, N, D, I, d_xn_, 1.0f, g.wu, nullptr);
  be_.rms_norm_backward(RmsNormBackwardArgs{a.res_mid, w.post_norm, a.rstd2, d_xn_, N, D, d_xn_, g.post_norm});
  be_.add(d_res, d_res, d_xn_, N * D);  // now ∂L/∂res_mid
  // Attention: res_mid = x_in + attention(rope(xn1·Wqᵀ + bq), ...)·Woᵀ + bo,  xn1 = rmsnorm(x_in).
  // (Packed: attention's input and output gradients cross between the layouts as in the forward.)
  const float* att = a.att;
  if (packed_) {
    be_.gather_rows(a.att, Q, pad_index_.data(), N, patt_);
    att = patt_;
  }
  linear_backward(d_res, att, w.wo, N, Q, D, d_att_, 0.0f, g.wo, g.bo);
  if (packed_) be_.scatter_rows(d_att_, Q, pad_index_.data(), N, d_att_pad_);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)));
  be_.attention_backward(AttentionBackwardArgs{a.q, a.k, a.v, lengths_, batch_, seq_, cfg_.q_heads, cfg_.kv_heads,
                                               cfg_.head_dim, scale, a.att, a.lse, packed_ ? d_att_pad_ : d_att_,
                                               packed_ ? dq_pad_ : dq_, packed_ ? dk_pad_ : dk_,
                                               packed_ ? dv_pad_ : dv_});
  if (packed_) {
    be_.gather_rows(dq_pad_, Q, pad_index_.data(), N, dq_);
    be_.gather_rows(dk_pad_, KV, pad_index_.data(), N, dk_);
    be_.gather_rows(dv_pad_, KV, pad_index_.data(), N, dv_);
  }
  be_.rope_backward(RopeArgs{dq_, dk_, positions_, N, cfg_.q_heads, cfg_.kv_heads, cfg_.head_dim, cfg_.rope_theta,
                             rope_cos_, rope_sin_, rope_positions_});
  linear_backward(dq_, a.xn1, w.wq, N, D, Q, d_xn_, 0.0f, g.wq, g.bq);
  linear_backward(dk_, a.xn1, w.wk, N, D, KV, d_xn_, 1.0f, g.wk, g.bk);
  linear_backward(dv_, a.xn1, w.wv, N, D, KV, d_xn_, 1.0f, g.wv, g.bv);
  be_.rms_norm_backward(RmsNormBackwardArgs{x_in, w.in_norm, a.rstd1, d_xn_, N, D, d_xn_, g.in_norm});
  be_.add(d_res, d_res, d_xn_, N * D);  // now ∂L/∂x_in
  (void)layer;
}

// ---------------------------------------------------------------------------------------
// Training: forward and backward

void Model::forward(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch, int64_t seq,
                    float* hidden_out) {
  if (batch < 0 || seq < 0) range_error("ids", "batch and sequence sizes must be non-negative");
  if (seq > cfg_.max_positions)
    range_error("ids", "sequence length " + std::to_string(seq) + " exceeds maxPositionEmbeddings=" +
                           std::to_string(cfg_.max_positions));
  check_batch(ids, lengths, batch, seq, cfg_.vocab, 0);
  has_activations_ = false;
  const int64_t N = batch * seq, D = cfg_.hidden;
  // Padding is never computed on: the real tokens are packed (see model.h).
  pad_index_.clear();
  row_offsets_.assign(static_cast<size_t>(batch) + 1, 0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < lengths[b]; ++t) pad_index_.push_back(b * seq + t);
    row_offsets_[b + 1] = static_cast<int64_t>(pad_index_.size());
  }
  const int64_t R = static_cast<int64_t>(pad_index_.size());
  // Packed rows where the padded layout's K blocks of kGemmKC rows begin (see linear_backward).
  dw_blocks_.clear();
  for (int64_t start = 0; start < N; start += kGemmKC)
    dw_blocks_.push_back(std::lower_bound(pad_index_.begin(), pad_index_.end(), start) - pad_index_.begin());
  dw_blocks_.push_back(R);

  // Shared prefixes: each row against the earlier row it has the longest common prefix with.
  expand_.assign(static_cast<size_t>(R), 0);
  unique_pad_.clear();
  unique_ids_.clear();
  unique_positions_.clear();
  for (int64_t b = 0; b < batch; ++b) {
    int64_t best = 0, from = -1;
    for (int64_t o = 0; o < b && !recompute_; ++o) {
      const int64_t limit = std::min(lengths[b], lengths[o]);
      int64_t n = 0;
      while (n < limit && ids[b * seq + n] == ids[o * seq + n]) ++n;
      if (n > best) {
        best = n;
        from = o;
      }
    }
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int64_t r = row_offsets_[b] + t;
      if (t < best) {
        expand_[r] = expand_[row_offsets_[from] + t];
      } else {
        expand_[r] = static_cast<int64_t>(unique_pad_.size());
        unique_pad_.push_back(b * seq + t);
        unique_ids_.push_back(ids[b * seq + t]);
        unique_positions_.push_back(static_cast<int32_t>(t));
      }
    }
  }
  // Copying a row's activations costs a few percent of computing them: worth it once a
  // fifth of the tokens are shared.
  const int64_t U = static_cast<int64_t>(unique_pad_.size());
  const bool shared = U < R && U * 5 <= R * 4;
  unique_rows_ = shared ? U : 0;

  Planner measure(nullptr);
  plan_training(measure, batch, seq, R, unique_rows_);
  reserve(train_, measure.size());
  Planner assign(train_.base);
  plan_training(assign, batch, seq, R, unique_rows_);
  ensure_rope(std::max<int64_t>(seq, 1));

  host_ids_.resize(static_cast<size_t>(R));
  host_positions_.resize(static_cast<size_t>(R));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const int64_t r = row_offsets_[b] + t;
      host_positions_[r] = static_cast<int32_t>(t);
      host_ids_[r] = ids[b * seq + t];
    }
  host_lengths_.assign(lengths, lengths + batch);
  be_.upload(ids_, host_ids_.data(), static_cast<size_t>(R) * sizeof(int32_t));
  be_.upload(positions_, host_positions_.data(), static_cast<size_t>(R) * sizeof(int32_t));
  be_.upload(lengths_, host_lengths_.data(), static_cast<size_t>(batch) * sizeof(int32_t));
  batch_ = batch;
  seq_ = seq;
  rows_ = R;
  packed_ = R < N;
  if (shared) {
    pad_unique_.assign(static_cast<size_t>(N), 0);
    for (int64_t r = 0; r < R; ++r) pad_unique_[pad_index_[r]] = expand_[r];
    be_.upload(uids_, unique_ids_.data(), static_cast<size_t>(U) * sizeof(int32_t));
    be_.upload(upos_, unique_positions_.data(), static_cast<size_t>(U) * sizeof(int32_t));
    forward_shared(params, hidden_out);
    has_activations_ = true;
    return;
  }

  embed(params, ids_, R, res_[0]);
  for (int64_t l = 0; l < cfg_.layers; ++l) {
    LayerActs& a = acts_[recompute_ ? 0 : l];
    layer_forward(layer_weights(params, l), l, batch, seq, lengths_, positions_, res_[l], a, tmp_, res_[l + 1],
                  nullptr, packed_);
  }
  const float* norm = params + final_norm_offset(cfg_);
  float* normed = packed_ ? tmp_ : hidden_out;
  check_finite(padded_row(be_.rms_norm_forward(RmsNormForwardArgs{res_[cfg_.layers], norm, R, D,
                                                                  static_cast<float>(cfg_.rms_eps), normed,
                                                                  rstd_final_})),
               "model.norm", -1);
  if (packed_) be_.scatter_rows(normed, D, pad_index_.data(), R, hidden_out);
  be_.mask_padding(hidden_out, batch, seq, D, host_lengths_.data());
  has_activations_ = true;
}

// The forward on the unique rows; every saved activation is then copied out to the packed
// rows (and q, k, v to every padded row) that share it, as the backward expects them.
void Model::forward_shared(const float* params, float* hidden_out) {
  const int64_t U = unique_rows_, R = rows_, N = batch_ * seq_, D = cfg_.hidden, I = cfg_.intermediate;
  shared_ = true;
  struct Done {
    Model& m;
    ~Done() { m.shared_ = false; }
  } done{*this};
  const int64_t* expand = expand_.data();
  embed(params, uids_, U, ux_[0]);
  be_.gather_rows(ux_[0], D, expand, R, res_[0]);
  for (int64_t l = 0; l < cfg_.layers; ++l) {
    LayerActs& a = acts_[l];
    LayerActs u = uacts_;
    u.q = a.q;
    u.k = a.k;
    u.v = a.v;
    u.att = a.att;
    u.lse = a.lse;
    float* x_in = ux_[l % 2];
    float* x_out = ux_[(l + 1) % 2];
    layer_forward(layer_weights(params, l), l, batch_, seq_, lengths_, upos_, x_in, u, tmp_, x_out, nullptr, true);
    const struct {
      const float* from;
      float* to;
      int64_t cols;
    } saved[] = {{u.xn1, a.xn1, D},     {u.rstd1, a.rstd1, 1}, {u.res_mid, a.res_mid, D},
                 {u.rstd2, a.rstd2, 1}, {u.xn2, a.xn2, D},     {u.gate, a.gate, I},
                 {u.up, a.up, I},       {u.h, a.h, I},         {x_out, res_[l + 1], D}};
    for (const auto& c : saved) be_.gather_rows(c.from, c.cols, expand, R, c.to);
  }
  const float* norm = params + final_norm_offset(cfg_);
  check_finite(padded_row(be_.rms_norm_forward(RmsNormForwardArgs{ux_[cfg_.layers % 2], norm, U, D,
                                                                  static_cast<float>(cfg_.rms_eps), tmp_,
                                                                  uacts_.rstd1})),
               "model.norm", -1);
  be_.gather_rows(uacts_.rstd1, 1, expand, R, rstd_final_);
  be_.gather_rows(tmp_, D, pad_unique_.data(), N, hidden_out);
  be_.mask_padding(hidden_out, batch_, seq_, D, host_lengths_.data());
}

void Model::backward(const float* params, float* grads, const float* grad_hidden) {
  if (!has_activations_)
    throw Error("backward: no saved activations; call forward() first (generate and sequenceLogprobs do not save any)",
                Error::Generic);
  const int64_t R = rows_, D = cfg_.hidden;
  if (packed_) be_.gather_rows(grad_hidden, D, pad_index_.data(), R, d_res_);
  else be_.copy(d_res_, grad_hidden, static_cast<size_t>(R * D) * sizeof(float));
  const int64_t norm_at = final_norm_offset(cfg_);
  be_.rms_norm_backward(RmsNormBackwardArgs{res_[cfg_.layers], params + norm_at, rstd_final_, d_res_, R, D, d_res_,
                                            grads + norm_at});
  for (int64_t l = cfg_.layers - 1; l >= 0; --l) {
    const LayerWeights w = layer_weights(params, l);
    LayerActs& a = acts_[recompute_ ? 0 : l];
    if (recompute_) {
      // Same inputs, same deterministic ops: the very bits the forward computed.
      layer_forward(w, l, batch_, seq_, lengths_, positions_, res_[l], a, tmp_, nullptr, nullptr, packed_);
    }
    layer_backward(w, layer_grads(grads, l), l, res_[l], a, d_res_);
  }
  for (int64_t b = 0; b < batch_; ++b)
    be_.embedding_backward(EmbeddingBackwardArgs{ids_ + row_offsets_[b], d_res_ + row_offsets_[b] * D,
                                                 host_lengths_[b], cfg_.vocab, D, grads});
}

void Model::add_lm_head_grad(float* grads, const float* grad_weight) {
  float* dst = grads + lm_head_offset();
  be_.add(dst, dst, grad_weight, cfg_.vocab * cfg_.hidden);
}

int64_t Model::first_nonfinite_grad_hidden_row(const float* grad_hidden) const {
  const int64_t D = cfg_.hidden;
  std::vector<int64_t> counts(static_cast<size_t>(batch_));
  for (int64_t b = 0; b < batch_; ++b) counts[b] = static_cast<int64_t>(host_lengths_[b]) * D;
  return be_.first_nonfinite_row(grad_hidden, batch_, seq_ * D, counts.data());
}

int64_t Model::first_nonfinite_lm_head_row(const float* grad_weight) const {
  return be_.first_nonfinite_row(grad_weight, cfg_.vocab, cfg_.hidden, nullptr);
}

// ---------------------------------------------------------------------------------------
// Inference: sequence log-probs and generation

// With a cache (generate's prefill), rows with the same prompt — GRPO samples every prompt
// G times — are computed once, and their cache slots and hidden rows copied: a row's
// results do not depend on the other rows, so the copies hold the bits its own
// computation would have given.
void Model::inference_forward(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch,
                              int64_t seq, int64_t cache_seq) {
  const int64_t D = cfg_.hidden, KV = cfg_.kv_width();
  std::vector<int64_t> computed;            // the rows computed, in order
  std::vector<int64_t> slot(static_cast<size_t>(batch));  // row b's results are computed row slot[b]
  if (cache_seq > 0) {
    std::map<std::vector<int32_t>, int64_t> first;
    for (int64_t b = 0; b < batch; ++b) {
      const auto it = first.emplace(std::vector<int32_t>(ids + b * seq, ids + b * seq + lengths[b]),
                                    static_cast<int64_t>(computed.size()));
      if (it.second) computed.push_back(b);
      slot[b] = it.first->second;
    }
  } else {
    for (int64_t b = 0; b < batch; ++b) computed.push_back(slot[b] = b);
  }
  const int64_t U = static_cast<int64_t>(computed.size()), N = U * seq;
  std::vector<int32_t> computed_lengths(static_cast<size_t>(U));
  host_ids_.assign(static_cast<size_t>(N), 0);
  host_positions_.resize(static_cast<size_t>(N));
  for (int64_t u = 0; u < U; ++u) {
    const int64_t b = computed[u];
    computed_lengths[u] = lengths[b];
    for (int64_t t = 0; t < seq; ++t) {
      host_positions_[u * seq + t] = static_cast<int32_t>(t);
      if (t < lengths[b]) host_ids_[u * seq + t] = ids[b * seq + t];
    }
  }
  be_.upload(inf_.ids, host_ids_.data(), static_cast<size_t>(N) * sizeof(int32_t));
  be_.upload(inf_.positions, host_positions_.data(), static_cast<size_t>(N) * sizeof(int32_t));
  be_.upload(inf_.lengths, computed_lengths.data(), static_cast<size_t>(U) * sizeof(int32_t));
  embed(params, inf_.ids, N, inf_.x);
  be_.mask_padding(inf_.x, U, seq, D, computed_lengths.data());

  std::vector<int64_t> index;
  if (cache_seq > 0) {
    index.assign(static_cast<size_t>(N), -1);
    for (int64_t u = 0; u < U; ++u)
      for (int64_t t = 0; t < computed_lengths[u]; ++t) index[u * seq + t] = computed[u] * cache_seq + t;
  }
  const int64_t layer_cache = batch * cache_seq * KV;
  for (int64_t l = 0; l < cfg_.layers; ++l) {
    KvSink sink{inf_.k_cache + l * layer_cache, inf_.v_cache + l * layer_cache, index.data()};
    layer_forward(layer_weights(params, l), l, U, seq, inf_.lengths, inf_.positions, inf_.x, inf_.acts, inf_.tmp,
                  inf_.x, cache_seq > 0 ? &sink : nullptr);
  }
  if (U == batch) return;
  // Spread the computed rows to [batch, seq]: from the last row down, so that a computed row
  // (slot[b] ≤ b) is read before any row above it is written.
  const size_t row_bytes = static_cast<size_t>(seq * D) * sizeof(float);
  for (int64_t b = batch - 1; b >= 0; --b)
    if (slot[b] != b) be_.copy(inf_.x + b * seq * D, inf_.x + slot[b] * seq * D, row_bytes);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t from = computed[slot[b]];
    if (from == b) continue;
    const size_t bytes = static_cast<size_t>(lengths[b] * KV) * sizeof(float);
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      be_.copy(inf_.k_cache + l * layer_cache + b * cache_seq * KV, inf_.k_cache + l * layer_cache + from * cache_seq * KV, bytes);
      be_.copy(inf_.v_cache + l * layer_cache + b * cache_seq * KV, inf_.v_cache + l * layer_cache + from * cache_seq * KV, bytes);
    }
  }
}

void Model::sequence_logprobs(const float* params, const int32_t* ids, const int32_t* lengths,
                              const int32_t* prompt_lengths, int64_t batch, int64_t seq, double temperature,
                              float* out) {
  if (seq > cfg_.max_positions)
    range_error("ids", "sequence length " + std::to_string(seq) + " exceeds maxPositionEmbeddings=" +
                           std::to_string(cfg_.max_positions));
  check_batch(ids, lengths, batch, seq, cfg_.vocab, 1);
  if (!(temperature > 0) || !std::isfinite(temperature)) range_error("temperature", "expected a finite number > 0");
  std::vector<int64_t> index;
  std::vector<int32_t> targets;
  for (int64_t b = 0; b < batch; ++b) {
    if (prompt_lengths[b] < 1 || prompt_lengths[b] > lengths[b])
      range_error("promptLengths", "prompt length " + std::to_string(prompt_lengths[b]) + " of row " +
                                       std::to_string(b) + " is outside [1, " + std::to_string(lengths[b]) + "]");
    // Token t+1 is predicted from the hidden state at t.
    for (int64_t t = prompt_lengths[b] - 1; t + 1 < lengths[b]; ++t) {
      index.push_back(b * seq + t);
      targets.push_back(ids[b * seq + t + 1]);
    }
  }
  const int64_t M = static_cast<int64_t>(index.size()), D = cfg_.hidden;
  if (M == 0) return;

  Planner measure(nullptr);
  plan_inference(measure, batch, seq, 0, 0);
  reserve(infer_, measure.size());
  Planner assign(infer_.base);
  plan_inference(assign, batch, seq, 0, 0);
  ensure_rope(seq);

  inference_forward(params, ids, lengths, batch, seq, 0);
  // The final norm is row-wise, so normalising only the rows that predict gives the
  // bits a full pass would.
  float* h = inf_.acts.xn1;
  be_.gather_rows(inf_.x, D, index.data(), M, h);
  check_finite(be_.rms_norm_forward(RmsNormForwardArgs{h, params + final_norm_offset(cfg_), M, D,
                                                       static_cast<float>(cfg_.rms_eps), h, inf_.acts.rstd1}),
               "model.norm", -1);
  be_.upload(inf_.targets, targets.data(), static_cast<size_t>(M) * sizeof(int32_t));
  LinearTokenLogprobsForwardArgs a{};
  a.hidden = h;
  a.weight = lm_head(params);
  a.dtype = DType::F32;
  a.rows = M;
  a.dim = D;
  a.vocab = cfg_.vocab;
  a.targets = inf_.targets;
  a.temperature = static_cast<float>(temperature);
  a.logprobs = inf_.logprobs;
  a.entropy = nullptr;
  a.lse = inf_.lse;
  be_.linear_token_logprobs_forward(a);
  be_.download(out, inf_.logprobs, static_cast<size_t>(M) * sizeof(float));
}

GenerateOutput Model::generate(const float* params, const int32_t* ids, const int32_t* lengths, int64_t batch,
                               int64_t seq, const GenerateOptions& o) {
  check_batch(ids, lengths, batch, seq, cfg_.vocab, 1);
  if (o.max_new_tokens < 0) range_error("maxNewTokens", "expected a non-negative integer");
  if (seq + o.max_new_tokens > cfg_.max_positions)
    range_error("maxNewTokens", "the longest prompt (" + std::to_string(seq) + ") plus maxNewTokens (" +
                                    std::to_string(o.max_new_tokens) + ") exceeds maxPositionEmbeddings=" +
                                    std::to_string(cfg_.max_positions));
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) range_error("temperature", "expected a finite number >= 0");
  if (!(o.top_p > 0 && o.top_p <= 1)) range_error("topP", "expected a number in (0, 1]");
  if (o.top_k < 0) range_error("topK", "expected a non-negative integer");
  for (int32_t s : o.stop_ids)
    if (s < 0 || s >= cfg_.vocab)
      range_error("stopIds", "token id " + std::to_string(s) + " is outside [0, " + std::to_string(cfg_.vocab) + ")");

  GenerateOutput result;
  result.tokens.assign(static_cast<size_t>(batch), {});
  result.logprobs.assign(static_cast<size_t>(batch), {});
  result.stopped.assign(static_cast<size_t>(batch), 0);
  if (batch == 0 || o.max_new_tokens == 0) return result;

  const int64_t D = cfg_.hidden, V = cfg_.vocab, KV = cfg_.kv_width();
  // bf16 rollouts: a fresh copy of the parameters every call, so it can never be stale
  // after an optimiser step (making it reads the f32 weights once; the call then reads the
  // half-size copy once per new token), used by linear() until the call returns or throws.
  struct Bf16Scope {
    Model& m;
    ~Bf16Scope() { m.bf16_source_ = nullptr; m.bf16_count_ = 0; }
  } bf16_scope{*this};
  const bool bf16 = o.bf16_weights && supports_bf16_weights();
  // Panels: a per-call copy of every weight matrix the call reads (the layers' and the LM
  // head), made from these parameters, never reused by a later call; bf16 panels replace
  // the bf16 copy where the backend has them.
  struct PanelScope {
    Model& m;
    ~PanelScope() {
      m.panels_.clear();
      m.panels_pending_.clear();
    }
  } panel_scope{*this};
  const bool panels_bf16 = bf16 && be_.pack_panels_bf16;
  if (panels_bf16 || (!bf16 && be_.pack_panels)) {
    const int64_t Dh = cfg_.hidden, I = cfg_.intermediate, Q = cfg_.q_width(), KVw = cfg_.kv_width();
    struct Matrix { const float* w; int64_t n, k; };
    std::vector<Matrix> matrices;
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      const LayerWeights lw = layer_weights(params, l);
      matrices.insert(matrices.end(), {{lw.wq, Q, Dh}, {lw.wk, KVw, Dh}, {lw.wv, KVw, Dh}, {lw.wo, Dh, Q},
                                       {lw.wg, I, Dh}, {lw.wu, I, Dh}, {lw.wd, Dh, I}});
    }
    matrices.push_back({lm_head(params), cfg_.vocab, Dh});
    // Bytes of one matrix's panels, rounded to 64 so every matrix starts aligned.
    auto bytes_of = [&](const Matrix& mx) {
      const size_t b = panels_bf16 ? static_cast<size_t>(bf16_panel_elements(mx.n, mx.k)) * sizeof(uint16_t)
                                   : static_cast<size_t>(panel_floats(mx.n, mx.k)) * sizeof(float);
      return (b + 63) / 64 * 64;
    };
    size_t total = 0;
    for (const Matrix& mx : matrices) total += bytes_of(mx);
    reserve(rollout_copy_, total);
    char* at = static_cast<char*>(rollout_copy_.base);
    const float* head_w = lm_head(params);
    for (const Matrix& mx : matrices) {
      // f32: the layers' panels are written by their first product (linear(), the prefill's);
      // the LM head's first product has a few rows, which read W in place, so it is copied now.
      if (panels_bf16) be_.pack_panels_bf16(mx.w, mx.k, mx.n, mx.k, reinterpret_cast<uint16_t*>(at));
      else if (mx.w == head_w) be_.pack_panels(mx.w, mx.k, mx.n, mx.k, reinterpret_cast<float*>(at));
      else panels_pending_.insert(mx.w);
      panels_[mx.w] = at;
      at += bytes_of(mx);
    }
    panels_bf16_ = panels_bf16;
  }
  if (bf16 && !panels_bf16) {
    const int64_t count = parameter_count(cfg_);
    reserve(rollout_copy_, static_cast<size_t>(count) * sizeof(uint16_t));
    be_.to_bf16(params, static_cast<uint16_t*>(rollout_copy_.base), count);
    bf16_source_ = params;
    bf16_count_ = count;
  }
  // Positions fed to the model: prompts up to seq−1, then at most max_new−1 sampled tokens
  // (the last sampled token is never fed).
  const int64_t S = seq + o.max_new_tokens - 1;
  Planner measure(nullptr);
  plan_inference(measure, batch, seq, S, batch);
  reserve(infer_, measure.size());
  Planner assign(infer_.base);
  plan_inference(assign, batch, seq, S, batch);
  ensure_rope(S);

  std::vector<int32_t> stops(o.stop_ids);
  std::sort(stops.begin(), stops.end());
  auto is_stop = [&](int32_t t) { return std::binary_search(stops.begin(), stops.end(), t); };
  const float* head = lm_head(params);
  const float* norm = params + final_norm_offset(cfg_);
  const float eps = static_cast<float>(cfg_.rms_eps);

  // Logits of the rows in `index` (rows of inf_.x) and one draw per row.
  std::vector<int32_t> drawn(static_cast<size_t>(batch));
  std::vector<float> drawn_lp(static_cast<size_t>(batch));
  std::vector<double> lse(static_cast<size_t>(batch));
  auto sample = [&](const std::vector<int64_t>& index, const std::vector<int64_t>& keys, int64_t step) {
    const int64_t rows = static_cast<int64_t>(index.size());
    be_.gather_rows(inf_.x, D, index.data(), rows, inf_.tmp);
    check_finite(be_.rms_norm_forward(RmsNormForwardArgs{inf_.tmp, norm, rows, D, eps, inf_.tmp, inf_.acts.rstd1}),
                 "model.norm", -1);
    SampleArgs sa{inf_.logits, rows, V, o.temperature, o.top_p, o.top_k, o.seed, keys.data(), step,
                  drawn.data(), drawn_lp.data()};
    if (bf16) {
      linear(inf_.tmp, head, nullptr, rows, D, V, inf_.logits);
    } else if (be_.linear_token_logits) {
      // sequence_logprobs' own LM-head arithmetic: the log-prob of an untruncated draw is
      // then its log-prob under sequence_logprobs, bit for bit (greedy: at τ = 1).
      LinearTokenLogprobsForwardArgs la{};
      la.hidden = inf_.tmp;
      la.weight = head;
      la.dtype = DType::F32;
      la.rows = rows;
      la.dim = D;
      la.vocab = V;
      la.temperature = o.temperature > 0 ? static_cast<float>(o.temperature) : 1.0f;
      const auto panels = panels_.find(head);
      if (panels != panels_.end()) la.weight_panels = static_cast<const float*>(panels->second);
      be_.linear_token_logits(la, inf_.logits, lse.data());
      sa.lse = lse.data();
    } else {
      be_.gemm(GemmArgs{false, true, rows, V, D, 1.0f, inf_.tmp, D, head, D, 0.0f, inf_.logits, V});
    }
    be_.sample(sa);
  };

  // Prefill: every prompt through all layers, keys and values into the cache.
  inference_forward(params, ids, lengths, batch, seq, S);
  std::vector<int64_t> index(static_cast<size_t>(batch)), keys(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    index[b] = b * seq + lengths[b] - 1;
    keys[b] = b;
  }
  sample(index, keys, 0);

  // Decode slots: slot i of the cache holds row slot_row[i] (−1 once finished) whose next
  // token goes to position next_pos[i]. Finished rows keep their slot (computing junk)
  // until at most half the slots are live; then the live ones are packed down. So a step
  // costs at most twice the live work, and cache rows move O(1) times on average.
  std::vector<int64_t> slot_row(static_cast<size_t>(batch)), next_pos(static_cast<size_t>(batch));
  std::vector<int32_t> last(static_cast<size_t>(batch));
  int64_t live = 0;
  auto record = [&](int64_t row, int64_t slot, int32_t token, float lp) {
    result.tokens[row].push_back(token);
    result.logprobs[row].push_back(lp);
    const bool stop = is_stop(token);
    if (stop) result.stopped[row] = 1;
    if (stop || static_cast<int64_t>(result.tokens[row].size()) >= o.max_new_tokens) {
      slot_row[slot] = -1;
    } else {
      last[slot] = token;
      ++live;
    }
  };
  for (int64_t b = 0; b < batch; ++b) {
    slot_row[b] = b;
    next_pos[b] = lengths[b];
    record(b, b, drawn[b], drawn_lp[b]);
  }

  int64_t width = batch;
  const int64_t layer_cache = batch * S * KV;
  std::vector<int32_t> host_tok, host_pos, host_len;
  std::vector<int64_t> cache_index;
  for (int64_t step = 1; live > 0; ++step) {
    if (live * 2 <= width) {
      int64_t packed = 0;
      for (int64_t i = 0; i < width; ++i) {
        if (slot_row[i] < 0) continue;
        if (i != packed) {
          const size_t bytes = static_cast<size_t>(next_pos[i] * KV) * sizeof(float);
          for (int64_t l = 0; l < cfg_.layers; ++l) {
            be_.copy(inf_.k_cache + l * layer_cache + packed * S * KV, inf_.k_cache + l * layer_cache + i * S * KV, bytes);
            be_.copy(inf_.v_cache + l * layer_cache + packed * S * KV, inf_.v_cache + l * layer_cache + i * S * KV, bytes);
          }
          slot_row[packed] = slot_row[i];
          next_pos[packed] = next_pos[i];
          last[packed] = last[i];
        }
        ++packed;
      }
      width = packed;
    }
    host_tok.assign(static_cast<size_t>(width), 0);
    host_pos.assign(static_cast<size_t>(width), 0);
    host_len.assign(static_cast<size_t>(width), 1);
    cache_index.assign(static_cast<size_t>(width), -1);
    for (int64_t i = 0; i < width; ++i) {
      if (slot_row[i] < 0) continue;  // junk row: token 0 at position 0 of a dead slot
      host_tok[i] = last[i];
      host_pos[i] = static_cast<int32_t>(next_pos[i]);
      host_len[i] = static_cast<int32_t>(next_pos[i] + 1);
      cache_index[i] = i * S + next_pos[i];
    }
    be_.upload(inf_.ids, host_tok.data(), static_cast<size_t>(width) * sizeof(int32_t));
    be_.upload(inf_.positions, host_pos.data(), static_cast<size_t>(width) * sizeof(int32_t));
    be_.upload(inf_.lengths, host_len.data(), static_cast<size_t>(width) * sizeof(int32_t));

    LayerActs& a = inf_.acts;
    embed(params, inf_.ids, width, inf_.x);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim)));
    for (int64_t l = 0; l < cfg_.layers; ++l) {
      const LayerWeights w = layer_weights(params, l);
      float* kc = inf_.k_cache + l * layer_cache;
      float* vc = inf_.v_cache + l * layer_cache;
      check_finite(be_.rms_norm_forward(RmsNormForwardArgs{inf_.x, w.in_norm, width, D, eps, a.xn1, a.rstd1}),
                   "input_layernorm", l);
      project_qkv(w, width, a);
      be_.rope_forward(RopeArgs{a.q, a.k, inf_.positions, width, cfg_.q_heads, cfg_.kv_heads, cfg_.head_dim,
                                cfg_.rope_theta, rope_cos_, rope_sin_, rope_positions_});
      be_.scatter_rows(a.k, KV, cache_index.data(), width, kc);
      be_.scatter_rows(a.v, KV, cache_index.data(), width, vc);
      // Dead slots attend their own slot 0 (which the scatter above left alone) — junk, never read.
      check_finite(be_.attention_decode(AttentionDecodeArgs{a.q, kc, vc, inf_.lengths, width, S, cfg_.q_heads,
                                                            cfg_.kv_heads, cfg_.head_dim, scale, a.att}),
                   "self_attn", l);
      attention_output(w, width, inf_.x, a, inf_.tmp);
      mlp(w, l, width, a, inf_.tmp, inf_.x);
    }
    index.clear();
    keys.clear();
    for (int64_t i = 0; i < width; ++i)
      if (slot_row[i] >= 0) {
        index.push_back(i);
        keys.push_back(slot_row[i]);
      }
    sample(index, keys, step);
    live = 0;
    int64_t j = 0;
    for (int64_t i = 0; i < width; ++i) {
      if (slot_row[i] < 0) continue;
      ++next_pos[i];
      record(slot_row[i], i, drawn[j], drawn_lp[j]);
      ++j;
    }
  }
  return result;
}

}  // namespace lgrpo
