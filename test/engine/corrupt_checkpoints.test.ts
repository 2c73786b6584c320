// Corrupted and hostile checkpoint directories (issue 12 items 4, 10, 11, 15): each is a
// clear Error naming the problem, reached before any large allocation or read, and
// nothing blocks. The fixtures are built from one small valid checkpoint per run; cases
// that blocked forever or spun before their fix run in a child process with a timeout,
// so a regression fails the test instead of hanging the suite.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Policy } from '../../src/index.js';
import { configToJson, parameterShapes, parseConfig } from '../../src/engine/config.js';
import { INDEX_FILE, SINGLE_FILE, saveSafetensorsDir } from '../../src/engine/safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-corrupt-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;

const CONFIG = {
  model_type: 'llama', hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2,
  num_key_value_heads: 1, vocab_size: 11, tie_word_embeddings: false, max_position_embeddings: 32, rms_norm_eps: 1e-6,
  rope_theta: 10000,
};

type Entry = { dtype: 'f32'; shape: number[]; data: Float32Array };
function weights(config = CONFIG): Map<string, Entry> {
  return new Map(parameterShapes(parseConfig(config)).map(({ name, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return [name, { dtype: 'f32' as const, shape, data: Float32Array.from({ length: n }, (_, i) => Math.sin(i) / 10) }];
  }));
}

/** A valid checkpoint (config.json + model.safetensors, or sharded), then `damage` applied. */
function checkpoint(label: string, options: { config?: Record<string, unknown>; tensors?: Map<string, Entry>; shardBytes?: number } = {}): string {
  const dir = join(root, `${label}-${++counter}`);
  saveSafetensorsDir(dir, options.tensors ?? weights(), options.shardBytes ? { maxShardBytes: options.shardBytes } : {});
  // The overrides go in raw: some are absurd on purpose and must reach fromPretrained.
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...configToJson(parseConfig(CONFIG)), ...options.config }));
  return dir;
}

/** A safetensors file whose header declares `extra` beside the real tensors; its data is a hole. */
function withSparseTensor(dir: string, name: string, shape: number[]): void {
  const file = join(dir, SINGLE_FILE);
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { data_offsets: number[] }>;
  const dataBytes = bytes.length - 8 - headerLength;
  const size = shape.reduce((a, b) => a * b, 4);
  header[name] = { dtype: 'F32', shape, data_offsets: [dataBytes, dataBytes + size] } as never;
  const json = Buffer.from(JSON.stringify(header));
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(padded.length));
  const fd = openSync(file, 'w');
  writeSync(fd, head);
  writeSync(fd, padded);
  writeSync(fd, bytes.subarray(8 + headerLength));
  closeSync(fd);
  // Extend to the declared size without writing it: a hole, read back as zeros.
  const fd2 = openSync(file, 'r+');
  writeSync(fd2, Buffer.alloc(1), 0, 1, 8 + padded.length + dataBytes + size - 1);
  closeSync(fd2);
}

/** Runs `body` (module code with `Policy` in scope) in a child; returns its output or why it failed. */
function inChild(body: string, timeout = 20_000): { status: number | null; signal: string | null; out: string } {
  const index = new URL('../../src/index.js', import.meta.url).href;
  const code = `import { Policy } from ${JSON.stringify(index)};\n${body}`;
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout });
  return { status: res.status, signal: res.signal, out: `${res.stdout}${res.stderr}` };
}

/** fromPretrained must throw matching `pattern`, within `seconds` and without growing the peak RSS by much. */
function rejectsCheaply(dir: string, pattern: RegExp, seconds = 2): void {
  const peak = process.resourceUsage().maxRSS;  // KiB
  const start = performance.now();
  assert.throws(() => Policy.fromPretrained(dir), (e: Error) => pattern.test(e.message) || assert.fail(e.message));
  const took = (performance.now() - start) / 1000;
  const grew = (process.resourceUsage().maxRSS - peak) / 1024;
  assert.ok(took < seconds, `took ${took.toFixed(2)} s before the error`);
  assert.ok(grew < 100, `peak RSS grew by ${grew.toFixed(0)} MiB before the error`);
}

