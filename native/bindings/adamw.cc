// adamwStep(param, grad, expAvg, expAvgSq, {lr, beta1, beta2, eps, weightDecay, step}) → undefined
//   one torch.optim.AdamW step, in place on param, expAvg and expAvgSq (all f32, same numel).
// gradSumSquares(x f32) → number: Σ x² in double (deterministic), for global grad-norm clipping.
// scaleInPlace(x f32, c) → undefined: x ← x·c.
// All on the CPU or all on one CUDA device (the CUDA twins in kernels/adamw.cu).
#include <cmath>
#include <string>

#include "../binding.h"
#include "../ops/adamw.h"

namespace lgrpo {
namespace {

// An f32 tensor argument; on `like`'s device when given.
TensorRef f32_arg(const Napi::CallbackInfo& info, size_t index, const char* name, const TensorRef* like = nullptr) {
  TensorRef t = tensor_arg(info, index, name);
  expect_dtype(t, {DType::F32}, name);
  if (like) expect_same_device(*like, t, name);
  return t;
}

// A finite option >= 0 (> 0 when positive is set), or in [0, 1) when unit is set.
double finite_option(const Napi::Object& opts, const char* key, double fallback, bool positive = false, bool unit = false) {
  const double v = number_option(opts, key, fallback);
  const bool ok = std::isfinite(v) && (positive ? v > 0 : v >= 0) && (!unit || v < 1);
  if (!ok)
    throw Error(std::string(key) + ": expected a finite number " + (unit ? "in [0, 1)" : positive ? "> 0" : ">= 0") +
                    ", got " + std::to_string(v), Error::Range);
  return v;
}

bool overlaps(const TensorRef& x, const TensorRef& y) {
  const char* p = static_cast<const char*>(x.data);
  const char* q = static_cast<const char*>(y.data);
  return x.bytes() > 0 && y.bytes() > 0 && p < q + y.bytes() && q < p + x.bytes();
}

Napi::Value adamw_step(const Napi::CallbackInfo& info) {
  TensorRef param = f32_arg(info, 0, "param");
  TensorRef grad = f32_arg(info, 1, "grad", &param);
  TensorRef m = f32_arg(info, 2, "expAvg", &param);
  TensorRef v = f32_arg(info, 3, "expAvgSq", &param);
  Napi::Object opts = options_arg(info, 4);
  const int64_t n = param.numel();
  const TensorRef* others[] = {&grad, &m, &v};
  const char* names[] = {"grad", "expAvg", "expAvgSq"};
  for (int i = 0; i < 3; ++i)
    if (others[i]->numel() != n)
      throw Error(std::string(names[i]) + ": has " + std::to_string(others[i]->numel()) + " elements, param has " +
                      std::to_string(n), Error::Range);
  const TensorRef* all[] = {&param, &grad, &m, &v};
  const char* all_names[] = {"param", "grad", "expAvg", "expAvgSq"};
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j)
      if (overlaps(*all[i], *all[j]))
        throw Error(std::string(all_names[j]) + ": must not share memory with " + all_names[i], Error::Range);

  AdamwArgs a{};
  a.param = static_cast<float*>(param.data);
  a.grad = static_cast<const float*>(grad.data);
  a.exp_avg = static_cast<float*>(m.data);
  a.exp_avg_sq = static_cast<float*>(v.data);
  a.n = n;
  if (!has_option(opts, "lr")) throw Error("lr: required", Error::Type);
  a.lr = finite_option(opts, "lr", 0.0);
  a.beta1 = finite_option(opts, "beta1", 0.9, false, true);
  a.beta2 = finite_option(opts, "beta2", 0.999, false, true);
  a.eps = finite_option(opts, "eps", 1e-8, true);
  a.weight_decay = finite_option(opts, "weightDecay", 0.01);
  if (!has_option(opts, "step")) throw Error("step: required (1 for the first update)", Error::Type);
  const double step = number_option(opts, "step", 1);
  if (!(step >= 1 && step <= 9.0e15) || step != std::floor(step))
    throw Error("step: expected an integer >= 1 (1 for the first update)", Error::Range);
  a.step = static_cast<int64_t>(step);
  if (param.device.is_cuda()) {
    a.device = param.device.index;
    adamw_step_cuda(a);
  } else {
    adamw_step_cpu(a);
  }
  return info.Env().Undefined();
}

Napi::Value grad_sum_squares(const Napi::CallbackInfo& info) {
  TensorRef x = f32_arg(info, 0, "x");
  const auto* data = static_cast<const float*>(x.data);
  const double sum = x.device.is_cuda() ? grad_sum_squares_cuda(data, x.numel(), x.device.index)
                                        : grad_sum_squares_cpu(data, x.numel());
  return Napi::Number::New(info.Env(), sum);
}

Napi::Value scale_in_place(const Napi::CallbackInfo& info) {
  TensorRef x = f32_arg(info, 0, "x");
  if (info.Length() < 2 || !info[1].IsNumber()) throw Error("c: expected a number", Error::Type);
  const double c = info[1].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(c)) throw Error("c: expected a finite number", Error::Range);
  if (x.device.is_cuda())
    scale_in_place_cuda(static_cast<float*>(x.data), x.numel(), static_cast<float>(c), x.device.index);
  else
    scale_in_place_cpu(static_cast<float*>(x.data), x.numel(), static_cast<float>(c));
  return info.Env().Undefined();
}

void register_adamw(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New<guarded<adamw_step>>(env, "adamwStep"));
  exports.Set("gradSumSquares", Napi::Function::New<guarded<grad_sum_squares>>(env, "gradSumSquares"));
  exports.Set("scaleInPlace", Napi::Function::New<guarded<scale_in_place>>(env, "scaleInPlace"));
}

static BindingRegistrar registrar(register_adamw);

}  // namespace
}  // namespace lgrpo
