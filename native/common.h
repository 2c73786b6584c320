// Shared vocabulary of the native layer: dtypes, device kinds, half-precision
// conversions and the error type every kernel throws. Nothing here knows about Node.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lgrpo {

// Host blocks of this size and more go on 2 MB pages where the kernel allows it: a model's
// parameters, gradients and moments, the engine's arenas and rollout weight copies, all
// streamed whole (fewer page faults on first touch, fewer TLB misses).
constexpr size_t kHugePageMinBytes = size_t(32) << 20;
// Advice only (madvise MADV_HUGEPAGE over the whole pages in [data, data + bytes)), and only
// for blocks of kHugePageMinBytes or more; nothing where the platform has no such advice.
void advise_huge_pages(void* data, size_t bytes);

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, U8 = 4 };
enum class DeviceKind : int32_t { Cpu = 0, Cuda = 1 };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;
  bool is_cuda() const { return kind == DeviceKind::Cuda; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

// Thrown by kernels and the binding layer; the binding turns it into a JS error.
// `kind` picks the JS error class so callers can tell bad arguments from failures.
struct Error : std::runtime_error {
  enum Kind { Generic, Type, Range } kind;
  explicit Error(const std::string& m, Kind k = Generic) : std::runtime_error(m), kind(k) {}
};

// A number as JavaScript prints it (NaN, Infinity, -1.5), so messages from both twins
// read the same and match what the TypeScript layer says of the same value.
inline std::string number_text(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// The one message for a non-finite input element, on every device.
inline Error not_finite(const std::string& arg, const std::string& where, double value) {
  return Error(arg + ": element " + where + " is " + number_text(value) + "; inputs must be finite", Error::Range);
}

// Rejects NaN/±Inf in a host vector of per-row inputs, as the CUDA twins do on the device.
inline void check_finite_rows(const float* v, int64_t n, const char* arg) {
  if (!v) return;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) throw not_finite(arg, std::to_string(i), v[i]);
}

// The one message for a group id outside [0, groups), on every device.
inline Error group_id_outside(int64_t id, int64_t index, int64_t groups) {
  return Error("groupIds: group id " + std::to_string(id) + " at index " + std::to_string(index) + " is outside [0, " +
                   std::to_string(groups) + ")",
               Error::Range);
}

// bf16 is the top half of an f32; rounding to nearest even keeps conversions unbiased.
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) { mantissa <<= 1; --exponent; }
      mantissa &= 0x3ffu;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {  // f16 subnormal or zero: count in units of 2^-24, ties to even
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(magnitude * 16777216.0f)));
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

// Reads element i of a float-like buffer (f32, bf16, f16) as f32.
inline float load_float(const void* data, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(data)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    default: throw Error("load_float: not a floating dtype", Error::Type);
  }
}

inline void store_float(void* data, DType t, size_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(data)[i] = v; return;
    case DType::BF16: static_cast<uint16_t*>(data)[i] = f32_to_bf16(v); return;
    case DType::F16: static_cast<uint16_t*>(data)[i] = f32_to_f16(v); return;
    default: throw Error("store_float: not a floating dtype", Error::Type);
  }
}

}  // namespace lgrpo