describe('corrupted checkpoint directories', () => {
  it('the valid fixture loads (single file and sharded)', () => {
    Policy.fromPretrained(checkpoint('valid')).dispose();
    Policy.fromPretrained(checkpoint('valid-sharded', { shardBytes: 2000 })).dispose();
  });

  // Item 10: the config was trusted first (10^5 layers: 3.2 GB and 18 s before the error).
  it('absurd config sizes fail on the header check, before anything is allocated', () => {
    rejectsCheaply(checkpoint('layers', { config: { num_hidden_layers: 4000 } }), /num_hidden_layers = 4000 but the weights hold 1 layer/);
    rejectsCheaply(checkpoint('layers-absurd', { config: { num_hidden_layers: 1e9 } }), /num_hidden_layers: 1000000000 exceeds the supported maximum/);
    rejectsCheaply(checkpoint('intermediate', { config: { intermediate_size: 2_000_000 } }),
      /mlp\.(gate|up|down)_proj\.weight has shape \[(24, 16|16, 24)\] but config\.json implies/);
    rejectsCheaply(checkpoint('vocab', { config: { vocab_size: 3_000_000 } }), /embed_tokens\.weight has shape \[11, 16\]/);
  });

  // Found by the fuzzer: Policy.random with vocab_size 1e9 (4e9 parameters) crashed with
  // SIGSEGV, and num_hidden_layers 1e9 hung building the layout.
  it('Policy.random refuses configs that cannot fit, before allocating', () => {
    assert.throws(() => Policy.random({ ...CONFIG, vocab_size: 1e9, hidden_size: 4, num_attention_heads: 1, num_key_value_heads: 1 }),
      (e: Error) => e instanceof RangeError && /^config: .* make \d+ parameters/.test(e.message));
    assert.throws(() => Policy.random({ ...CONFIG, num_hidden_layers: 1e9 }), /num_hidden_layers: 1000000000 exceeds the supported maximum 4096/);
    assert.throws(() => Policy.random({ ...CONFIG, intermediate_size: 2 ** 40 }), /intermediate_size: \d+ exceeds the supported maximum/);
  });

  it('an unexpected or oversized tensor is rejected from the header, never read', () => {
    const dir = checkpoint('big-extra');
    withSparseTensor(dir, 'model.layers.0.mlp.extra.weight', [2 ** 14, 2 ** 14]);  // 1 GiB declared
    rejectsCheaply(dir, /unexpected 1 tensor\(s\): model\.layers\.0\.mlp\.extra\.weight/);
  });

  it('truncated files and bad header offsets name the file', () => {
    const truncated = checkpoint('truncated');
    const file = join(truncated, SINGLE_FILE);
    writeFileSync(file, readFileSync(file).subarray(0, 200));
    rejectsCheaply(truncated, /model\.safetensors: header length \d+ exceeds/);
    const short = checkpoint('short');
    writeFileSync(join(short, SINGLE_FILE), Buffer.alloc(5));
    rejectsCheaply(short, /too short/);
    const overlapping = checkpoint('overlap');
    const bytes = readFileSync(join(overlapping, SINGLE_FILE));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = bytes.subarray(8, 8 + n).toString('utf8').replace(/"data_offsets":\[(\d+),(\d+)\]/, (_, a, b) => `"data_offsets":[${Number(a) + 4},${Number(b) + 4}]`);
    writeFileSync(join(overlapping, SINGLE_FILE), Buffer.concat([bytes.subarray(0, 8), Buffer.from(header), bytes.subarray(8 + n)]));
    rejectsCheaply(overlapping, /overlap|gap|past the|belong to no tensor|after the last tensor/);
  });

  it('index files pointing outside the directory, and shard symlinks leaving it, are refused', () => {
    const sharded = checkpoint('escape', { shardBytes: 2000 });
    const index = JSON.parse(readFileSync(join(sharded, INDEX_FILE), 'utf8')) as { weight_map: Record<string, string> };
    const first = Object.keys(index.weight_map)[0];
    index.weight_map[first] = '../elsewhere.safetensors';
    writeFileSync(join(sharded, INDEX_FILE), JSON.stringify(index));
    rejectsCheaply(sharded, /must be a file name in the same folder/);

    // Item 15: a shard (or the single file) that is a symlink out of the directory.
    const outside = checkpoint('outside-target');
    const linked = join(root, `linked-${++counter}`);
    mkdirSync(linked);
    writeFileSync(join(linked, 'config.json'), readFileSync(join(outside, 'config.json')));
    symlinkSync(join(outside, SINGLE_FILE), join(linked, SINGLE_FILE));
    rejectsCheaply(linked, /symlink to .*outside the checkpoint directory/);
    // A symlink that stays inside the directory is fine, and so is the hub cache's layout
    // (snapshots/<rev>/file -> ../../blobs/<hash>).
    const inside = checkpoint('inside');
    const realFile = join(inside, 'weights.bin');
    writeFileSync(realFile, readFileSync(join(inside, SINGLE_FILE)));
    rmSync(join(inside, SINGLE_FILE));
    symlinkSync('weights.bin', join(inside, SINGLE_FILE));
    Policy.fromPretrained(inside).dispose();
    const repo = join(root, 'models--org--tiny');
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    mkdirSync(join(repo, 'snapshots', 'abc123'), { recursive: true });
    for (const [i, name] of [SINGLE_FILE, 'config.json'].entries()) {
      writeFileSync(join(repo, 'blobs', `hash${i}`), readFileSync(join(outside, name)));
      symlinkSync(`../../blobs/hash${i}`, join(repo, 'snapshots', 'abc123', name));
    }
    Policy.fromPretrained(join(repo, 'snapshots', 'abc123')).dispose();
  });

  // Item 11: these blocked fromPretrained forever.
  it('FIFOs, devices and symlinks to them are refused, never read', () => {
    const mkfifo = spawnSync('mkfifo', ['--help']);
    const cases: Array<[string, string, RegExp]> = [];
    if (mkfifo.status === 0) {
      const fifoWeights = checkpoint('fifo-weights');
      rmSync(join(fifoWeights, SINGLE_FILE));
      spawnSync('mkfifo', [join(fifoWeights, SINGLE_FILE)]);
      cases.push(['FIFO model.safetensors', fifoWeights, /model\.safetensors: is a FIFO, not a regular file/]);
      const fifoConfig = checkpoint('fifo-config');
      rmSync(join(fifoConfig, 'config.json'));
      spawnSync('mkfifo', [join(fifoConfig, 'config.json')]);
      cases.push(['FIFO config.json', fifoConfig, /config\.json.*is a FIFO/]);
      const linkToFifo = checkpoint('link-fifo');
      rmSync(join(linkToFifo, SINGLE_FILE));
      spawnSync('mkfifo', [join(linkToFifo, 'pipe')]);
      symlinkSync('pipe', join(linkToFifo, SINGLE_FILE));
      cases.push(['symlink to a FIFO', linkToFifo, /is a FIFO/]);
    }
    const urandom = checkpoint('urandom');
    rmSync(join(urandom, SINGLE_FILE));
    symlinkSync('/dev/urandom', join(urandom, SINGLE_FILE));
    cases.push(['symlink to /dev/urandom', urandom, /outside the checkpoint directory|character device/]);
    for (const [label, dir, pattern] of cases) {
      const res = inChild(`try { Policy.fromPretrained(${JSON.stringify(dir)}); console.log('LOADED'); } catch (e) { console.log('ERROR ' + e.message); }`);
      assert.equal(res.signal, null, `${label}: blocked (killed after 20 s)`);
      assert.match(res.out, /^ERROR /, `${label}: ${res.out}`);
      assert.match(res.out, pattern, label);
    }
  });

  // Item 4: Node's recursive mkdir spins forever at 100% CPU under /proc.
  it('save() into a path that cannot be created fails at once', () => {
    for (const target of ['/proc/lgrpo-x', '/proc/lgrpo-x/y']) {
      const res = inChild(`
        const p = Policy.random(${JSON.stringify(CONFIG)}, { seed: 1 });
        try { p.save(${JSON.stringify(target)}); console.log('SAVED'); } catch (e) { console.log('ERROR ' + e.message); }`);
      assert.equal(res.signal, null, `${target}: spun (killed after 20 s)`);
      assert.match(res.out, /^ERROR dir: cannot create \/proc\/lgrpo-x/, res.out);
    }
    const file = join(root, 'a-file');
    writeFileSync(file, '');
    const p = Policy.random(CONFIG, { seed: 1 });
    assert.throws(() => p.save(join(file, 'sub')), /a-file exists and is not a directory/);
    p.dispose();
  });
});
