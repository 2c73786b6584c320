// Host-side CUDA runtime services: device discovery and memory. cudart is linked
// statically, so the addon loads on machines with no driver; there every query
// reports zero devices instead of failing.
#include <cuda_runtime.h>

#include <string>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "cuda_check.cuh"

namespace lgrpo {

bool cuda_compiled() { return true; }

#ifdef LGRPO_CUDA_EMU
bool cuda_emulated() { return true; }
#else
bool cuda_emulated() { return false; }
#endif

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
  int count = 0;  // left unwritten when the driver is missing
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    out.push_back(CudaDeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return out;
}

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return count == 0 ? "the driver reports no CUDA device" : "";
}

void cuda_check_device(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  if (device < 0 || device >= count)
    throw Error("device: cuda:" + std::to_string(device) + " is not a CUDA device of this machine (it has " +
                    std::to_string(count) + "; see buildInfo().cudaDevices)",
                Error::Range);
}

void* cuda_alloc(size_t bytes, int device) {
  cuda_check_device(device);
  DeviceGuard guard(device);
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda:" + std::to_string(device) + ": could not allocate " + std::to_string(bytes) +
                    " bytes (" + cudaGetErrorString(err) + ")", Error::Range);
  }
  return ptr;
}

void cuda_free(void* ptr, int device) noexcept {
  if (!ptr) return;
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  if (previous == device || cudaSetDevice(device) == cudaSuccess) cudaFree(ptr);
  if (previous >= 0 && previous != device) cudaSetDevice(previous);
  cudaGetLastError();
}

void cuda_copy_to_device(void* dst, const void* src, size_t bytes, int device) {
  DeviceGuard guard(device);
  check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host→device");
}

void cuda_copy_to_host(void* dst, const void* src, size_t bytes, int device) {
  DeviceGuard guard(device);
  check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device→host");
}

void cuda_copy_device_to_device(void* dst, const void* src, size_t bytes, int device) {
  DeviceGuard guard(device);
  check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy device→device");
}

void cuda_memset_zero(void* dst, size_t bytes, int device) {
  if (bytes == 0) return;
  DeviceGuard guard(device);
  check_cuda(cudaMemset(dst, 0, bytes), "cudaMemset");
}

void cuda_synchronize(int device) {
  DeviceGuard guard(device);
  check_cuda(cudaDeviceSynchronize(), "kernel execution");
  check_cuda(cudaGetLastError(), "kernel launch");
}

}  // namespace lgrpo
