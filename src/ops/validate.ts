// Argument checks shared by the operation wrappers. Every message names the argument
// and says what was expected, so a caller can fix the call without reading our code.
import type { DType, TypedArray } from '../dtype.js';
import { arrayTypeFor, dtypeOfArray } from '../dtype.js';
import type { NativeTensor } from '../native.js';
import { Tensor } from '../tensor.js';

export type TensorLike = Tensor | TypedArray;

export function isTensor(value: unknown): value is Tensor {
  return value instanceof Tensor;
}

/** Outputs come back as Tensors when the leading input was a Tensor, else as TypedArrays. */
export type Out<L, A extends TypedArray = Float32Array> = L extends Tensor ? Tensor : A;

/** `null` marks a dimension inferred from the data length (at most one per shape). */
export type ShapeSpec = readonly (number | null)[];

function describe(shape: ShapeSpec): string {
  return `[${shape.map((d) => (d === null ? '?' : d)).join(', ')}]`;
}

/**
 * How to turn a number[] or another TypedArray into what the kernel takes. The kernels
 * never convert implicitly: a conversion is a copy (and, from Float64Array, a rounding),
 * which a caller should make once, not on every call.
 */
function conversionHint(dtypes: readonly DType[]): string {
  const target = dtypes.map(arrayTypeFor).find((t) => t !== 'Uint16Array');
  return target ? `; convert it once with ${target}.from(values) (the kernels take ${target} without copying and never convert implicitly)` : '';
}

/**
 * Resolves a tensor argument to a Tensor with the expected dtype and shape. A plain
 * TypedArray is wrapped without copying, its one free dimension inferred from its length.
 * `float16` names the format of a plain Uint16Array ('bf16' or 'f16').
 */
export function tensorArg(
  value: unknown,
  name: string,
  dtypes: readonly DType[],
  shape: ShapeSpec,
  float16?: 'bf16' | 'f16',
): Tensor {
  let tensor: Tensor;
  if (value instanceof Tensor) {
    tensor = value;
    tensor.assertAlive(name);
  } else if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    const array = value as TypedArray;
    const dtype = dtypeOfArray(array) ?? (array instanceof Uint16Array ? float16 : undefined);
    if (!dtype) {
      const hint = array instanceof Uint16Array ? ' (a Uint16Array needs {dtype: "bf16" | "f16"})' : conversionHint(dtypes);
      throw new TypeError(`${name}: expected ${dtypes.map(arrayTypeFor).join(' or ')}, got ${array.constructor.name}${hint}`);
    }
    const known = shape.reduce<number>((a, d) => a * (d ?? 1), 1);
    const free = shape.filter((d) => d === null).length;
    let dims: number[];
    if (free === 0 && array.length === known) dims = shape as number[];
    else if (free === 1 && known > 0 && array.length % known === 0) dims = shape.map((d) => (d === null ? array.length / known : d));
    else if (free === 1 && known === 0 && array.length === 0) dims = shape.map((d) => (d === null ? 0 : d));
    else throw new RangeError(`${name}: length ${array.length} does not fit shape ${describe(shape)}`);
    tensor = Tensor.from(array, dims, dtype);
  } else {
    if (Array.isArray(value))
      throw new TypeError(`${name}: expected a Tensor or a TypedArray, got an Array${conversionHint(dtypes)}`);
    throw new TypeError(`${name}: expected a Tensor or a TypedArray, got ${value === null ? 'null' : typeof value}`);
  }
  if (!dtypes.includes(tensor.dtype))
    throw new TypeError(`${name}: expected dtype ${dtypes.join(' or ')}, got ${tensor.dtype}`);
  const matches =
    tensor.shape.length === shape.length && tensor.shape.every((d, i) => shape[i] === null || shape[i] === d);
  if (!matches) throw new RangeError(`${name}: expected shape ${describe(shape)}, got [${tensor.shape.join(', ')}]`);
  return tensor;
}

export function sameDevice(named: Record<string, Tensor | undefined>): void {
  let first: [string, Tensor] | undefined;
  for (const [name, t] of Object.entries(named)) {
    if (!t) continue;
    if (!first) first = [name, t];
    else if (t.device !== first[1].device)
      throw new TypeError(`${name}: is on ${t.device} but ${first[0]} is on ${first[1].device}; move them to one device`);
  }
}

export function optionsArg<T extends object>(opts: T | undefined, name = 'options'): Partial<T> {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object') throw new TypeError(`${name}: expected an object`);
  return opts;
}

export interface NumberRule {
  min?: number;
  max?: number;
  /** min is exclusive */
  above?: number;
  integer?: boolean;
}

