// safetensors: bit-exact round trips of every supported dtype and awkward shape, the
// reference layout (8-aligned header, dtype-then-name order), files built byte by byte
// in the test (so the reader is not only checked against our own writer), sharded
// checkpoints, and a clear error for every kind of damaged file.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync, truncateSync, existsSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadSafetensors, saveSafetensors, readSafetensorsHeader, loadSafetensorsDir, saveSafetensorsDir,
  tensorToFloat32, type SafeTensor,
} from '../../src/engine/safetensors.js';
import { fromFloat32Array, type FloatDType } from '../../src/dtype.js';
import { rng, type Rng } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'lgrpo-safetensors-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const fresh = (name = 'file') => join(dir, `${name}-${++fileCounter}.safetensors`);

function randomTensor(r: Rng, dtype: FloatDType, shape: number[]): SafeTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'f32') {
    // Random bit patterns: NaN payloads, infinities, subnormals and -0 must all survive.
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = (r.next() * 2 ** 32) >>> 0;
    return { dtype, shape, data: new Float32Array(bits.buffer) };
  }
  const data = new Uint16Array(n);
  for (let i = 0; i < n; i++) data[i] = r.int(0, 65536);
  return { dtype, shape, data };
}

function bitsOf(t: SafeTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function assertSameTensors(actual: Map<string, SafeTensor>, expected: Map<string, SafeTensor>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [name, e] of expected) {
    const a = actual.get(name)!;
    assert.equal(a.dtype, e.dtype, name);
    assert.deepEqual(a.shape, e.shape, name);
    assert.equal(a.data.constructor, e.data.constructor, name);
    assert.ok(Buffer.from(bitsOf(a)).equals(Buffer.from(bitsOf(e))), `${name}: bits differ`);
  }
}

/** A file assembled by hand: length field, header text (no padding unless given), data. */
function craft(header: string | object | Uint8Array, data: Uint8Array | number[] = [], lengthField?: bigint): string {
  const text = header instanceof Uint8Array ? Buffer.from(header) : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(lengthField ?? BigInt(text.length));
  const path = fresh('crafted');
  writeFileSync(path, Buffer.concat([length, text, Buffer.from(data)]));
  return path;
}

function f32Bytes(values: number[]): Uint8Array {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b;
}

function throwsNaming(fn: () => unknown, path: string, problem: RegExp): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof Error);
    assert.ok(e.message.startsWith(`${path}: `), `message does not start with the path: ${e.message}`);
    assert.match(e.message, problem);
    return true;
  });
}

