// The CUDA runtime seen from the host side: device discovery and memory. Implemented
// in kernels/cuda_backend.cu when built with CUDA, and by cuda_backend_absent.cc
// (reporting no devices) otherwise, so the binding never needs an #ifdef.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lgrpo {

struct CudaDeviceInfo {
  int index;
  std::string name;
  int sm_major, sm_minor;
  size_t total_memory;
};

bool cuda_compiled();
// True in the LGRPO_CUDA_EMU test build, whose one device runs on the CPU.
bool cuda_emulated();
// Why cuda_devices() is empty, in the runtime's words ("" when it is not; never throws).
std::string cuda_unavailable_reason();
// Devices usable now; empty when no driver or GPU is present (never throws).
std::vector<CudaDeviceInfo> cuda_devices();
// Device memory, through a per-device cache of freed blocks (see kernels/cuda_backend.cu).
void* cuda_alloc(size_t bytes, int device);
void cuda_free(void* ptr, int device) noexcept;
struct CudaMemoryStats {
  uint64_t malloc_calls = 0;   // cudaMalloc calls so far (a steady training loop makes none)
  uint64_t reused = 0;         // requests served from the cache
  uint64_t in_use_bytes = 0;   // blocks handed out
  uint64_t cached_bytes = 0;   // freed blocks kept for reuse
};
CudaMemoryStats cuda_memory_stats(int device);
// Returns the cached blocks of `device` to the driver.
void cuda_empty_cache(int device);
void cuda_copy_to_device(void* dst, const void* src, size_t bytes, int device);
void cuda_copy_to_host(void* dst, const void* src, size_t bytes, int device);
void cuda_copy_device_to_device(void* dst, const void* src, size_t bytes, int device);
void cuda_memset_zero(void* dst, size_t bytes, int device);
// Throws a RangeError naming cuda:N when the machine has no such device.
void cuda_check_device(int device);
// Every call below makes `device` current only for itself and restores the caller's.
// Waits for the device and turns any pending CUDA error into an lgrpo::Error.
void cuda_synchronize(int device);

}  // namespace lgrpo
