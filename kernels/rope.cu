// CUDA twin of rope (CPU twin: native/ops/rope.cc; the numerics are in native/ops/rope.h).
//
// inv_freq is computed on the host exactly as the CPU twin does (double pow, rounded
// to f32) and uploaded; the angle is pos·inv_freq in double and cos/sin are taken in
// double, then rounded to f32, so the table (and the per-token path) holds the CPU
// twin's values up to the last bit of the double cos/sin. The rotation is the CPU
// twin's arithmetic: x1·c − x2·(±s) and x2·c + x1·(±s), each one fmaf over a product.
//
// Positions are checked on a host copy (tokens int32s) with the CPU twin's words before
// q or k is touched: both are rotated in place.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "../native/cuda_backend.h"
#include "../native/ops/rope.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

constexpr int kThreads = 128;
constexpr unsigned kMaxBlocks = 65535;

std::vector<float> inv_freqs(double theta, int64_t head_dim) {
  std::vector<float> freq(static_cast<size_t>(head_dim / 2));
  for (int64_t j = 0; j < head_dim / 2; ++j)
    freq[j] = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * j) / static_cast<double>(head_dim)));
  return freq;
}

// A device copy of inv_freq, freed with the call.
struct DeviceFreqs {
  DeviceFreqs(double theta, int64_t head_dim, int device)
      : host(inv_freqs(theta, head_dim)), buffer(sizeof(float) * host.size(), device) {
    if (!host.empty()) cuda_copy_to_device(buffer.as(), host.data(), sizeof(float) * host.size(), device);
  }
  const float* data() const { return buffer.as<float>(); }
  std::vector<float> host;
  DeviceBuffer buffer;
};

__device__ __forceinline__ void angle_at(long long pos, float freq, float* c, float* s) {
  const double angle = static_cast<double>(pos) * static_cast<double>(freq);
  *c = static_cast<float>(cos(angle));
  *s = static_cast<float>(sin(angle));
}

__global__ void __launch_bounds__(kThreads)
table_kernel(const float* __restrict__ freq, long long half, long long positions, float* __restrict__ cos_out,
             float* __restrict__ sin_out) {
  const long long total = positions * half;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x)
    angle_at(e / half, freq[e % half], cos_out + e, sin_out + e);
}

// One block per token (grid-stride); its threads walk the (head, j) pairs of q's heads
// and then k's. Each pair is read and written by one thread only.
__global__ void __launch_bounds__(kThreads) rotate_kernel(RopeArgs a, const float* __restrict__ freq, float sign) {
  const long long half = a.head_dim / 2;
  const long long kv = a.k ? a.kv_heads : 0;
  const long long pairs = (a.q_heads + kv) * half;
  for (long long t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    const long long pos = a.positions[t];
    for (long long e = threadIdx.x; e < pairs; e += blockDim.x) {
      const long long h = e / half, j = e % half;
      float c, s;
      if (a.cos_table) {
        c = a.cos_table[pos * half + j];
        s = a.sin_table[pos * half + j];
      } else {
        angle_at(pos, freq[j], &c, &s);
      }
      float* x1 = h < a.q_heads ? a.q + (t * a.q_heads + h) * a.head_dim : a.k + (t * kv + (h - a.q_heads)) * a.head_dim;
      float* x2 = x1 + half;
      const float x = x1[j], y = x2[j], sv = __fmul_rn(sign, s);
      x1[j] = fmaf(x, c, -__fmul_rn(y, sv));
      x2[j] = fmaf(y, c, __fmul_rn(x, sv));
    }
  }
}

void check_positions(const RopeArgs& a) {
  std::vector<int32_t> pos(static_cast<size_t>(a.tokens));
  if (a.tokens > 0) cuda_copy_to_host(pos.data(), a.positions, sizeof(int32_t) * pos.size(), a.device);
  const bool table = a.cos_table != nullptr;
  for (int64_t i = 0; i < a.tokens; ++i) {
    const int32_t p = pos[i];
    if (p < 0 || (table && p >= a.table_positions))
      throw Error("positions: position " + std::to_string(p) + " at token " + std::to_string(i) + " is outside [0, " +
                      (table ? std::to_string(a.table_positions) : std::string("2^31")) + ")",
                  Error::Range);
  }
}

void rope_apply_cuda(const RopeArgs& a, float sign) {
  DeviceGuard guard(a.device);
  check_positions(a);
  if (a.tokens <= 0 || a.head_dim < 2) return;
  DeviceFreqs freq(a.theta, a.cos_table ? 0 : a.head_dim, a.device);  // a table makes inv_freq unnecessary
  const unsigned blocks = static_cast<unsigned>(a.tokens < kMaxBlocks ? a.tokens : kMaxBlocks);
  rotate_kernel<<<blocks, kThreads>>>(a, freq.data(), sign);
  check_launch("rope rotate_kernel");
}

}  // namespace

void rope_table_cuda(double theta, int64_t head_dim, int64_t positions, float* cos_out, float* sin_out, int device) {
  DeviceGuard guard(device);
  const int64_t half = head_dim / 2;
  if (positions <= 0 || half <= 0) return;
  DeviceFreqs freq(theta, head_dim, device);
  const int64_t blocks = (positions * half + kThreads - 1) / kThreads;
  table_kernel<<<static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks), kThreads>>>(freq.data(), half, positions,
                                                                                                cos_out, sin_out);
  check_launch("rope table_kernel");
}

void rope_forward_cuda(const RopeArgs& a) { rope_apply_cuda(a, 1.0f); }
void rope_backward_cuda(const RopeArgs& a) { rope_apply_cuda(a, -1.0f); }

}  // namespace lgrpo
