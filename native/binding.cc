#include "binding.h"

#include <vector>

namespace lgrpo {

namespace {
std::vector<RegisterFn>& registry() {
  static std::vector<RegisterFn> functions;  // constructed on first use: safe from static-init order
  return functions;
}
}  // namespace

BindingRegistrar::BindingRegistrar(RegisterFn fn) { registry().push_back(fn); }

void register_all_bindings(Napi::Env env, Napi::Object exports) {
  for (RegisterFn fn : registry()) fn(env, exports);
}

Napi::Object options_arg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return Napi::Object::New(info.Env());
  if (!info[index].IsObject()) throw Error("options: expected an object", Error::Type);
  return info[index].As<Napi::Object>();
}

bool has_option(const Napi::Object& opts, const char* key) {
  Napi::Value v = opts.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

double number_option(const Napi::Object& opts, const char* key, double fallback) {
  if (!has_option(opts, key)) return fallback;
  Napi::Value v = opts.Get(key);
  if (!v.IsNumber()) throw Error(std::string(key) + ": expected a number", Error::Type);
  return v.As<Napi::Number>().DoubleValue();
}

bool bool_option(const Napi::Object& opts, const char* key, bool fallback) {
  if (!has_option(opts, key)) return fallback;
  Napi::Value v = opts.Get(key);
  if (!v.IsBoolean()) throw Error(std::string(key) + ": expected a boolean", Error::Type);
  return v.As<Napi::Boolean>().Value();
}

std::string string_option(const Napi::Object& opts, const char* key, const std::string& fallback) {
  if (!has_option(opts, key)) return fallback;
  Napi::Value v = opts.Get(key);
  if (!v.IsString()) throw Error(std::string(key) + ": expected a string", Error::Type);
  return v.As<Napi::String>();
}

TensorRef tensor_arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index) throw Error(std::string(name) + ": missing argument", Error::Type);
  return unpack_tensor(info[index], name);
}

}  // namespace lgrpo
