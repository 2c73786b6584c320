// cuda_emu.h: the CUDA execution model on the CPU, so that kernels/*.cu run (slowly,
// exactly) inside the addon where no GPU exists. Built only with LGRPO_CUDA_EMU=ON;
// emulator/cu2cc.mjs first rewrites `<<<...>>>` launches and `__shared__` declarations
// into the calls below. The runtime lives in cuda_emu.cc; README.md says what this
// catches and what it cannot.
//
// Model: one emulated device (cuda:0). A launch runs its blocks one after another under
// a process-wide lock; a block's threads are fibers on the calling thread, switched only
// at __syncthreads and warp collectives, in thread order (LGRPO_EMU_ORDER=reverse or
// random[:seed] changes the order at every pass). Device memory and each block's shared
// memory start as 0xff bytes, so a read of anything never written is NaN (or -1).
// Misuse (barrier divergence, deadlock, a shuffle naming an exited lane, too much shared
// memory) ends the launch with a CUDA error whose message names the source line.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
constexpr int warpSize = 32;

using std::isfinite;
using std::isinf;
using std::isnan;
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }

// ---- runtime API (the subset the project calls) ----
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
using cudaStream_t = struct EmuStream*;
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem, sharedMemPerBlock;
  int multiProcessorCount, maxThreadsPerBlock, warpSize;
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

// ---- device arithmetic: exact operations (the emulator checks logic, not last bits) ----
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }  // not contracted: kernels build with -ffp-contract=off
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }

template <class T> inline T __ldg(const T* p) { return *p; }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// 16-bit floats as bits, with the device conversions (round to nearest even).
struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };
inline float __half2float(__half h) { _Float16 f; std::memcpy(&f, &h.bits, 2); return static_cast<float>(f); }
inline __half __float2half_rn(float x) { _Float16 f = static_cast<_Float16>(x); __half h; std::memcpy(&h.bits, &f, 2); return h; }
inline __half __float2half(float x) { return __float2half_rn(x); }
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t b = uint32_t(h.bits) << 16; float f; std::memcpy(&f, &b, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<uint16_t>((b >> 16) | 0x40)};
  return __nv_bfloat16{static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float x) { return __float2bfloat16_rn(x); }

// Atomics: the launch lock makes every block and thread run on one OS thread, and
// fibers switch only at barriers, so a plain read-modify-write is atomic here.
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <class T> inline T atomicMax(T* p, T v) { T old = *p; if (old < v) *p = v; return old; }
template <class T> inline T atomicOr(T* p, T v) { T old = *p; *p = old | v; return old; }
template <class T> inline T atomicAnd(T* p, T v) { T old = *p; *p = old & v; return old; }
template <class T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicCAS(T* p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }

namespace emu {

// Where the running CUDA thread is; set by the scheduler before each switch.
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;

enum class Collective { Xor, Down, Up, Index, Ballot, Any, All };
enum class BarrierKind { Plain, Or, And, Count };

[[noreturn]] void kernel_fault(const std::string& what);  // ends the launch with an error
int sync_block(const char* site, BarrierKind kind, int predicate);
uint64_t warp_collective(const char* site, unsigned mask, uint64_t value, Collective op, int arg, int width);
void* shared_storage(const char* site, size_t bytes, size_t align);
void run_launch(const char* name, dim3 grid, dim3 block, size_t dynamic_shared, void (*thread_main)(void*), void* closure);

inline void sync_warp(const char* site, unsigned mask = 0xffffffffu) { warp_collective(site, mask, 0, Collective::Any, 0, 32); }
template <class T> T& shared(const char* site) { return *static_cast<T*>(shared_storage(site, sizeof(T), alignof(T))); }

template <class T>
T shuffle(const char* site, Collective op, unsigned mask, T v, int arg, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move 4- or 8-byte values");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_collective(site, mask, bits, op, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <class... P>
struct Launch {
  void (*kernel)(P...);
  const char* name;
  dim3 grid, block;
  size_t dynamic_shared;

  template <class... A>
  void operator()(A&&... args) const {
    using Params = std::tuple<std::decay_t<P>...>;
    Params params(std::forward<A>(args)...);  // converted once, as a real launch does
    struct Closure {
      void (*kernel)(P...);
      const Params* params;
    } closure{kernel, &params};
    run_launch(name, grid, block, dynamic_shared, [](void* c) {
      const auto* cl = static_cast<const Closure*>(c);
      Params mine = *cl->params;  // each CUDA thread owns a copy of its parameters
      std::apply(cl->kernel, mine);
    }, &closure);
  }
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t dynamic_shared = 0,
                    cudaStream_t = nullptr) {
  return Launch<P...>{kernel, name, grid, block, dynamic_shared};
}

}  // namespace emu

#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define EMU_SITE __FILE__ ":" EMU_STR(__LINE__)

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

#define __syncthreads() ((void)::emu::sync_block(EMU_SITE, ::emu::BarrierKind::Plain, 0))
#define __syncthreads_or(p) ::emu::sync_block(EMU_SITE, ::emu::BarrierKind::Or, (p) ? 1 : 0)
#define __syncthreads_and(p) ::emu::sync_block(EMU_SITE, ::emu::BarrierKind::And, (p) ? 1 : 0)
#define __syncthreads_count(p) ::emu::sync_block(EMU_SITE, ::emu::BarrierKind::Count, (p) ? 1 : 0)
#define __syncwarp(...) ::emu::sync_warp(EMU_SITE, ##__VA_ARGS__)
#define __shfl_xor_sync(mask, v, lane_mask, ...) ::emu::shuffle(EMU_SITE, ::emu::Collective::Xor, (mask), (v), (lane_mask), ##__VA_ARGS__)
#define __shfl_down_sync(mask, v, delta, ...) ::emu::shuffle(EMU_SITE, ::emu::Collective::Down, (mask), (v), (delta), ##__VA_ARGS__)
#define __shfl_up_sync(mask, v, delta, ...) ::emu::shuffle(EMU_SITE, ::emu::Collective::Up, (mask), (v), (delta), ##__VA_ARGS__)
#define __shfl_sync(mask, v, lane, ...) ::emu::shuffle(EMU_SITE, ::emu::Collective::Index, (mask), (v), (lane), ##__VA_ARGS__)
#define __ballot_sync(mask, p) static_cast<unsigned>(::emu::warp_collective(EMU_SITE, (mask), (p) ? 1 : 0, ::emu::Collective::Ballot, 0, 32))
#define __any_sync(mask, p) static_cast<int>(::emu::warp_collective(EMU_SITE, (mask), (p) ? 1 : 0, ::emu::Collective::Any, 0, 32))
#define __all_sync(mask, p) static_cast<int>(::emu::warp_collective(EMU_SITE, (mask), (p) ? 1 : 0, ::emu::Collective::All, 0, 32))