export function numberOption(value: unknown, name: string, fallback: number, rule: NumberRule = {}): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name}: expected a finite number, got ${String(value)}`);
  if (rule.integer && !Number.isInteger(value)) throw new RangeError(`${name}: expected an integer, got ${value}`);
  if (rule.min !== undefined && value < rule.min) throw new RangeError(`${name}: expected >= ${rule.min}, got ${value}`);
  if (rule.above !== undefined && value <= rule.above) throw new RangeError(`${name}: expected > ${rule.above}, got ${value}`);
  if (rule.max !== undefined && value > rule.max) throw new RangeError(`${name}: expected <= ${rule.max}, got ${value}`);
  return value;
}

/**
 * A softmax temperature τ: the kernels multiply by 1/τ in f32. Below the smallest normal
 * f32 (2^-126 ≈ 1.18e-38) τ loses precision and 1/τ soon overflows (τ = 1e-40 gave NaN
 * and −Infinity from Policy.sequenceLogprobs), so one rule everywhere: τ ≥ 2^-126.
 */
export function temperatureOption(value: unknown, name = 'temperature', fallback = 1): number {
  const t = numberOption(value, name, fallback, { above: 0 });
  if (t < MIN_NORMAL_F32)
    throw new RangeError(`${name}: ${t} is too small: 1/${name} overflows float32 (expected >= 2^-126 ≈ 1.18e-38)`);
  return t;
}
const MIN_NORMAL_F32 = 2 ** -126;

/** A value for an error message; JSON.stringify throws on a BigInt and hides undefined. */
export function describeValue(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function enumOption<T extends string>(value: unknown, name: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value as T))
    throw new TypeError(`${name}: expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describeValue(value)}`);
  return value as T;
}

export function boolOption(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`${name}: expected a boolean, got ${describeValue(value)}`);
  return value;
}

/** Checks integer ids of a CPU tensor lie in [0, limit); CUDA kernels check on device. */
export function checkIdRange(ids: Tensor, name: string, limit: number, what: string): void {
  if (ids.isCuda) return;
  const data = ids.cpuData(name) as Int32Array;
  for (let i = 0; i < data.length; i++)
    if (data[i] < 0 || data[i] >= limit)
      throw new RangeError(`${name}: ${what} ${data[i]} at index ${i} is outside [0, ${limit})`);
}

/** Largest id + 1 of a CPU id tensor (0 when empty); negative ids are an error. */
export function countGroups(ids: Tensor, name: string): number {
  const data = ids.cpuData(name) as Int32Array;
  let max = -1;
  for (let i = 0; i < data.length; i++) {
    if (data[i] < 0) throw new RangeError(`${name}: group id ${data[i]} at index ${i} is negative`);
    if (data[i] > max) max = data[i];
  }
  return max + 1;
}

/**
 * Group ids are labels, but the kernels size per-group scratch (and groupAdvantages its
 * groupMean/groupStd outputs) by the largest id: ids [0, 2^31 − 1] on 2 rows once
 * allocated and touched gigabytes. `groups` (the option, or the largest id + 1) is
 * resolved here, for both devices, under one rule:
 * - `perRowOnly` ops (lambdaWeights, grpoLoss, grpoLossWeights), whose outputs depend only
 *   on which rows share a group: CPU ids are renumbered densely (in order of first
 *   appearance) when the count would exceed the row count, which changes no result.
 * - everywhere else, and for CUDA ids (which stay on the device), the count is bounded
 *   by the row count with an error that says so.
 */
export function resolveGroups(
  ids: Tensor, name: string, groupsOption: unknown, rows: number, perRowOnly: boolean,
): { ids: Tensor; groups: number } {
  const explicit = groupsOption === undefined ? undefined : numberOption(groupsOption, 'groups', 0, { min: 0, integer: true });
  if (ids.isCuda) {
    if (explicit === undefined) throw new TypeError(`groups: required when ${name} is on a CUDA device (pass the number of groups)`);
    if (explicit > Math.max(rows, 1))
      throw new RangeError(`groups: ${explicit} groups for ${rows} rows; group ids index per-group memory, so renumber them 0..G-1 with G <= the row count`);
    return { ids, groups: explicit };
  }
  const groups = explicit ?? countGroups(ids, name);
  checkIdRange(ids, name, groups, 'group id');
  if (groups <= Math.max(rows, 1)) return { ids, groups };
  if (!perRowOnly) {
    const data = ids.cpuData(name) as Int32Array;
    let at = 0;
    for (let i = 1; i < data.length; i++) if (data[i] > data[at]) at = i;
    throw new RangeError(explicit !== undefined && (data.length === 0 || data[at] < rows)
      ? `groups: ${explicit} groups for ${rows} rows; at most one group per row`
      : `${name}: group id ${data[at]} at index ${at} is not below the row count ${rows}; group ids index groupMean/groupStd, so renumber them 0..G-1`);
  }
  const data = ids.cpuData(name) as Int32Array;
  const dense = new Int32Array(data.length);
  const index = new Map<number, number>();
  for (let i = 0; i < data.length; i++) {
    let k = index.get(data[i]);
    if (k === undefined) index.set(data[i], (k = index.size));
    dense[i] = k;
  }
  return { ids: Tensor.from(dense), groups: index.size };
}

/** Rejects NaN and ±Inf in a small CPU float tensor (large ones are checked natively, fused). */
export function checkFinite(t: Tensor, name: string): void {
  if (t.isCuda || t.dtype !== 'f32') return;
  const data = t.cpuData(name) as Float32Array;
  for (let i = 0; i < data.length; i++)
    if (!Number.isFinite(data[i])) throw new RangeError(`${name}: element ${i} is ${data[i]}; inputs must be finite`);
}

/** Returns a native output as a Tensor or as its TypedArray, matching the caller's input kind. */
export function output<A extends TypedArray = Float32Array>(native: NativeTensor, asTensor: boolean): Tensor | A {
  const t = Tensor.fromNative(native);
  return asTensor ? t : (t.data as A);
}
