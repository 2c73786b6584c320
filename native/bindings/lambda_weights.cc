// PLACEHOLDER: replaced by the real binding.
#include "../binding.h"
namespace lgrpo {
void register_lambda_weights(Napi::Env, Napi::Object) {}
}
