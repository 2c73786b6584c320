// grpoLoss(logprobs f32[B,T], oldLogprobs f32[B,T], refLogprobs f32[B,T] | null,
//          advantages f32[B], mask u8|f32[B,T], groupIds i32[B],
//          {aggregation, lambda, r, epsLow, epsHigh, dualClip, beta, maxLength, groups,
//           weights?, dWeightsDLambda?, normalizer?})
//   → {loss, gradLogprobs f32[B,T], gradLambda, seqLoss f32[B], weights f32[B],
//      dWeightsDLambda f32[B], lengths f32[B], normalizer, stats}
//
// One orchestration for both devices; only the two leaves (mask lengths, token pass)
// differ. Everything of length B crosses to the host: the weights need whole groups and
// the fold is a handful of flops per row, so there is nothing to gain on the device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../binding.h"
#include "../cuda_backend.h"
#include "../ops/grpo_loss.h"

namespace lgrpo {
namespace {

// Device scratch freed on every exit path, exceptions included.
struct DeviceBuffer {
  void* ptr = nullptr;
  int device = 0;
  DeviceBuffer(size_t bytes, int dev) : ptr(cuda_alloc(bytes == 0 ? 1 : bytes, dev)), device(dev) {}
  ~DeviceBuffer() { cuda_free(ptr, device); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

template <class T>
std::vector<T> to_host(const TensorRef& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  if (v.empty()) return v;
  if (t.device.is_cuda()) cuda_copy_to_host(v.data(), t.data, t.bytes(), t.device.index);
  else std::memcpy(v.data(), t.data, t.bytes());
  return v;
}

// A length-B f32 output on `device`, filled from a host vector.
Napi::Object small_output(Napi::Env env, const std::vector<float>& host, const Device& device) {
  void* data;
  Napi::Object t = allocate_tensor(env, {static_cast<int64_t>(host.size())}, DType::F32, device, &data);
  if (host.empty()) return t;
  if (device.is_cuda()) cuda_copy_to_device(data, host.data(), host.size() * sizeof(float), device.index);
  else std::memcpy(data, host.data(), host.size() * sizeof(float));
  return t;
}

void check_finite(const std::vector<float>& v, const char* arg) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw Error(std::string(arg) + ": element " + std::to_string(i) + " is " + std::to_string(v[i]) +
                      "; inputs must be finite", Error::Range);
}

Aggregation parse_aggregation(const Napi::Object& opts) {
  if (!has_option(opts, "aggregation"))
    throw Error("aggregation: required ('grpo', 'dapo', 'dr_grpo' or 'lambda')", Error::Type);
  const std::string s = string_option(opts, "aggregation", "");
  if (s == "grpo") return Aggregation::Grpo;
  if (s == "dapo") return Aggregation::Dapo;
  if (s == "dr_grpo") return Aggregation::DrGrpo;
  if (s == "lambda") return Aggregation::Lambda;
  throw Error("aggregation: expected 'grpo', 'dapo', 'dr_grpo' or 'lambda', got '" + s + "'", Error::Type);
}

double finite_option(const Napi::Object& opts, const char* key, double fallback, double min, bool min_exclusive) {
  const double v = number_option(opts, key, fallback);
  if (!std::isfinite(v)) throw Error(std::string(key) + ": expected a finite number", Error::Type);
  if (min_exclusive ? !(v > min) : !(v >= min))
    throw Error(std::string(key) + ": expected " + (min_exclusive ? "> " : ">= ") + std::to_string(min) + ", got " +
                    std::to_string(v), Error::Range);
  return v;
}

// A small per-row tensor passed in the options: f32[B], on the CPU or the inputs' device.
TensorRef row_option(const Napi::Object& opts, const char* key, int64_t rows, const Device& device) {
  TensorRef t = unpack_tensor(opts.Get(key), key);
  expect_dtype(t, {DType::F32}, key);
  expect_shape(t, {rows}, key);
  if (t.device.is_cuda() && t.device != device)
    throw Error(std::string(key) + ": is on " + device_name(t.device) + " but the inputs are on " + device_name(device),
                Error::Type);
  return t;
}

Napi::Value grpo_loss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef logprobs = tensor_arg(info, 0, "logprobs");
  TensorRef old_logprobs = tensor_arg(info, 1, "oldLogprobs");
  const bool has_ref = info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull();
  TensorRef ref_logprobs = has_ref ? tensor_arg(info, 2, "refLogprobs") : TensorRef{};
  TensorRef advantages = tensor_arg(info, 3, "advantages");
  TensorRef mask = tensor_arg(info, 4, "mask");
  TensorRef ids = tensor_arg(info, 5, "groupIds");
  Napi::Object opts = options_arg(info, 6);

