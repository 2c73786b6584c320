#include "tensor.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_backend.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace lgrpo {
namespace {

constexpr size_t kAlignment = 64;

// Finalize hint for native blocks. A block may be released early (dispose) and later
// finalized by the GC: `released` makes the second visit a no-op, and because the hint
// is per block, a new allocation at a reused address is never confused with it.
struct NativeBlock {
  void* data;
  size_t bytes;
  Device device;
  void* raw = nullptr;  // what malloc returned (CPU), data rounded up to kAlignment
  bool released = false;
  // CPU blocks: the environment that made the ArrayBuffer, and a weak reference to it
  // that the GC clears when it collects the buffer (see reclaim_collected_blocks).
  napi_env env = nullptr;
  napi_ref weak = nullptr;
};

// Recently released large CPU blocks, kept mapped for reuse by the next allocation of
// the same size class: a fresh block costs a page fault per 4 KiB on first touch, which
// for the small per-step outputs of the loss kernels (a few hundred KiB) takes longer
// than the kernel itself. Bounded by LGRPO_HOST_CACHE_MB (default 256; 0 disables).
class HostBlockCache {
 public:
  static constexpr size_t kMinBytes = 64 * 1024;
  static constexpr size_t kPage = 4096;

  static size_t size_class(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

  void* take(size_t size_class_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(size_class_bytes);
    if (it == blocks_.end()) return nullptr;
    void* raw = it->second;
    blocks_.erase(it);
    cached_ -= size_class_bytes;
    return raw;
  }

  // Keeps the block if there is room, else frees it.
  void give(void* raw, size_t size_class_bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (size_class_bytes >= kMinBytes && cached_ + size_class_bytes <= limit()) {
        blocks_.emplace(size_class_bytes, raw);
        cached_ += size_class_bytes;
        return;
      }
    }
    std::free(raw);
  }

