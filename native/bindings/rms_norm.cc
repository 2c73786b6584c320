// rmsNormForward(x f32[rows, D], weight f32[D], {eps}) → {y f32[rows, D], rstd f32[rows]}
// rmsNormBackward(x, weight, rstd, dy, dweight?) → {dx f32[rows, D], dweight f32[D]}
//   dweight, when given, is accumulated into in place (+=) and returned; else a zeroed one is.
#include <algorithm>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/rms_norm.h"

namespace lgrpo {
namespace {

Napi::Value rms_norm_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef x = tensor_arg(info, 0, "x");
  TensorRef w = tensor_arg(info, 1, "weight");
  Napi::Object opts = options_arg(info, 2);
  expect_dtype(x, {DType::F32}, "x");
  expect_rank(x, 2, "x");
  expect_dtype(w, {DType::F32}, "weight");
  expect_shape(w, {x.shape[1]}, "weight");
  expect_same_device(x, w, "weight");
  if (x.shape[1] < 1) throw Error("x: the feature dimension must be at least 1", Error::Range);
  double eps = number_option(opts, "eps", 1e-6);
  if (!(eps > 0 && std::isfinite(eps))) throw Error("eps: expected a finite number > 0", Error::Range);

  RmsNormForwardArgs a{};
  a.x = static_cast<const float*>(x.data);
  a.weight = static_cast<const float*>(w.data);
  a.rows = x.shape[0];
  a.dim = x.shape[1];
  a.eps = static_cast<float>(eps);
  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("y", allocate_tensor(env, {a.rows, a.dim}, DType::F32, x.device, &data));
  a.y = static_cast<float*>(data);
  out.Set("rstd", allocate_tensor(env, {a.rows}, DType::F32, x.device, &data));
  a.rstd = static_cast<float*>(data);
  int64_t bad;
  if (x.device.is_cuda()) {
    a.device = x.device.index;
    bad = rms_norm_forward_cuda(a);
  } else {
    bad = rms_norm_forward_cpu(a);
  }
  if (bad >= 0)
    throw Error("x: row " + std::to_string(bad) + " contains a non-finite value (or its squares overflow)", Error::Range);
  return out;
}

Napi::Value rms_norm_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef x = tensor_arg(info, 0, "x");
  TensorRef w = tensor_arg(info, 1, "weight");
  TensorRef rstd = tensor_arg(info, 2, "rstd");
  TensorRef dy = tensor_arg(info, 3, "dy");
  expect_dtype(x, {DType::F32}, "x");
  expect_rank(x, 2, "x");
  const int64_t rows = x.shape[0], dim = x.shape[1];
  expect_dtype(w, {DType::F32}, "weight");
  expect_shape(w, {dim}, "weight");
  expect_dtype(rstd, {DType::F32}, "rstd");
  expect_shape(rstd, {rows}, "rstd");
  expect_dtype(dy, {DType::F32}, "dy");
  expect_shape(dy, {rows, dim}, "dy");
  expect_same_device(x, w, "weight");
  expect_same_device(x, rstd, "rstd");
  expect_same_device(x, dy, "dy");

  RmsNormBackwardArgs a{};
  a.x = static_cast<const float*>(x.data);
  a.weight = static_cast<const float*>(w.data);
  a.rstd = static_cast<const float*>(rstd.data);
  a.dy = static_cast<const float*>(dy.data);
  a.rows = rows;
  a.dim = dim;
  if (x.device.is_cuda()) a.device = x.device.index;
  Napi::Object out = Napi::Object::New(env);
  void* data;
  if (info.Length() > 4 && !info[4].IsUndefined() && !info[4].IsNull()) {
    TensorRef dw = unpack_tensor(info[4], "dweight");
    expect_dtype(dw, {DType::F32}, "dweight");
    expect_shape(dw, {dim}, "dweight");
    expect_same_device(x, dw, "dweight");
    a.dweight = static_cast<float*>(dw.data);
    out.Set("dweight", info[4]);
  } else {
    out.Set("dweight", allocate_tensor(env, {dim}, DType::F32, x.device, &data));
    a.dweight = static_cast<float*>(data);
    if (x.device.is_cuda()) cuda_memset_zero(a.dweight, sizeof(float) * static_cast<size_t>(dim), a.device);
    else std::fill(a.dweight, a.dweight + dim, 0.0f);
  }
  out.Set("dx", allocate_tensor(env, {rows, dim}, DType::F32, x.device, &data));
  a.dx = static_cast<float*>(data);
  if (x.device.is_cuda()) rms_norm_backward_cuda(a);
  else rms_norm_backward_cpu(a);
  return out;
}

}  // namespace

void register_rms_norm(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsNormForward", Napi::Function::New<guarded<rms_norm_forward>>(env, "rmsNormForward"));
  exports.Set("rmsNormBackward", Napi::Function::New<guarded<rms_norm_backward>>(env, "rmsNormBackward"));
}

static BindingRegistrar registrar(register_rms_norm);

}  // namespace lgrpo
