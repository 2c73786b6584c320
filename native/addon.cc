// Registers the addon's exports; each binding file adds its own functions.
#include <napi.h>

#include <exception>

#include "binding.h"
#include "simd.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  // A bad LGRPO_SIMD fails the import, not some later kernel call.
  try {
    lgrpo::simd_path();
  } catch (const std::exception& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  lgrpo::register_tensor_bindings(env, exports);
  lgrpo::register_token_logprobs(env, exports);
  lgrpo::register_linear_token_logprobs(env, exports);
  lgrpo::register_group_advantages(env, exports);
  lgrpo::register_lambda_weights(env, exports);
  lgrpo::register_grpo_loss(env, exports);
  lgrpo::register_all_bindings(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lgrpo_native, init)
