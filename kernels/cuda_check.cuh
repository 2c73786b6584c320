// Turns CUDA status codes into lgrpo::Error so the binding reports them as JS errors.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "../native/common.h"

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

}  // namespace lgrpo
