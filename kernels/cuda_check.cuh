// Host-side helpers every CUDA twin shares: CUDA status codes as lgrpo::Error (so the
// binding reports them as JS errors), the device a call runs on, its scratch memory
// and its problem flags.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <climits>
#include <string>

#include "../native/common.h"
#include "../native/cuda_backend.h"

namespace lgrpo {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

// After a launch: catches bad launch configurations at once; execution errors
// surface at the next synchronising call, which checks too.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline unsigned blocks_for(long long n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// Makes `device` current for one call and gives the caller back the device it had:
// every twin names its device explicitly and leaves the process as it found it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_, previous_ = -1;
};

// Scratch memory owned by one call, freed on every way out of it.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t bytes, int device) : device_(device) {
    if (bytes) ptr_ = cuda_alloc(bytes, device);
  }
  ~DeviceBuffer() { cuda_free(ptr_, device_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T = void>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  int device_;
};

// Problem reports of one call: word k holds the smallest index at which a problem of
// kind k was seen (kernels atomicMin into it), or kNoProblem. Per call, so concurrent
// calls never mix their reports.
constexpr unsigned long long kNoProblem = ULLONG_MAX;
template <int Kinds>
class DeviceFlags {
 public:
  explicit DeviceFlags(int device) : buffer_(sizeof(unsigned long long) * Kinds, device), device_(device) {
    std::array<unsigned long long, Kinds> none;
    none.fill(kNoProblem);
    cuda_copy_to_device(buffer_.as(), none.data(), sizeof none, device);
  }
  unsigned long long* words() const { return buffer_.as<unsigned long long>(); }
  // Call after the kernels that report here have finished (cuda_synchronize).
  std::array<unsigned long long, Kinds> read() const {
    std::array<unsigned long long, Kinds> out;
    cuda_copy_to_host(out.data(), buffer_.as(), sizeof out, device_);
    return out;
  }

 private:
  DeviceBuffer buffer_;
  int device_;
};

// Element `index` of a device array, read back for an error message.
template <class T>
T fetch_element(const T* base, unsigned long long index, int device) {
  T value;
  cuda_copy_to_host(&value, base + index, sizeof(T), device);
  return value;
}

}  // namespace lgrpo
