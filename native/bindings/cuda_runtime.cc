// The CUDA runtime seen from JavaScript (src/build_info.ts wraps these):
// cudaMemoryStats(device) and emptyCudaCache(device), the device-memory cache of
// kernels/cuda_backend.cu; cudaSynchronize(device), which waits for the device's queued
// kernels (benchmarks time with it); cudaMatmul() and setMatmulPrecision(p), which GEMM
// the CUDA twin runs (kernels/gemm_cublaslt.cu) and at what precision.
#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/gemm.h"
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

Napi::Value cuda_matmul_js(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cuda_matmul_description());
}

Napi::Value set_matmul_precision_js(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString())
    throw Error("precision: expected 'highest', 'high' or 'medium'", Error::Type);
  set_cuda_matmul_precision(info[0].As<Napi::String>().Utf8Value());
  return info.Env().Undefined();
}

void register_cuda_runtime(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaMemoryStats", Napi::Function::New<guarded<cuda_memory_stats_js>>(env, "cudaMemoryStats"));
  exports.Set("cudaSynchronize", Napi::Function::New<guarded<cuda_synchronize_js>>(env, "cudaSynchronize"));
  exports.Set("emptyCudaCache", Napi::Function::New<guarded<empty_cuda_cache_js>>(env, "emptyCudaCache"));
  exports.Set("cudaMatmul", Napi::Function::New<guarded<cuda_matmul_js>>(env, "cudaMatmul"));
  exports.Set("setMatmulPrecision", Napi::Function::New<guarded<set_matmul_precision_js>>(env, "setMatmulPrecision"));
}

}  // namespace

static BindingRegistrar registrar(register_cuda_runtime);

}  // namespace lgrpo
