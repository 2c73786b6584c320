// PolicyModel: the native policy engine as a JS object (src/engine/policy.ts wraps it).
//
//   new PolicyModel(config, parameters f32[P], gradients f32[P], {recompute})
//   layout()                                   → [{name, shape, offset}] in buffer order
//   forward(ids i32[B,T], lengths i32[B])      → Float32Array [B·T·D], a view of the model's
//                                                hidden buffer (valid until the next forward)
//   backward(gradHidden f32[B·T, D], {gradLmHead? f32[V, D]})   accumulates into gradients
//   sequenceLogprobs(ids, lengths, promptLengths i32[B], {temperature}) → Float32Array
//   generate(ids, lengths, {maxNewTokens, temperature, topP, topK, stopIds i32, seed})
//                                              → {tokens: Int32Array[], logprobs: Float32Array[],
//                                                 stopped: Uint8Array}
//   setRecompute(bool), stats(), dispose()
//
// The parameter and gradient buffers stay the caller's: the model keeps references to the
// tensor objects (so the memory lives as long as the model) and resolves them again on
// every call, so a buffer released behind its back is an error, never a dangling pointer.
#include <cmath>
#include <memory>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../parallel.h"
#include "../engine/model.h"

namespace lgrpo {
namespace {

// x − x is 0 for finite x and NaN otherwise. Eight independent sums vectorise (one
// serial sum ran 4-5x slower: ~90 ms over a 151936 × 896 LM head, vs ~21 ms).
bool all_finite(const float* p, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += p[i + k] - p[i + k];
  for (; i < n; ++i) acc[0] += p[i] - p[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) == 0.0f;
}

int64_t integer_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Error(std::string("config.") + key + ": expected a number", Error::Type);
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!(x >= 0) || x > 9.0e15 || x != static_cast<double>(static_cast<int64_t>(x)))
    throw Error(std::string("config.") + key + ": expected a non-negative integer", Error::Range);
  return static_cast<int64_t>(x);
}

double number_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Error(std::string("config.") + key + ": expected a number", Error::Type);
  return v.As<Napi::Number>().DoubleValue();
}

bool bool_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw Error(std::string("config.") + key + ": expected a boolean", Error::Type);
  return v.As<Napi::Boolean>().Value();
}

ModelConfig parse_model_config(const Napi::Value& value) {
  if (!value.IsObject()) throw Error("config: expected an object", Error::Type);
  Napi::Object o = value.As<Napi::Object>();
  ModelConfig c;
  c.hidden = integer_field(o, "hiddenSize");
  c.intermediate = integer_field(o, "intermediateSize");
  c.layers = integer_field(o, "numHiddenLayers");
  c.q_heads = integer_field(o, "numAttentionHeads");
  c.kv_heads = integer_field(o, "numKeyValueHeads");
  c.head_dim = integer_field(o, "headDim");
  c.vocab = integer_field(o, "vocabSize");
  c.max_positions = integer_field(o, "maxPositionEmbeddings");
  c.rms_eps = number_field(o, "rmsNormEps");
  c.rope_theta = number_field(o, "ropeTheta");
  c.tie_embeddings = bool_field(o, "tieWordEmbeddings");
  c.qkv_bias = bool_field(o, "qkvBias");
  c.o_bias = bool_field(o, "oProjBias");
  if (c.vocab > 2147483647) throw Error("config.vocabSize: exceeds the int32 token id range", Error::Range);
  c.validate();
  return c;
}

// ids i32 [B, T] and lengths i32 [B], on the CPU.
struct BatchArgs {
  const int32_t* ids;
  const int32_t* lengths;
  int64_t batch, seq;
};

BatchArgs batch_args(const Napi::CallbackInfo& info) {
  TensorRef ids = tensor_arg(info, 0, "ids");
  TensorRef lengths = tensor_arg(info, 1, "lengths");
  expect_dtype(ids, {DType::I32}, "ids");
  expect_rank(ids, 2, "ids");
  expect_dtype(lengths, {DType::I32}, "lengths");
  expect_shape(lengths, {ids.shape[0]}, "lengths");
  if (ids.device.is_cuda() || lengths.device.is_cuda())
    throw Error("ids: token ids and lengths are host data; pass CPU tensors", Error::Type);
  return {static_cast<const int32_t*>(ids.data), static_cast<const int32_t*>(lengths.data), ids.shape[0],
          ids.shape[1]};
}

