// attentionForward(q f32[B,T,Hq,hd], k f32[B,T,Hkv,hd], v f32[B,T,Hkv,hd], lengths i32[B], {scale?})
//   → {out f32[B,T,Hq,hd], lse f32[B,Hq,T]}
// attentionBackward(q, k, v, lengths, out, lse, dout, {scale?}) → {dq, dk, dv}
// attentionDecode(q f32[B,Hq,hd], kCache f32[B,S,Hkv,hd], vCache f32[B,S,Hkv,hd], lengths i32[B], {scale?})
//   → out f32[B,Hq,hd]
// scale defaults to 1/sqrt(hd). Every tensor on one device: CUDA tensors run the CUDA twins.
#include <cmath>

#include "../binding.h"
#include "../ops/attention.h"

namespace lgrpo {
namespace {

// `first` is the call's first tensor (null for that one): all must share its device.
TensorRef f32_arg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t rank, const TensorRef* first) {
  TensorRef t = tensor_arg(info, i, name);
  expect_dtype(t, {DType::F32}, name);
  expect_rank(t, rank, name);
  if (first) expect_same_device(*first, t, name);
  return t;
}

TensorRef lengths_arg(const Napi::CallbackInfo& info, size_t i, int64_t batch, const TensorRef& first) {
  TensorRef t = tensor_arg(info, i, "lengths");
  expect_dtype(t, {DType::I32}, "lengths");
  expect_shape(t, {batch}, "lengths");
  expect_same_device(first, t, "lengths");
  return t;
}

void check_heads(int64_t hq, int64_t hkv, int64_t hd, const char* kname) {
  if (hq < 1 || hkv < 1 || hq % hkv != 0)
    throw Error(std::string(kname) + ": kv heads (" + std::to_string(hkv) + ") must be >= 1 and divide the query heads (" +
                    std::to_string(hq) + ")",
                Error::Range);
  if (hd < 1) throw Error("q: headDim must be >= 1", Error::Range);
}

float scale_option(const Napi::Object& opts, int64_t hd) {
  double s = number_option(opts, "scale", 1.0 / std::sqrt(static_cast<double>(hd)));
  if (!(std::isfinite(s) && s > 0)) throw Error("scale: expected a finite number > 0", Error::Range);
  return static_cast<float>(s);
}

std::string bad_row(int64_t row, int64_t heads, int64_t seq) {
  int64_t t = row % seq, h = (row / seq) % heads, b = row / seq / heads;
  return "row " + std::to_string(b) + ", head " + std::to_string(h) + ", position " + std::to_string(t);
}

// q [B,T,Hq,hd], k and v [B,T,Hkv,hd], lengths [B]: the first four arguments of the
// forward and the backward, checked against each other.
struct QkvArgs {
  TensorRef q, k, v, lengths;
};

QkvArgs qkv_args(const Napi::CallbackInfo& info) {
  QkvArgs in;
  in.q = f32_arg(info, 0, "q", 4, nullptr);
  const int64_t B = in.q.shape[0], T = in.q.shape[1], Hq = in.q.shape[2], hd = in.q.shape[3];
  in.k = f32_arg(info, 1, "k", 4, &in.q);
  if (in.k.shape[0] != B || in.k.shape[1] != T || in.k.shape[3] != hd)
    throw Error("k: expected shape [" + std::to_string(B) + ", " + std::to_string(T) + ", kvHeads, " + std::to_string(hd) +
                    "] to match q " + shape_string(in.q.shape) + ", got " + shape_string(in.k.shape),
                Error::Range);
  check_heads(Hq, in.k.shape[2], hd, "k");
  in.v = f32_arg(info, 2, "v", 4, &in.q);
  if (in.v.shape != in.k.shape)
    throw Error("v: expected shape " + shape_string(in.k.shape) + " (that of k), got " + shape_string(in.v.shape), Error::Range);
  in.lengths = lengths_arg(info, 3, B, in.q);
  return in;
}

Napi::Value attention_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const QkvArgs in = qkv_args(info);
  const TensorRef &q = in.q, &k = in.k, &v = in.v, &len = in.lengths;
  const int64_t B = q.shape[0], T = q.shape[1], Hq = q.shape[2], hd = q.shape[3];
  Napi::Object opts = options_arg(info, 4);

  AttentionForwardArgs a{};
  a.q = static_cast<const float*>(q.data);
  a.k = static_cast<const float*>(k.data);
  a.v = static_cast<const float*>(v.data);
  a.lengths = static_cast<const int32_t*>(len.data);
  a.batch = B;
  a.seq = T;
  a.q_heads = Hq;
  a.kv_heads = k.shape[2];
  a.head_dim = hd;
  a.scale = scale_option(opts, hd);
  void* data;
  Napi::Object out = Napi::Object::New(env);
  out.Set("out", allocate_tensor(env, q.shape, DType::F32, q.device, &data));
  a.out = static_cast<float*>(data);
  out.Set("lse", allocate_tensor(env, {B, Hq, T}, DType::F32, q.device, &data));
  a.lse = static_cast<float*>(data);
  int64_t bad;
  if (q.device.is_cuda()) {
    a.device = q.device.index;
    bad = attention_forward_cuda(a);
  } else {
    bad = attention_forward_cpu(a);
  }
  if (bad >= 0)
    throw Error("q, k, v: a non-finite value reached attention at " + bad_row(bad, Hq, T) + "; inputs must be finite",
                Error::Range);
  return out;
}

