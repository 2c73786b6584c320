// The emulated device behind cuda_emu.h: fibers and their scheduler, block barriers,
// warp collectives, per-block shared memory, and the runtime API over host memory.
#include "cuda_emu.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

uint3 emu::thread_idx{0, 0, 0}, emu::block_idx{0, 0, 0};
dim3 emu::block_dim, emu::grid_dim;

namespace emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kSharedLimit = 48 * 1024;  // static shared memory per block on every GPU we target
constexpr unsigned char kPoison = 0xff;     // as f32/f64: NaN; as an integer: -1

// ---- context switching ----
#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *from and continues on `to` (System V x86-64).
extern "C" void lgrpo_emu_switch(void** from, void* to);
asm(R"(
  .text
  .globl lgrpo_emu_switch
  .hidden lgrpo_emu_switch
  .type lgrpo_emu_switch,@function
lgrpo_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lgrpo_emu_switch, .-lgrpo_emu_switch
)");
struct Context {
  void* sp = nullptr;
};
void switch_context(Context& from, Context& to) { lgrpo_emu_switch(&from.sp, to.sp); }
void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* w = reinterpret_cast<uint64_t*>(top);
  w[-1] = 0;                                    // after `ret`, rsp is 8 mod 16 as after a call
  w[-2] = reinterpret_cast<uint64_t>(entry);    // where the first switch "returns"
  for (int i = 3; i <= 8; ++i) w[-i] = 0;       // rbp rbx r12 r13 r14 r15
  w[-9] = 0x1F80ull | (0x037Full << 32);        // default MXCSR and x87 control word
  c.sp = &w[-9];
}
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

enum class State { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
  Context context;
  char* stack = nullptr;
  State state = State::Ready;
  uint64_t waiting_for = 0;  // the generation of the barrier it waits at
  unsigned tid = 0;
};

struct BlockBarrier {
  const char* site = nullptr;
  BarrierKind kind = BarrierKind::Plain;
  int arrived = 0, live = 0, accumulated = 0, result = 0;
  uint64_t generation = 0;
};

struct Warp {
  const char* site = nullptr;
  Collective op = Collective::Any;
  int arg = 0, width = 32;
  unsigned mask = 0, arrived = 0, exited = 0;
  uint64_t generation = 0;
  uint64_t in[32], out[32];
};

struct SharedVar {
  const char* site;
  size_t offset;
};

// Everything about the launch in progress; guarded by launch_mutex.
struct LaunchState {
  const char* name = "";
  void (*thread_main)(void*) = nullptr;
  void* closure = nullptr;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  Context scheduler;
  BlockBarrier barrier;
  std::vector<Warp> warps;
  alignas(64) unsigned char shared[kSharedLimit];
  std::vector<SharedVar> shared_vars;
  size_t shared_used = 0;
  std::string fault;  // set when a CUDA thread misbehaves: the launch stops
};

std::recursive_mutex launch_mutex;
LaunchState* active = nullptr;
std::vector<char*> stack_pool;

thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_message;

cudaError_t set_error(cudaError_t code, const std::string& message) {
  last_error = code;
  last_message = message;
  return code;
}

char* take_stack(size_t index) {
  while (stack_pool.size() <= index) {
    // A guard page below each stack turns an overflow into a fault at once.
    void* p = mmap(nullptr, kStackBytes + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, 4096, PROT_NONE);
    stack_pool.push_back(static_cast<char*>(p) + 4096);
  }
  return stack_pool[index];
}

std::string thread_name(unsigned tid) {
  const dim3 b = block_dim;
  return "thread (" + std::to_string(tid % b.x) + "," + std::to_string(tid / b.x % b.y) + "," +
         std::to_string(tid / (b.x * b.y)) + ") of block (" + std::to_string(block_idx.x) + "," +
         std::to_string(block_idx.y) + "," + std::to_string(block_idx.z) + ")";
}