class PolicyModel : public Napi::ObjectWrap<PolicyModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PolicyModel",
                       {
                           InstanceMethod("layout", &PolicyModel::Guard<&PolicyModel::Layout>),
                           InstanceMethod("forward", &PolicyModel::Guard<&PolicyModel::Forward>),
                           InstanceMethod("backward", &PolicyModel::Guard<&PolicyModel::Backward>),
                           InstanceMethod("sequenceLogprobs", &PolicyModel::Guard<&PolicyModel::SequenceLogprobs>),
                           InstanceMethod("generate", &PolicyModel::Guard<&PolicyModel::Generate>),
                           InstanceMethod("setRecompute", &PolicyModel::Guard<&PolicyModel::SetRecompute>),
                           InstanceMethod("stats", &PolicyModel::Guard<&PolicyModel::Stats>),
                           InstanceMethod("dispose", &PolicyModel::Guard<&PolicyModel::Dispose>),
                       });
  }

  explicit PolicyModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PolicyModel>(info) {
    translate_errors(info.Env(), [&]() -> Napi::Value {
      const ModelConfig config = parse_model_config(info.Length() > 0 ? info[0] : info.Env().Undefined());
      const Napi::Object opts = options_arg(info, 3);
      count_ = parameter_count(config);
      const TensorRef params = tensor_arg(info, 1, "parameters");
      const TensorRef grads = tensor_arg(info, 2, "gradients");
      check_buffer(params, "parameters");
      check_buffer(grads, "gradients");
      if (params.data == grads.data) throw Error("gradients: must not share memory with parameters", Error::Type);
      expect_same_device(params, grads, "gradients");
      device_ = params.device;
      // CUDA parameters put the whole engine on their device: the same orchestration over
      // the CUDA table (kernels/backend_cuda.cu).
      EngineDeviceScope scope(device_.index);
      model_ = std::make_unique<Model>(config, device_.is_cuda() ? cuda_backend() : cpu_backend(),
                                       bool_option(opts, "recompute", false));
      params_ = Napi::Persistent(info[1].As<Napi::Object>());
      grads_ = Napi::Persistent(info[2].As<Napi::Object>());
      return info.Env().Undefined();
    });
  }

  // The model's arenas are device memory of its own device: free them there.
  ~PolicyModel() override {
    EngineDeviceScope scope(device_.index);
    model_.reset();
  }

 private:
  template <Napi::Value (PolicyModel::*Method)(const Napi::CallbackInfo&)>
  Napi::Value Guard(const Napi::CallbackInfo& info) {
    return translate_errors(info.Env(), [&] {
      EngineDeviceScope scope(device_.index);
      return (this->*Method)(info);
    });
  }

  void check_buffer(const TensorRef& t, const char* name) const {
    expect_dtype(t, {DType::F32}, name);
    if (t.numel() != count_)
      throw Error(std::string(name) + ": holds " + std::to_string(t.numel()) + " values but the model has " +
                      std::to_string(count_) + " parameters",
                  Error::Range);
  }

  Model& model() {
    if (!model_) throw Error("model: it was disposed", Error::Generic);
    return *model_;
  }

  // The buffer behind a kept tensor object, checked again: it may have been released.
  float* resolve(Napi::ObjectReference& ref, const char* name) {
    Napi::Object o = ref.Value();
    if (device_.is_cuda()) {  // unpack_tensor refuses a released device block
      const TensorRef t = unpack_tensor(o, name);
      check_buffer(t, name);
      return static_cast<float*>(t.data);
    }
    Napi::Value data = o.Get("data");
    if (!data.IsTypedArray() || data.As<Napi::TypedArray>().ArrayBuffer().IsDetached())
      throw Error(std::string(name) + ": the buffer was released (was the tensor disposed?)", Error::Generic);
    const TensorRef t = unpack_tensor(o, name);
    check_buffer(t, name);
    return static_cast<float*>(t.data);
  }

  // A device array read back for the finiteness probes (empty on the CPU, where the
  // probes read the caller's memory). A device-side probe would save the round trip.
  std::vector<float> host_copy(const float* p, int64_t n) const {
    std::vector<float> out;
    if (!device_.is_cuda() || n <= 0) return out;
    out.resize(static_cast<size_t>(n));
    cuda_copy_to_host(out.data(), p, static_cast<size_t>(n) * sizeof(float), device_.index);
    return out;
  }

  // The CUDA forward writes a device buffer kept across calls (regrown for larger batches,
  // or when a caller disposed it) and returns a tensor over it [B·T, D], valid until the
  // next forward, as the CPU forward's Float32Array view is.
  Napi::Value ForwardOnDevice(Napi::Env env, Model& m, const BatchArgs& b, const float* params, size_t needed) {
    bool fresh = hidden_device_.IsEmpty();
    if (!fresh) {
      try {
        fresh = unpack_tensor(hidden_device_.Value(), "hidden").numel() < static_cast<int64_t>(needed);
      } catch (const Error&) {
        fresh = true;  // disposed by its user
      }
    }
    if (fresh) {
      void* data = nullptr;
      Napi::Object t = allocate_tensor(env, {static_cast<int64_t>(std::max<size_t>(needed, 1))}, DType::F32, device_, &data);
      hidden_device_ = Napi::Persistent(t);
      ++hidden_allocations_;
    }
    const TensorRef buffer = unpack_tensor(hidden_device_.Value(), "hidden");
    m.forward(params, b.ids, b.lengths, b.batch, b.seq, static_cast<float*>(buffer.data));
    Napi::Object view = Napi::Object::New(env);
    view.Set("dtype", "f32");
    view.Set("shape", shape_array(env, {b.batch * b.seq, m.config().hidden}));
    view.Set("device", device_name(device_));
    view.Set("handle", hidden_device_.Value().Get("handle"));
    return view;
  }

  Napi::Value Layout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto layout = parameter_layout(model().config());
    Napi::Array out = Napi::Array::New(env, layout.size());
    for (size_t i = 0; i < layout.size(); ++i) {
      Napi::Object e = Napi::Object::New(env);
      e.Set("name", layout[i].name);
      e.Set("shape", shape_array(env, layout[i].shape));
      e.Set("offset", static_cast<double>(layout[i].offset));
      out.Set(static_cast<uint32_t>(i), e);
    }
    return out;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = model();
    const BatchArgs b = batch_args(info);
    const float* params = resolve(params_, "parameters");
    const int64_t D = m.config().hidden;
    const size_t needed = static_cast<size_t>(b.batch * b.seq * D);
    if (device_.is_cuda()) return ForwardOnDevice(env, m, b, params, needed);
    // The hidden output lives in one buffer reused across calls, regrown only when a
    // larger batch comes (or if someone released it).
    if (hidden_.IsEmpty() || hidden_.Value().IsDetached() || hidden_.Value().ByteLength() < needed * sizeof(float)) {
      void* data = nullptr;
      Napi::Object t = allocate_tensor(env, {static_cast<int64_t>(std::max<size_t>(needed, 1))}, DType::F32, Device{},
                                       &data);
      hidden_ = Napi::Persistent(t.Get("data").As<Napi::TypedArray>().ArrayBuffer());
      ++hidden_allocations_;
    }
    Napi::ArrayBuffer buffer = hidden_.Value();
    m.forward(params, b.ids, b.lengths, b.batch, b.seq, static_cast<float*>(buffer.Data()));
    return Napi::Float32Array::New(env, needed, buffer, 0);
  }

  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = model();
    const int64_t D = m.config().hidden, V = m.config().vocab;
    if (!m.has_activations())
      throw Error("backward: no saved activations; call forward() first (generate and sequenceLogprobs do not save any)",
                  Error::Generic);
    const int64_t B = m.last_batch(), T = m.last_seq();
    TensorRef grad = tensor_arg(info, 0, "gradHidden");
    expect_dtype(grad, {DType::F32}, "gradHidden");
    if (grad.device != device_)
      throw Error("gradHidden: is on " + device_name(grad.device) + " but the model is on " + device_name(device_), Error::Type);
    expect_shape(grad, {B * T, D}, "gradHidden");
    const Napi::Object opts = options_arg(info, 1);
    const float* head_grad = nullptr;
    if (has_option(opts, "gradLmHead")) {
      TensorRef g = unpack_tensor(opts.Get("gradLmHead"), "gradLmHead");
      expect_dtype(g, {DType::F32}, "gradLmHead");
      if (g.device != device_)
        throw Error("gradLmHead: is on " + device_name(g.device) + " but the model is on " + device_name(device_), Error::Type);
      expect_shape(g, {V, D}, "gradLmHead");
      head_grad = static_cast<const float*>(g.data);
      // The same rule as gradHidden: a NaN would be added into the head's gradient silently.
      // Checked before anything is added, so a refused call leaves the gradients as they
      // were (folding the check into add_lm_head_grad could not undo a partial add).
      const std::vector<float> head_host = host_copy(head_grad, V * D);
      for (int64_t v = 0; v < V; ++v)
        if (!all_finite((device_.is_cuda() ? head_host.data() : head_grad) + v * D, D))
          throw Error("gradLmHead: row " + std::to_string(v) + " holds a NaN or infinite value", Error::Range);
    }
    const float* params = resolve(params_, "parameters");
    float* grads = resolve(grads_, "gradients");
    // A NaN here would silently poison every gradient; padded rows are ignored anyway.
    const float* gh = static_cast<const float*>(grad.data);
    const std::vector<int32_t>& lengths = last_lengths();
    const std::vector<float> gh_host = host_copy(gh, B * T * D);
    for (int64_t b = 0; b < B; ++b) {
      const float* row = (device_.is_cuda() ? gh_host.data() : gh) + b * T * D;
      if (!all_finite(row, static_cast<int64_t>(lengths[b]) * D))
        throw Error("gradHidden: row " + std::to_string(b) + " holds a NaN or infinite value", Error::Range);
    }
    m.backward(params, grads, gh);
    if (head_grad) m.add_lm_head_grad(grads, head_grad);
    return env.Undefined();
  }

  Napi::Value SequenceLogprobs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = model();
    const BatchArgs b = batch_args(info);
    TensorRef prompt = tensor_arg(info, 2, "promptLengths");
    expect_dtype(prompt, {DType::I32}, "promptLengths");
    expect_shape(prompt, {b.batch}, "promptLengths");
    if (prompt.device.is_cuda()) throw Error("promptLengths: pass a CPU tensor", Error::Type);
    const Napi::Object opts = options_arg(info, 3);
    const double temperature = number_option(opts, "temperature", 1.0);
    const auto* p = static_cast<const int32_t*>(prompt.data);
    int64_t total = 0;
    for (int64_t r = 0; r < b.batch; ++r) {
      if (p[r] < 1 || b.lengths[r] < p[r] || b.lengths[r] > b.seq)
        throw Error("promptLengths: row " + std::to_string(r) + " needs 1 <= promptLength (" + std::to_string(p[r]) +
                        ") <= length (" + std::to_string(b.lengths[r]) + ") <= " + std::to_string(b.seq),
                    Error::Range);
      total += b.lengths[r] - p[r];
    }
    const float* params = resolve(params_, "parameters");
    Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(total));
    m.sequence_logprobs(params, b.ids, b.lengths, p, b.batch, b.seq, temperature, out.Data());
    return out;
  }

  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Model& m = model();
    const BatchArgs b = batch_args(info);
    const Napi::Object opts = options_arg(info, 2);
    GenerateOptions o;
    const double max_new = number_option(opts, "maxNewTokens", -1);
    if (!(max_new >= 0) || max_new > 2147483647.0 || max_new != static_cast<double>(static_cast<int64_t>(max_new)))
      throw Error("maxNewTokens: expected a non-negative integer", Error::Range);
    o.max_new_tokens = static_cast<int64_t>(max_new);
    o.temperature = number_option(opts, "temperature", 1.0);
    o.top_p = number_option(opts, "topP", 1.0);
    const double top_k = number_option(opts, "topK", 0);
    if (!(top_k >= 0) || top_k > 2147483647.0 || top_k != static_cast<double>(static_cast<int64_t>(top_k)))
      throw Error("topK: expected a non-negative integer", Error::Range);
    o.top_k = static_cast<int64_t>(top_k);
    const double seed = number_option(opts, "seed", 0);
    if (!(seed >= 0) || seed > 9007199254740991.0 || seed != static_cast<double>(static_cast<int64_t>(seed)))
      throw Error("seed: expected an integer in [0, 2^53)", Error::Range);
    o.seed = static_cast<uint64_t>(seed);
    if (has_option(opts, "stopIds")) {
      TensorRef stops = unpack_tensor(opts.Get("stopIds"), "stopIds");
      expect_dtype(stops, {DType::I32}, "stopIds");
      expect_rank(stops, 1, "stopIds");
      if (stops.device.is_cuda()) throw Error("stopIds: pass a CPU tensor", Error::Type);
      const auto* s = static_cast<const int32_t*>(stops.data);
      o.stop_ids.assign(s, s + stops.shape[0]);
    }
    const float* params = resolve(params_, "parameters");
    const GenerateOutput g = m.generate(params, b.ids, b.lengths, b.batch, b.seq, o);

    Napi::Object out = Napi::Object::New(env);
    Napi::Array tokens = Napi::Array::New(env, g.tokens.size());
    Napi::Array logprobs = Napi::Array::New(env, g.logprobs.size());
    for (size_t r = 0; r < g.tokens.size(); ++r) {
      Napi::Int32Array t = Napi::Int32Array::New(env, g.tokens[r].size());
      std::copy(g.tokens[r].begin(), g.tokens[r].end(), t.Data());
      tokens.Set(static_cast<uint32_t>(r), t);
      Napi::Float32Array l = Napi::Float32Array::New(env, g.logprobs[r].size());
      std::copy(g.logprobs[r].begin(), g.logprobs[r].end(), l.Data());
      logprobs.Set(static_cast<uint32_t>(r), l);
    }
    Napi::Uint8Array stopped = Napi::Uint8Array::New(env, g.stopped.size());
    std::copy(g.stopped.begin(), g.stopped.end(), stopped.Data());
    out.Set("tokens", tokens);
    out.Set("logprobs", logprobs);
    out.Set("stopped", stopped);
    return out;
  }

  Napi::Value SetRecompute(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBoolean()) throw Error("recompute: expected a boolean", Error::Type);
    model().set_recompute(info[0].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const ArenaStats s = model().stats();
    Napi::Object out = Napi::Object::New(env);
    out.Set("trainingBytes", static_cast<double>(s.training_bytes));
    out.Set("trainingAllocations", static_cast<double>(s.training_allocations));
    out.Set("inferenceBytes", static_cast<double>(s.inference_bytes));
    out.Set("inferenceAllocations", static_cast<double>(s.inference_allocations));
    double hidden_bytes = hidden_.IsEmpty() ? 0.0 : static_cast<double>(hidden_.Value().ByteLength());
    if (!hidden_device_.IsEmpty()) {
      try {
        hidden_bytes = static_cast<double>(unpack_tensor(hidden_device_.Value(), "hidden").bytes());
      } catch (const Error&) {
      }
    }
    out.Set("hiddenBytes", hidden_bytes);
    out.Set("device", device_name(device_));
    out.Set("hiddenAllocations", static_cast<double>(hidden_allocations_));
    out.Set("recompute", model().recompute());
    return out;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    params_.Reset();
    grads_.Reset();
    hidden_.Reset();
    hidden_device_.Reset();
    return info.Env().Undefined();
  }

  const std::vector<int32_t>& last_lengths() const { return model_->last_lengths(); }

  std::unique_ptr<Model> model_;
  int64_t count_ = 0;
  Napi::ObjectReference params_, grads_;
  Napi::Reference<Napi::ArrayBuffer> hidden_;
  Napi::ObjectReference hidden_device_;
  Device device_;
  int64_t hidden_allocations_ = 0;
};

