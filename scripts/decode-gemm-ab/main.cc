// Two builds of the decoding GEMMs, A and B, over the same panel buffers (A packs them; B
// reads A's), one 0.5B decoding step each, alternating A B, B A, ... : on a virtual machine
// whose memory speed drifts from second to second, and where two identical kernels over two
// different buffers have differed by 30%, only this pairing compares kernels.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

struct SharedBuffers { std::vector<void*>* f32; std::vector<void*>* bf16; float* x; float* y; };
extern "C" {
void A_setup(const float*);
SharedBuffers A_shared();
void A_f32();
void A_bf16();
void B_adopt(SharedBuffers);
void B_f32();
void B_bf16();
}

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  const int pairs = argc > 1 ? std::atoi(argv[1]) : 30;
  const size_t n = size_t(151936) * 896;  // the largest matrix; every shape packs a prefix of it
  float* w = static_cast<float*>(std::aligned_alloc(2u << 20, n * 4));
  madvise(w, n * 4, MADV_HUGEPAGE);
  for (size_t i = 0; i < n; ++i) w[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-4f - 0.05f;
  A_setup(w);
  B_adopt(A_shared());
  std::free(w);
  const double weights = 493961216.0;
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    void (*a)() = bf16 ? A_bf16 : A_f32;
    void (*b)() = bf16 ? B_bf16 : B_f32;
    a();
    b();
    std::vector<double> ta, tb, ratio;
    for (int p = 0; p < pairs; ++p) {
      const bool b_first = p & 1;
      const double t0 = seconds();
      (b_first ? b : a)();
      const double t1 = seconds();
      (b_first ? a : b)();
      const double t2 = seconds();
      ta.push_back(b_first ? t2 - t1 : t1 - t0);
      tb.push_back(b_first ? t1 - t0 : t2 - t1);
      ratio.push_back(ta.back() / tb.back());
    }
    for (auto* v : {&ta, &tb, &ratio}) std::sort(v->begin(), v->end());
    const double bytes = weights * (bf16 ? 2 : 4);
    std::printf("%s step: A %.1f ms (%.1f GB/s) | B %.1f ms (%.1f GB/s) | time A/B median %.3f (quartiles %.3f, %.3f)\n",
                bf16 ? "bf16" : "f32 ", ta[pairs / 2] * 1e3, bytes / ta[pairs / 2] / 1e9, tb[pairs / 2] * 1e3,
                bytes / tb[pairs / 2] / 1e9, ratio[pairs / 2], ratio[pairs / 4], ratio[3 * pairs / 4]);
  }
}
