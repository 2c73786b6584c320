// Tensor lifetime, device transfer and build information.
#include <cstring>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../parallel.h"
#include "../simd.h"

namespace lgrpo {
namespace {

Napi::Value empty(const Napi::CallbackInfo& info) {
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsString() || !info[2].IsString())
    throw Error("empty(shape, dtype, device): expected an array and two strings", Error::Type);
  TensorRef spec;
  Napi::Array dims = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    Napi::Value d = dims.Get(i);
    double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0) || x > 9.0e15 || x != static_cast<double>(static_cast<int64_t>(x)))
      throw Error("shape: entries must be non-negative integers", Error::Range);
    spec.shape.push_back(static_cast<int64_t>(x));
  }
  spec.dtype = parse_dtype(info[1].As<Napi::String>(), "dtype");
  Device device = parse_device(info[2].As<Napi::String>(), "device");
  void* data;
  Napi::Object out = allocate_tensor(info.Env(), spec.shape, spec.dtype, device, &data);
  // V8-owned blocks (over kMaxExternalBytes) come zeroed, in pages not yet touched:
  // clearing them again would fault in gigabytes at once.
  if (!device.is_cuda() && spec.bytes() > 0 && spec.bytes() <= kMaxExternalBytes) std::memset(data, 0, spec.bytes());
  return out;
}

// Sets every element to 0 in place, on either device (a CUDA policy's zeroGrad).
Napi::Value fill_zero(const Napi::CallbackInfo& info) {
  const TensorRef t = tensor_arg(info, 0, "tensor");
  if (t.device.is_cuda()) cuda_memset_zero(t.data, t.bytes(), t.device.index);
  else if (t.bytes() > 0) std::memset(t.data, 0, t.bytes());
  return info.Env().Undefined();
}

// dst's memory := src's values, across devices (same dtype and element count).
Napi::Value copy_into(const Napi::CallbackInfo& info) {
  const TensorRef dst = tensor_arg(info, 0, "dst");
  const TensorRef src = tensor_arg(info, 1, "src");
  if (dst.dtype != src.dtype)
    throw Error(std::string("src: dtype ") + dtype_name(src.dtype) + " differs from the destination's " + dtype_name(dst.dtype),
                Error::Type);
  if (dst.numel() != src.numel())
    throw Error("src: holds " + std::to_string(src.numel()) + " elements, the destination " + std::to_string(dst.numel()),
                Error::Range);
  copy_between(dst.data, dst.device, src.data, src.device, dst.bytes());
  return info.Env().Undefined();
}

Napi::Value release(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw Error("release(tensor): expected a tensor object", Error::Type);
  release_tensor(info.Env(), info[0].As<Napi::Object>());
  return info.Env().Undefined();
}

Napi::Value to_device(const Napi::CallbackInfo& info) {
  TensorRef src = tensor_arg(info, 0, "tensor");
  if (info.Length() < 2 || !info[1].IsString()) throw Error("device: expected 'cpu' or 'cuda:N'", Error::Type);
  return copy_tensor_to(info.Env(), src, parse_device(info[1].As<Napi::String>(), "device"));
}

Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cuda", cuda_compiled());
  o.Set("cudaEmulated", cuda_emulated());
  Napi::Array devices = Napi::Array::New(env);
  uint32_t i = 0;
  for (const CudaDeviceInfo& d : cuda_devices()) {
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", d.index);
    dev.Set("name", d.name);
    dev.Set("computeCapability", std::to_string(d.sm_major) + "." + std::to_string(d.sm_minor));
    dev.Set("totalMemory", static_cast<double>(d.total_memory));
    devices.Set(i++, dev);
  }
  o.Set("cudaDevices", devices);
  o.Set("cudaUnavailable", cuda_unavailable_reason());
  o.Set("simd", simd_level_name());
  o.Set("threads", num_threads());
  o.Set("externalBuffers", external_buffers_allowed());
  return o;
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Error("threads: expected a positive integer", Error::Type);
  const double x = info[0].As<Napi::Number>().DoubleValue();
  if (!(x >= 1 && x <= 1024) || x != static_cast<double>(static_cast<int>(x)))
    throw Error("threads: expected an integer in [1, 1024]", Error::Range);
  set_num_threads(static_cast<int>(x));
  return info.Env().Undefined();
}

Napi::Value live_blocks(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live_native_blocks()));
}

}  // namespace

void register_tensor_bindings(Napi::Env env, Napi::Object exports) {
  exports.Set("empty", Napi::Function::New<guarded<empty>>(env, "empty"));
  exports.Set("release", Napi::Function::New<guarded<release>>(env, "release"));
  exports.Set("fillZero", Napi::Function::New<guarded<fill_zero>>(env, "fillZero"));
  exports.Set("copyInto", Napi::Function::New<guarded<copy_into>>(env, "copyInto"));
  exports.Set("toDevice", Napi::Function::New<guarded<to_device>>(env, "toDevice"));
  exports.Set("buildInfo", Napi::Function::New<guarded<build_info>>(env, "buildInfo"));
  exports.Set("setNumThreads", Napi::Function::New<guarded<set_threads>>(env, "setNumThreads"));
  exports.Set("liveNativeBlocks", Napi::Function::New<guarded<live_blocks>>(env, "liveNativeBlocks"));
}

}  // namespace lgrpo
