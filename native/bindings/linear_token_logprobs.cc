// PLACEHOLDER: replaced by the real binding.
#include "../binding.h"
namespace lgrpo {
void register_linear_token_logprobs(Napi::Env, Napi::Object) {}
}
