// cudaMemoryStats(device) and emptyCudaCache(device): the device-memory cache of
// kernels/cuda_backend.cu seen from JavaScript; cudaSynchronize(device) waits for the
// device's queued kernels (benchmarks time with it). src/build_info.ts wraps them.
#include "../binding.h"
#include "../cuda_backend.h"
#include "../tensor.h"

namespace lgrpo {
namespace {

int cuda_index_arg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString())
    throw Error("device: expected a string such as 'cuda:0'", Error::Type);
  const Device d = parse_device(info[0].As<Napi::String>().Utf8Value(), "device");
  if (!d.is_cuda()) throw Error("device: expected a CUDA device such as 'cuda:0', got 'cpu'", Error::Type);
  return d.index;
}

Napi::Value cuda_memory_stats_js(const Napi::CallbackInfo& info) {
  const CudaMemoryStats s = cuda_memory_stats(cuda_index_arg(info));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("mallocCalls", static_cast<double>(s.malloc_calls));
  o.Set("reusedBlocks", static_cast<double>(s.reused));
  o.Set("inUseBytes", static_cast<double>(s.in_use_bytes));
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  return o;
}

Napi::Value empty_cuda_cache_js(const Napi::CallbackInfo& info) {
  cuda_empty_cache(cuda_index_arg(info));
  return info.Env().Undefined();
}

Napi::Value cuda_synchronize_js(const Napi::CallbackInfo& info) {
  cuda_synchronize(cuda_index_arg(info));
  return info.Env().Undefined();
}

void register_cuda_memory(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaMemoryStats", Napi::Function::New<guarded<cuda_memory_stats_js>>(env, "cudaMemoryStats"));
  exports.Set("cudaSynchronize", Napi::Function::New<guarded<cuda_synchronize_js>>(env, "cudaSynchronize"));
  exports.Set("emptyCudaCache", Napi::Function::New<guarded<empty_cuda_cache_js>>(env, "emptyCudaCache"));
}

}  // namespace

static BindingRegistrar registrar(register_cuda_memory);

}  // namespace lgrpo
