// Tensors at the Node-API boundary, zero-copy both ways.
//
// A tensor crosses as a plain object {dtype, shape, device, data | handle}:
//   cpu:    `data` is a TypedArray; native code reads and writes its memory in place.
//   cuda:N: `handle` is an External owning device memory.
// Outputs are allocated here: CPU outputs are 64-byte aligned native blocks exposed
// to JS as external ArrayBuffers (or V8-owned ArrayBuffers where the runtime forbids
// external ones: still written in place, never copied); CUDA outputs are device blocks.
// release() frees either at once; a finalizer frees what the program forgets.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "common.h"

namespace lgrpo {

// Shapes cross from JavaScript as doubles, so element and byte counts above 2^53 - 1
// could not be represented exactly on either side. A CPU tensor is also a TypedArray,
// and V8 aborts the process (not a JS error) on a TypedArray longer than 2^32 elements
// in Node 20, so CPU allocations stop there.
constexpr int64_t kMaxTensorElements = (int64_t{1} << 53) - 1;
constexpr int64_t kMaxCpuTensorElements = int64_t{1} << 32;
// Node 20 builds external ArrayBuffers through node::Buffer, whose limit is 2^32 bytes
// (buffer.constants.MAX_LENGTH). Above it creation fails *after* calling our finalizer,
// which has then freed the block (freeing it again crashed every CPU tensor over 4 GiB).
// Larger CPU blocks are V8-owned instead: written in place all the same, and zeroed.
constexpr size_t kMaxExternalBytes = size_t{1} << 32;

// Element count of `shape`, checked: throws a RangeError naming `arg` when the product
// overflows or exceeds kMaxTensorElements (or its byte count exceeds it).
int64_t checked_numel(const std::vector<int64_t>& shape, DType dtype, const char* arg);

struct TensorRef {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device;
  std::vector<int64_t> shape;
  int64_t numel() const { return checked_numel(shape, dtype, "shape"); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
};

DType parse_dtype(const std::string& s, const char* arg);
Device parse_device(const std::string& s, const char* arg);
std::string device_name(const Device& d);
std::string shape_string(const std::vector<int64_t>& shape);
Napi::Array shape_array(Napi::Env env, const std::vector<int64_t>& shape);

// Unpacks argument `arg` of a kernel call; throws a TypeError naming it on mismatch.
TensorRef unpack_tensor(const Napi::Value& v, const char* arg);

// Allocates an uninitialised (cpu) or zeroed (cuda) tensor and its JS object.
Napi::Object allocate_tensor(Napi::Env env, const std::vector<int64_t>& shape, DType dtype,
                             const Device& device, void** data_out);

// Frees the storage behind a tensor object now; the JS views become empty.
void release_tensor(Napi::Env env, const Napi::Object& tensor);

// Copies `bytes` between any two devices (host, or cuda:N), staging through the host
// between two different GPUs.
void copy_between(void* dst, const Device& dst_device, const void* src, const Device& src_device, size_t bytes);

// Copies a tensor to another device (or returns a same-device copy).
Napi::Object copy_tensor_to(Napi::Env env, const TensorRef& src, const Device& device);

bool external_buffers_allowed();
int64_t live_native_blocks();

// Argument checks shared by the bindings. They duplicate what the TypeScript layer
// validates on purpose: the raw addon must not crash even when called directly.
void expect_dtype(const TensorRef& t, std::initializer_list<DType> allowed, const char* arg);
void expect_shape(const TensorRef& t, std::initializer_list<int64_t> shape, const char* arg);
void expect_rank(const TensorRef& t, size_t rank, const char* arg);
void expect_same_device(const TensorRef& a, const TensorRef& b, const char* arg_b);

}  // namespace lgrpo
