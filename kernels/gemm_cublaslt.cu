// The CUDA GEMM through NVIDIA's cuBLASLt, loaded at run time with dlopen: the build
// machines have no cuBLAS, and the addon must load where it is missing, so nothing links
// against it. The few entry points and constants used are declared here from the
// library's documented C API (cublasLt.h); a missing library or symbol leaves the own
// tiled kernel of gemm.cu in charge, and buildInfo().cudaMatmul says which one runs.
//
// Precision follows PyTorch's torch.set_float32_matmul_precision: the data stay f32 and
//   'highest'  CUBLAS_COMPUTE_32F            f32 products (the default)
//   'high'     CUBLAS_COMPUTE_32F_FAST_TF32  tensor cores, TF32 inputs, f32 accumulate
//   'medium'   CUBLAS_COMPUTE_32F_FAST_16BF  tensor cores, bf16 inputs, f32 accumulate
// LGRPO_CUDA_MATMUL=own forces the own kernel (its results are the CPU twin's bits);
// LGRPO_MATMUL_PRECISION sets the initial precision.
//
// Row-major C = op(A)·op(B) is computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: a
// row-major matrix with leading dimension ld is its transpose in column-major order, so
// no data moves.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "../native/common.h"
#include "../native/cuda_backend.h"
#include "../native/ops/gemm.h"
#include "cuda_check.cuh"

