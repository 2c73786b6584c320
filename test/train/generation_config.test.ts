// generation_config.json's sampling settings, read as transformers' generate() reads them when
// the caller gives none: do_sample decides, missing fields take transformers' defaults.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generationSampling } from '../../src/train/model.js';

const withFile = (config: unknown) => ({ files: { 'generation_config.json': typeof config === 'string' ? config : JSON.stringify(config) } });

test('generationSampling: Qwen2.5-Instruct samples at 0.7 / 0.8 / 20; its repetition penalty is reported as unsupported', () => {
  const qwen = { bos_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], repetition_penalty: 1.1, temperature: 0.7, top_p: 0.8, top_k: 20 };
  assert.deepEqual(generationSampling(withFile(qwen)), { doSample: true, temperature: 0.7, topP: 0.8, topK: 20, unsupported: { repetition_penalty: 1.1 } });
});

test('generationSampling: missing fields take transformers\' defaults (temperature 1, top_p 1, top_k 50); no do_sample is greedy', () => {
  assert.deepEqual(generationSampling(withFile({ do_sample: true })), { doSample: true, temperature: 1, topP: 1, topK: 50, unsupported: {} });
  assert.equal(generationSampling(withFile({ temperature: 0.6, eos_token_id: 2 }))?.doSample, false);
  assert.equal(generationSampling(withFile({ do_sample: 'yes' }))?.doSample, false);
  // No file (the built-in tiny model): nothing to follow.
  assert.equal(generationSampling({ files: {} }), null);
  // Neutral values of the unsupported fields are not reported.
  assert.deepEqual(generationSampling(withFile({ do_sample: true, repetition_penalty: 1, num_beams: 1 }))?.unsupported, {});
});

test('generationSampling: a malformed value names the file and the field', () => {
  assert.throws(() => generationSampling(withFile({ do_sample: true, top_p: 1.5 })), /generation_config\.json: top_p must be a number in \(0, 1\], got 1\.5/);
  assert.throws(() => generationSampling(withFile({ top_k: 2.5 })), /generation_config\.json: top_k must be an integer >= 0, got 2\.5/);
  assert.throws(() => generationSampling(withFile({ temperature: -1 })), /generation_config\.json: temperature must be a number >= 0, got -1/);
  assert.throws(() => generationSampling(withFile({ temperature: '0.7' })), /temperature must be a number >= 0, got "0\.7"/);
  assert.throws(() => generationSampling(withFile('{ not json')), /generation_config\.json: not JSON/);
});
