// linearTokenLogprobs(hidden [N,d], weight [V,d] (same dtype: f32|bf16|f16), targets i32[N],
//                     {temperature, entropy, saveLogits})
//   → {logprobs f32[N], entropy? f32[N], lse f32[N], savedLogits? f32[...] (CPU only)}
// linearTokenLogprobsBackward(hidden, weight, targets, lse f32[N], gradLogprobs f32[N],
//                             {gradEntropy? f32[N], entropy? f32[N], temperature, savedLogits?})
//   → {gradHidden f32[N,d], gradWeight f32[V,d]}
#include <cmath>
#include <vector>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/linear_token_logprobs.h"

namespace lgrpo {
namespace {

struct Operands {
  TensorRef hidden, weight, targets;
  int64_t rows, dim, vocab;
};

Operands operands(const Napi::CallbackInfo& info) {
  Operands o{tensor_arg(info, 0, "hidden"), tensor_arg(info, 1, "weight"), tensor_arg(info, 2, "targets"), 0, 0, 0};
  expect_dtype(o.hidden, {DType::F32, DType::BF16, DType::F16}, "hidden");
  expect_rank(o.hidden, 2, "hidden");
  if (o.weight.dtype != o.hidden.dtype)
    throw Error(std::string("weight: dtype ") + dtype_name(o.weight.dtype) + " differs from hidden's " +
                    dtype_name(o.hidden.dtype) + "; convert one of them",
                Error::Type);
  expect_rank(o.weight, 2, "weight");
  expect_shape(o.weight, {o.weight.shape[0], o.hidden.shape[1]}, "weight");
  expect_same_device(o.hidden, o.weight, "weight");
  expect_dtype(o.targets, {DType::I32}, "targets");
  expect_shape(o.targets, {o.hidden.shape[0]}, "targets");
  expect_same_device(o.hidden, o.targets, "targets");
  o.rows = o.hidden.shape[0];
  o.dim = o.hidden.shape[1];
  o.vocab = o.weight.shape[0];
  if (!o.hidden.device.is_cuda()) {  // the CUDA twin checks on the device
    const auto* ids = static_cast<const int32_t*>(o.targets.data);
    for (int64_t n = 0; n < o.rows; ++n)
      if (ids[n] < 0 || ids[n] >= o.vocab)
        throw Error("targets: target " + std::to_string(ids[n]) + " at index " + std::to_string(n) +
                        " is outside [0, " + std::to_string(o.vocab) + ")",
                    Error::Range);
  }
  return o;
}

float temperature_option(const Napi::Object& opts) {
  const float t = static_cast<float>(number_option(opts, "temperature", 1.0));
  if (!(t > 0.0f) || !std::isfinite(t) || !std::isfinite(1.0f / t))
    throw Error("temperature: expected a finite number > 0 whose inverse is a finite float32", Error::Range);
  return t;
}

// The fields the forward and backward argument structs share.
template <typename Args>
void fill_operands(Args& a, const Operands& o) {
  a.hidden = o.hidden.data;
  a.weight = o.weight.data;
  a.dtype = o.hidden.dtype;
  a.rows = o.rows;
  a.dim = o.dim;
  a.vocab = o.vocab;
  a.targets = static_cast<const int32_t*>(o.targets.data);
}

const float* row_vector(const TensorRef& t, const char* name, const Operands& o) {
  expect_dtype(t, {DType::F32}, name);
  expect_shape(t, {o.rows}, name);
  expect_same_device(o.hidden, t, name);
  return static_cast<const float*>(t.data);
}

Napi::Value linear_token_logprobs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Operands o = operands(info);
  Napi::Object opts = options_arg(info, 3);

  LinearTokenLogprobsForwardArgs a{};
  fill_operands(a, o);
  a.temperature = temperature_option(opts);
  if (o.rows > 0 && o.vocab == 0) throw Error("targets: weight has no rows, so no target can be valid", Error::Range);

