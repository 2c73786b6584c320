// One build of the decoding GEMMs (a source tree's native/ops/gemm.cc and gemm_bf16.cc),
// compiled with `lgrpo` renamed so that two builds link into one program (see run.sh).
// VARIANT names the C entry points: VARIANT_setup packs the 0.5B shape's panels,
// VARIANT_adopt makes another build read the same buffers, VARIANT_f32/_bf16 run one
// decoding step's GEMMs at 8 rows.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "ops/gemm.h"
#include "ops/gemm_bf16.h"

#define JOIN2(a, b) a##b
#define JOIN(a, b) JOIN2(a, b)

namespace {
using namespace lgrpo;
struct Matrix { int64_t n, k; };
std::vector<Matrix> matrices;
std::vector<void*> f32_panels, bf16_panels;
float *x = nullptr, *y = nullptr;

void* huge_block(size_t bytes) {
  const size_t size = (bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20);
  void* p = std::aligned_alloc(2u << 20, size);
  madvise(p, size, MADV_HUGEPAGE);
  std::memset(p, 0, size);
  return p;
}

void shapes() {
  const int64_t D = 896, I = 4864, KV = 128, V = 151936;  // Qwen2.5-0.5B
  matrices.clear();
  for (int l = 0; l < 24; ++l)
    for (auto nk : {std::pair<int64_t, int64_t>{D, D}, {KV, D}, {KV, D}, {D, D}, {I, D}, {I, D}, {D, I}})
      matrices.push_back({nk.first, nk.second});
  matrices.push_back({V, D});
}
}  // namespace

struct SharedBuffers { std::vector<void*>* f32; std::vector<void*>* bf16; float* x; float* y; };

extern "C" void JOIN(VARIANT, _setup)(const float* w) {
  shapes();
  size_t f32_bytes = 0, bf16_bytes = 0;
  for (const Matrix& m : matrices) {
    f32_bytes += panel_floats(m.n, m.k) * 4;
    bf16_bytes += bf16_panel_elements(m.n, m.k) * 2;
  }
  char* f = static_cast<char*>(huge_block(f32_bytes));
  char* b = static_cast<char*>(huge_block(bf16_bytes));
  for (const Matrix& m : matrices) {
    pack_panels_cpu(w, m.k, m.n, m.k, reinterpret_cast<float*>(f));
    pack_panels_bf16_cpu(w, m.k, m.n, m.k, reinterpret_cast<uint16_t*>(b));
    f32_panels.push_back(f);
    bf16_panels.push_back(b);
    f += panel_floats(m.n, m.k) * 4;
    b += bf16_panel_elements(m.n, m.k) * 2;
  }
  x = static_cast<float*>(huge_block(8 * 4864 * 4));
  for (int i = 0; i < 8 * 4864; ++i) x[i] = static_cast<float>(i % 17) * 0.01f;
  y = static_cast<float*>(huge_block(8 * 151936 * 4));
}

extern "C" SharedBuffers JOIN(VARIANT, _shared)() { return {&f32_panels, &bf16_panels, x, y}; }

extern "C" void JOIN(VARIANT, _adopt)(SharedBuffers s) {
  shapes();
  f32_panels = *s.f32;
  bf16_panels = *s.bf16;
  x = s.x;
  y = s.y;
}

extern "C" void JOIN(VARIANT, _f32)() {
  for (size_t i = 0; i < matrices.size(); ++i) {
    GemmArgs g;
    g.trans_b = true;
    g.m = 8;
    g.n = matrices[i].n;
    g.k = matrices[i].k;
    g.a = x;
    g.lda = g.k;
    g.b = static_cast<const float*>(f32_panels[i]);
    g.ldb = g.k;
    g.c = y;
    g.ldc = g.n;
    g.b_panels = true;
    gemm_f32(g);
  }
}

extern "C" void JOIN(VARIANT, _bf16)() {
  for (size_t i = 0; i < matrices.size(); ++i) {
    GemmBf16Args g;
    g.x = x;
    g.ldx = matrices[i].k;
    g.w = static_cast<const uint16_t*>(bf16_panels[i]);
    g.w_panels = true;
    g.m = 8;
    g.n = matrices[i].n;
    g.k = matrices[i].k;
    g.y = y;
    g.ldy = g.n;
    gemm_bf16_dot_cpu(g);
  }
}
