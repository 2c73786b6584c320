// A tiny Qwen2-style policy: sample with a KV cache, take one training step, save, reload.
// Run: node examples/policy.mjs
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, Policy, linearTokenLogprobs, linearTokenLogprobsBackward } from 'lgrpo-native';

const config = {
  model_type: 'qwen2', hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100, max_position_embeddings: 128,
  rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, eos_token_id: 2,
};
const policy = Policy.random(config, { seed: 1 });

// Rollouts: batched prefill of ragged prompts, then incremental decoding.
const prompts = [[1, 17, 18, 19], [1, 30]];
const { tokens, logprobs, stopped } = policy.generate(prompts, { maxNewTokens: 8, temperature: 1, topP: 0.95, seed: 7 });
console.log(tokens, logprobs[0].length, stopped);

// One step: forward to hidden states, fused LM-head log-probs (no N×V logits), backward, AdamW.
const optimizer = new AdamW(policy.parameters(), policy.gradients(), { lr: 1e-3 });
const rows = prompts.map((p, i) => [...p, ...tokens[i]]);
const { hidden, seq } = policy.forward({ ids: rows });
const targets = new Int32Array(rows.length * seq);  // next token at every position (0 past the end)
rows.forEach((r, b) => r.slice(1).forEach((id, t) => { targets[b * seq + t] = id; }));
const out = linearTokenLogprobs(hidden, policy.lmHeadWeight, targets);
const grad = new Float32Array(targets.length).fill(-1 / targets.length);  // maximise mean log-prob
const { gradHidden, gradWeight } = linearTokenLogprobsBackward(hidden, policy.lmHeadWeight, targets, out.lse, grad);
policy.zeroGrad();
policy.backward(gradHidden, { gradLmHead: gradWeight });
console.log(optimizer.step());  // { gradNorm, clipped, lr, step }

// Hugging Face layout: config.json + model.safetensors, loadable by transformers too.
const dir = mkdtempSync(join(tmpdir(), 'policy-'));
policy.save(dir);
const reloaded = Policy.fromPretrained(dir);
console.log(reloaded.sequenceLogprobs([prompts[0]], [tokens[0]])[0]);
