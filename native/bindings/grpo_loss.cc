// PLACEHOLDER: replaced by the real binding.
#include "../binding.h"
namespace lgrpo {
void register_grpo_loss(Napi::Env, Napi::Object) {}
}
