// lambdaWeights(lengths i32|f32[B], groupIds i32[B], {lambda, r, groups})
//   → {weights f32[B], dWeightsDLambda f32[B]}
#include <cmath>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/lambda_weights.h"

namespace lgrpo {
namespace {

Napi::Value lambda_weights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef lengths = tensor_arg(info, 0, "lengths");
  TensorRef ids = tensor_arg(info, 1, "groupIds");
  Napi::Object opts = options_arg(info, 2);
  expect_dtype(lengths, {DType::F32, DType::I32}, "lengths");
  expect_rank(lengths, 1, "lengths");
  expect_dtype(ids, {DType::I32}, "groupIds");
  expect_shape(ids, {lengths.shape[0]}, "groupIds");
  expect_same_device(lengths, ids, "groupIds");
  if (!has_option(opts, "lambda")) throw Error("lambda: required (a finite number; 0 gives all weights 1)", Error::Type);
  const double lambda = number_option(opts, "lambda", 0.0);
  if (!std::isfinite(lambda)) throw Error("lambda: expected a finite number", Error::Type);
  const double r = number_option(opts, "r", 1.0 / 9.0);
  if (!std::isfinite(r) || r < 0) throw Error("r: expected a finite number >= 0", Error::Range);
  const double groups = number_option(opts, "groups", -1);
  if (!(groups >= 0 && groups <= 2147483647.0) || groups != static_cast<int32_t>(groups))
    throw Error("groups: expected a non-negative integer (one more than the largest group id)", Error::Range);

  LambdaWeightsArgs a{};
  a.lengths = lengths.data;
  a.lengths_dtype = lengths.dtype;
  a.group_ids = static_cast<const int32_t*>(ids.data);
  a.rows = lengths.shape[0];
  a.groups = static_cast<int32_t>(groups);
  a.lambda = lambda;
  a.r = r;
  a.device = lengths.device.index;

  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("weights", allocate_tensor(env, {a.rows}, DType::F32, lengths.device, &data));
  a.weights = static_cast<float*>(data);
  out.Set("dWeightsDLambda", allocate_tensor(env, {a.rows}, DType::F32, lengths.device, &data));
  a.d_weights_d_lambda = static_cast<float*>(data);

  if (lengths.device.is_cuda()) lambda_weights_cuda(a);
  else lambda_weights_cpu(a);
  return out;
}

}  // namespace

void register_lambda_weights(Napi::Env env, Napi::Object exports) {
  exports.Set("lambdaWeights", Napi::Function::New<guarded<lambda_weights>>(env, "lambdaWeights"));
}

}  // namespace lgrpo