  const Device device = o.hidden.device;
  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("logprobs", allocate_tensor(env, {a.rows}, DType::F32, device, &data));
  a.logprobs = static_cast<float*>(data);
  if (bool_option(opts, "entropy", false)) {
    out.Set("entropy", allocate_tensor(env, {a.rows}, DType::F32, device, &data));
    a.entropy = static_cast<float*>(data);
  }
  out.Set("lse", allocate_tensor(env, {a.rows}, DType::F32, device, &data));
  a.lse = static_cast<float*>(data);
  // The CUDA twin always recomputes (device memory is the scarcer one): no savedLogits.
  if (bool_option(opts, "saveLogits", false) && !device.is_cuda() && a.rows > 0) {
    out.Set("savedLogits",
            allocate_tensor(env, {linear_saved_logits_floats(a.rows, a.vocab)}, DType::F32, device, &data));
    a.saved_logits = static_cast<float*>(data);
  }

  if (device.is_cuda()) {
    a.device = device.index;
    linear_token_logprobs_forward_cuda(a);
  } else {
    linear_token_logprobs_forward_cpu(a);
  }
  return out;
}

// The f32 lse of a row with |lse| = 1e8 is off by up to 4, which scales every p of the
// row by up to e^4. For rows with |lse| ≥ kLinearLseRecheck the forward runs again (on
// every row: one more logit GEMM, only when such rows exist) and returns the
// log-sum-exp as lse + lse_lo, from which δ = true − given comes out exact; the
// backward then uses log p = (x − lse) − δ. An lse that is not the log-sum-exp of these
// inputs at all (off by more than 1e-3 of itself) is refused. Returns a [rows] f32
// tensor of δ on the inputs' device, or an empty handle when no row needs one.
Napi::Object lse_shift(Napi::Env env, const Operands& o, const TensorRef& lse, float temperature) {
  const Device device = o.hidden.device;
  const Device host{};
  const size_t bytes = static_cast<size_t>(o.rows) * sizeof(float);
  std::vector<float> given(static_cast<size_t>(o.rows));
  copy_between(given.data(), host, lse.data, device, bytes);
  bool any = false;
  // Non-finite values are left to the backward, which names them.
  const auto rechecked = [](float l) { return std::isfinite(l) && std::fabs(l) >= kLinearLseRecheck; };
  for (float l : given) any = any || rechecked(l);
  if (!any) return Napi::Object();

  LinearTokenLogprobsForwardArgs f{};
  fill_operands(f, o);
  f.temperature = temperature;
  void *hi, *lo, *logprobs;
  Napi::Object hi_t = allocate_tensor(env, {o.rows}, DType::F32, device, &hi);
  Napi::Object lo_t = allocate_tensor(env, {o.rows}, DType::F32, device, &lo);
  Napi::Object logprobs_t = allocate_tensor(env, {o.rows}, DType::F32, device, &logprobs);
  f.lse = static_cast<float*>(hi);
  f.lse_lo = static_cast<float*>(lo);
  f.logprobs = static_cast<float*>(logprobs);
  if (device.is_cuda()) {
    f.device = device.index;
    linear_token_logprobs_forward_cuda(f);
  } else {
    linear_token_logprobs_forward_cpu(f);
  }
  std::vector<float> exact_hi(given.size()), exact_lo(given.size());
  copy_between(exact_hi.data(), host, hi, device, bytes);
  copy_between(exact_lo.data(), host, lo, device, bytes);
  release_tensor(env, hi_t);
  release_tensor(env, lo_t);
  release_tensor(env, logprobs_t);

  std::vector<float> delta(given.size(), 0.0f);
  for (size_t n = 0; n < given.size(); ++n) {
    if (!rechecked(given[n])) continue;
    // hi and the given lse are close floats, so their difference is exact.
    const double d = (static_cast<double>(exact_hi[n]) - given[n]) + exact_lo[n];
    if (!(std::fabs(d) <= 1e-3 * std::fabs(given[n])))
      throw Error("lse: row " + std::to_string(n) + " is " + number_text(given[n]) +
                      " but the log-sum-exp of hidden · weightᵀ / temperature is " +
                      number_text(static_cast<double>(exact_hi[n]) + exact_lo[n]) +
                      "; pass the lse linearTokenLogprobs returned for these inputs with the same temperature",
                  Error::Range);
    delta[n] = static_cast<float>(d);
  }
  void* shift;
  Napi::Object shift_t = allocate_tensor(env, {o.rows}, DType::F32, device, &shift);
  copy_between(shift, device, delta.data(), host, bytes);
  return shift_t;
}

Napi::Value linear_token_logprobs_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Operands o = operands(info);
  const TensorRef lse = tensor_arg(info, 3, "lse");
  const TensorRef grad_logprobs = tensor_arg(info, 4, "gradLogprobs");
  Napi::Object opts = options_arg(info, 5);

