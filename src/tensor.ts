// Tensor: a shape, a dtype and a device over memory that native code reads and
// writes in place. CPU tensors expose that memory as a TypedArray (`data`), never a
// copy; CUDA tensors are opaque handles that move with `.to('cpu')`.
import { addon, type NativeTensor } from './native.js';
import { arrayTypeFor, dtypeOfArray, toFloat32Array, type DType, type TypedArray } from './dtype.js';

export type Device = 'cpu' | `cuda:${number}`;

const DEVICE_PATTERN = /^(cpu|cuda:\d{1,3})$/;

export function parseDevice(device: string, argument = 'device'): Device {
  if (device === 'cuda') return 'cuda:0';
  if (typeof device !== 'string' || !DEVICE_PATTERN.test(device))
    throw new TypeError(`${argument}: expected 'cpu' or 'cuda:N', got ${JSON.stringify(device)}`);
  return device as Device;
}

/**
 * A CPU tensor is a TypedArray, and V8 (Node 20) aborts the whole process rather than
 * throw when native code asks for one longer than 2^32 elements.
 */
export const MAX_CPU_ELEMENTS = 2 ** 32;

/** Checks dimensions and that the element count and byte count stay exact (< 2^53). */
export function checkShape(shape: readonly number[], argument = 'shape', bytesPerElement = 1): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${argument}: expected an array of dimensions`);
  for (const d of shape)
    if (!Number.isSafeInteger(d) || d < 0)
      throw new RangeError(`${argument}: dimensions must be non-negative integers, got [${shape.join(', ')}]`);
  // A zero dimension makes any product empty; otherwise each partial product is checked
  // before it can round, so an overflow is never mistaken for a small count.
  if (!shape.includes(0)) {
    let n = 1;
    for (const d of shape) {
      n *= d;
      if (n * bytesPerElement > Number.MAX_SAFE_INTEGER)
        throw new RangeError(`${argument}: [${shape.join(', ')}] has more than 2^53 - 1 elements or bytes`);
    }
  }
  return [...shape];
}

const DTYPE_BYTES = new Map<unknown, number>([['f32', 4], ['i32', 4], ['bf16', 2], ['f16', 2], ['u8', 1]]);

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class Tensor implements NativeTensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly device: Device;
  /** CPU memory (absent on CUDA tensors). bf16 and f16 are raw bits in a Uint16Array. */
  data?: TypedArray;
  /** Native handle of device memory (CUDA tensors only). */
  handle?: object;
  /** Where a CUDA view starts in its handle's memory, in bytes (0 for a whole block). */
  offset?: number;
  #disposed = false;
  #ownsNative: boolean;

  private constructor(native: NativeTensor, ownsNative: boolean) {
    this.dtype = native.dtype as DType;
    this.shape = [...native.shape];
    this.device = native.device as Device;
    this.data = native.data as TypedArray | undefined;
    this.handle = native.handle;
    if (native.offset) this.offset = native.offset;
    this.#ownsNative = ownsNative;
  }

  /**
   * A tensor over `shape` elements of this one's memory from element `start`, without
   * copying (the CPU's subarray, for CUDA tensors too). The view never frees the memory:
   * it stays valid while this tensor is alive.
   */
  view(start: number, shape: readonly number[]): Tensor {
    this.assertAlive('tensor');
    const dims = checkShape(shape, 'shape');
    const count = product(dims);
    if (!Number.isSafeInteger(start) || start < 0 || start + count > this.numel)
      throw new RangeError(`start: [${start}, ${start + count}) is outside the tensor's ${this.numel} elements`);
    if (this.data) return new Tensor({ dtype: this.dtype, shape: dims, device: this.device, data: this.data.subarray(start, start + count) }, false);
    const offset = (this.offset ?? 0) + start * DTYPE_BYTES.get(this.dtype)!;
    return new Tensor({ dtype: this.dtype, shape: dims, device: this.device, handle: this.handle, offset }, false);
  }

  /** Wraps memory that native code allocated; the tensor owns it. */
  static fromNative(native: NativeTensor): Tensor {
    return new Tensor(native, true);
  }

  /**
   * Wraps a TypedArray without copying. The tensor keeps the array alive; the memory
   * stays the caller's (dispose() only drops the reference). Uint16Array needs an
   * explicit dtype ('bf16' or 'f16').
   */
  static from(array: TypedArray, shape?: readonly number[], dtype?: DType): Tensor {
    if (!ArrayBuffer.isView(array)) throw new TypeError('array: expected a TypedArray');
    const inferred = dtypeOfArray(array);
    const resolved = dtype ?? inferred;
    if (!resolved)
      throw new TypeError('dtype: a Uint16Array holds bf16 or f16 bits; pass the dtype explicitly');
    if (array.constructor.name !== arrayTypeFor(resolved))
      throw new TypeError(`array: dtype ${resolved} needs a ${arrayTypeFor(resolved)}, got a ${array.constructor.name}`);
    const dims = shape === undefined ? [array.length] : checkShape(shape);
    if (product(dims) !== array.length)
      throw new RangeError(`shape: [${dims.join(', ')}] needs ${product(dims)} elements but the array has ${array.length}`);
    return new Tensor({ dtype: resolved, shape: dims, device: 'cpu', data: array }, false);
  }

  /** A zero-filled tensor in native memory. */
  static zeros(shape: readonly number[], dtype: DType = 'f32', device: Device | 'cuda' = 'cpu'): Tensor {
    const dev = parseDevice(device);
    const size = DTYPE_BYTES.get(dtype);
    if (size === undefined)
      throw new TypeError(`dtype: expected 'f32', 'bf16', 'f16', 'i32' or 'u8', got ${JSON.stringify(dtype)}`);
    const dims = checkShape(shape, 'shape', size);
    if (dev === 'cpu' && product(dims) > MAX_CPU_ELEMENTS)
      throw new RangeError(`shape: [${dims.join(', ')}] has ${product(dims)} elements; a CPU tensor holds at most 2^32 (the TypedArray limit)`);
    return Tensor.fromNative(addon().empty(dims, dtype, dev));
  }

  get numel(): number {
    return product(this.shape);
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  get isCuda(): boolean {
    return this.device !== 'cpu';
  }

  /** Copies to `device` (a new tensor); the copy of a CPU tensor to 'cpu' is a plain copy. */
  to(device: Device | 'cuda'): Tensor {
    this.assertAlive('tensor');
    return Tensor.fromNative(addon().toDevice(this, parseDevice(device)));
  }

  /** Copies `src`'s values into this tensor's memory, from either device (same dtype and size). */
  copyFrom(src: Tensor): this {
    this.assertAlive('tensor');
    if (!(src instanceof Tensor)) throw new TypeError('src: expected a Tensor');
    src.assertAlive('src');
    addon().copyInto(this, src);
    return this;
  }

  /** Sets every element to 0 in place, on either device. */
  zero(): this {
    this.assertAlive('tensor');
    addon().fillZero(this);
    return this;
  }

  /** The values as a Float32Array (CPU only; converts bf16/f16/i32/u8). */
  toFloat32(): Float32Array {
    const data = this.cpuData('tensor');
    if (this.dtype === 'bf16' || this.dtype === 'f16') return toFloat32Array(data as Uint16Array, this.dtype);
    return Float32Array.from(data as ArrayLike<number>);
  }

  /** The CPU TypedArray, or an error telling the caller to move the tensor first. */
  cpuData(argument: string): TypedArray {
    this.assertAlive(argument);
    if (!this.data) throw new TypeError(`${argument}: tensor is on ${this.device}; call .to('cpu') first`);
    return this.data;
  }

  assertAlive(argument: string): void {
    if (this.#disposed) throw new TypeError(`${argument}: tensor was disposed`);
  }

  /** Frees native memory now. Safe to call twice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#ownsNative) addon().release(this);
    this.data = undefined;
    this.handle = undefined;
  }
}

/**
 * Frees at once the native memory behind kernel outputs: a Tensor (as dispose()), a
 * TypedArray a kernel returned (it becomes empty), or a result object or array holding
 * them (e.g. the whole `tokenLogprobs(...)` result). Memory the caller allocated is left
 * alone. Why: Node runs N-API finalizers on a later event-loop turn, never during the
 * garbage collection itself, so a synchronous loop that drops its outputs holds every
 * one of them until it yields (10^4 tokenLogprobsBackward calls reached 10.9 GB).
 */
export function release(value: unknown): void {
  releaseInto(value, 0);
}

function releaseInto(value: unknown, depth: number): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if (value instanceof Tensor) {
    value.dispose();
  } else if (ArrayBuffer.isView(value)) {
    // Only whole native blocks are freed (kernel outputs span their buffer; a subarray,
    // such as a Policy parameter view, is part of something still in use). The addon
    // ignores memory it does not own.
    if (!(value instanceof DataView) && value.byteLength > 0 && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength)
      addon().release({ dtype: 'u8', shape: [0], device: 'cpu', data: value });
  } else {
    for (const item of Array.isArray(value) ? value : Object.values(value)) releaseInto(item, depth + 1);
  }
}

/** Wraps a native result object as a Tensor owning its memory. */
export function adopt(native: NativeTensor): Tensor {
  return Tensor.fromNative(native);
}