Napi::Value attention_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const QkvArgs in = qkv_args(info);
  const TensorRef &q = in.q, &k = in.k, &v = in.v, &len = in.lengths;
  const int64_t B = q.shape[0], T = q.shape[1], Hq = q.shape[2], hd = q.shape[3];
  TensorRef o = f32_arg(info, 4, "out", 4, &q);
  if (o.shape != q.shape) throw Error("out: expected shape " + shape_string(q.shape) + " (that of q), got " + shape_string(o.shape), Error::Range);
  TensorRef lse = f32_arg(info, 5, "lse", 3, &q);
  expect_shape(lse, {B, Hq, T}, "lse");
  TensorRef dout = f32_arg(info, 6, "dout", 4, &q);
  if (dout.shape != q.shape)
    throw Error("dout: expected shape " + shape_string(q.shape) + " (that of q), got " + shape_string(dout.shape), Error::Range);
  Napi::Object opts = options_arg(info, 7);

  AttentionBackwardArgs a{};
  a.q = static_cast<const float*>(q.data);
  a.k = static_cast<const float*>(k.data);
  a.v = static_cast<const float*>(v.data);
  a.lengths = static_cast<const int32_t*>(len.data);
  a.batch = B;
  a.seq = T;
  a.q_heads = Hq;
  a.kv_heads = k.shape[2];
  a.head_dim = hd;
  a.scale = scale_option(opts, hd);
  a.out = static_cast<const float*>(o.data);
  a.lse = static_cast<const float*>(lse.data);
  a.dout = static_cast<const float*>(dout.data);
  void* data;
  Napi::Object result = Napi::Object::New(env);
  result.Set("dq", allocate_tensor(env, q.shape, DType::F32, q.device, &data));
  a.dq = static_cast<float*>(data);
  result.Set("dk", allocate_tensor(env, k.shape, DType::F32, q.device, &data));
  a.dk = static_cast<float*>(data);
  result.Set("dv", allocate_tensor(env, k.shape, DType::F32, q.device, &data));
  a.dv = static_cast<float*>(data);
  if (q.device.is_cuda()) {
    a.device = q.device.index;
    attention_backward_cuda(a);
  } else {
    attention_backward_cpu(a);
  }
  return result;
}

Napi::Value attention_decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef q = f32_arg(info, 0, "q", 3, nullptr);
  const int64_t B = q.shape[0], Hq = q.shape[1], hd = q.shape[2];
  TensorRef kc = f32_arg(info, 1, "kCache", 4, &q);
  if (kc.shape[0] != B || kc.shape[3] != hd)
    throw Error("kCache: expected shape [" + std::to_string(B) + ", maxSeq, kvHeads, " + std::to_string(hd) + "] to match q " +
                    shape_string(q.shape) + ", got " + shape_string(kc.shape),
                Error::Range);
  check_heads(Hq, kc.shape[2], hd, "kCache");
  TensorRef vc = f32_arg(info, 2, "vCache", 4, &q);
  if (vc.shape != kc.shape)
    throw Error("vCache: expected shape " + shape_string(kc.shape) + " (that of kCache), got " + shape_string(vc.shape), Error::Range);
  TensorRef len = lengths_arg(info, 3, B, q);
  Napi::Object opts = options_arg(info, 4);

  AttentionDecodeArgs a{};
  a.q = static_cast<const float*>(q.data);
  a.k_cache = static_cast<const float*>(kc.data);
  a.v_cache = static_cast<const float*>(vc.data);
  a.lengths = static_cast<const int32_t*>(len.data);
  a.batch = B;
  a.max_seq = kc.shape[1];
  a.q_heads = Hq;
  a.kv_heads = kc.shape[2];
  a.head_dim = hd;
  a.scale = scale_option(opts, hd);
  void* data;
  Napi::Object out = allocate_tensor(env, q.shape, DType::F32, q.device, &data);
  a.out = static_cast<float*>(data);
  int64_t bad;
  if (q.device.is_cuda()) {
    a.device = q.device.index;
    bad = attention_decode_cuda(a);
  } else {
    bad = attention_decode_cpu(a);
  }
  if (bad >= 0)
    throw Error("q, kCache, vCache: a non-finite value reached attention at row " + std::to_string(bad / Hq) + ", head " +
                    std::to_string(bad % Hq) + "; inputs must be finite",
                Error::Range);
  return out;
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New<guarded<attention_forward>>(env, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New<guarded<attention_backward>>(env, "attentionBackward"));
  exports.Set("attentionDecode", Napi::Function::New<guarded<attention_decode>>(env, "attentionDecode"));
}

static BindingRegistrar registrar(register_attention);

}  // namespace lgrpo