 private:
  size_t limit() {
    if (limit_ == SIZE_MAX) {
      const char* env = std::getenv("LGRPO_HOST_CACHE_MB");
      limit_ = static_cast<size_t>(env ? std::atoll(env) : 256) << 20;
    }
    return limit_;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> blocks_;
  size_t cached_ = 0;
  size_t limit_ = SIZE_MAX;
};

HostBlockCache& host_cache() {
  static HostBlockCache* cache = new HostBlockCache();  // never destroyed: finalizers may run at exit
  return *cache;
}

// Marks the Externals this addon made, so a handle from anywhere else (another addon, a
// hand-built object) is refused instead of being read as a NativeBlock.
constexpr napi_type_tag kBlockTag = {0x6c6772706f2d6e61ull, 0x746976652d626c6bull};

std::mutex registry_mutex;
std::unordered_map<void*, NativeBlock*> cpu_registry;  // live CPU blocks by data pointer
int64_t live_blocks = 0;

// Node frees an external ArrayBuffer's memory on a later event-loop turn (node::Buffer
// posts the free callback with SetImmediate), not when the GC collects it, so a loop
// that never yields would hold every output it dropped. The GC does clear weak
// references at once, though: when an environment's live CPU bytes pass `reclaim_at`,
// reclaim_collected_blocks() frees the blocks whose buffers are gone, and the deferred
// finalizer later finds them released. Rescanning only after live bytes grow by half
// (at least kReclaimStep) keeps the scans' cost proportional to what was allocated.
constexpr size_t kReclaimStep = size_t{64} << 20;
struct EnvBlocks {
  size_t live_bytes = 0;
  size_t reclaim_at = kReclaimStep;
};
std::unordered_map<napi_env, EnvBlocks> env_blocks;  // CPU blocks per environment, by registry_mutex
int external_state = -1;  // -1 unknown, 0 forbidden, 1 allowed

void free_block_storage(NativeBlock* block) {
  if (block->released) return;
  block->released = true;
  if (block->device.is_cuda()) {
    cuda_free(block->data, block->device.index);
  } else {
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      cpu_registry.erase(block->data);
      // An environment with nothing left (a worker that ended) leaves no entry behind.
      auto it = block->env ? env_blocks.find(block->env) : env_blocks.end();
      if (it != env_blocks.end() && (it->second.live_bytes -= block->bytes) == 0) env_blocks.erase(it);
    }
    host_cache().give(block->raw, HostBlockCache::size_class(block->bytes));
  }
  std::lock_guard<std::mutex> lock(registry_mutex);
  --live_blocks;
}

void drop_weak_reference(napi_env env, NativeBlock* block) {
  if (block->weak && env) napi_delete_reference(env, block->weak);
  block->weak = nullptr;
}

void finalize_block(napi_env env, void*, void* hint) {
  auto* block = static_cast<NativeBlock*>(hint);
  // Device blocks count too: V8 then collects a loop's forgotten CUDA tensors before
  // the GPU runs out, as it does for host memory.
  if (!block->released && env != nullptr) {
    int64_t adjusted;
    napi_adjust_external_memory(env, -static_cast<int64_t>(block->bytes), &adjusted);
  }
  free_block_storage(block);
  drop_weak_reference(env, block);
  delete block;
}

// Frees the CPU blocks of `env` whose ArrayBuffers the GC has collected but whose
// finalizers still wait for the event loop. Nothing can reach their memory any more:
// every view of a buffer keeps the buffer alive.
void reclaim_collected_blocks(napi_env env) {
  std::vector<NativeBlock*> candidates;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    for (const auto& entry : cpu_registry)
      if (entry.second->env == env && entry.second->weak) candidates.push_back(entry.second);
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  for (NativeBlock* block : candidates) {
    napi_value buffer = nullptr;
    if (napi_get_reference_value(env, block->weak, &buffer) != napi_ok || buffer != nullptr) continue;
    int64_t adjusted;
    napi_adjust_external_memory(env, -static_cast<int64_t>(block->bytes), &adjusted);
    free_block_storage(block);
    drop_weak_reference(env, block);
  }
  napi_close_handle_scope(env, scope);
  std::lock_guard<std::mutex> lock(registry_mutex);
  EnvBlocks& blocks = env_blocks[env];
  blocks.reclaim_at = blocks.live_bytes + std::max(kReclaimStep, blocks.live_bytes / 2);
}

Napi::Value typed_array_for(Napi::Env env, Napi::ArrayBuffer buffer, DType dtype, int64_t numel) {
  size_t n = static_cast<size_t>(numel);
  switch (dtype) {
    case DType::F32: return Napi::Float32Array::New(env, n, buffer, 0);
    case DType::BF16: case DType::F16: return Napi::Uint16Array::New(env, n, buffer, 0);
    case DType::I32: return Napi::Int32Array::New(env, n, buffer, 0);
    case DType::U8: return Napi::Uint8Array::New(env, n, buffer, 0);
  }
  throw Error("unknown dtype", Error::Type);
}

// Blocks over kMaxExternalBytes are V8-owned (see tensor.h).
Napi::ArrayBuffer new_cpu_buffer(Napi::Env env, size_t bytes, void** data_out) {
  if (external_state != 0 && bytes <= kMaxExternalBytes) {
    bool reclaim_due;
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      const EnvBlocks& blocks = env_blocks[env];
      reclaim_due = blocks.live_bytes + bytes > blocks.reclaim_at;
    }
    if (reclaim_due) reclaim_collected_blocks(env);
    // malloc with manual alignment rather than aligned_alloc: glibc's memalign asks for
    // extra slack, so the hole a freed block leaves never fits the next same-sized request
    // and the heap grows without bound under allocate/free cycles.
    size_t size_class = HostBlockCache::size_class(bytes);
    void* raw = size_class >= HostBlockCache::kMinBytes ? host_cache().take(size_class) : nullptr;
    if (!raw) raw = std::malloc(size_class + kAlignment);
    if (!raw) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes", Error::Range);
    void* data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(raw) + kAlignment - 1) & ~(uintptr_t)(kAlignment - 1));
    advise_huge_pages(data, bytes);
    auto* block = new NativeBlock{data, bytes, Device{}, raw};
    napi_value value;
    napi_status status = napi_create_external_arraybuffer(env, data, bytes, finalize_block, block, &value);
    if (status == napi_ok) {
      external_state = 1;
      // Without the weak reference the block is simply never reclaimed early.
      if (napi_create_reference(env, value, 0, &block->weak) != napi_ok) block->weak = nullptr;
      {
        std::lock_guard<std::mutex> lock(registry_mutex);
        cpu_registry[data] = block;
        ++live_blocks;
        block->env = env;
        env_blocks[env].live_bytes += bytes;
      }
      int64_t adjusted;
      napi_adjust_external_memory(env, static_cast<int64_t>(bytes), &adjusted);
      *data_out = data;
      return Napi::ArrayBuffer(env, value);
    }
    // Only a refusal of external memory leaves the block ours to free; any other failure
    // may already have run the finalizer (see kMaxExternalBytes), so it is left alone.
    if (status != napi_no_external_buffers_allowed)
      throw Napi::Error::New(env, "could not create an ArrayBuffer of " + std::to_string(bytes) + " bytes");
    std::free(raw);
    delete block;
    // The runtime (e.g. Electron's sandbox) forbids external memory: let V8 own it.
    external_state = 0;
  }
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, bytes);
  *data_out = buffer.Data();
  return buffer;
}

}  // namespace

