// y = x·Wᵀ with the weight W in bf16 and x, y in f32: the GEMM of bf16 rollouts (generate
// with precision bf16 reads a bf16 copy of the weights, half the bytes of f32). Decoding
// reads every weight once per step for a handful of rows, so the kernel streams W once per
// call and keeps all of x close (L1/L2), for any number of rows.
//
// Arithmetic (fixed, so y is a pure function of x and W, the same bits on the AVX2 and
// AVX-512 paths and for any thread count, and row i of y never depends on other rows):
// K is cut into blocks of 32. Lane l (0..15) of each (i, j) sums, block after block, the
// products of k = 32b + 2l and then k = 32b + 2l + 1 in one FMA chain (the products
// x·w of a bf16 w are exact only in f64, so each FMA rounds once). The 16 lane sums are
// added pairwise — lane l with l+8, then l with l+4, l+2, l+1 — and the K mod 32 tail
// is added after, one FMA per k in increasing order. bf16 weights widen exactly to f32;
// only the copy's rounding (round to nearest even, f32_to_bf16) separates the result from
// the f32 GEMM.
// The CUDA twin (kernels/gemm_bf16.cu) runs the same order: the same bits on the device.
#pragma once

#include <cstdint>

namespace lgrpo {

struct GemmBf16Args {
  const float* x = nullptr;     // [m, k], row stride ldx
  int64_t ldx = 0;
  const uint16_t* w = nullptr;  // [n, k] bf16 bits, row stride ldw
  int64_t ldw = 0;
  float* y = nullptr;           // [m, n], row stride ldy; overwritten (never read)
  int64_t ldy = 0;
  int64_t m = 0, n = 0, k = 0;
  int device = 0;               // CUDA twin: the device every pointer lives on (CPU twin: unused)
  // gemm_bf16_dot_cpu only: w holds pack_panels_bf16_cpu's panels of W (ldw ignored); the
  // same arithmetic and bits as from W's rows.
  bool w_panels = false;
};

// bf16 weight panels for the dot-product variant (rollouts on AVX512-BF16 CPUs): W [N, K]
// rounded as f32_to_bf16, in 16-row panels of k pairs: the pair (W[16p + j][2t],
// W[16p + j][2t + 1]) as one 32-bit lane (even k in the low half) at 32-bit index
// (p·T + t)·16 + j, T = bf16_panel_pairs(K) (whole quads of k); zeros past K and past N.
// One 64-byte load is then 16 outputs × 2 k of one vdpbf16ps, x's pair broadcast to it.
inline int64_t bf16_panel_pairs(int64_t k) { return (k + 3) / 4 * 2; }
inline int64_t bf16_panel_elements(int64_t n, int64_t k) { return (n + 15) / 16 * 16 * bf16_panel_pairs(k) * 2; }
void pack_panels_bf16_cpu(const float* w, int64_t ldw, int64_t n, int64_t k, uint16_t* panels);

void gemm_bf16_weights_cpu(const GemmBf16Args& a);

// The bf16 dot-product variant (CPUs with AVX512-BF16, chosen at run time: simd path
// 'avx512+bf16'): x is rounded to bf16 too (round to nearest even, as f32_to_bf16), and
// each y[i][j] is one chain of vdpbf16ps steps, from 0, over the pairs of k (2t, 2t+1) for
// t = 0 .. bf16_panel_pairs(K) − 1 in increasing t, a step being
//   acc ← (acc + x[2t+1]·w[2t+1]) + x[2t]·w[2t]
// with the products exact (bf16 × bf16 fits f32) and each addition rounded to nearest even,
// subnormal inputs and outputs flushed to zero — what the instruction does; k past K counts
// as x = w = 0. So y is a pure function of (x, W) on such a CPU, row i never
// depends on other rows, and no result depends on the thread count; the bits differ from
// gemm_bf16_weights_cpu's (f32 activations) and from the AVX2 path's. Throws lgrpo::Error
// (Range) when the chosen SIMD path lacks AVX512-BF16.
bool gemm_bf16_dot_available();
// With a.w_panels, W comes from pack_panels_bf16_cpu: a panel's 16 outputs in the lanes of
// one accumulator per row, the same steps per output, so the same bits.
void gemm_bf16_dot_cpu(const GemmBf16Args& a);
// What bf16 rollouts run (the engine's CPU backend): the dot-product variant where the
// chosen path has AVX512-BF16, otherwise gemm_bf16_weights_cpu.
void gemm_bf16_rollout_cpu(const GemmBf16Args& a);
// gemm_bf16_rollout_cpu for each of a[0..count), the same bits; products that share x (q,
// k and v; gate and up) over panels on the AVX512-BF16 path run as one pool job, x packed
// once and their chunks claimed as one list: one join instead of one per product.
void gemm_bf16_rollout_group_cpu(const GemmBf16Args* a, int count);
void gemm_bf16_weights_cuda(const GemmBf16Args& a);

// dst[i] = f32_to_bf16(src[i]) (round to nearest even; NaN stays NaN), over the pool.
void f32_to_bf16_cpu(const float* src, uint16_t* dst, int64_t n);
void f32_to_bf16_cuda(const float* src, uint16_t* dst, int64_t n, int device);

}  // namespace lgrpo
