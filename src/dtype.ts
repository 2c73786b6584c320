// Storage dtypes and conversions between f32 and the 16-bit float formats, which
// JavaScript holds as raw bits in a Uint16Array.
export type DType = 'f32' | 'bf16' | 'f16' | 'i32' | 'u8';
export type FloatDType = 'f32' | 'bf16' | 'f16';
export type TypedArray = Float32Array | Uint16Array | Int32Array | Uint8Array;

export const DTYPES: readonly DType[] = ['f32', 'bf16', 'f16', 'i32', 'u8'];

export function dtypeOfArray(array: ArrayBufferView): DType | undefined {
  if (array instanceof Float32Array) return 'f32';
  if (array instanceof Int32Array) return 'i32';
  if (array instanceof Uint8Array) return 'u8';
  return undefined;  // Uint16Array is ambiguous: bf16 or f16 must be said
}

export function arrayTypeFor(dtype: DType): string {
  switch (dtype) {
    case 'f32': return 'Float32Array';
    case 'bf16': case 'f16': return 'Uint16Array';
    case 'i32': return 'Int32Array';
    case 'u8': return 'Uint8Array';
  }
}

const scratch = new DataView(new ArrayBuffer(4));

/** f32 → bf16 bits, round to nearest even. */
export function f32ToBf16(x: number): number {
  scratch.setFloat32(0, x);
  const bits = scratch.getUint32(0);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32(h: number): number {
  scratch.setUint32(0, (h & 0xffff) << 16);
  return scratch.getFloat32(0);
}

/** f32 → f16 bits, round to nearest even, overflow to ±inf. */
export function f32ToF16(x: number): number {
  scratch.setFloat32(0, x);
  const bits = scratch.getUint32(0);
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    scratch.setUint32(0, abs);
    const units = scratch.getFloat32(0) * 16777216;  // multiples of 2^-24, exact
    let q = Math.floor(units);
    const rem = units - q;
    if (rem > 0.5 || (rem === 0.5 && (q & 1) === 1)) q += 1;
    return sign | q;
  }
  const rounded = (abs + 0xfff + ((abs >>> 13) & 1)) >>> 0;
  return sign | ((rounded - 0x38000000) >>> 13);
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function toFloat32Array(bits: Uint16Array, dtype: 'bf16' | 'f16'): Float32Array {
  const out = new Float32Array(bits.length);
  const convert = dtype === 'bf16' ? bf16ToF32 : f16ToF32;
  for (let i = 0; i < bits.length; i++) out[i] = convert(bits[i]);
  return out;
}

export function fromFloat32Array(values: ArrayLike<number>, dtype: 'bf16' | 'f16'): Uint16Array {
  const out = new Uint16Array(values.length);
  const convert = dtype === 'bf16' ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]);
  return out;
}