namespace lgrpo {
namespace {

// ---- The part of the cuBLASLt C API used here ------------------------------------------
using LtStatus = int;  // cublasStatus_t: 0 is CUBLAS_STATUS_SUCCESS
using LtHandle = void*;
using LtMatmulDesc = void*;
using LtLayout = void*;
using LtPreference = void*;
struct LtAlgo {
  uint64_t data[8];
};
struct LtHeuristicResult {
  LtAlgo algo;
  size_t workspace_size;
  LtStatus state;
  float waves_count;
  int reserved[4];
};
constexpr int kComputeF32 = 68, kComputeF32FastTf32 = 77, kComputeF32FastBf16 = 75;  // cublasComputeType_t
constexpr int kDataF32 = 0;                                                          // cudaDataType CUDA_R_32F
constexpr int kOpN = 0, kOpT = 1;                                                    // cublasOperation_t
constexpr int kDescTransA = 3, kDescTransB = 4;                                      // cublasLtMatmulDescAttributes_t
constexpr int kPrefMaxWorkspaceBytes = 1;                                            // cublasLtMatmulPreferenceAttributes_t

struct LtApi {
  LtStatus (*create)(LtHandle*);
  LtStatus (*desc_create)(LtMatmulDesc*, int compute, int scale);
  LtStatus (*desc_destroy)(LtMatmulDesc);
  LtStatus (*desc_set)(LtMatmulDesc, int attr, const void* buf, size_t size);
  LtStatus (*layout_create)(LtLayout*, int type, uint64_t rows, uint64_t cols, int64_t ld);
  LtStatus (*layout_destroy)(LtLayout);
  LtStatus (*pref_create)(LtPreference*);
  LtStatus (*pref_destroy)(LtPreference);
  LtStatus (*pref_set)(LtPreference, int attr, const void* buf, size_t size);
  LtStatus (*heuristic)(LtHandle, LtMatmulDesc, LtLayout, LtLayout, LtLayout, LtLayout, LtPreference, int,
                        LtHeuristicResult*, int*);
  LtStatus (*matmul)(LtHandle, LtMatmulDesc, const void* alpha, const void* A, LtLayout, const void* B, LtLayout,
                     const void* beta, const void* C, LtLayout, void* D, LtLayout, const LtAlgo*, void* workspace,
                     size_t workspace_size, cudaStream_t);
  size_t (*version)();
};

struct Loaded {
  bool ok = false;
  std::string description;  // what runs, or why cuBLASLt does not
  LtApi api{};
};

const Loaded& library() {
  static const Loaded loaded = [] {
    Loaded l;
    const char* forced = std::getenv("LGRPO_CUDA_MATMUL");
    if (cuda_emulated()) {
      l.description = "own tiled f32 GEMM (kernels/gemm.cu; the emulated device never uses cuBLASLt)";
      return l;
    }
    if (forced && std::strcmp(forced, "own") == 0) {
      l.description = "own tiled f32 GEMM (kernels/gemm.cu; LGRPO_CUDA_MATMUL=own)";
      return l;
    }
    // Versioned names first: the toolkit's and PyTorch wheels' (nvidia-cublas) sonames.
    void* lib = nullptr;
    std::string tried;
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
      tried += tried.empty() ? name : std::string(", ") + name;
    }
    if (!lib) {
      l.description = "own tiled f32 GEMM (kernels/gemm.cu; cuBLASLt not found: tried " + tried +
                      "; add its directory to LD_LIBRARY_PATH to use it)";
      return l;
    }
    bool missing = false;
    std::string which;
    auto sym = [&](auto& fn, const char* name) {
      void* p = dlsym(lib, name);
      if (!p) {
        missing = true;
        which = name;
      }
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    LtApi& a = l.api;
    sym(a.create, "cublasLtCreate");
    sym(a.desc_create, "cublasLtMatmulDescCreate");
    sym(a.desc_destroy, "cublasLtMatmulDescDestroy");
    sym(a.desc_set, "cublasLtMatmulDescSetAttribute");
    sym(a.layout_create, "cublasLtMatrixLayoutCreate");
    sym(a.layout_destroy, "cublasLtMatrixLayoutDestroy");
    sym(a.pref_create, "cublasLtMatmulPreferenceCreate");
    sym(a.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    sym(a.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    sym(a.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(a.matmul, "cublasLtMatmul");
    sym(a.version, "cublasLtGetVersion");
    if (missing) {
      l.description = "own tiled f32 GEMM (kernels/gemm.cu; the cuBLASLt found lacks " + which + ")";
      return l;
    }
    l.ok = true;
    l.description = "cuBLASLt " + std::to_string(a.version()) + " (dlopen)";
    return l;
  }();
  return loaded;
}

std::mutex state_mutex;
std::map<int, LtHandle> handles;        // per device
std::map<int, void*> workspaces;        // per device, kWorkspaceBytes each
constexpr size_t kWorkspaceBytes = size_t{32} << 20;
int precision_compute = [] {
  const char* p = std::getenv("LGRPO_MATMUL_PRECISION");
  if (p && std::strcmp(p, "high") == 0) return kComputeF32FastTf32;
  if (p && std::strcmp(p, "medium") == 0) return kComputeF32FastBf16;
  return kComputeF32;
}();

// The algorithm cuBLASLt's heuristic picks, per problem: asking each call costs more than
// a small GEMM.
using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int, int, int64_t, int64_t, int64_t>;
std::map<Key, LtAlgo> algos;
std::map<Key, bool> unsupported;

void check_lt(LtStatus s, const char* what) {
  if (s != 0) throw Error(std::string("cuBLASLt ") + what + " failed with status " + std::to_string(s));
}

struct Layouts {
  const LtApi& api;
  LtMatmulDesc desc = nullptr;
  LtLayout a = nullptr, b = nullptr, c = nullptr;
  ~Layouts() {
    if (a) api.layout_destroy(a);
    if (b) api.layout_destroy(b);
    if (c) api.layout_destroy(c);
    if (desc) api.desc_destroy(desc);
  }
};

}  // namespace

bool cuda_matmul_is_cublaslt() { return library().ok; }

std::string cuda_matmul_description() {
  const Loaded& l = library();
  if (!l.ok) return l.description;
  const char* p = precision_compute == kComputeF32 ? "highest" : precision_compute == kComputeF32FastTf32 ? "high" : "medium";
  return l.description + ", precision '" + p + "'";
}

void set_cuda_matmul_precision(const std::string& precision) {
  std::lock_guard<std::mutex> lock(state_mutex);
  if (precision == "highest") precision_compute = kComputeF32;
  else if (precision == "high") precision_compute = kComputeF32FastTf32;
  else if (precision == "medium") precision_compute = kComputeF32FastBf16;
  else throw Error("precision: expected 'highest', 'high' or 'medium', got '" + precision + "'", Error::Range);
  algos.clear();
  unsupported.clear();
}

// C = alpha·op(A)·op(B) + beta·C through cuBLASLt; false when cuBLASLt is not available
// or declines the problem (the caller runs its own kernel then).
bool gemm_f32_cublaslt(const GemmArgs& g) {
  const Loaded& l = library();
  if (!l.ok || g.m <= 0 || g.n <= 0 || g.k <= 0) return false;
  const LtApi& api = l.api;
  std::lock_guard<std::mutex> lock(state_mutex);
  LtHandle& handle = handles[g.device];
  if (!handle) check_lt(api.create(&handle), "cublasLtCreate");
  void*& workspace = workspaces[g.device];
  if (!workspace) workspace = cuda_alloc(kWorkspaceBytes, g.device);

  // Column-major view: D (N×M, ldc) = opA'(B) · opB'(A).
  const int op_first = g.trans_b ? kOpT : kOpN, op_second = g.trans_a ? kOpT : kOpN;
  Layouts lt{api};
  check_lt(api.desc_create(&lt.desc, precision_compute, kDataF32), "cublasLtMatmulDescCreate");
  check_lt(api.desc_set(lt.desc, kDescTransA, &op_first, sizeof op_first), "set TRANSA");
  check_lt(api.desc_set(lt.desc, kDescTransB, &op_second, sizeof op_second), "set TRANSB");
  check_lt(api.layout_create(&lt.a, kDataF32, g.trans_b ? g.k : g.n, g.trans_b ? g.n : g.k, g.ldb), "layout B");
  check_lt(api.layout_create(&lt.b, kDataF32, g.trans_a ? g.m : g.k, g.trans_a ? g.k : g.m, g.lda), "layout A");
  check_lt(api.layout_create(&lt.c, kDataF32, g.n, g.m, g.ldc), "layout C");

  // Alignment changes which algorithms apply: it is part of the key.
  const auto align = [](const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % 256); };
  const Key key{precision_compute, (g.trans_a ? 2 : 0) | (g.trans_b ? 1 : 0), g.m, g.n, g.k, g.device,
                static_cast<int>(align(g.a) | align(g.b) << 8 | align(g.c) << 16), g.lda, g.ldb, g.ldc};
  if (unsupported.count(key)) return false;
  auto found = algos.find(key);
  if (found == algos.end()) {
    LtPreference pref = nullptr;
    check_lt(api.pref_create(&pref), "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = kWorkspaceBytes;
    LtHeuristicResult result{};
    int count = 0;
    LtStatus s = api.pref_set(pref, kPrefMaxWorkspaceBytes, &ws, sizeof ws);
    if (s == 0) s = api.heuristic(handle, lt.desc, lt.a, lt.b, lt.c, lt.c, pref, 1, &result, &count);
    api.pref_destroy(pref);
    if (s != 0 || count == 0 || result.state != 0) {
      unsupported[key] = true;
      return false;
    }
    found = algos.emplace(key, result.algo).first;
  }
  DeviceGuard guard(g.device);
  const float alpha = g.alpha, beta = g.beta;
  check_lt(api.matmul(handle, lt.desc, &alpha, g.b, lt.a, g.a, lt.b, &beta, g.c, lt.c, g.c, lt.c, &found->second,
                      workspace, kWorkspaceBytes, nullptr),
           "cublasLtMatmul");
  return true;
}

}  // namespace lgrpo