// Big tensors included: a rollout's weight copy reads the parameters 16 rows at a time, and
// 4 KB pages made that a TLB miss every few rows (Policy.random of the 0.5B shape: 22 s of
// page faults, 5 s on 2 MB pages).
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kHugePageMinBytes) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(page - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only
#else
  (void)data;
  (void)bytes;
#endif
}

int64_t checked_numel(const std::vector<int64_t>& shape, DType dtype, const char* arg) {
  // A zero dimension makes the tensor empty whatever the others are.
  for (int64_t s : shape)
    if (s == 0) return 0;
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0) throw Error(std::string(arg) + ": dimensions must be non-negative, got " + shape_string(shape), Error::Range);
    if (n > kMaxTensorElements / s)
      throw Error(std::string(arg) + ": shape " + shape_string(shape) + " has more than 2^53 - 1 elements", Error::Range);
    n *= s;
  }
  if (n > kMaxTensorElements / std::max<int64_t>(1, static_cast<int64_t>(dtype_size(dtype))))
    throw Error(std::string(arg) + ": shape " + shape_string(shape) + " of " + dtype_name(dtype) +
                    " needs more than 2^53 - 1 bytes", Error::Range);
  return n;
}

Napi::Array shape_array(Napi::Env env, const std::vector<int64_t>& shape) {
  Napi::Array a = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  return a;
}

DType parse_dtype(const std::string& s, const char* arg) {
  if (s == "f32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  if (s == "f16") return DType::F16;
  if (s == "i32") return DType::I32;
  if (s == "u8") return DType::U8;
  throw Error(std::string(arg) + ": unknown dtype '" + s + "' (expected f32, bf16, f16, i32 or u8)", Error::Type);
}

Device parse_device(const std::string& s, const char* arg) {
  if (s == "cpu") return Device{};
  if (s == "cuda") return Device{DeviceKind::Cuda, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() < 9) {
    int index = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') throw Error(std::string(arg) + ": bad device '" + s + "' (expected 'cpu' or 'cuda:N')", Error::Type);
      index = index * 10 + (s[i] - '0');
    }
    return Device{DeviceKind::Cuda, index};
  }
  throw Error(std::string(arg) + ": bad device '" + s + "' (expected 'cpu' or 'cuda:N')", Error::Type);
}

