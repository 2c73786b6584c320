// Model configs: real Qwen2.5 and Llama config.json files parse into the right sizes and
// weight names, the written form parses back to the same config, and every invalid
// value fails with an error naming the file and the key.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseConfig, loadConfig, saveConfig, configToJson, parameterShapes, parameterCount,
  eosTokenIds, checkpointDtype, type ModelConfig,
} from '../../src/engine/config.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// Qwen/Qwen2.5-0.5B config.json, as published.
const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

// TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json, as published.
const TINYLLAMA = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
  transformers_version: '4.31.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

function writeJson(name: string, value: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
}

function shapeOf(config: ModelConfig, name: string): number[] | undefined {
  return parameterShapes(config).find((p) => p.name === name)?.shape;
}

describe('Qwen2.5-0.5B', () => {
  const path = writeJson('qwen.json', QWEN25_05B);
  const config = loadConfig(path);

  test('sizes, defaults and biases', () => {
    assert.equal(config.modelType, 'qwen2');
    assert.equal(config.hiddenSize, 896);
    assert.equal(config.intermediateSize, 4864);
    assert.equal(config.numHiddenLayers, 24);
    assert.equal(config.numAttentionHeads, 14);
    assert.equal(config.numKeyValueHeads, 2);
    assert.equal(config.headDim, 64);
    assert.equal(config.vocabSize, 151936);
    assert.equal(config.tieWordEmbeddings, true);
    assert.equal(config.ropeTheta, 1e6);
    assert.equal(config.rmsNormEps, 1e-6);
    assert.equal(config.maxPositionEmbeddings, 32768);
    assert.equal(config.qkvBias, true);
    assert.equal(config.oProjBias, false);
    assert.equal(config.torchDtype, 'bfloat16');
    assert.equal(checkpointDtype(config), 'bf16');
    assert.equal(config.bosTokenId, 151643);
    assert.deepEqual(eosTokenIds(config), [151643]);
    assert.equal(config.extra.sliding_window, 32768);
    assert.equal(config.extra.transformers_version, '4.40.1');
  });

  test('weights: names, shapes, order, count', () => {
    const shapes = parameterShapes(config);
    // embed + 24 × (2 norms + q/k/v weight+bias + o + gate/up/down) + final norm; tied: no lm_head
    assert.equal(shapes.length, 1 + 24 * 12 + 1);
    assert.deepEqual(shapes[0], { name: 'model.embed_tokens.weight', shape: [151936, 896] });
    assert.deepEqual(shapes.slice(1, 13).map((p) => p.name), [
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.q_proj.bias',
      'model.layers.0.self_attn.k_proj.weight',
      'model.layers.0.self_attn.k_proj.bias',
      'model.layers.0.self_attn.v_proj.weight',
      'model.layers.0.self_attn.v_proj.bias',
      'model.layers.0.self_attn.o_proj.weight',
      'model.layers.0.post_attention_layernorm.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.0.mlp.up_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
    ]);
    assert.deepEqual(shapeOf(config, 'model.layers.23.self_attn.q_proj.weight'), [896, 896]);
    assert.deepEqual(shapeOf(config, 'model.layers.23.self_attn.k_proj.weight'), [128, 896]);
    assert.deepEqual(shapeOf(config, 'model.layers.23.self_attn.v_proj.bias'), [128]);
    assert.deepEqual(shapeOf(config, 'model.layers.5.self_attn.o_proj.weight'), [896, 896]);
    assert.deepEqual(shapeOf(config, 'model.layers.5.mlp.gate_proj.weight'), [4864, 896]);
    assert.deepEqual(shapeOf(config, 'model.layers.5.mlp.down_proj.weight'), [896, 4864]);
    assert.equal(shapeOf(config, 'model.layers.0.self_attn.o_proj.bias'), undefined);
    assert.equal(shapeOf(config, 'lm_head.weight'), undefined);
    assert.deepEqual(shapes.at(-1), { name: 'model.norm.weight', shape: [896] });
    assert.equal(new Set(shapes.map((p) => p.name)).size, shapes.length);
    // The published parameter count of Qwen2.5-0.5B.
    assert.equal(parameterCount(config), 494_032_768);
  });

  test('a directory path reads its config.json', () => {
    const modelDir = join(dir, 'qwen-model');
    mkdirSync(modelDir);
    writeFileSync(join(modelDir, 'config.json'), JSON.stringify(QWEN25_05B));
    assert.deepEqual(loadConfig(modelDir), config);
  });

  test('configToJson → parse gives the same config; saveConfig is atomic', () => {
    const json = configToJson(config);
    assert.equal(json.model_type, 'qwen2');
    assert.deepEqual(json.architectures, ['Qwen2ForCausalLM']);
    assert.equal(json.tie_word_embeddings, true);
    assert.equal(json.use_sliding_window, false);
    assert.equal(json.max_window_layers, 24);
    assert.equal(json.torch_dtype, 'bfloat16');
    assert.deepEqual(parseConfig(json), config);
    const out = join(dir, 'saved-config.json');
    saveConfig(out, config);
    assert.deepEqual(loadConfig(out), config);
    assert.deepEqual(JSON.parse(readFileSync(out, 'utf8')), json);
    assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp-')).length, 0);
  });
});

