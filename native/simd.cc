#include "simd.h"

namespace lgrpo {

const char* simd_level_name() { return LGRPO_AVX2 ? "avx2+fma" : "scalar"; }

}  // namespace lgrpo
