// sampleRows(logits f32[rows, vocab] (cpu or cuda), {temperature, topK, topP, seed, rowKeys, step})
//   → {tokens: Int32Array[rows], logprobs: Float32Array[rows]} (host arrays)
// The engine's next-token sampler (SampleArgs in native/engine/backend.h) on one device's
// logits: the CPU twin for CPU tensors, the CUDA twin for CUDA tensors, so tests can hold
// the two side by side. rowKeys defaults to 0..rows-1, step to 0.
#include <cmath>
#include <vector>

#include "../binding.h"
#include "../engine/backend.h"

namespace lgrpo {
namespace {

double integer_option(const Napi::Object& opts, const char* key, double fallback, double max, const char* what) {
  const double v = number_option(opts, key, fallback);
  if (!(v >= 0) || v > max || v != std::floor(v)) throw Error(std::string(key) + ": expected " + what, Error::Range);
  return v;
}

Napi::Value sample_rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef logits = tensor_arg(info, 0, "logits");
  expect_dtype(logits, {DType::F32}, "logits");
  expect_rank(logits, 2, "logits");
  Napi::Object opts = options_arg(info, 1);
  const int64_t rows = logits.shape[0], vocab = logits.shape[1];
  if (vocab < 1) throw Error("logits: expected a vocabulary of at least 1", Error::Range);

  SampleArgs a{};
  a.logits = static_cast<const float*>(logits.data);
  a.rows = rows;
  a.vocab = vocab;
  a.temperature = number_option(opts, "temperature", 1.0);
  if (!(a.temperature >= 0) || !std::isfinite(a.temperature))
    throw Error("temperature: expected a finite number >= 0", Error::Range);
  a.top_p = number_option(opts, "topP", 1.0);
  if (!(a.top_p > 0 && a.top_p <= 1)) throw Error("topP: expected a number in (0, 1]", Error::Range);
  a.top_k = static_cast<int64_t>(integer_option(opts, "topK", 0, 2147483647.0, "a non-negative integer"));
  a.seed = static_cast<uint64_t>(integer_option(opts, "seed", 0, 9007199254740991.0, "an integer in [0, 2^53)"));
  a.step = static_cast<int64_t>(integer_option(opts, "step", 0, 9007199254740991.0, "an integer in [0, 2^53)"));

  std::vector<int64_t> keys(static_cast<size_t>(rows));
  if (has_option(opts, "rowKeys")) {
    const Napi::Value v = opts.Get("rowKeys");
    if (!v.IsObject()) throw Error("rowKeys: expected an array of integers", Error::Type);
    const Napi::Object arr = v.As<Napi::Object>();
    if (arr.Get("length").ToNumber().DoubleValue() != static_cast<double>(rows))
      throw Error("rowKeys: expected one key per row (" + std::to_string(rows) + ")", Error::Range);
    for (int64_t r = 0; r < rows; ++r) {
      const double k = arr.Get(static_cast<uint32_t>(r)).ToNumber().DoubleValue();
      if (!(k >= 0) || k > 9007199254740991.0 || k != std::floor(k))
        throw Error("rowKeys: key " + std::to_string(r) + " is not an integer in [0, 2^53)", Error::Range);
      keys[r] = static_cast<int64_t>(k);
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) keys[r] = r;
  }
  a.row_keys = keys.data();

  Napi::Int32Array tokens = Napi::Int32Array::New(env, static_cast<size_t>(rows));
  Napi::Float32Array logprobs = Napi::Float32Array::New(env, static_cast<size_t>(rows));
  a.tokens = tokens.Data();
  a.logprobs = logprobs.Data();
  if (logits.device.is_cuda()) {
    a.device = logits.device.index;
    sample_cuda(a);
  } else {
    sample_cpu(a);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("tokens", tokens);
  out.Set("logprobs", logprobs);
  return out;
}

}  // namespace

void register_sample(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleRows", Napi::Function::New<guarded<sample_rows>>(env, "sampleRows"));
}

static BindingRegistrar registrar(register_sample);

}  // namespace lgrpo
