// Kernels that break the CUDA execution model on purpose, one way each, and the binding
// `emulatorFault(name)` that runs one and returns what the emulator made of it: the
// CUDA error message, or the outputs that a missing guarantee left poisoned. Built only
// into the emulated addon; test/emulator.test.ts checks that every fault is caught.
#include <cuda_runtime.h>

#include <string>

#include "../native/binding.h"
#include "../kernels/cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 64;

__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Lane 0 waits at the block barrier while its warp waits for it at a shuffle.
__global__ void barrier_against_shuffle(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x == 0) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
}

// Block 0 writes all of s, block 1 only half: block 1 must not see block 0's values.
__global__ void half_written_shared(float* out) {
  __shared__ float s[kThreads];
  if (blockIdx.x == 0 || threadIdx.x < kThreads / 2) s[threadIdx.x] = 1.0f;
  __syncthreads();
  out[blockIdx.x * kThreads + threadIdx.x] = s[threadIdx.x];
}

// Reads a value another thread writes, with no barrier between: thread order decides.
__global__ void missing_barrier_high_writer(float* out) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = 2.0f;
  out[threadIdx.x] = s[kThreads - 1 - threadIdx.x];
}

// The writer is thread 0 and there is no barrier: hidden when thread 0 runs first.
__global__ void missing_barrier_low_writer(float* out) {
  __shared__ float s[1];
  if (threadIdx.x == 0) s[0] = 3.0f;
  out[threadIdx.x] = s[0];
}

__global__ void read_unwritten(const float* scratch, float* out) { out[threadIdx.x] = scratch[threadIdx.x]; }

__global__ void too_much_shared(float* out) {
  __shared__ float big[13 * 1024];  // 52 KiB
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

// The launch's error message, or the count of NaN outputs when the launch succeeded.
std::string run_fault(const std::string& name) {
  DeviceBuffer out(sizeof(float) * 2 * kThreads, 0), scratch(sizeof(float) * kThreads, 0);
  float* o = out.as<float>();
  cuda_memset_zero(o, sizeof(float) * 2 * kThreads, 0);  // so only what a kernel writes can be NaN
  if (name == "divergent-barrier") divergent_barrier<<<1, kThreads>>>(o);
  else if (name == "barrier-against-shuffle") barrier_against_shuffle<<<1, kThreads>>>(o);
  else if (name == "shuffle-after-exit") shuffle_after_exit<<<1, kThreads>>>(o);
  else if (name == "half-written-shared") half_written_shared<<<2, kThreads>>>(o);
  else if (name == "missing-barrier") missing_barrier_high_writer<<<1, kThreads>>>(o);
  else if (name == "missing-barrier-low-writer") missing_barrier_low_writer<<<1, kThreads>>>(o);
  else if (name == "read-unwritten") read_unwritten<<<1, kThreads>>>(scratch.as<float>(), o);
  else if (name == "too-much-shared") too_much_shared<<<1, kThreads>>>(o);
  else if (name == "bad-launch") half_written_shared<<<1, 2048>>>(o);
  else if (name == "host-to-device-into-host") {
    float host_a[4] = {}, host_b[4] = {};
    const cudaError_t e = cudaMemcpy(host_a, host_b, sizeof host_a, cudaMemcpyHostToDevice);
    cudaGetLastError();
    return e == cudaSuccess ? "no error" : cudaGetErrorString(e);
  } else {
    throw Error("name: unknown fault '" + name + "'", Error::Range);
  }
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) return cudaGetErrorString(e);
  float host[2 * kThreads];
  cuda_copy_to_host(host, o, sizeof host, 0);
  int nans = 0;
  for (float v : host) nans += v != v;
  return "no error, " + std::to_string(nans) + " NaN outputs";
}

Napi::Value emulator_fault(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Error("name: expected the name of a fault", Error::Type);
  return Napi::String::New(info.Env(), run_fault(info[0].As<Napi::String>()));
}

void register_emulator_faults(Napi::Env env, Napi::Object exports) {
  exports.Set("emulatorFault", Napi::Function::New<guarded<emulator_fault>>(env, "emulatorFault"));
}

BindingRegistrar registrar(register_emulator_faults);

}  // namespace
}  // namespace lgrpo