std::string device_name(const Device& d) {
  return d.is_cuda() ? "cuda:" + std::to_string(d.index) : "cpu";
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

TensorRef unpack_tensor(const Napi::Value& v, const char* arg) {
  if (!v.IsObject()) throw Error(std::string(arg) + ": expected a tensor object", Error::Type);
  Napi::Object o = v.As<Napi::Object>();
  TensorRef t;
  Napi::Value dtype = o.Get("dtype"), shape = o.Get("shape"), device = o.Get("device");
  if (!dtype.IsString() || !shape.IsArray() || !device.IsString())
    throw Error(std::string(arg) + ": expected a tensor {dtype, shape, device, data|handle}", Error::Type);
  t.dtype = parse_dtype(dtype.As<Napi::String>(), arg);
  t.device = parse_device(device.As<Napi::String>(), arg);
  Napi::Array dims = shape.As<Napi::Array>();
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    Napi::Value d = dims.Get(i);
    if (!d.IsNumber()) throw Error(std::string(arg) + ": shape entries must be numbers", Error::Type);
    double x = d.As<Napi::Number>().DoubleValue();
    if (!(x >= 0) || x > 9.0e15 || x != static_cast<double>(static_cast<int64_t>(x)))
      throw Error(std::string(arg) + ": shape entries must be non-negative integers", Error::Range);
    t.shape.push_back(static_cast<int64_t>(x));
  }
  checked_numel(t.shape, t.dtype, arg);  // every later numel()/bytes() is then exact
  if (t.device.is_cuda()) {
    Napi::Value handle = o.Get("handle");
    if (!handle.IsExternal()) throw Error(std::string(arg) + ": a CUDA tensor needs its native handle", Error::Type);
    bool ours = false;
    if (napi_check_object_type_tag(o.Env(), handle, &kBlockTag, &ours) != napi_ok || !ours)
      throw Error(std::string(arg) + ": the handle is not a tensor block made by lgrpo-native", Error::Type);
    auto* block = handle.As<Napi::External<NativeBlock>>().Data();
    if (block->released) throw Error(std::string(arg) + ": tensor was disposed", Error::Type);
    if (block->device != t.device)
      throw Error(std::string(arg) + ": says it is on " + device_name(t.device) + " but its memory is on " +
                      device_name(block->device), Error::Type);
    // A view (Tensor.view) starts `offset` bytes into the block.
    double offset = 0;
    Napi::Value off = o.Get("offset");
    if (!off.IsUndefined()) {
      offset = off.IsNumber() ? off.As<Napi::Number>().DoubleValue() : -1;
      if (!(offset >= 0) || offset != static_cast<double>(static_cast<int64_t>(offset)) ||
          static_cast<int64_t>(offset) % static_cast<int64_t>(dtype_size(t.dtype)) != 0)
        throw Error(std::string(arg) + ": offset must be a non-negative multiple of the element size", Error::Range);
    }
    if (offset > static_cast<double>(block->bytes) || block->bytes - static_cast<size_t>(offset) < t.bytes())
      throw Error(std::string(arg) + ": shape " + shape_string(t.shape) + " exceeds its storage", Error::Range);
    t.data = static_cast<char*>(block->data) + static_cast<size_t>(offset);
    return t;
  }
  Napi::Value data = o.Get("data");
  if (!data.IsTypedArray()) throw Error(std::string(arg) + ": a CPU tensor needs a TypedArray in .data", Error::Type);
  Napi::TypedArray array = data.As<Napi::TypedArray>();
  napi_typedarray_type expected = napi_float32_array;
  switch (t.dtype) {
    case DType::F32: expected = napi_float32_array; break;
    case DType::BF16: case DType::F16: expected = napi_uint16_array; break;
    case DType::I32: expected = napi_int32_array; break;
    case DType::U8: expected = napi_uint8_array; break;
  }
  if (array.TypedArrayType() != expected)
    throw Error(std::string(arg) + ": data does not match dtype " + dtype_name(t.dtype), Error::Type);
  if (array.ElementLength() != static_cast<size_t>(t.numel()))
    throw Error(std::string(arg) + ": data holds " + std::to_string(array.ElementLength()) + " elements but shape " +
                    shape_string(t.shape) + " needs " + std::to_string(t.numel()), Error::Range);
  napi_value ab;
  void* base = nullptr;
  size_t length = 0, offset = 0;
  napi_typedarray_type type;
  napi_get_typedarray_info(o.Env(), array, &type, &length, &base, &ab, &offset);
  t.data = base;  // already points at the first element (napi adds the byte offset)
  return t;
}

Napi::Object allocate_tensor(Napi::Env env, const std::vector<int64_t>& shape, DType dtype, const Device& device,
                             void** data_out) {
  // Checked before anything is allocated: a wrapped count would allocate a few bytes
  // behind a huge shape, and kernels would then walk the shape.
  const int64_t numel = checked_numel(shape, dtype, "shape");
  if (!device.is_cuda() && numel > kMaxCpuTensorElements)
    throw Error("shape: " + shape_string(shape) + " has " + std::to_string(numel) +
                    " elements; a CPU tensor holds at most 2^32 (the TypedArray limit)", Error::Range);
  const size_t bytes = static_cast<size_t>(numel) * dtype_size(dtype);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dtype", dtype_name(dtype));
  o.Set("shape", shape_array(env, shape));
  o.Set("device", device_name(device));
  if (device.is_cuda()) {
    void* data = cuda_alloc(bytes == 0 ? 1 : bytes, device.index);
    try {
      cuda_memset_zero(data, bytes, device.index);
    } catch (...) {
      cuda_free(data, device.index);
      throw;
    }
    auto* block = new NativeBlock{data, bytes, device};
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      ++live_blocks;
    }
    auto handle = Napi::External<NativeBlock>::New(env, block, [](Napi::Env e, NativeBlock* b) { finalize_block(e, nullptr, b); });
    napi_type_tag_object(env, handle, &kBlockTag);
    o.Set("handle", handle);
    int64_t adjusted;
    napi_adjust_external_memory(env, static_cast<int64_t>(bytes), &adjusted);
    *data_out = data;
    return o;
  }
  void* data = nullptr;
  Napi::ArrayBuffer buffer = new_cpu_buffer(env, bytes, &data);
  o.Set("data", typed_array_for(env, buffer, dtype, numel));
  *data_out = data;
  return o;
}