  expect_dtype(logprobs, {DType::F32}, "logprobs");
  expect_rank(logprobs, 2, "logprobs");
  const int64_t B = logprobs.shape[0], T = logprobs.shape[1];
  expect_dtype(old_logprobs, {DType::F32}, "oldLogprobs");
  expect_shape(old_logprobs, {B, T}, "oldLogprobs");
  expect_same_device(logprobs, old_logprobs, "oldLogprobs");
  if (has_ref) {
    expect_dtype(ref_logprobs, {DType::F32}, "refLogprobs");
    expect_shape(ref_logprobs, {B, T}, "refLogprobs");
    expect_same_device(logprobs, ref_logprobs, "refLogprobs");
  }
  expect_dtype(advantages, {DType::F32}, "advantages");
  expect_shape(advantages, {B}, "advantages");
  expect_same_device(logprobs, advantages, "advantages");
  expect_dtype(mask, {DType::U8, DType::F32}, "mask");
  expect_shape(mask, {B, T}, "mask");
  expect_same_device(logprobs, mask, "mask");
  expect_dtype(ids, {DType::I32}, "groupIds");
  expect_shape(ids, {B}, "groupIds");
  expect_same_device(logprobs, ids, "groupIds");

  const Aggregation mode = parse_aggregation(opts);
  const double lambda = number_option(opts, "lambda", 0.0);
  if (!std::isfinite(lambda)) throw Error("lambda: expected a finite number", Error::Type);
  const double r = finite_option(opts, "r", 1.0 / 9.0, 0.0, false);
  const double eps_low = finite_option(opts, "epsLow", 0.2, 0.0, false);
  const double eps_high = finite_option(opts, "epsHigh", 0.2, 0.0, false);
  const double dual_clip = has_option(opts, "dualClip") ? finite_option(opts, "dualClip", 0.0, 1.0, true) : 0.0;
  const double beta = finite_option(opts, "beta", 0.0, 0.0, false);
  if (beta > 0 && !has_ref) throw Error("refLogprobs: required when beta > 0", Error::Type);
  const double max_length = finite_option(opts, "maxLength", static_cast<double>(T), 0.0, true);
  const bool has_weights = has_option(opts, "weights"), has_dw = has_option(opts, "dWeightsDLambda");
  const bool has_normalizer = has_option(opts, "normalizer");
  if (has_dw && mode != Aggregation::Lambda)
    throw Error("dWeightsDLambda: only used with aggregation 'lambda'", Error::Type);
  if (has_dw && !has_weights) throw Error("dWeightsDLambda: pass it together with weights", Error::Type);
  if (has_weights && mode == Aggregation::Lambda && !has_dw)
    throw Error("dWeightsDLambda: required with weights in 'lambda' mode (it carries the gradient of lambda)",
                Error::Type);

  const Device device = logprobs.device;
  const bool cuda = device.is_cuda();