// policyInitNormal(values f32[n], {seed, key, std}): values[i] ~ N(0, std²), a pure
// function of (seed, key, i) through the engine's counter-based generator (Box–Muller on
// pairs), so the same seed gives the same weights whatever the thread count.
Napi::Value policy_init_normal(const Napi::CallbackInfo& info) {
  TensorRef t = tensor_arg(info, 0, "values");
  expect_dtype(t, {DType::F32}, "values");
  if (t.device.is_cuda()) throw Error("values: pass a CPU tensor", Error::Type);
  const Napi::Object opts = options_arg(info, 1);
  auto integer = [&](const char* key) {
    const double v = number_option(opts, key, 0);
    if (!(v >= 0) || v > 9007199254740991.0 || v != static_cast<double>(static_cast<int64_t>(v)))
      throw Error(std::string(key) + ": expected an integer in [0, 2^53)", Error::Range);
    return static_cast<uint64_t>(v);
  };
  const uint64_t seed = integer("seed"), key = integer("key");
  const double std_dev = number_option(opts, "std", 1.0);
  if (!(std_dev >= 0) || !std::isfinite(std_dev)) throw Error("std: expected a finite number >= 0", Error::Range);
  float* v = static_cast<float*>(t.data);
  const int64_t n = t.numel(), pairs = (n + 1) / 2;
  parallel_for(pairs, 4096, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      // Single-precision transcendentals: an initialisation needs no more, and they are
      // several times cheaper than the double ones over hundreds of millions of values.
      // 1 − u1 is in (0, 1] in double and stays > 0 as a float.
      const float w = static_cast<float>(1.0 - counter_uniform(seed, key, 2 * static_cast<uint64_t>(p)));
      const float u2 = static_cast<float>(counter_uniform(seed, key, 2 * static_cast<uint64_t>(p) + 1));
      const float r = std::sqrt(-2.0f * std::log(w)) * static_cast<float>(std_dev);
      const float angle = 6.28318530717958648f * u2;
      v[2 * p] = r * std::cos(angle);
      if (2 * p + 1 < n) v[2 * p + 1] = r * std::sin(angle);
    }
  });
  return info.Env().Undefined();
}

void register_policy_model(Napi::Env env, Napi::Object exports) {
  exports.Set("PolicyModel", PolicyModel::Define(env));
  exports.Set("policyInitNormal", Napi::Function::New<guarded<policy_init_normal>>(env, "policyInitNormal"));
}

}  // namespace

static BindingRegistrar registrar(register_policy_model);

}  // namespace lgrpo
