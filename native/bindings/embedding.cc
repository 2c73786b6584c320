// embeddingForward(table f32[V, D], ids i32[...]) → out f32[..., D]
// embeddingBackward(ids i32[...], dout f32[..., D], {vocab}, dtable?) → dtable f32[V, D]
//   dtable, when given, is accumulated into in place (+=) and returned; else a zeroed
//   [vocab, D] one is (vocab then comes from the options).
#include <algorithm>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/embedding.h"

namespace lgrpo {
namespace {

Napi::Value embedding_forward(const Napi::CallbackInfo& info) {
  TensorRef table = tensor_arg(info, 0, "table");
  TensorRef ids = tensor_arg(info, 1, "ids");
  expect_dtype(table, {DType::F32}, "table");
  expect_rank(table, 2, "table");
  expect_dtype(ids, {DType::I32}, "ids");
  expect_same_device(table, ids, "ids");
  EmbeddingForwardArgs a{};
  a.table = static_cast<const float*>(table.data);
  a.vocab = table.shape[0];
  a.dim = table.shape[1];
  a.ids = static_cast<const int32_t*>(ids.data);
  a.n = ids.numel();
  std::vector<int64_t> shape = ids.shape;
  shape.push_back(a.dim);
  void* data;
  Napi::Object out = allocate_tensor(info.Env(), shape, DType::F32, table.device, &data);
  a.out = static_cast<float*>(data);
  if (table.device.is_cuda()) {
    a.device = table.device.index;
    embedding_forward_cuda(a);
  } else {
    embedding_forward_cpu(a);
  }
  return out;
}

Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  TensorRef ids = tensor_arg(info, 0, "ids");
  TensorRef dout = tensor_arg(info, 1, "dout");
  expect_dtype(ids, {DType::I32}, "ids");
  expect_dtype(dout, {DType::F32}, "dout");
  expect_same_device(ids, dout, "dout");
  if (dout.shape.size() != ids.shape.size() + 1 ||
      !std::equal(ids.shape.begin(), ids.shape.end(), dout.shape.begin()))
    throw Error("dout: expected shape " + shape_string(ids.shape) + " + [dim] (the shape of ids plus the embedding dim), got " +
                    shape_string(dout.shape), Error::Range);
  Napi::Object opts = options_arg(info, 2);
  EmbeddingBackwardArgs a{};
  a.ids = static_cast<const int32_t*>(ids.data);
  a.dout = static_cast<const float*>(dout.data);
  a.n = ids.numel();
  a.dim = dout.shape.back();
  Napi::Value result;
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    TensorRef dt = unpack_tensor(info[3], "dtable");
    expect_dtype(dt, {DType::F32}, "dtable");
    expect_rank(dt, 2, "dtable");
    expect_same_device(ids, dt, "dtable");
    if (dt.shape[1] != a.dim)
      throw Error("dtable: expected " + std::to_string(a.dim) + " columns (the last dim of dout), got shape " +
                      shape_string(dt.shape), Error::Range);
    if (has_option(opts, "vocab") && number_option(opts, "vocab", 0) != static_cast<double>(dt.shape[0]))
      throw Error("vocab: does not match dtable's " + std::to_string(dt.shape[0]) + " rows", Error::Range);
    a.vocab = dt.shape[0];
    a.dtable = static_cast<float*>(dt.data);
    result = info[3];
  } else {
    double vocab = number_option(opts, "vocab", -1);
    if (!(vocab >= 1 && vocab <= 2147483647.0) || vocab != static_cast<double>(static_cast<int64_t>(vocab)))
      throw Error("vocab: expected a positive integer (the number of table rows)", Error::Range);
    a.vocab = static_cast<int64_t>(vocab);
    void* data;
    result = allocate_tensor(info.Env(), {a.vocab, a.dim}, DType::F32, dout.device, &data);
    a.dtable = static_cast<float*>(data);
    if (dout.device.is_cuda())
      cuda_memset_zero(a.dtable, sizeof(float) * static_cast<size_t>(a.vocab * a.dim), dout.device.index);
    else
      std::fill(a.dtable, a.dtable + a.vocab * a.dim, 0.0f);
  }
  if (ids.device.is_cuda()) {
    a.device = ids.device.index;
    embedding_backward_cuda(a);
  } else {
    embedding_backward_cpu(a);
  }
  return result;
}

}  // namespace

void register_embedding(Napi::Env env, Napi::Object exports) {
  exports.Set("embeddingForward", Napi::Function::New<guarded<embedding_forward>>(env, "embeddingForward"));
  exports.Set("embeddingBackward", Napi::Function::New<guarded<embedding_backward>>(env, "embeddingBackward"));
}

static BindingRegistrar registrar(register_embedding);

}  // namespace lgrpo
