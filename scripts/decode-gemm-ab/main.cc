// Two builds of the decoding GEMMs, A and B, over the same panel buffers (A packs them; B
// reads A's), one 0.5B decoding step each, alternating A B, B A, ... : on a virtual machine
// whose memory speed drifts from second to second, and where two identical kernels over two
// different buffers have differed by 30%, only this pairing compares kernels. After each
// pair, a plain read of the same panels (two threads, vector loads) gives the memory speed of
// that moment, and the pairs are summed up apart for slow and fast moments (read <= 60 GB/s
// and above): a prefetch distance that was best at one was not at the other.
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
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

// Reads [p, p + n) once, n a multiple of 256, with AVX-512 loads (what the kernels use).
__attribute__((target("avx512f"), noinline)) static unsigned long long read_once(const char* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    a = _mm512_xor_si512(a, _mm512_loadu_si512(p + i));
    b = _mm512_xor_si512(b, _mm512_loadu_si512(p + i + 64));
    c = _mm512_xor_si512(c, _mm512_loadu_si512(p + i + 128));
    d = _mm512_xor_si512(d, _mm512_loadu_si512(p + i + 192));
  }
  return _mm512_reduce_add_epi64(_mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
}

static double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// GB/s of one read of `bytes` from p, half on each of two threads.
static volatile unsigned long long read_sink;
static double read_speed(const char* p, size_t bytes) {
  const size_t half = bytes / 2 / 256 * 256;
  const double t0 = seconds();
  std::thread other([&] { read_sink = read_once(p + half, half); });
  read_sink = read_once(p, half);
  other.join();
  return 2.0 * half / (seconds() - t0) / 1e9;
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
  const char* only = std::getenv("DECODE_AB_ONLY");  // "f32" or "bf16": time that precision alone
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    if (only && std::string(only) != (bf16 ? "bf16" : "f32")) continue;
    void (*a)() = bf16 ? A_bf16 : A_f32;
    void (*b)() = bf16 ? B_bf16 : B_f32;
    a();
    b();
    const SharedBuffers panels = A_shared();
    const char* start = static_cast<const char*>(bf16 ? panels.bf16->front() : panels.f32->front());
    const double bytes = weights * (bf16 ? 2 : 4);  // the panels lie one after another from start
    std::vector<double> ta, tb, ratio, moment_ratio[2], a_of_read[2], b_of_read[2];
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
      const double read = read_speed(start, static_cast<size_t>(bytes));
      const int fast = read > 60;
      moment_ratio[fast].push_back(ratio.back());
      a_of_read[fast].push_back(bytes / ta.back() / 1e9 / read);
      b_of_read[fast].push_back(bytes / tb.back() / 1e9 / read);
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    for (auto* v : {&ta, &tb, &ratio}) std::sort(v->begin(), v->end());
    std::printf("%s step: A %.1f ms (%.1f GB/s) | B %.1f ms (%.1f GB/s) | time A/B median %.3f (quartiles %.3f, %.3f)\n",
                bf16 ? "bf16" : "f32 ", ta[pairs / 2] * 1e3, bytes / ta[pairs / 2] / 1e9, tb[pairs / 2] * 1e3,
                bytes / tb[pairs / 2] / 1e9, ratio[pairs / 2], ratio[pairs / 4], ratio[3 * pairs / 4]);
    for (int fast = 0; fast < 2; ++fast)
      if (!moment_ratio[fast].empty())
        std::printf("     %s moments (%zu pairs): time A/B median %.3f; A at %.2f of the read after the pair, B at %.2f\n",
                    fast ? "fast (read > 60 GB/s)" : "slow (read <= 60 GB/s)", moment_ratio[fast].size(), median(moment_ratio[fast]),
                    median(a_of_read[fast]), median(b_of_read[fast]));
  }
}
