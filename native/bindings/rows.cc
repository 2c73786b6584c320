// gatherRows(src f32[R, D], index i32[N] (host)) → f32[N, D] on src's device
// scatterRows(src f32[N, D], index i32[N] (host), rows R) → f32[R, D], zero but the scattered rows
#include <cstring>
#include <vector>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/rows.h"

namespace lgrpo {
namespace {

std::vector<int64_t> host_index(const Napi::CallbackInfo& info, int64_t limit, bool allow_negative) {
  const TensorRef index = tensor_arg(info, 1, "index");
  expect_dtype(index, {DType::I32}, "index");
  expect_rank(index, 1, "index");
  if (index.device.is_cuda()) throw Error("index: row indices are host data; pass a CPU tensor", Error::Type);
  const auto* p = static_cast<const int32_t*>(index.data);
  std::vector<int64_t> out(static_cast<size_t>(index.shape[0]));
  for (size_t i = 0; i < out.size(); ++i) {
    if (p[i] >= limit || (p[i] < 0 && !allow_negative))
      throw Error("index: row " + std::to_string(p[i]) + " at index " + std::to_string(i) + " is outside [0, " +
                      std::to_string(limit) + ")",
                  Error::Range);
    out[i] = p[i];
  }
  return out;
}

Napi::Value gather_rows(const Napi::CallbackInfo& info) {
  const TensorRef src = tensor_arg(info, 0, "src");
  expect_dtype(src, {DType::F32}, "src");
  expect_rank(src, 2, "src");
  const std::vector<int64_t> index = host_index(info, src.shape[0], false);
  void* data = nullptr;
  Napi::Object out = allocate_tensor(info.Env(), {static_cast<int64_t>(index.size()), src.shape[1]}, DType::F32, src.device, &data);
  const RowsArgs a{static_cast<const float*>(src.data), static_cast<float*>(data), src.shape[1], index.data(),
                   static_cast<int64_t>(index.size()), src.device.index};
  if (src.device.is_cuda()) gather_rows_cuda(a);
  else gather_rows_cpu(a);
  return out;
}

Napi::Value scatter_rows(const Napi::CallbackInfo& info) {
  const TensorRef src = tensor_arg(info, 0, "src");
  expect_dtype(src, {DType::F32}, "src");
  expect_rank(src, 2, "src");
  if (info.Length() < 3 || !info[2].IsNumber()) throw Error("rows: expected the number of destination rows", Error::Type);
  const double rows = info[2].As<Napi::Number>().DoubleValue();
  if (!(rows >= 0) || rows > 9.0e15 || rows != static_cast<double>(static_cast<int64_t>(rows)))
    throw Error("rows: expected a non-negative integer", Error::Range);
  const std::vector<int64_t> index = host_index(info, static_cast<int64_t>(rows), true);
  if (static_cast<int64_t>(index.size()) != src.shape[0])
    throw Error("index: holds " + std::to_string(index.size()) + " rows but src has " + std::to_string(src.shape[0]),
                Error::Range);
  void* data = nullptr;
  Napi::Object out = allocate_tensor(info.Env(), {static_cast<int64_t>(rows), src.shape[1]}, DType::F32, src.device, &data);
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(src.shape[1]) * sizeof(float);
  if (src.device.is_cuda()) cuda_memset_zero(data, bytes, src.device.index);
  else if (bytes) std::memset(data, 0, bytes);
  const RowsArgs a{static_cast<const float*>(src.data), static_cast<float*>(data), src.shape[1], index.data(),
                   static_cast<int64_t>(index.size()), src.device.index};
  if (src.device.is_cuda()) scatter_rows_cuda(a);
  else scatter_rows_cpu(a);
  return out;
}

void register_rows(Napi::Env env, Napi::Object exports) {
  exports.Set("gatherRows", Napi::Function::New<guarded<gather_rows>>(env, "gatherRows"));
  exports.Set("scatterRows", Napi::Function::New<guarded<scatter_rows>>(env, "scatterRows"));
}

BindingRegistrar registrar(register_rows);

}  // namespace
}  // namespace lgrpo
