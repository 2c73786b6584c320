// swigluForward(gate f32[rows, I], up f32[rows, I]) → h f32[rows, I]       (h = silu(gate)·up)
// swigluBackward(gate, up, dh) → {dgate, dup}
// Elementwise: any shape is accepted as long as all arguments share it.
#include "../binding.h"
#include "../ops/swiglu.h"

namespace lgrpo {
namespace {

TensorRef same_shape_arg(const Napi::CallbackInfo& info, size_t i, const char* name, const TensorRef* like) {
  TensorRef t = tensor_arg(info, i, name);
  expect_dtype(t, {DType::F32}, name);
  if (like) expect_same_device(*like, t, name);
  if (like && t.shape != like->shape)
    throw Error(std::string(name) + ": expected shape " + shape_string(like->shape) + " (that of gate), got " +
                    shape_string(t.shape), Error::Range);
  return t;
}

Napi::Value swiglu_forward(const Napi::CallbackInfo& info) {
  TensorRef g = same_shape_arg(info, 0, "gate", nullptr);
  TensorRef u = same_shape_arg(info, 1, "up", &g);
  SwigluForwardArgs a{};
  a.gate = static_cast<const float*>(g.data);
  a.up = static_cast<const float*>(u.data);
  a.n = g.numel();
  void* data;
  Napi::Object h = allocate_tensor(info.Env(), g.shape, DType::F32, g.device, &data);
  a.h = static_cast<float*>(data);
  if (g.device.is_cuda()) {
    a.device = g.device.index;
    swiglu_forward_cuda(a);
  } else {
    swiglu_forward_cpu(a);
  }
  return h;
}

Napi::Value swiglu_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef g = same_shape_arg(info, 0, "gate", nullptr);
  TensorRef u = same_shape_arg(info, 1, "up", &g);
  TensorRef dh = same_shape_arg(info, 2, "dh", &g);
  SwigluBackwardArgs a{};
  a.gate = static_cast<const float*>(g.data);
  a.up = static_cast<const float*>(u.data);
  a.dh = static_cast<const float*>(dh.data);
  a.n = g.numel();
  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("dgate", allocate_tensor(env, g.shape, DType::F32, g.device, &data));
  a.dgate = static_cast<float*>(data);
  out.Set("dup", allocate_tensor(env, g.shape, DType::F32, g.device, &data));
  a.dup = static_cast<float*>(data);
  if (g.device.is_cuda()) {
    a.device = g.device.index;
    swiglu_backward_cuda(a);
  } else {
    swiglu_backward_cpu(a);
  }
  return out;
}

}  // namespace

void register_swiglu(Napi::Env env, Napi::Object exports) {
  exports.Set("swigluForward", Napi::Function::New<guarded<swiglu_forward>>(env));
  exports.Set("swigluBackward", Napi::Function::New<guarded<swiglu_backward>>(env));
}

static BindingRegistrar registrar(register_swiglu);

}  // namespace lgrpo
