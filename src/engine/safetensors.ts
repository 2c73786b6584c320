// Reading and writing Hugging Face safetensors checkpoints, single-file or sharded.
//
// The format: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON mapping each tensor
// name to {dtype, shape, data_offsets: [begin, end]} (byte offsets into the data section,
// plus an optional "__metadata__" map of strings), then the data section: every tensor's
// little-endian bytes, back to back, covering the section exactly.
//
// Reading checks the whole header against the file's real size before a single tensor
// byte is read, so a truncated or malformed file fails with an Error naming the file and
// the problem rather than reading out of bounds. Tensors are read one at a time straight
// into their own typed arrays: the file is never held in memory twice, and no typed-array
// view depends on the header length keeping the data aligned.
import { closeSync, fstatSync, fsyncSync, openSync, readdirSync, readSync, renameSync, unlinkSync, writeSync, existsSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { toFloat32Array, type DType, type FloatDType, type TypedArray } from '../dtype.js';
import { ensureDir, writeAtomically } from '../atomic_file.js';
import { openRegularFile, readRegularFileText } from '../safe_read.js';

export interface SafeTensor {
  dtype: FloatDType;
  shape: number[];
  /** f32 values, or the raw bits of bf16/f16 values. */
  data: Float32Array | Uint16Array;
}

/** What the writers accept: a SafeTensor, or a CPU Tensor of a float dtype. */
export interface TensorInput {
  readonly dtype: DType | FloatDType;
  readonly shape: readonly number[];
  readonly data?: TypedArray;
}

export type TensorsInput = Map<string, TensorInput> | Record<string, TensorInput> | Iterable<readonly [string, TensorInput]>;

export interface SafetensorsFile {
  /** In file order (by data offset). */
  tensors: Map<string, SafeTensor>;
  /** The file's "__metadata__" (for a sharded checkpoint, the first shard's); {} when absent. */
  metadata: Record<string, string>;
}

export interface TensorEntry {
  name: string;
  /** The dtype as the file spells it: 'F32', 'BF16', 'F16', or another safetensors dtype. */
  fileDtype: string;
  shape: number[];
  /** Byte offsets relative to the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  path: string;
  /** Sorted by data offset. */
  entries: TensorEntry[];
  metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + header length). */
  dataStart: number;
  dataBytes: number;
}

export interface LoadOptions {
  /** Load only these tensors (each must be present); default: all. */
  names?: Iterable<string>;
}

export interface SaveDirOptions {
  /** Split into shards of at most this many data bytes (a larger tensor gets a shard alone). */
  maxShardBytes?: number;
  /** Written into every file's "__metadata__"; default {format: 'pt'}, which transformers requires. */
  metadata?: Record<string, string>;
}

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

// The reference implementation's bound; a bigger header is corruption, not a model.
const MAX_HEADER_BYTES = 100_000_000;
const HEADER_ALIGN = 8;
// readSync/writeSync lengths must fit in an int32; large tensors go through in slices.
const IO_CHUNK = 1 << 30;
const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;

const SUPPORTED: Record<string, FloatDType> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };
const FILE_DTYPE: Record<FloatDType, string> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };
// Byte sizes of the other safetensors dtypes: their layout is checked like any tensor's so
// a file holding, say, an I64 buffer can still be read for its float tensors.
const ITEM_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8, C64: 8,
};
// The reference writer orders tensors by dtype, largest first (then by name), which keeps
// every tensor aligned to its item size given the 8-byte-aligned header.
const WRITE_RANK: Record<FloatDType, number> = { f32: 0, bf16: 1, f16: 2 };

const BIG_ENDIAN = endianness() === 'BE';

function byteView(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function swapBytes(bytes: Uint8Array, itemBytes: number): void {
  for (let i = 0; i < bytes.length; i += itemBytes) bytes.subarray(i, i + itemBytes).reverse();
}

function readFully(fd: number, target: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < target.length) {
    const n = readSync(fd, target, done, Math.min(IO_CHUNK, target.length - done), position + done);
    if (n === 0) throw new Error(`${path}: unexpected end of file at byte ${position + done} (file changed while reading?)`);
    done += n;
  }
}

