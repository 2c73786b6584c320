// Single-precision GEMM for the engine: C = alpha·op(A)·op(B) + beta·C, row-major with
// leading dimensions, op ∈ {N, T}. The three products of a transformer linear layer:
//   forward      y  = x·Wᵀ       A = x  [M,K] N,  B = W [N,K] T
//   input grad   dX = dY·W       A = dY [M,K] N,  B = W [K,N] N
//   weight grad  dW += dYᵀ·X     A = dY [K,M] T,  B = X [K,N] N, beta = 1
//
// Results are deterministic and independent of the thread count and of how C is
// split: every element is accumulated by one FMA chain over k in increasing order,
// restarted at fixed multiples of the K block (kGemmKC), whichever thread owns it.
// beta = 0 never reads C (so C may hold garbage or NaN); alpha = 0 or K = 0 only
// scales C by beta. NaN and Inf in A or B propagate as IEEE arithmetic says.
// The CUDA twin (kernels/gemm.cu) follows the same K blocking and fold into C.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../parallel.h"

namespace lgrpo {

struct GemmArgs {
  bool trans_a = false;  // op(A) = Aᵀ: A is stored [K, M]
  bool trans_b = false;  // op(B) = Bᵀ: B is stored [N, K]
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  int64_t lda = 0;       // stride between stored rows of A (>= its stored cols)
  const float* b = nullptr;
  int64_t ldb = 0;
  float beta = 0.0f;
  float* c = nullptr;    // [M, N], must not overlap A or B
  int64_t ldc = 0;
  int device = 0;        // CUDA twin: the device every pointer lives on (CPU twin: unused)
  // CPU twin only: b holds W = op(B)ᵀ [N, K] (trans_b must be set, ldb is ignored) already
  // copied into 16-column panels by pack_panels_cpu; the same bits as from W itself.
  bool b_panels = false;
  // CPU twin only (gemm_f32), with trans_b and b = W [N, K] in place: also copies W into these
  // panels (pack_panels_cpu's layout, panel_floats(n, k) floats) as the product reads it, so
  // that a generate call's prefill makes the decoding steps' panels with its own read of W
  // instead of a copy pass before it. C is unchanged (the slivers are the ones it would pack).
  float* panels_out = nullptr;
};

// Blocking of K: the one blocking parameter the bits depend on (see above).
constexpr int64_t kGemmKC = 256;

// Splits C into disjoint rectangles over the thread pool (parallel_for). Inside an
// already-parallel region the pool runs it inline on the calling thread.
void gemm_f32(const GemmArgs& args);

// The same computation on the calling thread only, for tiles of a larger job that the
// caller already parallelises (packing buffers are thread-local). Bit-identical to
// gemm_f32 on the same sub-block.
void gemm_f32_serial(const GemmArgs& args);

// gemm_f32 for each of g[0..count), the same bits; few-row products over panels that share
// op(A) (decoding's q, k and v; gate and up) run as one pool job, A packed once and their
// panel chunks claimed as one list: one join instead of one per product.
void gemm_f32_group(const GemmArgs* g, int count);

// The CUDA twin, on args.device; asynchronous (errors surface at the next synchronising call).
void gemm_f32_cuda(const GemmArgs& args);

// The sub-problem of g over k in [k0, k1): op(A)'s columns and op(B)'s rows of that range
// (beta and everything else as in g). Not for b_panels.
inline GemmArgs gemm_k_range(const GemmArgs& g, int64_t k0, int64_t k1) {
  GemmArgs s = g;
  s.k = k1 - k0;
  s.a = g.trans_a ? g.a + k0 * g.lda : g.a + k0;
  s.b = g.trans_b ? g.b + k0 : g.b + k0 * g.ldb;
  return s;
}

// C = alpha·Σ_s op(A)[:, K_s]·op(B)[K_s, :] + beta·C as one GEMM per K segment
// K_s = [bounds[s], bounds[s+1]) in increasing s (beta for the first, 1 after): the bits of
// that loop of gemm_f32 calls, but one parallel job over C's columns instead of one job
// per segment, so segments too small to thread still share the threads. (The training
// weight gradient sums its token rows per K block of the padded layout: model.cc.)
void gemm_f32_k_segments(const GemmArgs& g, const int64_t* bounds, int64_t count);
// The cuBLASLt path of the CUDA twin (kernels/gemm_cublaslt.cu): false when cuBLASLt is
// not loaded or declines the problem. The matmul precision ('highest' | 'high' |
// 'medium', as torch.set_float32_matmul_precision) applies to it only; the description
// says which GEMM the CUDA twin runs (buildInfo().cudaMatmul).
bool gemm_f32_cublaslt(const GemmArgs& g);
// Whether the CUDA twin's GEMMs run on cuBLASLt (loaded, not forced off), as buildInfo().cudaMatmul says.
bool cuda_matmul_is_cublaslt();
void set_cuda_matmul_precision(const std::string& precision);
std::string cuda_matmul_description();

inline void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                     int64_t ldc) {
  gemm_f32(GemmArgs{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc});
}

