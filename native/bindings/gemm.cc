// gemm(a f32, b f32, c f32, {transA, transB, m, n, k, lda, ldb, ldc, alpha, beta, weightPanels}) → undefined
//   C[m,n] = alpha·op(A)·op(B) + beta·C, in place. Tensors are flat storage here: the
//   sizes and leading dimensions come from the options (src/ops/gemm.ts derives them).
//   weightPanels (CPU, transB): B copied into panels for this call and the panel path run.
// gemmBf16Weights(x f32 [M,K], w bf16 [N,K], y f32 [M,N], {bf16Activations?}) → undefined: y = x·wᵀ
// (one device); bf16Activations: the AVX512-BF16 dot-product variant (gemm_bf16_dot_cpu);
// weightPanels with it: over bf16 panels of w made for this call (the rollout path).
// measurePeakFlops(seconds?) → GFLOP/s of register-only FMAs on every pool thread.
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "../binding.h"
#include "../simd.h"
#include "../ops/gemm.h"
#include "../ops/gemm_bf16.h"

namespace lgrpo {
namespace {

int64_t size_option(const Napi::Object& opts, const char* key, int64_t fallback) {
  double v = number_option(opts, key, static_cast<double>(fallback));
  if (!(v >= 0 && v <= 9.0e15) || v != std::floor(v))
    throw Error(std::string(key) + ": expected a non-negative integer", Error::Range);
  return static_cast<int64_t>(v);
}

// Checks that a rows×cols matrix with leading dimension ld fits in t and lives where
// `first` (the matrix a) does; returns the number of elements it spans (0 for an empty matrix).
int64_t check_matrix(const TensorRef& t, const char* arg, int64_t rows, int64_t cols, int64_t ld,
                     const TensorRef& first) {
  expect_dtype(t, {DType::F32}, arg);
  expect_same_device(first, t, arg);
  if (ld < cols)
    throw Error(std::string(arg) + ": leading dimension " + std::to_string(ld) + " is smaller than its " +
                    std::to_string(cols) + " columns", Error::Range);
  if (rows == 0 || cols == 0) return 0;
  // In double first: (rows - 1)·ld can overflow int64 for absurd options.
  const double span_d = static_cast<double>(rows - 1) * static_cast<double>(ld) + static_cast<double>(cols);
  const int64_t span = span_d > 9.0e15 ? INT64_MAX : (rows - 1) * ld + cols;
  if (span > t.numel())
    throw Error(std::string(arg) + ": a " + std::to_string(rows) + "×" + std::to_string(cols) + " matrix with leading dimension " +
                    std::to_string(ld) + " needs " + std::to_string(span) + " elements, the tensor has " +
                    std::to_string(t.numel()), Error::Range);
  return span;
}

bool overlaps(const float* p, int64_t n, const float* q, int64_t m) {
  return n > 0 && m > 0 && p < q + m && q < p + n;
}

Napi::Value gemm(const Napi::CallbackInfo& info) {
  TensorRef a = tensor_arg(info, 0, "a");
  TensorRef b = tensor_arg(info, 1, "b");
  TensorRef c = tensor_arg(info, 2, "c");
  Napi::Object opts = options_arg(info, 3);
  GemmArgs g;
  g.trans_a = bool_option(opts, "transA", false);
  g.trans_b = bool_option(opts, "transB", false);
  g.m = size_option(opts, "m", 0);
  g.n = size_option(opts, "n", 0);
  g.k = size_option(opts, "k", 0);
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  g.lda = size_option(opts, "lda", a_cols);
  g.ldb = size_option(opts, "ldb", b_cols);
  g.ldc = size_option(opts, "ldc", g.n);
  const double alpha = number_option(opts, "alpha", 1.0), beta = number_option(opts, "beta", 0.0);
  if (!std::isfinite(alpha)) throw Error("alpha: expected a finite number", Error::Range);
  if (!std::isfinite(beta)) throw Error("beta: expected a finite number", Error::Range);
  g.alpha = static_cast<float>(alpha);
  g.beta = static_cast<float>(beta);
  const int64_t a_span = check_matrix(a, "a", a_rows, a_cols, g.lda, a);
  const int64_t b_span = check_matrix(b, "b", b_rows, b_cols, g.ldb, a);
  const int64_t c_span = check_matrix(c, "c", g.m, g.n, g.ldc, a);
  g.a = static_cast<const float*>(a.data);
  g.b = static_cast<const float*>(b.data);
  g.c = static_cast<float*>(c.data);
  // C is written while A and B are still being read: shared memory would corrupt both.
  if (overlaps(g.c, c_span, g.a, a_span)) throw Error("c: must not share memory with a", Error::Range);
  if (overlaps(g.c, c_span, g.b, b_span)) throw Error("c: must not share memory with b", Error::Range);
  const bool panels = bool_option(opts, "weightPanels", false);
  if (panels && (!g.trans_b || a.device.is_cuda()))
    throw Error("weightPanels: needs transB and CPU tensors", Error::Range);
  if (a.device.is_cuda()) {
    g.device = a.device.index;
    gemm_f32_cuda(g);
  } else if (panels) {
    const size_t bytes = (static_cast<size_t>(panel_floats(g.n, g.k)) * sizeof(float) + 63) / 64 * 64;
    std::unique_ptr<float, decltype(&std::free)> copy(static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64)),
                                                      &std::free);
    if (!copy) throw Error("weightPanels: out of memory for the panel copy", Error::Range);
    pack_panels_cpu(g.b, g.ldb, g.n, g.k, copy.get());
    g.b = copy.get();
    g.b_panels = true;
    gemm_f32(g);
  } else {
    gemm_f32(g);
  }
  return info.Env().Undefined();
}

