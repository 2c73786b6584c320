// groupAdvantages(rewards f32[B], groupIds i32[B], {groups, mode, eps, std})
//   → {advantages f32[B], groupMean f32[G], groupStd f32[G], degenerate u8[G]}
#include "../binding.h"
#include "../ops/group_advantages.h"

namespace lgrpo {
namespace {

AdvantageMode parse_mode(const std::string& s) {
  if (s == "std") return AdvantageMode::Std;
  if (s == "mean") return AdvantageMode::Mean;
  if (s == "batch") return AdvantageMode::Batch;
  if (s == "rloo") return AdvantageMode::Rloo;
  throw Error("mode: expected 'std', 'mean', 'batch' or 'rloo', got '" + s + "'", Error::Type);
}

Napi::Value group_advantages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef rewards = tensor_arg(info, 0, "rewards");
  TensorRef ids = tensor_arg(info, 1, "groupIds");
  Napi::Object opts = options_arg(info, 2);
  expect_dtype(rewards, {DType::F32}, "rewards");
  expect_rank(rewards, 1, "rewards");
  expect_dtype(ids, {DType::I32}, "groupIds");
  expect_shape(ids, {rewards.shape[0]}, "groupIds");
  expect_same_device(rewards, ids, "groupIds");
  double groups = number_option(opts, "groups", -1);
  if (!(groups >= 0 && groups <= 2147483647.0) || groups != static_cast<int32_t>(groups))
    throw Error("groups: expected a non-negative integer (one more than the largest group id)", Error::Range);

  GroupAdvantagesArgs a{};
  a.rewards = static_cast<const float*>(rewards.data);
  a.group_ids = static_cast<const int32_t*>(ids.data);
  a.rows = rewards.shape[0];
  a.groups = static_cast<int32_t>(groups);
  a.mode = parse_mode(string_option(opts, "mode", "std"));
  a.eps = static_cast<float>(number_option(opts, "eps", 1e-6));
  std::string std_kind = string_option(opts, "std", "unbiased");
  if (std_kind != "unbiased" && std_kind != "population")
    throw Error("std: expected 'unbiased' or 'population', got '" + std_kind + "'", Error::Type);
  a.unbiased = std_kind == "unbiased";

  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("advantages", allocate_tensor(env, {a.rows}, DType::F32, rewards.device, &data));
  a.advantages = static_cast<float*>(data);
  out.Set("groupMean", allocate_tensor(env, {a.groups}, DType::F32, rewards.device, &data));
  a.group_mean = static_cast<float*>(data);
  out.Set("groupStd", allocate_tensor(env, {a.groups}, DType::F32, rewards.device, &data));
  a.group_std = static_cast<float*>(data);
  out.Set("degenerate", allocate_tensor(env, {a.groups}, DType::U8, rewards.device, &data));
  a.degenerate = static_cast<uint8_t*>(data);

  a.device = rewards.device.index;
  if (rewards.device.is_cuda()) group_advantages_cuda(a);
  else group_advantages_cpu(a);
  return out;
}

}  // namespace

void register_group_advantages(Napi::Env env, Napi::Object exports) {
  exports.Set("groupAdvantages", Napi::Function::New<guarded<group_advantages>>(env, "groupAdvantages"));
}

}  // namespace lgrpo