inline void gemm_f32_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                            const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                            int64_t ldc) {
  gemm_f32_serial(GemmArgs{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc});
}

// Weight panels (rollouts read every weight matrix once per token): W [N, K] copied so that
// panel p holds W[16p + j][k] at p·K·16 + k·16 + j, rows past N zero — the register tile's
// B sliver over all of K, so a GEMM over panels never packs B and a few-row product streams
// them contiguously. pack_panels_cpu runs on the pool; panels is 64-byte aligned.
constexpr int64_t kPanelWidth = 16;
inline int64_t panel_floats(int64_t n, int64_t k) { return (n + kPanelWidth - 1) / kPanelWidth * kPanelWidth * k; }
void pack_panels_cpu(const float* w, int64_t ldw, int64_t n, int64_t k, float* panels);
// Weights per chunk a thread claims (parallel_chunks) in the few-row f32 panel GEMM: long
// enough that each thread's stream stays sequential for a while (128 KB chunks were 5% slower
// on f32). panel_chunks (below) sizes a matrix's chunks near it.
constexpr int64_t kPanelChunkBytes = 512 * 1024;
// The bf16 GEMM's chunks (a quarter as many per matrix as f32's): at moments when the host's
// memory read fast, chunks of 2 MB streamed bf16 4% faster than 512 KB (and were neutral when
// it read slow); f32 gained 3% at fast moments but lost 3–4% at slow ones, so it keeps
// 512 KB (scripts/decode-gemm-ab, same buffers).
constexpr int64_t kBf16PanelChunkBytes = 2048 * 1024;