describe('round trip', () => {
  test('f32, bf16, f16; 0-d, empty and odd shapes; metadata; bit-exact', () => {
    const r = rng('safetensors');
    const tensors = new Map<string, SafeTensor>();
    const shapes = [[7], [3, 5], [1, 1, 13], [], [0], [4, 0, 2], [33, 17]];
    for (const dtype of ['f32', 'bf16', 'f16'] as const)
      shapes.forEach((shape, i) => tensors.set(`${dtype}.t${i}`, randomTensor(r, dtype, shape)));
    // Every 16-bit pattern, NaNs and subnormals included.
    const all = new Uint16Array(65536).map((_, i) => i);
    tensors.set('all.bf16', { dtype: 'bf16', shape: [256, 256], data: all });
    tensors.set('all.f16', { dtype: 'f16', shape: [65536], data: all.slice() });
    tensors.set('unicode.é.名前', randomTensor(r, 'f32', [3]));
    const path = fresh();
    const metadata = { format: 'pt', note: 'λ-GRPO' };
    saveSafetensors(path, tensors, { metadata });
    const loaded = loadSafetensors(path);
    assertSameTensors(loaded.tensors, tensors);
    assert.deepEqual(loaded.metadata, metadata);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
  });

  test('the reference layout: padded header, dtype then name order, aligned offsets', () => {
    const r = rng();
    const tensors = {
      'b.f16': randomTensor(r, 'f16', [3]),
      'a.f16': randomTensor(r, 'f16', [5]),
      'z.f32': randomTensor(r, 'f32', [2, 3]),
      'c.bf16': randomTensor(r, 'bf16', [1]),
      'a.f32': randomTensor(r, 'f32', []),
    };
    const path = fresh();
    saveSafetensors(path, tensors);
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    assert.equal(text[0], '{');
    assert.match(text, /^\{.*\} *$/s);
    const header = JSON.parse(text);
    assert.equal(header.__metadata__, undefined);
    assert.deepEqual(Object.keys(header), ['a.f32', 'z.f32', 'c.bf16', 'a.f16', 'b.f16']);
    assert.deepEqual(header['z.f32'], { dtype: 'F32', shape: [2, 3], data_offsets: [4, 28] });
    assert.deepEqual(header['c.bf16'], { dtype: 'BF16', shape: [1], data_offsets: [28, 30] });
    // Each tensor's bytes sit where the header says, little-endian.
    const data = bytes.subarray(8 + n);
    assert.equal(data.length, 4 + 24 + 2 + 10 + 6);
    const z = tensors['z.f32'].data as Float32Array;
    for (let i = 0; i < 6; i++) assert.equal(data.readUInt32LE(4 + 4 * i), new Uint32Array(z.buffer)[i]);
    assert.equal(data.readUInt16LE(30), tensors['a.f16'].data[0]);
    const info = readSafetensorsHeader(path);
    assert.equal(info.dataStart, 8 + n);
    assert.deepEqual(info.entries.map((e) => e.name), Object.keys(header));
  });

  test('header padding: every JSON length is padded with spaces to a multiple of 8', () => {
    const r = rng();
    for (let k = 1; k <= 8; k++) {
      const path = fresh();
      saveSafetensors(path, { ['x'.repeat(k)]: randomTensor(r, 'f32', [1]) });
      const bytes = readFileSync(path);
      const n = Number(bytes.readBigUInt64LE(0));
      const text = bytes.subarray(8, 8 + n).toString('utf8');
      const json = text.trimEnd();
      assert.equal(n % 8, 0, `name length ${k}: header length ${n}`);
      assert.ok(n - json.length < 8, `name length ${k}: ${n - json.length} padding bytes`);
      assert.equal(json, JSON.stringify({ ['x'.repeat(k)]: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
      assert.equal(bytes.length, 8 + n + 4);
    }
  });

  test('reads a hand-built file whose data section is not aligned', () => {
    // 37-byte header: the data starts at byte 45, so no typed-array view could alias it.
    const values = [1.5, -2.25, Math.fround(Math.PI), 0];
    const half = fromFloat32Array([0.5, -3], 'bf16');
    const header = JSON.stringify({
      w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
      h: { dtype: 'BF16', shape: [2], data_offsets: [16, 20] },
    });
    const data = Buffer.concat([f32Bytes(values), Buffer.from(new Uint8Array(half.buffer))]);
    const path = craft(header, data);
    assert.notEqual((8 + Buffer.byteLength(header)) % 4, 0);
    const { tensors, metadata } = loadSafetensors(path);
    assert.deepEqual(metadata, {});
    assert.deepEqual([...tensors.get('w')!.data], values.map(Math.fround));
    assert.deepEqual(tensors.get('w')!.shape, [2, 2]);
    assert.deepEqual([...tensorToFloat32(tensors.get('h')!)], [0.5, -3]);
    assert.equal(tensors.get('h')!.dtype, 'bf16');
  });

  test('names selects tensors; a missing name is an error', () => {
    const r = rng();
    const path = fresh();
    const tensors = new Map([['x', randomTensor(r, 'f32', [4])], ['y', randomTensor(r, 'bf16', [2])]]);
    saveSafetensors(path, tensors);
    const only = loadSafetensors(path, { names: ['y'] });
    assert.deepEqual([...only.tensors.keys()], ['y']);
    throwsNaming(() => loadSafetensors(path, { names: ['x', 'nope'] }), path, /tensor "nope" is not in the file/);
  });

  test('a tensor named __proto__ is stored as a tensor', () => {
    const r = rng();
    const path = fresh();
    const tensors = new Map([['__proto__', randomTensor(r, 'f32', [2])]]);
    saveSafetensors(path, tensors);
    assertSameTensors(loadSafetensors(path).tensors, tensors);
  });

  test('writer argument errors name the tensor', () => {
    const path = fresh();
    const f32 = new Float32Array(6);
    assert.throws(() => saveSafetensors(path, { w: { dtype: 'bf16', shape: [6], data: f32 } }), /^TypeError: tensors\["w"\]: dtype bf16 needs a Uint16Array, got a Float32Array/);
    assert.throws(() => saveSafetensors(path, { w: { dtype: 'f32', shape: [2, 2], data: f32 } }), /^RangeError: tensors\["w"\]: shape \[2, 2\] needs 4 elements but data has 6/);
    assert.throws(() => saveSafetensors(path, { w: { dtype: 'i32', shape: [6], data: new Int32Array(6) } }), /^TypeError: tensors\["w"\]: dtype must be 'f32', 'bf16' or 'f16'/);
    assert.throws(() => saveSafetensors(path, { w: { dtype: 'f32', shape: [-6], data: f32 } }), /^RangeError: tensors\["w"\]: shape must be/);
    assert.throws(() => saveSafetensors(path, { __metadata__: { dtype: 'f32', shape: [6], data: f32 } }), /reserved/);
    assert.throws(() => saveSafetensors(path, [['w', { dtype: 'f32', shape: [6], data: f32 }], ['w', { dtype: 'f32', shape: [6], data: f32 }]]), /tensors\["w"\]: duplicate/);
    assert.throws(() => saveSafetensors(path, { w: { dtype: 'f32', shape: [6], data: f32 } }, { metadata: { n: 3 as unknown as string } }), /^TypeError: metadata: "__metadata__" value of "n" must be a string/);
    assert.equal(existsSync(path), false);
    const missingDir = join(dir, 'no-such-dir', 'x.safetensors');
    throwsNaming(() => saveSafetensors(missingDir, { w: { dtype: 'f32', shape: [6], data: f32 } }), missingDir, /cannot write/);
  });
});

describe('damaged files fail with a clear error naming the file', () => {
  const w = { dtype: 'F32', shape: [3], data_offsets: [0, 12] };
  const good = f32Bytes([1, 2, 3]);

  test('the control file is readable', () => {
    assert.deepEqual([...loadSafetensors(craft({ w }, good)).tensors.get('w')!.data], [1, 2, 3]);
  });

  const cases: Array<[string, () => string, RegExp]> = [
    ['missing file', () => join(dir, 'absent.safetensors'), /cannot open/],
    ['shorter than the length field', () => { const p = fresh(); writeFileSync(p, Buffer.from([1, 0, 0])); return p; }, /3 bytes, too short/],
    ['empty file', () => { const p = fresh(); writeFileSync(p, ''); return p; }, /0 bytes, too short/],
    ['header length larger than the file', () => craft({ w }, good, 10_000n), /header length 10000 exceeds the \d+ bytes after the length field/],
    ['header length near 2^64', () => craft({ w }, good, 2n ** 64n - 1n), /header length 18446744073709551615 exceeds/],
    ['empty header', () => craft('', good, 0n), /header is not valid JSON/],
    ['bad JSON', () => craft('{"w": {"dtype": "F32",', good), /header is not valid JSON/],
    ['header not an object', () => craft('[1, 2]', good), /header must be a JSON object/],
    ['header not UTF-8', () => craft(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), good), /header is not valid UTF-8/],
    ['truncated data', () => { const p = craft({ w }, good); truncateSync(p, statSync(p).size - 3); return p; }, /tensor "w": data_offsets \[0, 12\] run past the 9-byte data section \(file truncated\?\)/],
    ['offsets out of range', () => craft({ w: { ...w, data_offsets: [12, 24] } }, good), /tensor "w": data_offsets \[12, 24\] run past/],
    ['offsets reversed', () => craft({ w: { ...w, data_offsets: [12, 0] } }, good), /tensor "w": data_offsets \[12, 0\] has begin after end/],
    ['negative offset', () => craft({ w: { ...w, data_offsets: [-4, 8] } }, good), /tensor "w": data_offsets must be \[begin, end\]/],
    ['three offsets', () => craft({ w: { ...w, data_offsets: [0, 4, 12] } }, good), /data_offsets must be \[begin, end\]/],
    ['overlapping tensors', () => craft({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, good), /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/],
    ['gap between tensors', () => craft({
      a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    }, good), /bytes \[4, 8\) of the data section belong to no tensor/],
    ['trailing bytes', () => craft({ w: { ...w, shape: [2], data_offsets: [0, 8] } }, good), /4 bytes after the last tensor/],
    ['unknown dtype', () => craft({ w: { ...w, dtype: 'F99' } }, good), /tensor "w": unknown dtype "F99" \(supported: F32, BF16, F16\)/],
    ['dtype not a string', () => craft({ w: { ...w, dtype: 4 } }, good), /tensor "w": dtype must be a string/],
    ['shape/offset size mismatch', () => craft({ w: { ...w, shape: [2, 2] } }, good), /tensor "w": shape \[2, 2\] of F32 needs 16 bytes but data_offsets \[0, 12\] span 12/],
    ['bf16 size mismatch', () => craft({ w: { ...w, dtype: 'BF16' } }, good), /needs 6 bytes but data_offsets \[0, 12\] span 12/],
    ['bad shape', () => craft({ w: { ...w, shape: [3.5] } }, good), /tensor "w": shape must be an array of non-negative integers/],
    ['entry not an object', () => craft({ w: [0, 12] }, good), /tensor "w": expected an object/],
    ['metadata value not a string', () => craft({ __metadata__: { total: 3 }, w }, good), /"__metadata__" value of "total" must be a string/],
    ['supported-looking but unsupported dtype', () => craft({ w: { ...w, dtype: 'I32' } }, good), /tensor "w": dtype I32 is not supported/],
  ];
  for (const [label, make, problem] of cases) {
    test(label, () => {
      const path = make();
      throwsNaming(() => loadSafetensors(path), path, problem);
    });
  }

  test('an unsupported dtype is refused only when that tensor is read', () => {
    const path = craft({
      ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
      w: { dtype: 'F32', shape: [3], data_offsets: [8, 20] },
    }, Buffer.concat([Buffer.alloc(8), good]));
    assert.deepEqual([...loadSafetensors(path, { names: ['w'] }).tensors.get('w')!.data], [1, 2, 3]);
    throwsNaming(() => loadSafetensors(path), path, /tensor "ids": dtype I64 is not supported \(only F32, BF16, F16\)/);
  });
});

describe('checkpoint directories', () => {
  function model(r: Rng): Map<string, SafeTensor> {
    const t = new Map<string, SafeTensor>();
    t.set('model.embed_tokens.weight', randomTensor(r, 'bf16', [50, 8]));       // 800 B
    for (let i = 0; i < 3; i++) {
      t.set(`model.layers.${i}.input_layernorm.weight`, randomTensor(r, 'f32', [8]));   // 32 B
      t.set(`model.layers.${i}.self_attn.q_proj.weight`, randomTensor(r, 'bf16', [8, 8])); // 128 B
      t.set(`model.layers.${i}.self_attn.q_proj.bias`, randomTensor(r, 'f16', [8]));     // 16 B
      t.set(`model.layers.${i}.mlp.down_proj.weight`, randomTensor(r, 'bf16', [8, 19])); // 304 B
    }
    t.set('model.norm.weight', randomTensor(r, 'f32', [8]));
    t.set('lm_head.weight', randomTensor(r, 'f32', [0, 8]));
    return t;
  }

  test('single file: model.safetensors with format metadata', () => {
    const out = join(dir, 'single');
    const tensors = model(rng());
    saveSafetensorsDir(out, tensors);
    assert.deepEqual(readdirSync(out), ['model.safetensors']);
    const loaded = loadSafetensorsDir(out);
    assertSameTensors(loaded.tensors, tensors);
    assert.deepEqual(loaded.metadata, { format: 'pt' });
  });

  test('sharded: HF names, index, greedy fill in order, bit-exact load', () => {
    const out = join(dir, 'sharded');
    const tensors = model(rng());
    const max = 600;
    saveSafetensorsDir(out, tensors, { maxShardBytes: max });
    const files = readdirSync(out).sort();
    const shardFiles = files.filter((f) => f !== 'model.safetensors.index.json');
    assert.ok(files.includes('model.safetensors.index.json'));
    assert.ok(!files.includes('model.safetensors'));
    const n = shardFiles.length;
    assert.ok(n > 2, `expected several shards, got ${n}`);
    shardFiles.forEach((f, i) => assert.equal(f, `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`));
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
    const total = [...tensors.values()].reduce((s, t) => s + t.data.byteLength, 0);
    assert.equal(index.metadata.total_size, total);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...tensors.keys()].sort());
    // Shards hold consecutive runs of the given order, each within the limit unless one tensor alone exceeds it.
    const order = [...tensors.keys()].map((k) => index.weight_map[k]);
    assert.deepEqual(order, [...order].sort());
    for (const f of shardFiles) {
      const header = readSafetensorsHeader(join(out, f));
      assert.ok(header.dataBytes <= max || header.entries.length === 1, `${f}: ${header.dataBytes} bytes`);
      assert.deepEqual(header.metadata, { format: 'pt' });
    }
    assert.equal(index.weight_map['model.embed_tokens.weight'], shardFiles[0]);
    assert.equal(readSafetensorsHeader(join(out, shardFiles[0])).entries.length, 1);  // 800 B > 600 B: alone
    const loaded = loadSafetensorsDir(out);
    assertSameTensors(loaded.tensors, tensors);
    const some = loadSafetensorsDir(out, { names: ['model.norm.weight', 'model.layers.2.self_attn.q_proj.bias'] });
    assert.deepEqual([...some.tensors.keys()].sort(), ['model.layers.2.self_attn.q_proj.bias', 'model.norm.weight']);
    assert.throws(() => loadSafetensorsDir(out, { names: ['nope'] }), /index\.json: tensor "nope" is not in weight_map/);
  });

  test('a new save replaces the old layout entirely', () => {
    const out = join(dir, 'resave');
    const r = rng();
    saveSafetensorsDir(out, model(r), { maxShardBytes: 500 });
    const single = model(r);
    saveSafetensorsDir(out, single);
    assert.deepEqual(readdirSync(out), ['model.safetensors']);
    assertSameTensors(loadSafetensorsDir(out).tensors, single);
    const sharded = model(r);
    writeFileSync(join(out, 'notes.txt'), 'kept');
    saveSafetensorsDir(out, sharded, { maxShardBytes: 1000 });
    const files = readdirSync(out);
    assert.ok(!files.includes('model.safetensors'));
    assert.ok(files.includes('notes.txt'));
    assertSameTensors(loadSafetensorsDir(out).tensors, sharded);
    // Fewer shards than before: the old higher-numbered shards are gone too.
    saveSafetensorsDir(out, sharded, { maxShardBytes: 2000 });
    const after = readdirSync(out).filter((f) => f.startsWith('model-'));
    assert.ok(after.every((f) => f.endsWith(`-of-${String(after.length).padStart(5, '0')}.safetensors`)), after.join(', '));
    assertSameTensors(loadSafetensorsDir(out).tensors, sharded);
  });

  test('missing shard, tensor missing from its shard, bad index, empty folder', () => {
    const out = join(dir, 'broken');
    saveSafetensorsDir(out, model(rng()), { maxShardBytes: 600 });
    const indexPath = join(out, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));

    const shard2 = join(out, index.weight_map['model.layers.2.mlp.down_proj.weight']);
    const saved = readFileSync(shard2);
    rmSync(shard2);
    throwsNaming(() => loadSafetensorsDir(out), indexPath, /shard model-\d{5}-of-\d{5}\.safetensors is missing/);
    writeFileSync(shard2, saved);

    const moved = { ...index, weight_map: { ...index.weight_map, 'model.norm.weight': index.weight_map['model.embed_tokens.weight'] } };
    writeFileSync(indexPath, JSON.stringify(moved));
    throwsNaming(() => loadSafetensorsDir(out), indexPath, /tensor "model\.norm\.weight" is mapped to model-00001-of-\d{5}\.safetensors, which does not contain it/);

    writeFileSync(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, x: '../escape.safetensors' } }));
    throwsNaming(() => loadSafetensorsDir(out), indexPath, /weight_map\["x"\] must be a file name in the same folder/);
    writeFileSync(indexPath, '{"weight_map": ');
    throwsNaming(() => loadSafetensorsDir(out), indexPath, /not valid JSON/);
    writeFileSync(indexPath, '{"metadata": {}}');
    throwsNaming(() => loadSafetensorsDir(out), indexPath, /"weight_map" object/);

    // A damaged shard is reported under the shard's own name.
    writeFileSync(indexPath, JSON.stringify(index));
    truncateSync(shard2, statSync(shard2).size - 1);
    throwsNaming(() => loadSafetensorsDir(out), shard2, /file truncated/);

    const empty = join(dir, 'empty');
    mkdirSync(empty);
    throwsNaming(() => loadSafetensorsDir(empty), empty, /neither model\.safetensors nor model\.safetensors\.index\.json/);
  });

  test('maxShardBytes must be a positive integer', () => {
    assert.throws(() => saveSafetensorsDir(join(dir, 'x'), model(rng()), { maxShardBytes: 0 }), /^RangeError: maxShardBytes/);
    assert.throws(() => saveSafetensorsDir(join(dir, 'x'), model(rng()), { maxShardBytes: 1.5 }), /^RangeError: maxShardBytes/);
    assert.equal(existsSync(join(dir, 'x')), false);
  });
});
