// Host-side CUDA runtime services: device discovery and memory. cudart is linked
// statically, so the addon loads on machines with no driver; there every query
// reports zero devices instead of failing.
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

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

// Device memory goes through a per-device cache, as in PyTorch's caching allocator: a
// freed block is kept and handed to the next request it fits, so a training step that
// repeats the previous step's shapes makes no cudaMalloc (which costs far more than a
// kernel and synchronises the device) and no cudaFree (which synchronises too). All our
// kernels run on the legacy default stream, so a block reused by a later call is only
// touched after the kernels of the call that freed it. When cudaMalloc fails, the cached
// blocks of that device are returned to the driver and the request is tried once more.
namespace {

struct DeviceCache {
  std::multimap<size_t, void*> free_blocks;       // by size
  std::unordered_map<void*, size_t> live_blocks;  // handed out: their (rounded) sizes
  CudaMemoryStats stats;
};

std::mutex cache_mutex;
std::map<int, DeviceCache> caches;

// Sizes are rounded so that requests that differ a little (ragged batches) share blocks.
size_t rounded_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{2} << 20, kLargeFrom = size_t{1} << 20;
  const size_t unit = bytes < kLargeFrom ? kSmall : kLarge;
  return (bytes + unit - 1) / unit * unit;
}

// A cached block serves a request up to twice its size (plus 2 MiB), no further:
// a small request never pins a huge block.
bool fits(size_t block, size_t request) { return block <= 2 * request + (size_t{2} << 20); }

void release_cached(DeviceCache& cache) {
  for (auto& [size, ptr] : cache.free_blocks) {
    cudaFree(ptr);
    cache.stats.cached_bytes -= size;
  }
  cache.free_blocks.clear();
  cudaGetLastError();
}

}  // namespace

void* cuda_alloc(size_t bytes, int device) {
  cuda_check_device(device);
  DeviceGuard guard(device);
  const size_t size = rounded_size(bytes == 0 ? 1 : bytes);
  std::lock_guard<std::mutex> lock(cache_mutex);
  DeviceCache& cache = caches[device];
  auto hit = cache.free_blocks.lower_bound(size);
  if (hit != cache.free_blocks.end() && fits(hit->first, size)) {
    void* ptr = hit->second;
    const size_t block = hit->first;
    cache.free_blocks.erase(hit);
    cache.stats.cached_bytes -= block;
    cache.stats.in_use_bytes += block;
    cache.stats.reused += 1;
    cache.live_blocks[ptr] = block;
    // The emulator poisons fresh memory so that reads of unwritten memory show; a reused
    // block must look fresh too, or the cache would hide such reads.
    if (cuda_emulated()) check_cuda(cudaMemset(ptr, 0xff, block), "cudaMemset (poison a reused block)");
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err != cudaSuccess && !cache.free_blocks.empty()) {
    cudaGetLastError();
    release_cached(cache);
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error("cuda:" + std::to_string(device) + ": could not allocate " + std::to_string(bytes) +
                    " bytes (" + cudaGetErrorString(err) + ")", Error::Range);
  }
  cache.stats.malloc_calls += 1;
  cache.stats.in_use_bytes += size;
  cache.live_blocks[ptr] = size;
  return ptr;
}

void cuda_free(void* ptr, int device) noexcept {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(cache_mutex);
  DeviceCache& cache = caches[device];
  auto it = cache.live_blocks.find(ptr);
  if (it == cache.live_blocks.end()) return;  // not ours: never hand it to the driver blindly
  cache.free_blocks.emplace(it->second, ptr);
  cache.stats.in_use_bytes -= it->second;
  cache.stats.cached_bytes += it->second;
  cache.live_blocks.erase(it);
}

CudaMemoryStats cuda_memory_stats(int device) {
  cuda_check_device(device);
  std::lock_guard<std::mutex> lock(cache_mutex);
  return caches[device].stats;
}

void cuda_empty_cache(int device) {
  cuda_check_device(device);
  DeviceGuard guard(device);
  std::lock_guard<std::mutex> lock(cache_mutex);
  release_cached(caches[device]);
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
