// Small model configurations and a random policy for the engine tests (CPU and CUDA alike):
// every architecture switch the engine has, at sizes a reference in float64 runs at once.
import { Policy } from '../../src/index.js';
import { parseConfig, type ModelConfig } from '../../src/engine/config.js';
import type { Rng } from '../helpers.js';

export const CONFIGS: Record<string, ModelConfig> = {
  // Qwen2: q/k/v biases, tied head, 4 query heads over 2 kv heads, head_dim 6.
  qwenTied: parseConfig({
    model_type: 'qwen2', hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, vocab_size: 37, tie_word_embeddings: true, max_position_embeddings: 64, rms_norm_eps: 1e-5,
    rope_theta: 10000,
  }),
  // Llama with attention_bias (q/k/v/o biases), untied, 3 query heads over 1 kv head,
  // head_dim 10 so the attention width (30) differs from hidden_size (24).
  llamaBias: parseConfig({
    model_type: 'llama', hidden_size: 24, intermediate_size: 36, num_hidden_layers: 2, num_attention_heads: 3,
    num_key_value_heads: 1, head_dim: 10, vocab_size: 37, tie_word_embeddings: false, attention_bias: true,
    max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_theta: 500,
  }),
  // Llama without biases, plain multi-head attention, head_dim 6.
  llamaPlain: parseConfig({
    model_type: 'llama', hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 4, vocab_size: 37, tie_word_embeddings: false, max_position_embeddings: 64,
  }),
};

/** A random policy whose norms and biases are not at their (too symmetric) init values. */
export function makePolicy(config: ModelConfig, r: Rng, options: { recompute?: boolean } = {}): Policy {
  const policy = Policy.random(config, { seed: r.int(0, 1e9), initializerRange: 0.25, ...options });
  for (const [name, view] of policy.parameters()) {
    if (name.endsWith('norm.weight')) for (let i = 0; i < view.length; i++) view[i] = 1 + 0.3 * r.normal();
    else if (name.endsWith('.bias')) for (let i = 0; i < view.length; i++) view[i] = 0.3 * r.normal();
  }
  return policy;
}