void place(const Fiber& f) {
  const dim3 b = block_dim;
  thread_idx = uint3{f.tid % b.x, f.tid / b.x % b.y, f.tid / (b.x * b.y)};
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler() { switch_context(active->current->context, active->scheduler); }

void release_barrier(BlockBarrier& b) {
  b.result = b.accumulated;
  b.arrived = 0;
  b.site = nullptr;
  ++b.generation;
}

void finish_warp(Warp& w) {
  uint64_t ballot = 0;
  for (int lane = 0; lane < 32; ++lane)
    if ((w.mask >> lane & 1u) && w.in[lane] != 0) ballot |= uint64_t{1} << lane;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(w.mask >> lane & 1u)) continue;
    const int base = lane / w.width * w.width, offset = lane % w.width;
    int src = lane;
    switch (w.op) {
      case Collective::Xor: src = lane ^ w.arg; if (src / w.width > lane / w.width) src = lane; break;
      case Collective::Down: src = offset + w.arg < w.width ? lane + w.arg : lane; break;
      case Collective::Up: src = offset - w.arg >= 0 ? lane - w.arg : lane; break;
      case Collective::Index: src = base + ((w.arg % w.width) + w.width) % w.width; break;
      case Collective::Ballot: w.out[lane] = ballot; continue;
      case Collective::Any: w.out[lane] = ballot != 0; continue;
      case Collective::All: w.out[lane] = ballot == w.mask; continue;
    }
    // A source lane outside the mask gives an undefined value on the GPU: poison it.
    w.out[lane] = (src >= 0 && src < 32 && (w.mask >> src & 1u)) ? w.in[src] : ~uint64_t{0};
  }
  w.arrived = 0;
  w.site = nullptr;
  ++w.generation;
}

void thread_exit(Fiber& f) {
  LaunchState& l = *active;
  f.state = State::Done;
  Warp& w = l.warps[f.tid / 32];
  w.exited |= 1u << (f.tid % 32);
  if (w.arrived && (w.mask >> (f.tid % 32) & 1u))
    l.fault = thread_name(f.tid) + " exited while lanes of its warp wait for it at " + w.site;
  --l.barrier.live;
  if (l.barrier.arrived > 0 && l.barrier.arrived == l.barrier.live) release_barrier(l.barrier);
}

void fiber_entry() {
  LaunchState& l = *active;
  l.thread_main(l.closure);
  thread_exit(*l.current);
  yield_to_scheduler();  // never resumed
  std::abort();
}

std::string waiting_summary(const LaunchState& l) {
  std::map<std::string, int> sites;
  for (const Fiber& f : l.fibers) {
    if (f.state == State::AtBarrier) sites[std::string("__syncthreads at ") + l.barrier.site]++;
    if (f.state == State::AtWarp) sites[std::string("a warp collective at ") + l.warps[f.tid / 32].site]++;
  }
  std::string s;
  for (auto& [site, n] : sites) s += (s.empty() ? "" : "; ") + std::to_string(n) + " wait at " + site;
  return s;
}

// Visit order of the fibers in one scheduler pass (LGRPO_EMU_ORDER).
struct Order {
  enum { Forward, Reverse, Random } mode = Forward;
  uint64_t state = 0x9e3779b97f4a7c15ull;
  Order() {
    const char* env = std::getenv("LGRPO_EMU_ORDER");
    if (!env) return;
    const std::string s = env;
    if (s == "reverse") mode = Reverse;
    if (s.rfind("random", 0) == 0) {
      mode = Random;
      if (s.size() > 7) state ^= std::strtoull(s.c_str() + 7, nullptr, 10) * 0xbf58476d1ce4e5b9ull;
    }
  }
  void fill(std::vector<unsigned>& order) {
    for (unsigned i = 0; i < order.size(); ++i) order[i] = mode == Reverse ? unsigned(order.size()) - 1 - i : i;
    if (mode != Random) return;
    for (size_t i = order.size(); i > 1; --i) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      std::swap(order[i - 1], order[state % i]);
    }
  }
};

// Runs every CUDA thread of the current block to completion; false on a fault.
bool run_block(LaunchState& l, Order& order) {
  const unsigned n = static_cast<unsigned>(l.fibers.size());
  l.barrier = BlockBarrier{};
  l.barrier.live = static_cast<int>(n);
  for (size_t w = 0; w < l.warps.size(); ++w) {
    l.warps[w] = Warp{};
    const unsigned lanes = std::min(32u, n - static_cast<unsigned>(w) * 32);
    l.warps[w].exited = lanes == 32 ? 0u : ~((1u << lanes) - 1u);  // lanes the block does not have
  }
  l.shared_vars.clear();
  l.shared_used = 0;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = l.fibers[t];
    f.state = State::Ready;
    prepare_context(f.context, f.stack, kStackBytes, fiber_entry);
  }
  std::vector<unsigned> visit(n);
  for (;;) {
    bool active_left = false, resumed = false;
    order.fill(visit);
    for (unsigned t : visit) {
      Fiber& f = l.fibers[t];
      if (f.state == State::Done) continue;
      active_left = true;
      if (f.state == State::AtBarrier && l.barrier.generation == f.waiting_for) continue;
      if (f.state == State::AtWarp && l.warps[t / 32].generation == f.waiting_for) continue;
      f.state = State::Ready;
      l.current = &f;
      place(f);
      switch_context(l.scheduler, f.context);
      resumed = true;
      if (!l.fault.empty()) return false;
    }
    if (!active_left) return true;
    if (!resumed) {
      l.fault = "deadlock: " + waiting_summary(l) + ", and no other thread can arrive";
      return false;
    }
  }
}