describe('Llama', () => {
  test('TinyLlama-1.1B: GQA, untied head, no biases', () => {
    const config = loadConfig(writeJson('tinyllama.json', TINYLLAMA));
    assert.equal(config.modelType, 'llama');
    assert.equal(config.headDim, 64);
    assert.equal(config.numKeyValueHeads, 4);
    assert.equal(config.rmsNormEps, 1e-5);
    assert.equal(config.ropeTheta, 10000);
    assert.equal(config.qkvBias, false);
    assert.equal(config.oProjBias, false);
    assert.equal(checkpointDtype(config), 'f32');
    assert.deepEqual(shapeOf(config, 'lm_head.weight'), [32000, 2048]);
    assert.deepEqual(shapeOf(config, 'model.layers.21.self_attn.k_proj.weight'), [256, 2048]);
    assert.equal(shapeOf(config, 'model.layers.0.self_attn.q_proj.bias'), undefined);
    assert.equal(parameterShapes(config).at(-1)!.name, 'lm_head.weight');
    // The published parameter count of TinyLlama-1.1B.
    assert.equal(parameterCount(config), 1_100_048_384);
    const json = configToJson(config);
    assert.equal(json.attention_bias, false);
    assert.equal(json.pretraining_tp, 1);
    assert.deepEqual(parseConfig(json), config);
  });

  test('defaults: kv heads = heads, eps, theta, untied, max positions; eos list', () => {
    const config = parseConfig({
      model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2,
      num_attention_heads: 4, vocab_size: 128256, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009],
    });
    assert.equal(config.numKeyValueHeads, 4);
    assert.equal(config.headDim, 16);
    assert.equal(config.rmsNormEps, 1e-6);
    assert.equal(config.ropeTheta, 10000);
    assert.equal(config.tieWordEmbeddings, false);
    assert.equal(config.maxPositionEmbeddings, 2048);
    assert.equal(config.torchDtype, undefined);
    assert.deepEqual(eosTokenIds(config), [128001, 128008, 128009]);
    assert.deepEqual(parseConfig(configToJson(config)), config);
  });

  test('attention_bias puts biases on q, k, v and o', () => {
    const config = parseConfig({
      model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1,
      num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 50, attention_bias: true,
    });
    assert.equal(config.qkvBias, true);
    assert.equal(config.oProjBias, true);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.q_proj.bias'), [32]);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.k_proj.bias'), [16]);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.o_proj.bias'), [32]);
    assert.deepEqual(parseConfig(configToJson(config)), config);
  });

  test('explicit head_dim sizes the projections, not hidden/heads', () => {
    const config = parseConfig({
      model_type: 'llama', hidden_size: 64, intermediate_size: 48, num_hidden_layers: 1,
      num_attention_heads: 4, num_key_value_heads: 1, head_dim: 32, vocab_size: 50,
    });
    assert.equal(config.headDim, 32);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.q_proj.weight'), [128, 64]);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.v_proj.weight'), [32, 64]);
    assert.deepEqual(shapeOf(config, 'model.layers.0.self_attn.o_proj.weight'), [64, 128]);
  });
});