void release_tensor(Napi::Env env, const Napi::Object& tensor) {
  Napi::Value handle = tensor.Get("handle");
  if (handle.IsExternal()) {
    bool ours = false;
    if (napi_check_object_type_tag(env, handle, &kBlockTag, &ours) != napi_ok || !ours)
      throw Error("tensor: the handle is not a tensor block made by lgrpo-native", Error::Type);
    NativeBlock* block = handle.As<Napi::External<NativeBlock>>().Data();
    if (!block->released) {
      int64_t adjusted;
      napi_adjust_external_memory(env, -static_cast<int64_t>(block->bytes), &adjusted);
    }
    free_block_storage(block);
    return;
  }
  Napi::Value data = tensor.Get("data");
  if (!data.IsTypedArray()) return;
  Napi::ArrayBuffer buffer = data.As<Napi::TypedArray>().ArrayBuffer();
  void* base = buffer.Data();
  NativeBlock* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = cpu_registry.find(base);
    if (it != cpu_registry.end()) block = it->second;
  }
  if (!block) return;  // memory owned by JS (Tensor.from) or V8: nothing native to free
  napi_detach_arraybuffer(env, buffer);
  int64_t adjusted;
  napi_adjust_external_memory(env, -static_cast<int64_t>(block->bytes), &adjusted);
  free_block_storage(block);
  drop_weak_reference(env, block);
}

void copy_between(void* dst, const Device& dst_device, const void* src, const Device& src_device, size_t bytes) {
  if (bytes == 0) return;
  if (!src_device.is_cuda() && !dst_device.is_cuda()) {
    std::memmove(dst, src, bytes);
  } else if (!src_device.is_cuda()) {
    cuda_copy_to_device(dst, src, bytes, dst_device.index);
  } else if (!dst_device.is_cuda()) {
    cuda_copy_to_host(dst, src, bytes, src_device.index);
  } else if (src_device.index == dst_device.index) {
    cuda_copy_device_to_device(dst, src, bytes, dst_device.index);
  } else {
    std::vector<unsigned char> staging(bytes);
    cuda_copy_to_host(staging.data(), src, bytes, src_device.index);
    cuda_copy_to_device(dst, staging.data(), bytes, dst_device.index);
  }
}

Napi::Object copy_tensor_to(Napi::Env env, const TensorRef& src, const Device& device) {
  void* dst = nullptr;
  Napi::Object out = allocate_tensor(env, src.shape, src.dtype, device, &dst);
  copy_between(dst, device, src.data, src.device, src.bytes());
  return out;
}

bool external_buffers_allowed() { return external_state != 0; }

int64_t live_native_blocks() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return live_blocks;
}

void expect_dtype(const TensorRef& t, std::initializer_list<DType> allowed, const char* arg) {
  std::string names;
  for (DType d : allowed) {
    if (d == t.dtype) return;
    names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  throw Error(std::string(arg) + ": expected dtype " + names + ", got " + dtype_name(t.dtype), Error::Type);
}

void expect_rank(const TensorRef& t, size_t rank, const char* arg) {
  if (t.shape.size() != rank)
    throw Error(std::string(arg) + ": expected " + std::to_string(rank) + " dimensions, got shape " + shape_string(t.shape),
                Error::Range);
}

void expect_shape(const TensorRef& t, std::initializer_list<int64_t> shape, const char* arg) {
  std::vector<int64_t> want(shape);
  if (t.shape != want)
    throw Error(std::string(arg) + ": expected shape " + shape_string(want) + ", got " + shape_string(t.shape), Error::Range);
}

void expect_same_device(const TensorRef& a, const TensorRef& b, const char* arg_b) {
  if (a.device != b.device)
    throw Error(std::string(arg_b) + ": is on " + device_name(b.device) + " but the other inputs are on " + device_name(a.device),
                Error::Type);
}


}  // namespace lgrpo