struct Allocation {
  size_t bytes;
};
std::mutex memory_mutex;
std::map<uintptr_t, Allocation> allocations;  // device blocks by start address
size_t allocated = 0;

size_t memory_budget() {
  static const size_t budget = [] {
    const char* env = std::getenv("LGRPO_EMU_MEMORY_MB");
    return static_cast<size_t>(env ? std::strtoull(env, nullptr, 10) : 8192) << 20;
  }();
  return budget;
}

// The allocation holding [p, p + n), if any (n = 0: holding p).
bool in_device_block(const void* p, size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(memory_mutex);
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return false;
  --it;
  return a >= it->first && a + std::max<size_t>(n, 1) <= it->first + it->second.bytes;
}

bool overlaps_device(const void* p, size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(memory_mutex);
  auto it = allocations.lower_bound(a + n);
  if (it == allocations.begin()) return false;
  --it;
  return it->first + it->second.bytes > a;
}

cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* what) {
  if (n == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault)
    kind = static_cast<cudaMemcpyKind>((overlaps_device(src, n) ? 2 : 0) | (overlaps_device(dst, n) ? 1 : 0));
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_device && !in_device_block(dst, n))
    return set_error(cudaErrorInvalidValue, std::string(what) + ": the destination is not inside one device allocation");
  if (src_device && !in_device_block(src, n))
    return set_error(cudaErrorInvalidValue, std::string(what) + ": the source is not inside one device allocation");
  if (!dst_device && overlaps_device(dst, n))
    return set_error(cudaErrorInvalidValue, std::string(what) + ": the host destination is device memory");
  if (!src_device && overlaps_device(src, n))
    return set_error(cudaErrorInvalidValue, std::string(what) + ": the host source is device memory");
  return cudaSuccess;
}

}  // namespace

void kernel_fault(const std::string& what) {
  active->fault = thread_name(active->current->tid) + ": " + what;
  active->current->state = State::Done;
  yield_to_scheduler();  // never resumed: the launch is abandoned
  std::abort();
}

int sync_block(const char* site, BarrierKind kind, int predicate) {
  LaunchState& l = *active;
  BlockBarrier& b = l.barrier;
  if (b.arrived == 0) {
    b.site = site;
    b.kind = kind;
    b.accumulated = kind == BarrierKind::And ? 1 : 0;
  } else if (std::strcmp(b.site, site) != 0) {
    kernel_fault(std::string("barrier divergence: it waits at ") + site + " while others wait at " + b.site);
  }
  switch (kind) {
    case BarrierKind::Plain: break;
    case BarrierKind::Or: b.accumulated |= predicate; break;
    case BarrierKind::And: b.accumulated &= predicate; break;
    case BarrierKind::Count: b.accumulated += predicate; break;
  }
  if (++b.arrived == b.live) {
    release_barrier(b);
    return b.result;
  }
  l.current->state = State::AtBarrier;
  l.current->waiting_for = b.generation;
  yield_to_scheduler();
  return b.result;
}

uint64_t warp_collective(const char* site, unsigned mask, uint64_t value, Collective op, int arg, int width) {
  LaunchState& l = *active;
  const unsigned tid = l.current->tid, lane = tid % 32;
  Warp& w = l.warps[tid / 32];
  if (!(mask >> lane & 1u)) kernel_fault(std::string("warp collective at ") + site + ": the calling lane is not in its mask");
  if (mask & w.exited)
    kernel_fault(std::string("warp collective at ") + site + ": the mask names lanes that have exited or do not exist");
  if (width <= 0 || width > 32 || (width & (width - 1)))
    kernel_fault(std::string("warp collective at ") + site + ": width must be a power of two up to 32");
  if (w.arrived == 0) {
    w.site = site;
    w.mask = mask;
    w.op = op;
    w.arg = arg;
    w.width = width;
  } else if (std::strcmp(w.site, site) != 0 || w.mask != mask) {
    kernel_fault(std::string("warp divergence: lanes meet at ") + site + " and at " + w.site + " (or with other masks)");
  }
  w.in[lane] = value;
  w.arrived |= 1u << lane;
  if (w.arrived == mask) {
    finish_warp(w);
    return w.out[lane];
  }
  l.current->state = State::AtWarp;
  l.current->waiting_for = w.generation;
  yield_to_scheduler();
  return w.out[lane];
}