function writeFully(fd: number, source: Uint8Array): void {
  let done = 0;
  while (done < source.length) done += writeSync(fd, source, done, Math.min(IO_CHUNK, source.length - done));
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseMetadata(value: unknown, fail: (problem: string) => never): Record<string, string> {
  if (!isPlainObject(value)) fail('"__metadata__" must be an object of strings');
  for (const [k, v] of Object.entries(value))
    if (typeof v !== 'string') fail(`"__metadata__" value of ${JSON.stringify(k)} must be a string, got ${JSON.stringify(v)}`);
  return { ...(value as Record<string, string>) };
}

/** Reads and validates the header of a safetensors file without reading tensor data. */
export function readSafetensorsHeader(path: string, root?: string): SafetensorsHeader {
  const fd = openRegularFile(path, root);
  try {
    return readHeader(fd, path);
  } finally {
    closeSync(fd);
  }
}

function readHeader(fd: number, path: string): SafetensorsHeader {
  const fail = (problem: string): never => {
    throw new Error(`${path}: ${problem}`);
  };
  const fileBytes = fstatSync(fd).size;
  if (fileBytes < 8) fail(`file is ${fileBytes} bytes, too short to hold the 8-byte header length`);
  const lengthBytes = new Uint8Array(8);
  readFully(fd, lengthBytes, 0, path);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(fileBytes - 8))
    fail(`header length ${headerLength} exceeds the ${fileBytes - 8} bytes after the length field (truncated or not a safetensors file)`);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerBytes = new Uint8Array(Number(headerLength));
  readFully(fd, headerBytes, 8, path);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) return fail('header must be a JSON object');

  const dataStart = 8 + headerBytes.length;
  const dataBytes = fileBytes - dataStart;
  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, info] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(info, fail);
      continue;
    }
    const bad = (problem: string): never => fail(`tensor ${JSON.stringify(name)}: ${problem}`);
    if (!isPlainObject(info)) bad('expected an object with dtype, shape and data_offsets');
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    if (typeof dtype !== 'string') bad(`dtype must be a string, got ${JSON.stringify(dtype)}`);
    const itemBytes = ITEM_BYTES[dtype as string];
    if (!Object.hasOwn(ITEM_BYTES, dtype as string))
      bad(`unknown dtype ${JSON.stringify(dtype)} (supported: F32, BF16, F16)`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      bad(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0))
      bad(`data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offsets)}`);
    const [begin, end] = offsets as number[];
    if (begin > end) bad(`data_offsets [${begin}, ${end}] has begin after end`);
    if (end > dataBytes)
      bad(`data_offsets [${begin}, ${end}] run past the ${dataBytes}-byte data section (file truncated?)`);
    const count = numel(shape as number[]);
    if (!Number.isSafeInteger(count * itemBytes) || count * itemBytes !== end - begin)
      bad(`shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${count * itemBytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    entries.push({ name, fileDtype: dtype as string, shape: [...(shape as number[])], begin, end });
  }

  // Like the reference reader: tensors must tile the data section exactly, so no byte
  // belongs to two tensors and no bytes hide between or after them.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: TensorEntry | undefined;
  for (const e of entries) {
    if (e.begin < cursor)
      fail(`tensors ${JSON.stringify(previous!.name)} [${previous!.begin}, ${previous!.end}] and ${JSON.stringify(e.name)} [${e.begin}, ${e.end}] overlap`);
    if (e.begin > cursor)
      fail(`bytes [${cursor}, ${e.begin}) of the data section belong to no tensor (gap before ${JSON.stringify(e.name)})`);
    cursor = e.end;
    previous = e;
  }
  if (cursor !== dataBytes)
    fail(`the data section has ${dataBytes - cursor} bytes after the last tensor (the tensors cover ${cursor} of ${dataBytes})`);
  return { path, entries, metadata, dataStart, dataBytes };
}

function readEntry(fd: number, header: SafetensorsHeader, entry: TensorEntry): SafeTensor {
  const dtype = SUPPORTED[entry.fileDtype];
  if (!Object.hasOwn(SUPPORTED, entry.fileDtype))
    throw new Error(`${header.path}: tensor ${JSON.stringify(entry.name)}: dtype ${entry.fileDtype} is not supported (only F32, BF16, F16)`);
  const count = numel(entry.shape);
  const data = dtype === 'f32' ? new Float32Array(count) : new Uint16Array(count);
  const bytes = byteView(data);
  readFully(fd, bytes, header.dataStart + entry.begin, header.path);
  if (BIG_ENDIAN) swapBytes(bytes, data.BYTES_PER_ELEMENT);
  return { dtype, shape: [...entry.shape], data };
}

/** Reads a safetensors file (all tensors, or options.names), after validating its header. */
export function loadSafetensors(path: string, options: LoadOptions = {}): SafetensorsFile {
  const fd = openRegularFile(path);
  try {
    const header = readHeader(fd, path);
    let selected = header.entries;
    if (options.names !== undefined) {
      const byName = new Map(header.entries.map((e) => [e.name, e]));
      const wanted = new Set(options.names);
      for (const name of wanted)
        if (!byName.has(name)) throw new Error(`${path}: tensor ${JSON.stringify(name)} is not in the file`);
      selected = header.entries.filter((e) => wanted.has(e.name));
    }
    // Check every dtype before reading anything, so an unsupported tensor fails fast.
    for (const e of selected)
      if (!Object.hasOwn(SUPPORTED, e.fileDtype))
        throw new Error(`${path}: tensor ${JSON.stringify(e.name)}: dtype ${e.fileDtype} is not supported (only F32, BF16, F16)`);
    const tensors = new Map<string, SafeTensor>();
    for (const e of selected) tensors.set(e.name, readEntry(fd, header, e));
    return { tensors, metadata: header.metadata };
  } finally {
    closeSync(fd);
  }
}

/** The values of a tensor as f32 (the same array when it already is f32). */
export function tensorToFloat32(tensor: SafeTensor): Float32Array {
  return tensor.dtype === 'f32' ? (tensor.data as Float32Array) : toFloat32Array(tensor.data as Uint16Array, tensor.dtype);
}

// ---------------------------------------------------------------------------------------
// Writing

interface Prepared {
  name: string;
  dtype: FloatDType;
  shape: number[];
  data: Float32Array | Uint16Array;
}

function entriesOf(tensors: TensorsInput): Array<readonly [string, TensorInput]> {
  if (tensors instanceof Map) return [...tensors.entries()];
  if (typeof (tensors as Iterable<unknown>)[Symbol.iterator] === 'function')
    return [...(tensors as Iterable<readonly [string, TensorInput]>)];
  if (isPlainObject(tensors)) return Object.entries(tensors as Record<string, TensorInput>);
  throw new TypeError('tensors: expected a Map, an object or an iterable of [name, tensor] pairs');
}

function prepare(tensors: TensorsInput): Prepared[] {
  const out: Prepared[] = [];
  const seen = new Set<string>();
  for (const [name, t] of entriesOf(tensors)) {
    const arg = `tensors[${JSON.stringify(name)}]`;
    if (typeof name !== 'string' || name.length === 0) throw new TypeError(`tensors: names must be non-empty strings, got ${JSON.stringify(name)}`);
    if (name === '__metadata__') throw new TypeError(`${arg}: the name "__metadata__" is reserved by the format`);
    if (seen.has(name)) throw new TypeError(`${arg}: duplicate tensor name`);
    seen.add(name);
    if (typeof t !== 'object' || t === null) throw new TypeError(`${arg}: expected {dtype, shape, data}`);
    const dtype = t.dtype as FloatDType;
    if (!Object.hasOwn(FILE_DTYPE, dtype)) throw new TypeError(`${arg}: dtype must be 'f32', 'bf16' or 'f16', got ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new RangeError(`${arg}: shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
    const data = t.data;
    const expected = dtype === 'f32' ? Float32Array : Uint16Array;
    if (!(data instanceof expected))
      throw new TypeError(`${arg}: dtype ${dtype} needs a ${expected.name}${data === undefined ? ' (is it a CUDA tensor? move it to the CPU first)' : `, got a ${(data as object).constructor.name}`}`);
    if (data.length !== numel(t.shape))
      throw new RangeError(`${arg}: shape [${t.shape.join(', ')}] needs ${numel(t.shape)} elements but data has ${data.length}`);
    out.push({ name, dtype, shape: [...t.shape], data });
  }
  return out;
}

function checkMetadata(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  return parseMetadata(metadata, (problem) => {
    throw new TypeError(`metadata: ${problem}`);
  });
}

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function writePrepared(path: string, tensors: Prepared[], metadata: Record<string, string> | undefined): void {
  const ordered = [...tensors].sort((a, b) => WRITE_RANK[a.dtype] - WRITE_RANK[b.dtype] || utf8Compare(a.name, b.name));
  // No prototype: a tensor named "__proto__" must become a key, not a prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata !== undefined) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    const end = offset + t.data.byteLength;
    header[t.name] = { dtype: FILE_DTYPE[t.dtype], shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / HEADER_ALIGN) * HEADER_ALIGN;
  const head = Buffer.alloc(8 + padded, 0x20);  // spaces are JSON whitespace
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);

  writeAtomically(path, (fd) => {
    writeFully(fd, head);
    for (const t of ordered) {
      let bytes = byteView(t.data);
      if (BIG_ENDIAN) {
        bytes = bytes.slice();
        swapBytes(bytes, t.data.BYTES_PER_ELEMENT);
      }
      writeFully(fd, bytes);
    }
  });
}

/**
 * Writes one safetensors file atomically (temporary file, then rename), laid out as the
 * reference writer does: header padded with spaces to a multiple of 8, tensors ordered by
 * dtype (f32, bf16, f16) and then name.
 */
export function saveSafetensors(path: string, tensors: TensorsInput, options: { metadata?: Record<string, string> } = {}): void {
  writePrepared(path, prepare(tensors), checkMetadata(options.metadata));
}

// ---------------------------------------------------------------------------------------
// Checkpoint directories

export interface DirHeaders {
  dir: string;
  /** Every tensor the checkpoint holds (for a sharded one, those weight_map lists), with its file. */
  entries: Map<string, { header: SafetensorsHeader; entry: TensorEntry }>;
  /** The first file's "__metadata__". */
  metadata: Record<string, string>;
  /** How a name absent from `entries` is reported: the file that lists names, and where. */
  listedIn: { path: string; where: string };
}

/**
 * Reads and checks the headers of a checkpoint directory (model.safetensors, or the shards
 * model.safetensors.index.json lists) without reading any tensor data, so a caller can
 * check names and shapes before allocating anything.
 */
export function readSafetensorsDirHeaders(dir: string): DirHeaders {
  const entries: DirHeaders['entries'] = new Map();
  const single = join(dir, SINGLE_FILE);
  if (existsSync(single)) {
    const header = readSafetensorsHeader(single, dir);
    for (const entry of header.entries) entries.set(entry.name, { header, entry });
    return { dir, entries, metadata: header.metadata, listedIn: { path: single, where: 'the file' } };
  }
  const indexPath = join(dir, INDEX_FILE);
  if (!existsSync(indexPath)) throw new Error(`${dir}: neither ${SINGLE_FILE} nor ${INDEX_FILE} is there`);

  const fail = (problem: string): never => {
    throw new Error(`${indexPath}: ${problem}`);
  };
  const text = readRegularFileText(indexPath, dir);
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (e) {
    return fail(`not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) return fail('expected an object with a "weight_map" object');
  const shards = new Map<string, string[]>();
  for (const [name, file] of Object.entries(index.weight_map)) {
    // Shard names are plain file names beside the index; anything else could point outside the checkpoint.
    if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\\]/.test(file))
      fail(`weight_map[${JSON.stringify(name)}] must be a file name in the same folder, got ${JSON.stringify(file)}`);
    const list = shards.get(file as string) ?? [];
    list.push(name);
    shards.set(file as string, list);
  }
  let metadata: Record<string, string> | undefined;
  for (const file of [...shards.keys()].sort()) {
    const path = join(dir, file);
    if (!existsSync(path)) fail(`shard ${file} is missing from ${dir}`);
    const header = readSafetensorsHeader(path, dir);
    metadata ??= header.metadata;
    const present = new Map(header.entries.map((e) => [e.name, e]));
    for (const name of shards.get(file)!) {
      const entry = present.get(name);
      if (!entry) fail(`tensor ${JSON.stringify(name)} is mapped to ${file}, which does not contain it`);
      entries.set(name, { header, entry: entry! });
    }
  }
  return { dir, entries, metadata: metadata ?? {}, listedIn: { path: indexPath, where: 'weight_map' } };
}