describe('invalid configs name the file and the key', () => {
  const base = {
    model_type: 'qwen2', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100,
  };
  test('the base config is valid', () => {
    assert.equal(parseConfig(base).headDim, 16);
  });

  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['zero hidden_size', { hidden_size: 0 }, 'hidden_size', /positive integer, got 0/],
    ['fractional hidden_size', { hidden_size: 64.5 }, 'hidden_size', /positive integer/],
    ['string intermediate_size', { intermediate_size: '96' }, 'intermediate_size', /positive integer, got "96"/],
    ['missing vocab_size', { vocab_size: undefined }, 'vocab_size', /is required/],
    ['missing num_hidden_layers', { num_hidden_layers: null }, 'num_hidden_layers', /is required/],
    ['negative layers', { num_hidden_layers: -2 }, 'num_hidden_layers', /positive integer/],
    ['kv heads not dividing heads', { num_key_value_heads: 3 }, 'num_key_value_heads', /3 does not divide num_attention_heads=4/],
    ['heads not dividing hidden', { num_attention_heads: 3, num_key_value_heads: 1, hidden_size: 64 }, 'num_attention_heads', /3 does not divide hidden_size=64/],
    ['odd derived head_dim', { hidden_size: 12, num_attention_heads: 4 }, 'num_attention_heads', /head_dim=3 must be even/],
    ['odd explicit head_dim', { head_dim: 15 }, 'head_dim', /head_dim=15 must be even/],
    ['unknown model_type', { model_type: 'gpt2' }, 'model_type', /"qwen2" or "llama", got "gpt2"/],
    ['missing model_type', { model_type: undefined }, 'model_type', /got undefined/],
    ['non-SwiGLU activation', { hidden_act: 'gelu' }, 'hidden_act', /only "silu"/],
    ['scaled RoPE', { rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'rope_scaling', /only unscaled RoPE/],
    ['sliding window', { use_sliding_window: true }, 'use_sliding_window', /not supported/],
    ['MLP biases', { mlp_bias: true }, 'mlp_bias', /not supported/],
    ['negative eps', { rms_norm_eps: -1e-6 }, 'rms_norm_eps', /positive finite number/],
    ['zero rope_theta', { rope_theta: 0 }, 'rope_theta', /positive finite number/],
    ['scaled RoPE (transformers 5 key)', { rope_parameters: { rope_type: 'yarn', rope_theta: 1e6, factor: 4 } }, 'rope_parameters', /only unscaled RoPE/],
    ['two disagreeing RoPE bases', { rope_theta: 1e4, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'rope_parameters', /disagrees with the top-level rope_theta 10000/],
    ['negative nested rope_theta', { rope_parameters: { rope_type: 'default', rope_theta: -1 } }, 'rope_parameters', /positive finite number, got -1/],
    ['string tie flag', { tie_word_embeddings: 'yes' }, 'tie_word_embeddings', /true or false/],
    ['eos outside the vocabulary', { eos_token_id: [5, 100] }, 'eos_token_id', /\[0, vocab_size=100\)/],
    ['empty eos list', { eos_token_id: [] }, 'eos_token_id', /at least one/],
    ['negative bos', { bos_token_id: -1 }, 'bos_token_id', /token ids/],
    ['pad as a list', { pad_token_id: [1] }, 'pad_token_id', /single token id/],
    ['unknown torch_dtype', { torch_dtype: 'int8' }, 'torch_dtype', /"float32", "bfloat16" or "float16"/],
    ['prototype key as dtype', { torch_dtype: 'toString' }, 'torch_dtype', /"float32"/],
    ['unknown dtype (new key)', { dtype: 'float64' }, 'dtype', /"float32"/],
  ];
  test('a config.json as transformers 5.17 saves a Qwen2ForCausalLM (rope_parameters, layer_types, no rope_theta)', () => {
    // Written by save_pretrained on the GPU machine (scripts/torch_qwen2_logits.py), trimmed to the keys that matter.
    const saved = {
      architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: null, dtype: 'float32', eos_token_id: null,
      hidden_act: 'silu', hidden_size: 896, initializer_range: 0.05, intermediate_size: 4864,
      layer_types: ['full_attention', 'full_attention', 'full_attention', 'full_attention'], max_position_embeddings: 4096,
      max_window_layers: 28, model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 4, num_key_value_heads: 2,
      pad_token_id: null, rms_norm_eps: 1e-6, rope_parameters: { rope_theta: 1000000, rope_type: 'default' }, sliding_window: null,
      tie_word_embeddings: true, transformers_version: '5.17.0', use_cache: true, use_sliding_window: false, vocab_size: 151936,
    };
    const c = parseConfig(saved);
    assert.equal(c.ropeTheta, 1_000_000);
    assert.equal(c.numHiddenLayers, 4);
    assert.equal(c.torchDtype, 'float32');
    assert.throws(() => parseConfig({ ...saved, layer_types: ['full_attention', 'sliding_attention', 'full_attention', 'full_attention'] }),
      /layer_types: only "full_attention" layers are supported/);
  });

  test('the RoPE base is read where transformers 5 writes it (rope_parameters), and where older versions do', () => {
    const v5 = { ...base, rope_parameters: { rope_type: 'default', rope_theta: 1_000_000 } };
    assert.equal(parseConfig(v5).ropeTheta, 1_000_000);
    assert.equal(parseConfig({ ...v5, rope_theta: 1_000_000 }).ropeTheta, 1_000_000);
    assert.equal(parseConfig({ ...base, rope_theta: 500_000 }).ropeTheta, 500_000);
    assert.equal(parseConfig({ ...base, rope_parameters: { rope_type: 'default' }, rope_theta: 20_000 }).ropeTheta, 20_000);
    assert.equal(parseConfig(base).ropeTheta, 10000);
    assert.ok(!('rope_parameters' in parseConfig(v5).extra), 'a read key is not carried as an unknown one');
  });

  for (const [label, change, key, problem] of cases) {
    test(label, () => {
      const path = writeJson(`bad-${label.replace(/\W+/g, '-')}.json`, { ...base, ...change });
      assert.throws(() => loadConfig(path), (e: Error) => {
        assert.ok(e.message.startsWith(`${path}: ${key}: `), e.message);
        assert.match(e.message, problem);
        return true;
      });
    });
  }

  test('not JSON, not an object, missing file', () => {
    const notJson = writeJson('not-json.json', '{"hidden_size": 64,');
    assert.throws(() => loadConfig(notJson), new RegExp(`^Error: ${notJson}: not valid JSON`));
    const array = writeJson('array.json', [base]);
    assert.throws(() => loadConfig(array), /array\.json: expected a JSON object/);
    assert.throws(() => loadConfig(join(dir, 'absent.json')), /absent\.json: cannot read the config/);
    assert.throws(() => loadConfig(join(dir, 'empty-dir-that-does-not-exist')), /cannot read the config/);
  });

  test('parseConfig names the given source', () => {
    assert.throws(() => parseConfig({ ...base, vocab_size: 0 }, 'my/config.json'), /^Error: my\/config\.json: vocab_size: /);
  });

  test('configToJson refuses bias combinations the model type cannot express', () => {
    const llama = parseConfig({ ...base, model_type: 'llama' });
    assert.throws(() => configToJson({ ...llama, qkvBias: true }), /attention_bias covers q, k, v and o/);
    const qwen = parseConfig(base);
    assert.throws(() => configToJson({ ...qwen, oProjBias: true }), /qwen2 config always has q\/k\/v biases and no o_proj bias/);
  });
});