void* shared_storage(const char* site, size_t bytes, size_t align) {
  LaunchState& l = *active;
  for (const SharedVar& v : l.shared_vars)
    if (std::strcmp(v.site, site) == 0) return l.shared + v.offset;
  const size_t offset = (l.shared_used + align - 1) / align * align;
  if (offset + bytes > kSharedLimit)
    kernel_fault(std::string("__shared__ ") + site + " takes the block past " + std::to_string(kSharedLimit) +
                 " bytes of static shared memory");
  std::memset(l.shared + offset, kPoison, bytes);
  l.shared_vars.push_back(SharedVar{site, offset});
  l.shared_used = offset + bytes;
  return l.shared + offset;
}

void run_launch(const char* name, dim3 grid, dim3 block, size_t dynamic_shared, void (*thread_main)(void*), void* closure) {
  std::lock_guard<std::recursive_mutex> lock(launch_mutex);
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    set_error(cudaErrorInvalidConfiguration, std::string(name) + ": invalid launch configuration (grid " +
                                                 std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" +
                                                 std::to_string(grid.z) + ", block " + std::to_string(block.x) + "x" +
                                                 std::to_string(block.y) + "x" + std::to_string(block.z) + ")");
    return;
  }
  if (dynamic_shared != 0) {
    set_error(cudaErrorInvalidValue, std::string(name) + ": dynamic shared memory is not emulated");
    return;
  }
  if (active != nullptr) {
    set_error(cudaErrorLaunchFailure, std::string(name) + ": launched from inside a kernel");
    return;
  }
  Order order;  // read per launch, so a test can change LGRPO_EMU_ORDER between calls
  auto l = std::make_unique<LaunchState>();
  l->name = name;
  l->thread_main = thread_main;
  l->closure = closure;
  l->fibers.resize(threads);
  l->warps.resize((threads + 31) / 32);
  for (unsigned t = 0; t < threads; ++t) {
    l->fibers[t].tid = t;
    l->fibers[t].stack = take_stack(t);
    if (!l->fibers[t].stack) {
      set_error(cudaErrorMemoryAllocation, std::string(name) + ": no memory for the emulated thread stacks");
      return;
    }
  }
  active = l.get();
  block_dim = block;
  grid_dim = grid;
  bool ok = true;
  for (unsigned z = 0; ok && z < grid.z; ++z)
    for (unsigned y = 0; ok && y < grid.y; ++y)
      for (unsigned x = 0; ok && x < grid.x; ++x) {
        block_idx = uint3{x, y, z};
        ok = run_block(*l, order);
      }
  active = nullptr;
  if (!ok) set_error(cudaErrorLaunchFailure, std::string("emulated kernel ") + name + " failed: " + l->fault);
}

}  // namespace emu

// ---- runtime API ----

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

namespace {
thread_local int current_device = 0;
}

cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return emu::set_error(cudaErrorInvalidDevice, "the emulator has one device, cuda:0");
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return emu::set_error(cudaErrorInvalidDevice, "the emulator has one device, cuda:0");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "lgrpo-native emulated device (CPU)");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = emu::memory_budget();
  prop->sharedMemPerBlock = emu::kSharedLimit;
  prop->multiProcessorCount = 1;
  prop->maxThreadsPerBlock = 1024;
  prop->warpSize = 32;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  const size_t size = std::max<size_t>(bytes, 1);
  {
    std::lock_guard<std::mutex> lock(emu::memory_mutex);
    if (emu::allocated + size > emu::memory_budget())
      return emu::set_error(cudaErrorMemoryAllocation, "out of emulated device memory (LGRPO_EMU_MEMORY_MB)");
  }
  void* p = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (!p) return emu::set_error(cudaErrorMemoryAllocation, "out of host memory for the emulated device");
  std::memset(p, emu::kPoison, size);  // never-written device memory reads as NaN
  std::lock_guard<std::mutex> lock(emu::memory_mutex);
  emu::allocations[reinterpret_cast<uintptr_t>(p)] = emu::Allocation{size};
  emu::allocated += size;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(emu::memory_mutex);
    auto it = emu::allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == emu::allocations.end())
      return emu::set_error(cudaErrorInvalidValue, "cudaFree of a pointer that cudaMalloc did not return");
    emu::allocated -= it->second.bytes;
    emu::allocations.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (cudaError_t e = emu::check_copy(dst, src, bytes, kind, "cudaMemcpy")) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes && !emu::in_device_block(dst, bytes))
    return emu::set_error(cudaErrorInvalidValue, "cudaMemset: the range is not inside one device allocation");
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(emu::memory_mutex);
  *total_bytes = emu::memory_budget();
  *free_bytes = *total_bytes - emu::allocated;
  return cudaSuccess;
}

// Launches run to completion, so synchronising only reports what they left.
cudaError_t cudaDeviceSynchronize() { return emu::last_error; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::last_error; }

cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return emu::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  if (error != cudaSuccess && !emu::last_message.empty()) return emu::last_message.c_str();
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