/**
 * Reads the named tensors of a checkpoint whose headers were read by
 * readSafetensorsDirHeaders, one at a time, handing each to `use` before reading the next
 * (so at most one loaded tensor is alive beside whatever `use` keeps).
 */
export function forEachTensor(headers: DirHeaders, names: Iterable<string>, use: (name: string, tensor: SafeTensor) => void): void {
  const byFile = new Map<SafetensorsHeader, TensorEntry[]>();
  for (const name of names) {
    const found = headers.entries.get(name);
    if (!found) throw new Error(`${headers.listedIn.path}: tensor ${JSON.stringify(name)} is not in ${headers.listedIn.where}`);
    if (!Object.hasOwn(SUPPORTED, found.entry.fileDtype))
      throw new Error(`${found.header.path}: tensor ${JSON.stringify(name)}: dtype ${found.entry.fileDtype} is not supported (only F32, BF16, F16)`);
    const list = byFile.get(found.header) ?? [];
    list.push(found.entry);
    byFile.set(found.header, list);
  }
  for (const [header, list] of byFile) {
    const fd = openRegularFile(header.path, headers.dir);
    try {
      // The file must still be the one whose header was checked.
      if (fstatSync(fd).size !== header.dataStart + header.dataBytes)
        throw new Error(`${header.path}: changed size since its header was read`);
      for (const entry of list) use(entry.name, readEntry(fd, header, entry));
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Reads a checkpoint directory: model.safetensors, or when that is absent the shards
 * that model.safetensors.index.json maps each tensor to. Every header is checked before
 * any tensor data is read.
 */
export function loadSafetensorsDir(dir: string, options: LoadOptions = {}): SafetensorsFile {
  const headers = readSafetensorsDirHeaders(dir);
  let names = [...headers.entries.keys()];
  if (options.names !== undefined) {
    const wanted = new Set(options.names);
    for (const name of wanted)
      if (!headers.entries.has(name)) throw new Error(`${headers.listedIn.path}: tensor ${JSON.stringify(name)} is not in ${headers.listedIn.where}`);
    names = names.filter((n) => wanted.has(n));
  }
  const tensors = new Map<string, SafeTensor>();
  forEachTensor(headers, names, (name, t) => tensors.set(name, t));
  return { tensors, metadata: headers.metadata };
}

function shardName(i: number, n: number): string {
  return `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

function removeIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/**
 * Writes a checkpoint directory the way transformers' save_pretrained does: a single
 * model.safetensors, or (when the data exceeds maxShardBytes) shards named
 * model-0000i-of-0000n.safetensors plus model.safetensors.index.json. Tensors fill
 * shards greedily in the given order. Files of an earlier save that the new one does not
 * use (an old single file, index or shards) are removed afterwards, so the directory
 * never loads a mix of two checkpoints.
 */
export function saveSafetensorsDir(dir: string, tensors: TensorsInput, options: SaveDirOptions = {}): void {
  const { maxShardBytes } = options;
  if (maxShardBytes !== undefined && (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0))
    throw new RangeError(`maxShardBytes: expected a positive integer, got ${maxShardBytes}`);
  const metadata = checkMetadata(options.metadata ?? { format: 'pt' });
  const prepared = prepare(tensors);
  ensureDir(dir);

  const groups: Prepared[][] = [];
  let current: Prepared[] = [];
  let currentBytes = 0;
  let totalBytes = 0;
  for (const t of prepared) {
    const bytes = t.data.byteLength;
    if (maxShardBytes !== undefined && current.length > 0 && currentBytes + bytes > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += bytes;
    totalBytes += bytes;
  }
  groups.push(current);

  const written = new Set<string>();
  if (groups.length === 1) {
    writePrepared(join(dir, SINGLE_FILE), groups[0], metadata);
    written.add(SINGLE_FILE);
  } else {
    const weightMap: Record<string, string> = Object.create(null);
    groups.forEach((group, i) => {
      const file = shardName(i, groups.length);
      writePrepared(join(dir, file), group, metadata);
      written.add(file);
      for (const t of group) weightMap[t.name] = file;
    });
    const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
    const index = JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sortedMap }, null, 2) + '\n';
    const indexPath = join(dir, INDEX_FILE);
    const tmp = `${indexPath}.tmp-${process.pid}`;
    try {
      const fd = openSync(tmp, 'w');
      try {
        writeFully(fd, Buffer.from(index, 'utf8'));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, indexPath);
    } catch (e) {
      try { unlinkSync(tmp); } catch { /* never created */ }
      throw new Error(`${indexPath}: cannot write: ${(e as Error).message}`, { cause: e });
    }
    written.add(INDEX_FILE);
  }
  for (const file of readdirSync(dir))
    if (!written.has(file) && (file === SINGLE_FILE || file === INDEX_FILE || SHARD_PATTERN.test(file)))
      removeIfPresent(join(dir, file));
}
