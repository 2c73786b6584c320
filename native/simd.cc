#include "simd.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "common.h"

#if LGRPO_X86_DISPATCH
#include <cpuid.h>
#endif

namespace lgrpo {
namespace {

SimdPath detect() {
#if LGRPO_X86_DISPATCH
  unsigned a, b, c, d;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return SimdPath::Avx2;
  const bool osxsave = (c >> 27) & 1;
  if (!osxsave) return SimdPath::Avx2;
  // XCR0: the OS saves the SSE/AVX state (bits 1, 2) and the opmask and zmm state (5, 6, 7).
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0xe6) != 0xe6) return SimdPath::Avx2;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return SimdPath::Avx2;
  const bool avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  if (!(avx512f && avx512dq && avx512bw && avx512vl)) return SimdPath::Avx2;
  // Leaf 7 sub-leaf 1, EAX bit 5: AVX512_BF16.
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1)) return SimdPath::Avx512Bf16;
  return SimdPath::Avx512;
#elif LGRPO_AVX2
  return SimdPath::Avx2;
#else
  return SimdPath::Scalar;
#endif
}

SimdPath choose() {
  const SimdPath supported = simd_path_supported();
  const char* env = std::getenv("LGRPO_SIMD");
  if (!env || !*env || std::strcmp(env, "auto") == 0) return supported;
  SimdPath want;
  if (std::strcmp(env, "avx2") == 0) want = SimdPath::Avx2;
  else if (std::strcmp(env, "avx512") == 0) want = SimdPath::Avx512;
  else if (std::strcmp(env, "avx512bf16") == 0) want = SimdPath::Avx512Bf16;
  else
    throw Error(std::string("LGRPO_SIMD: expected auto, avx2, avx512 or avx512bf16, got '") + env + "'",
                Error::Range);
  if (static_cast<int>(want) > static_cast<int>(supported))
    throw Error(std::string("LGRPO_SIMD=") + env + ": this CPU (or this build) supports at most " +
                    simd_path_name(supported),
                Error::Range);
  return want;
}

}  // namespace

SimdPath simd_path_supported() {
  static const SimdPath p = detect();
  return p;
}

SimdPath simd_path() {
  static const SimdPath p = choose();
  return p;
}

const char* simd_path_name(SimdPath p) {
  switch (p) {
    case SimdPath::Avx512Bf16: return "avx512+bf16";
    case SimdPath::Avx512: return "avx512";
    case SimdPath::Avx2: return "avx2+fma";
    default: return "scalar";
  }
}

const char* simd_level_name() { return simd_path_name(simd_path()); }

}  // namespace lgrpo
