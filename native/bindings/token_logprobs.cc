// tokenLogprobs(logits [N,V] f32|bf16|f16, targets i32[N], {temperature, entropy})
//   → {logprobs f32[N], entropy? f32[N], lse f32[N]}
// tokenLogprobsBackward(logits, targets, lse f32[N], gradLogprobs f32[N],
//                       {gradEntropy? f32[N], entropy? f32[N], temperature, inPlace})
//   → gradLogits [N,V] in the logits' dtype (the logits object itself when inPlace)
#include <cmath>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/token_logprobs.h"

namespace lgrpo {
namespace {

void check_logits_and_targets(const TensorRef& logits, const TensorRef& targets) {
  expect_dtype(logits, {DType::F32, DType::BF16, DType::F16}, "logits");
  expect_rank(logits, 2, "logits");
  expect_dtype(targets, {DType::I32}, "targets");
  expect_shape(targets, {logits.shape[0]}, "targets");
  expect_same_device(logits, targets, "targets");
  if (logits.device.is_cuda()) return;  // the CUDA twin checks on the device
  const int64_t vocab = logits.shape[1];
  const auto* ids = static_cast<const int32_t*>(targets.data);
  for (int64_t n = 0; n < targets.shape[0]; ++n)
    if (ids[n] < 0 || ids[n] >= vocab)
      throw Error("targets: target " + std::to_string(ids[n]) + " at index " + std::to_string(n) + " is outside [0, " +
                      std::to_string(vocab) + ")", Error::Range);
}

float temperature_option(const Napi::Object& opts) {
  const double t = number_option(opts, "temperature", 1.0);
  const float tf = static_cast<float>(t);
  if (!(tf > 0.0f) || !std::isfinite(tf) || !std::isfinite(1.0f / tf))
    throw Error("temperature: expected a finite number > 0 whose inverse is a finite float32", Error::Range);
  return tf;
}

void check_row_vector(const TensorRef& t, const char* name, const TensorRef& logits) {
  expect_dtype(t, {DType::F32}, name);
  expect_shape(t, {logits.shape[0]}, name);
  expect_same_device(logits, t, name);
}

TensorRef row_vector_option(const Napi::Object& opts, const char* key, const TensorRef& logits) {
  TensorRef t = unpack_tensor(opts.Get(key), key);
  check_row_vector(t, key, logits);
  return t;
}

Napi::Value token_logprobs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef logits = tensor_arg(info, 0, "logits");
  TensorRef targets = tensor_arg(info, 1, "targets");
  Napi::Object opts = options_arg(info, 2);
  check_logits_and_targets(logits, targets);

  TokenLogprobsForwardArgs a{};
  a.logits = logits.data;
  a.dtype = logits.dtype;
  a.rows = logits.shape[0];
  a.vocab = logits.shape[1];
  a.targets = static_cast<const int32_t*>(targets.data);
  a.temperature = temperature_option(opts);
  const bool with_entropy = bool_option(opts, "entropy", false);

  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("logprobs", allocate_tensor(env, {a.rows}, DType::F32, logits.device, &data));
  a.logprobs = static_cast<float*>(data);
  if (with_entropy) {
    out.Set("entropy", allocate_tensor(env, {a.rows}, DType::F32, logits.device, &data));
    a.entropy = static_cast<float*>(data);
  }
  out.Set("lse", allocate_tensor(env, {a.rows}, DType::F32, logits.device, &data));
  a.lse = static_cast<float*>(data);

  if (logits.device.is_cuda()) {
    a.device = logits.device.index;
    token_logprobs_forward_cuda(a);
  } else {
    token_logprobs_forward_cpu(a);
  }
  return out;
}

Napi::Value token_logprobs_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef logits = tensor_arg(info, 0, "logits");
  TensorRef targets = tensor_arg(info, 1, "targets");
  TensorRef lse = tensor_arg(info, 2, "lse");
  TensorRef grad_logprobs = tensor_arg(info, 3, "gradLogprobs");
  Napi::Object opts = options_arg(info, 4);
  check_logits_and_targets(logits, targets);
  check_row_vector(lse, "lse", logits);
  check_row_vector(grad_logprobs, "gradLogprobs", logits);

  TokenLogprobsBackwardArgs a{};
  a.logits = logits.data;
  a.dtype = logits.dtype;
  a.rows = logits.shape[0];
  a.vocab = logits.shape[1];
  a.targets = static_cast<const int32_t*>(targets.data);
  a.lse = static_cast<const float*>(lse.data);
  a.grad_logprobs = static_cast<const float*>(grad_logprobs.data);
  a.temperature = temperature_option(opts);
  if (has_option(opts, "gradEntropy")) {
    // ∂H/∂x needs Σ p x = lse − H, which only the forward's entropy output carries.
    if (!has_option(opts, "entropy"))
      throw Error("gradEntropy: needs `entropy` too (the entropy output of tokenLogprobs(..., {entropy: true}))",
                  Error::Type);
    a.grad_entropy = static_cast<const float*>(row_vector_option(opts, "gradEntropy", logits).data);
    a.entropy = static_cast<const float*>(row_vector_option(opts, "entropy", logits).data);
  }

  Napi::Value result;
  if (bool_option(opts, "inPlace", false)) {
    a.grad_logits = logits.data;
    result = info[0];
  } else {
    result = allocate_tensor(env, logits.shape, logits.dtype, logits.device, &a.grad_logits);
  }

  if (logits.device.is_cuda()) {
    a.device = logits.device.index;
    token_logprobs_backward_cuda(a);
  } else {
    token_logprobs_backward_cpu(a);
  }
  return result;
}

}  // namespace

void register_token_logprobs(Napi::Env env, Napi::Object exports) {
  exports.Set("tokenLogprobs", Napi::Function::New<guarded<token_logprobs>>(env, "tokenLogprobs"));
  exports.Set("tokenLogprobsBackward",
              Napi::Function::New<guarded<token_logprobs_backward>>(env, "tokenLogprobsBackward"));
}

}  // namespace lgrpo