  // Length-B inputs on the host.
  std::vector<int32_t> ids_h = to_host<int32_t>(ids);
  std::vector<float> adv_h = to_host<float>(advantages);
  int32_t groups = 0;
  for (int64_t i = 0; i < B; ++i) {
    if (ids_h[i] < 0)
      throw Error("groupIds: group id " + std::to_string(ids_h[i]) + " at index " + std::to_string(i) + " is negative",
                  Error::Range);
    groups = std::max(groups, ids_h[i] + 1);
  }
  if (has_option(opts, "groups")) {
    const double g = number_option(opts, "groups", 0);
    if (!(g >= 0 && g <= 2147483647.0) || g != static_cast<int32_t>(g))
      throw Error("groups: expected a non-negative integer (one more than the largest group id)", Error::Range);
    for (int64_t i = 0; i < B; ++i)
      if (ids_h[i] >= g)
        throw Error("groupIds: group id " + std::to_string(ids_h[i]) + " at index " + std::to_string(i) +
                        " is outside [0, " + std::to_string(static_cast<int32_t>(g)) + ")", Error::Range);
    groups = static_cast<int32_t>(g);
  }
  check_finite(adv_h, "advantages");
  std::vector<float> weights_given, dw_given;
  if (has_weights) {
    weights_given = to_host<float>(row_option(opts, "weights", B, device));
    check_finite(weights_given, "weights");
  }
  if (has_dw) {
    dw_given = to_host<float>(row_option(opts, "dWeightsDLambda", B, device));
    check_finite(dw_given, "dWeightsDLambda");
  }
  double normalizer_given = has_normalizer ? finite_option(opts, "normalizer", 1.0, 0.0, true) : 0.0;

  // 1. lengths (the leaf also rejects mask values other than 0/1).
  std::vector<float> lengths(static_cast<size_t>(B));
  if (cuda) {
    DeviceBuffer d_lengths(B * sizeof(float), device.index);
    mask_lengths_cuda(mask.data, mask.dtype, B, T, static_cast<float*>(d_lengths.ptr), device.index);
    if (B > 0) cuda_copy_to_host(lengths.data(), d_lengths.ptr, B * sizeof(float), device.index);
  } else {
    mask_lengths_cpu(mask.data, mask.dtype, B, T, lengths.data());
  }

  // 2. weights and normaliser for the whole step, unless the caller brought them.
  std::vector<float> weights(static_cast<size_t>(B)), dw(static_cast<size_t>(B));
  double normalizer = 1;
  // Given λ weights need no recomputation (which could only fail on a λ the caller does
  // not use); the λ normaliser is DAPO's, the token count.
  const Aggregation weight_mode = has_weights && mode == Aggregation::Lambda ? Aggregation::Dapo : mode;
  aggregation_weights(weight_mode, lengths.data(), ids_h.data(), B, groups, lambda, r, max_length, weights.data(), dw.data(), &normalizer);
  if (has_weights) weights = weights_given;
  if (has_dw) dw = dw_given;
  if (has_normalizer) normalizer = normalizer_given;

  // 3. the per-row factor on token gradients.
  std::vector<float> token_scale(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    token_scale[i] = static_cast<float>(static_cast<double>(weights[i]) / normalizer);
    // A tiny normaliser (1e-300 was accepted) made w_i/N infinite in f32: every gradient
    // of the row became ±Inf or NaN.
    if (!std::isfinite(token_scale[i]))
      throw Error("normalizer: " + std::to_string(normalizer) + " makes the per-token scale w_i/N of row " + std::to_string(i) +
                      " overflow f32 (w_i = " + std::to_string(weights[i]) + "); pass the step's token or row count", Error::Range);
  }

