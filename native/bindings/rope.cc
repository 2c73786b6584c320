// ropeForward(q f32[..., Hq, hd], k f32[..., Hkv, hd] | null, positions i32[...], {theta, cos?, sin?})
// ropeBackward(dq, dk | null, positions, {theta, cos?, sin?})
//   rotate in place (forward by +angle, backward by −angle) and return undefined. The
//   leading dims ("..." = [B, T] for prefill, [B] for decode) must equal positions' shape.
//   cos/sin: optional tables f32[P, hd/2] from ropeTable; positions must then be < P.
//   Every tensor on one device; CUDA tensors go to the CUDA twin.
// ropeTable(theta, headDim, positions, device?) → {cos f32[P, hd/2], sin f32[P, hd/2]} on device (default cpu)
#include <vector>

#include "../binding.h"
#include "../ops/rope.h"

namespace lgrpo {
namespace {

double theta_option(const Napi::Object& opts) {
  double theta = number_option(opts, "theta", 10000.0);
  if (!(theta > 1.0 && std::isfinite(theta))) throw Error("theta: expected a finite number > 1", Error::Range);
  return theta;
}

std::vector<int64_t> leading(const TensorRef& t) { return std::vector<int64_t>(t.shape.begin(), t.shape.end() - 2); }

Napi::Value rope_apply(const Napi::CallbackInfo& info, bool backward) {
  const char* qn = backward ? "dq" : "q";
  const char* kn = backward ? "dk" : "k";
  TensorRef q = tensor_arg(info, 0, qn);
  expect_dtype(q, {DType::F32}, qn);
  if (q.shape.size() < 3)
    throw Error(std::string(qn) + ": expected shape [..., heads, headDim] with at least one leading dim, got " +
                    shape_string(q.shape), Error::Range);
  const int64_t hd = q.shape.back();
  if (hd < 2 || hd % 2 != 0) throw Error(std::string(qn) + ": headDim must be even and >= 2, got " + std::to_string(hd), Error::Range);
  RopeArgs a{};
  a.q = static_cast<float*>(q.data);
  a.q_heads = q.shape[q.shape.size() - 2];
  a.head_dim = hd;
  const std::vector<int64_t> lead = leading(q);
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
    TensorRef k = unpack_tensor(info[1], kn);
    expect_dtype(k, {DType::F32}, kn);
    expect_same_device(q, k, kn);
    if (k.shape.size() != q.shape.size() || leading(k) != lead || k.shape.back() != hd)
      throw Error(std::string(kn) + ": expected leading dims " + shape_string(lead) + " and headDim " + std::to_string(hd) +
                      " as in " + qn + " " + shape_string(q.shape) + ", got " + shape_string(k.shape),
                  Error::Range);
    a.k = static_cast<float*>(k.data);
    a.kv_heads = k.shape[k.shape.size() - 2];
  }
  TensorRef pos = tensor_arg(info, 2, "positions");
  expect_dtype(pos, {DType::I32}, "positions");
  expect_same_device(q, pos, "positions");
  if (pos.shape != lead)
    throw Error("positions: expected shape " + shape_string(lead) + " (the leading dims of " + qn + "), got " +
                    shape_string(pos.shape), Error::Range);
  a.positions = static_cast<const int32_t*>(pos.data);
  a.tokens = pos.numel();
  Napi::Object opts = options_arg(info, 3);
  a.theta = theta_option(opts);
  const bool has_cos = has_option(opts, "cos"), has_sin = has_option(opts, "sin");
  if (has_cos != has_sin) throw Error(std::string(has_cos ? "sin" : "cos") + ": cos and sin tables go together", Error::Type);
  if (has_cos) {
    TensorRef c = unpack_tensor(opts.Get("cos"), "cos");
    TensorRef s = unpack_tensor(opts.Get("sin"), "sin");
    expect_dtype(c, {DType::F32}, "cos");
    expect_rank(c, 2, "cos");
    if (c.shape[1] != hd / 2)
      throw Error("cos: expected shape [positions, " + std::to_string(hd / 2) + "], got " + shape_string(c.shape), Error::Range);
    expect_dtype(s, {DType::F32}, "sin");
    expect_shape(s, {c.shape[0], c.shape[1]}, "sin");
    expect_same_device(q, c, "cos");
    expect_same_device(q, s, "sin");
    a.cos_table = static_cast<const float*>(c.data);
    a.sin_table = static_cast<const float*>(s.data);
    a.table_positions = c.shape[0];
  }
  if (q.device.is_cuda()) {
    a.device = q.device.index;
    if (backward) rope_backward_cuda(a);
    else rope_forward_cuda(a);
  } else {
    if (backward) rope_backward_cpu(a);
    else rope_forward_cpu(a);
  }
  return info.Env().Undefined();
}

Napi::Value rope_forward(const Napi::CallbackInfo& info) { return rope_apply(info, false); }
Napi::Value rope_backward(const Napi::CallbackInfo& info) { return rope_apply(info, true); }

Napi::Value rope_table(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto integer = [&](size_t i, const char* name, double lo) {
    if (info.Length() <= i || !info[i].IsNumber()) throw Error(std::string(name) + ": expected a number", Error::Type);
    double v = info[i].As<Napi::Number>().DoubleValue();
    if (!(v >= lo && v <= 2147483647.0) || v != static_cast<double>(static_cast<int64_t>(v)))
      throw Error(std::string(name) + ": expected an integer >= " + std::to_string(static_cast<int64_t>(lo)), Error::Range);
    return static_cast<int64_t>(v);
  };
  if (info.Length() < 1 || !info[0].IsNumber()) throw Error("theta: expected a number", Error::Type);
  double theta = info[0].As<Napi::Number>().DoubleValue();
  if (!(theta > 1.0 && std::isfinite(theta))) throw Error("theta: expected a finite number > 1", Error::Range);
  int64_t hd = integer(1, "headDim", 2);
  if (hd % 2 != 0) throw Error("headDim: must be even, got " + std::to_string(hd), Error::Range);
  int64_t positions = integer(2, "positions", 0);
  Device device;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsString()) throw Error("device: expected a string such as 'cpu' or 'cuda:0'", Error::Type);
    device = parse_device(info[3].As<Napi::String>(), "device");
  }
  void *c, *s;
  Napi::Object out = Napi::Object::New(env);
  out.Set("cos", allocate_tensor(env, {positions, hd / 2}, DType::F32, device, &c));
  out.Set("sin", allocate_tensor(env, {positions, hd / 2}, DType::F32, device, &s));
  if (device.is_cuda())
    rope_table_cuda(theta, hd, positions, static_cast<float*>(c), static_cast<float*>(s), device.index);
  else
    rope_table_cpu(theta, hd, positions, static_cast<float*>(c), static_cast<float*>(s));
  return out;
}

}  // namespace

void register_rope(Napi::Env env, Napi::Object exports) {
  exports.Set("ropeForward", Napi::Function::New<guarded<rope_forward>>(env, "ropeForward"));
  exports.Set("ropeBackward", Napi::Function::New<guarded<rope_backward>>(env, "ropeBackward"));
  exports.Set("ropeTable", Napi::Function::New<guarded<rope_table>>(env, "ropeTable"));
}

static BindingRegistrar registrar(register_rope);

}  // namespace lgrpo