// Few-row dot products over panels: for r < rows (≤ 8) and the q < count (1 to
// kPanelStreams) panels at w + q·panel_stride,
//   out[r·kPanelAccStride + q·16 + j] = Σ_{k<n} xp[k·xs + r]·w[q·panel_stride + k·16 + j]
// as one FMA chain per output in increasing k from 0 (the register tile's order exactly).
// x86 with AVX2 only; w 64-byte aligned; xp holds 8 readable lanes per k (zero past rows).
// Decoding reads kPanelStreams panels at once, one from each part of a thread's range, so
// that every memory stream runs on through its part without a break. Reading neighbouring
// panels restarted a stream cold at every step: two parts were 9% faster in f32 and bf16,
// three a further 11.5% in bf16 and 1% in f32 (scripts/decode-gemm-ab, same buffers).
constexpr int kPanelStreams = 3;
// How a few-row panel GEMM's panels split into the chunks its threads claim
// (parallel_chunks): a multiple of the thread count of chunks, near chunk_bytes each and
// equal in size, so that the threads finish together. (Chunks of a fixed size left one thread
// streaming the last chunk of each matrix alone while the other waited, and matrices under
// 256 KB ran on one thread.) Where a matrix has several triples of panels per chunk, chunks
// hold whole multiples of kPanelStreams panels (but the last), so that for_panel_steps reads
// kPanelStreams streams at every step: chunks split to the panel took two-stream steps for a
// tenth of the bf16 time. One chunk under kPanelParallelBytes, where waking the pool costs
// more than half the stream saves.
constexpr int64_t kPanelParallelBytes = 64 * 1024;
struct PanelChunks {
  int64_t count, panels, unit;  // unit: 1 or kPanelStreams panels
  // chunk c: panels [begin(c), begin(c + 1))
  int64_t begin(int64_t c) const { return std::min(panels, (panels + unit - 1) / unit * c / count * unit); }
};
inline PanelChunks panel_chunks(int64_t panels, int64_t panel_bytes, int64_t threads,
                                int64_t chunk_bytes = kPanelChunkBytes) {
  const int64_t bytes = panels * std::max<int64_t>(panel_bytes, 1);
  if (threads <= 1 || panels <= 1 || bytes < kPanelParallelBytes) return {1, panels, 1};
  const int64_t rounds = (bytes + threads * chunk_bytes - 1) / (threads * chunk_bytes);
  const int64_t count = std::min(panels, rounds * threads);
  return {count, panels, panels >= 4 * kPanelStreams * count ? kPanelStreams : 1};
}
// range(i, p0, p1) for the chunks of several products (chunks[i] for product i) as one pool
// job: their chunks one after another in one list the threads claim (parallel_chunks), so
// that products sharing an input (decoding's q, k and v) cost one join, not one each.
template <class Range>
void parallel_panel_chunks(const std::vector<PanelChunks>& chunks, Range&& range) {
  std::vector<int64_t> first{0};  // chunk c of the job is chunk c − first[i] of product i
  for (const PanelChunks& c : chunks) first.push_back(first.back() + c.count);
  parallel_chunks(first.back(), [&](int64_t c) {
    const int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), c) - first.begin()) - 1;
    const int64_t own = c - first[i];
    range(i, chunks[i].begin(own), chunks[i].begin(own + 1));
  });
}
constexpr int kPanelAccStride = 16 * kPanelStreams;
// step(i, count, part) for each step i of a range of `panels` panels: the step reads the
// count (1 to kPanelStreams) panels i + q·part of the range, q < count.
template <class Step>
void for_panel_steps(int64_t panels, Step&& step) {
  const int64_t part = (panels + kPanelStreams - 1) / kPanelStreams;
  for (int64_t i = 0; i < part; ++i) {
    int count = 0;
    while (count < kPanelStreams && count * part + i < panels) ++count;
    step(i, count, part);
  }
}
void panel_dots(int count, const float* xp, int64_t xs, const float* w, int64_t panel_stride, int64_t n, float* out);

// Decoding's dot products, shared by the CPU kernels that read a weight matrix in place for
// a few rows (gemm_f32's few-row path, the LM head of linear_token_logprobs): for each of
// J = few_rows_j(rv) weight rows w[j] and each lane l < 8·rv,
//   out[(j·rv + l/8)·8 + l%8] = Σ_{k<n} w[j][k]·xp[k·xs + l]
// as one FMA chain per output in increasing k (the register-tile paths' order exactly).
// x86 with AVX2 only; xp must be 32-byte aligned with xs a multiple of 8.
constexpr int kFewRowsJ1 = 8, kFewRowsJ2 = 6;
inline int few_rows_j(int rv) { return rv == 1 ? kFewRowsJ1 : kFewRowsJ2; }
void few_rows_dots(int rv, const float* const* w, const float* xp, int64_t xs, int64_t n, float* out);

// The FLOP ceiling this machine reaches with the instructions the GEMM uses on the
// chosen SIMD path (16-wide f32 FMAs on AVX-512, 8-wide on AVX2, else scalar FMAs),
// measured on every pool thread with a register-only loop for about `seconds`.
// GFLOP/s, best of three.
double measure_peak_flops(double seconds = 0.25);

}  // namespace lgrpo