void expect_rank2(const TensorRef& t, const char* arg) {
  if (t.shape.size() != 2)
    throw Error(std::string(arg) + ": expected a rank-2 tensor, got shape " + shape_string(t.shape), Error::Range);
}

Napi::Value gemm_bf16_weights(const Napi::CallbackInfo& info) {
  TensorRef x = tensor_arg(info, 0, "x");
  TensorRef w = tensor_arg(info, 1, "w");
  TensorRef y = tensor_arg(info, 2, "y");
  expect_dtype(x, {DType::F32}, "x");
  expect_dtype(w, {DType::BF16}, "w");
  expect_dtype(y, {DType::F32}, "y");
  expect_same_device(x, w, "w");
  expect_same_device(x, y, "y");
  expect_rank2(x, "x");
  expect_rank2(w, "w");
  expect_rank2(y, "y");
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  if (w.shape[1] != k)
    throw Error("w: expected [N, " + std::to_string(k) + "] (x has " + std::to_string(k) + " columns), got " +
                    shape_string(w.shape), Error::Range);
  if (y.shape[0] != m || y.shape[1] != n)
    throw Error("y: expected [" + std::to_string(m) + ", " + std::to_string(n) + "], got " + shape_string(y.shape),
                Error::Range);
  if (y.data == x.data && m * k > 0) throw Error("y: must not share memory with x", Error::Range);
  GemmBf16Args a;
  a.x = static_cast<const float*>(x.data);
  a.ldx = k;
  a.w = static_cast<const uint16_t*>(w.data);
  a.ldw = k;
  a.y = static_cast<float*>(y.data);
  a.ldy = n;
  a.m = m;
  a.n = n;
  a.k = k;
  Napi::Object opts = options_arg(info, 3);
  const bool bf16_dot = bool_option(opts, "bf16Activations", false);
  const bool panels = bool_option(opts, "weightPanels", false);
  if (panels && !bf16_dot) throw Error("weightPanels: only with bf16Activations (the panel kernel is the dot-product one)", Error::Range);
  if (bf16_dot && (x.device.is_cuda() || !gemm_bf16_dot_available()))
    throw Error(std::string("bf16Activations: needs the CPU's AVX512-BF16 path (buildInfo().simd is '") +
                    simd_level_name() + "'" + (x.device.is_cuda() ? ", and the tensors are on CUDA)" : ")"),
                Error::Range);
  if (x.device.is_cuda()) {
    a.device = x.device.index;
    gemm_bf16_weights_cuda(a);
  } else if (bf16_dot && panels) {
    // The rollout path: bf16 panels made from W (widened exactly, so they hold W's bits).
    std::vector<float> wide(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n * k; ++i) wide[static_cast<size_t>(i)] = bf16_to_f32(a.w[i]);
    const size_t bytes = (static_cast<size_t>(bf16_panel_elements(n, k)) * sizeof(uint16_t) + 63) / 64 * 64;
    std::unique_ptr<uint16_t, decltype(&std::free)> copy(
        static_cast<uint16_t*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64)), &std::free);
    if (!copy) throw Error("weightPanels: out of memory for the panel copy", Error::Range);
    pack_panels_bf16_cpu(wide.data(), k, n, k, copy.get());
    a.w = copy.get();
    a.w_panels = true;
    gemm_bf16_dot_cpu(a);
  } else if (bf16_dot) {
    gemm_bf16_dot_cpu(a);
  } else {
    gemm_bf16_weights_cpu(a);
  }
  return info.Env().Undefined();
}

Napi::Value measure_peak(const Napi::CallbackInfo& info) {
  double seconds = 0.25;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsNumber()) throw Error("seconds: expected a number", Error::Type);
    seconds = info[0].As<Napi::Number>().DoubleValue();
    if (!(seconds > 0 && seconds <= 10)) throw Error("seconds: expected a number in (0, 10]", Error::Range);
  }
  return Napi::Number::New(info.Env(), measure_peak_flops(seconds));
}

void register_gemm(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New<guarded<gemm>>(env, "gemm"));
  exports.Set("gemmBf16Weights", Napi::Function::New<guarded<gemm_bf16_weights>>(env, "gemmBf16Weights"));
  exports.Set("measurePeakFlops", Napi::Function::New<guarded<measure_peak>>(env, "measurePeakFlops"));
}

static BindingRegistrar registrar(register_gemm);

}  // namespace
}  // namespace lgrpo