  LinearTokenLogprobsBackwardArgs a{};
  fill_operands(a, o);
  a.lse = row_vector(lse, "lse", o);
  a.grad_logprobs = row_vector(grad_logprobs, "gradLogprobs", o);
  a.temperature = temperature_option(opts);
  if (has_option(opts, "gradEntropy")) {
    // ∂H/∂x needs Σ p x = lse − H, which only the forward's entropy output carries.
    if (!has_option(opts, "entropy"))
      throw Error("entropy: required with gradEntropy (pass the entropy output of linearTokenLogprobs(..., "
                  "{entropy: true}))",
                  Error::Type);
    a.grad_entropy = row_vector(unpack_tensor(opts.Get("gradEntropy"), "gradEntropy"), "gradEntropy", o);
    a.entropy = row_vector(unpack_tensor(opts.Get("entropy"), "entropy"), "entropy", o);
  }
  if (o.rows > 0 && o.vocab == 0) throw Error("targets: weight has no rows, so no target can be valid", Error::Range);
  if (has_option(opts, "savedLogits")) {
    const TensorRef saved = unpack_tensor(opts.Get("savedLogits"), "savedLogits");
    expect_dtype(saved, {DType::F32}, "savedLogits");
    expect_shape(saved, {linear_saved_logits_floats(o.rows, o.vocab)}, "savedLogits");
    if (o.hidden.device.is_cuda() || saved.device.is_cuda())
      throw Error("savedLogits: the CPU twin's; pass none with CUDA tensors (their backward recomputes the logits)",
                  Error::Type);
    a.saved_logits = static_cast<const float*>(saved.data);
  }

  const Device device = o.hidden.device;
  // Rows whose f32 lse lost precision get it back from the forward before the gradients.
  Napi::Object shift = lse_shift(env, o, lse, a.temperature);
  if (!shift.IsEmpty()) a.lse_shift = static_cast<const float*>(unpack_tensor(shift, "lse").data);
  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("gradHidden", allocate_tensor(env, {a.rows, a.dim}, DType::F32, device, &data));
  a.grad_hidden = static_cast<float*>(data);
  out.Set("gradWeight", allocate_tensor(env, {a.vocab, a.dim}, DType::F32, device, &data));
  a.grad_weight = static_cast<float*>(data);

  if (device.is_cuda()) {
    a.device = device.index;
    linear_token_logprobs_backward_cuda(a);
  } else {
    linear_token_logprobs_backward_cpu(a);
  }
  if (!shift.IsEmpty()) release_tensor(env, shift);
  return out;
}

}  // namespace

void register_linear_token_logprobs(Napi::Env env, Napi::Object exports) {
  exports.Set("linearTokenLogprobs", Napi::Function::New<guarded<linear_token_logprobs>>(env, "linearTokenLogprobs"));
  exports.Set("linearTokenLogprobsBackward",
              Napi::Function::New<guarded<linear_token_logprobs_backward>>(env, "linearTokenLogprobsBackward"));
}

}  // namespace lgrpo