  // 4. the token pass.
  void* grad_data;
  Napi::Object grad = allocate_tensor(env, {B, T}, DType::F32, device, &grad_data);
  std::vector<double> row_stats(static_cast<size_t>(B) * kRowStatCount);
  GrpoTokenPassArgs a{};
  a.logprobs = static_cast<const float*>(logprobs.data);
  a.old_logprobs = static_cast<const float*>(old_logprobs.data);
  a.ref_logprobs = has_ref ? static_cast<const float*>(ref_logprobs.data) : nullptr;
  a.mask = mask.data;
  a.mask_dtype = mask.dtype;
  a.rows = B;
  a.T = T;
  a.eps_low = static_cast<float>(eps_low);
  a.eps_high = static_cast<float>(eps_high);
  a.dual_clip = static_cast<float>(dual_clip);
  a.beta = static_cast<float>(beta);
  a.grad_logprobs = static_cast<float*>(grad_data);
  a.device = device.index;
  if (cuda) {
    DeviceBuffer d_adv(B * sizeof(float), device.index), d_scale(B * sizeof(float), device.index);
    DeviceBuffer d_stats(row_stats.size() * sizeof(double), device.index);
    if (B > 0) {
      cuda_copy_to_device(d_adv.ptr, adv_h.data(), B * sizeof(float), device.index);
      cuda_copy_to_device(d_scale.ptr, token_scale.data(), B * sizeof(float), device.index);
    }
    a.advantages = static_cast<const float*>(d_adv.ptr);
    a.token_scale = static_cast<const float*>(d_scale.ptr);
    a.row_stats = static_cast<double*>(d_stats.ptr);
    grpo_token_pass_cuda(a);
    if (B > 0) cuda_copy_to_host(row_stats.data(), d_stats.ptr, row_stats.size() * sizeof(double), device.index);
  } else {
    a.advantages = adv_h.data();
    a.token_scale = token_scale.data();
    a.row_stats = row_stats.data();
    grpo_token_pass_cpu(a);
  }

  // 5. fold the per-row sums.
  std::vector<float> seq_loss(static_cast<size_t>(B));
  const GrpoLossTotals t = fold_row_stats(row_stats.data(), weights.data(),
                                          mode == Aggregation::Lambda ? dw.data() : nullptr, normalizer, B,
                                          seq_loss.data());
  // Every term is finite, but finite f32 advantages or weights near the f32 limit can still
  // add up to an infinite loss: say so rather than return it.
  bool overflow = !std::isfinite(t.loss) || !std::isfinite(t.grad_lambda);
  for (float x : seq_loss) overflow = overflow || !std::isfinite(x);
  if (overflow)
    throw Error("advantages: the loss overflows f32 (" + std::to_string(t.loss) +
                    "); advantages, weights or the normalizer are too large or small for f32 arithmetic", Error::Range);
  int64_t zero_advantage_rows = 0;
  for (float x : adv_h) zero_advantage_rows += x == 0.0f;

  Napi::Object out = Napi::Object::New(env);
  out.Set("loss", Napi::Number::New(env, t.loss));
  out.Set("gradLogprobs", grad);
  out.Set("gradLambda", Napi::Number::New(env, t.grad_lambda));
  out.Set("seqLoss", small_output(env, seq_loss, device));
  out.Set("weights", small_output(env, weights, device));
  out.Set("dWeightsDLambda", small_output(env, dw, device));
  out.Set("lengths", small_output(env, lengths, device));
  out.Set("normalizer", Napi::Number::New(env, normalizer));
  Napi::Object stats = Napi::Object::New(env);
  const double per_token = t.tokens > 0 ? 1.0 / t.tokens : 0.0;
  stats.Set("clipFracLow", Napi::Number::New(env, t.clip_low * per_token));
  stats.Set("clipFracHigh", Napi::Number::New(env, t.clip_high * per_token));
  stats.Set("dualClipFrac", Napi::Number::New(env, t.dual_clip * per_token));
  stats.Set("ratioMean", Napi::Number::New(env, t.ratio_sum * per_token));
  stats.Set("klMean", Napi::Number::New(env, t.kl_sum * per_token));
  stats.Set("tokens", Napi::Number::New(env, t.tokens));
  stats.Set("meanLength", Napi::Number::New(env, B > 0 ? t.tokens / static_cast<double>(B) : 0.0));
  stats.Set("weightMin", Napi::Number::New(env, t.weight_min));
  stats.Set("weightMax", Napi::Number::New(env, t.weight_max));
  stats.Set("emptyRows", Napi::Number::New(env, static_cast<double>(t.empty_rows)));
  stats.Set("degenerateRows", Napi::Number::New(env, static_cast<double>(zero_advantage_rows)));
  out.Set("stats", stats);
  return out;
}

}  // namespace

void register_grpo_loss(Napi::Env env, Napi::Object exports) {
  exports.Set("grpoLoss", Napi::Function::New<guarded<grpo_loss>>(env, "grpoLoss"));
}

}  // namespace lgrpo
