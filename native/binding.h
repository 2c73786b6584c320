// Helpers shared by the per-operation bindings in native/bindings/: exception
// translation and option reading. A binding unpacks and checks its arguments,
// allocates outputs on the inputs' device and calls the CPU or CUDA twin.
#pragma once

#include <napi.h>

#include <new>
#include <string>

#include "common.h"
#include "tensor.h"

namespace lgrpo {

// Runs body() so that no C++ exception escapes into Node: lgrpo::Error becomes a
// TypeError, RangeError or Error; anything else becomes an Error with its message.
template <typename F>
Napi::Value translate_errors(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    if (e.kind == Error::Type) throw Napi::TypeError::New(env, e.what());
    if (e.kind == Error::Range) throw Napi::RangeError::New(env, e.what());
    throw Napi::Error::New(env, e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "lgrpo-native: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("lgrpo-native: ") + e.what());
  } catch (...) {
    throw Napi::Error::New(env, "lgrpo-native: unknown native error");
  }
}

// A binding function wrapped by translate_errors.
template <Napi::Value (*Impl)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  return translate_errors(info.Env(), [&] { return Impl(info); });
}

Napi::Object options_arg(const Napi::CallbackInfo& info, size_t index);
double number_option(const Napi::Object& opts, const char* key, double fallback);
bool bool_option(const Napi::Object& opts, const char* key, bool fallback);
std::string string_option(const Napi::Object& opts, const char* key, const std::string& fallback);
bool has_option(const Napi::Object& opts, const char* key);
TensorRef tensor_arg(const Napi::CallbackInfo& info, size_t index, const char* name);

// Each binding file registers its exports with a static BindingRegistrar, so adding an
// operation never touches addon.cc:  static BindingRegistrar registrar(register_my_op);
using RegisterFn = void (*)(Napi::Env, Napi::Object);
struct BindingRegistrar {
  explicit BindingRegistrar(RegisterFn fn);
};
void register_all_bindings(Napi::Env env, Napi::Object exports);

// Registration hooks of the first operations (called explicitly by addon.cc).
void register_tensor_bindings(Napi::Env env, Napi::Object exports);
void register_token_logprobs(Napi::Env env, Napi::Object exports);
void register_linear_token_logprobs(Napi::Env env, Napi::Object exports);
void register_group_advantages(Napi::Env env, Napi::Object exports);
void register_lambda_weights(Napi::Env env, Napi::Object exports);
void register_grpo_loss(Napi::Env env, Napi::Object exports);

}  // namespace lgrpo
