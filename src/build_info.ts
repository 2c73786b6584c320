import { createRequire } from 'node:module';
import { loadAddon, type CudaDeviceInfo, type CudaMemoryStats } from './native.js';
import { parseDevice } from './tensor.js';

const require = createRequire(import.meta.url);

export interface BuildInfo {
  version: string;
  /** CUDA twins compiled into the addon */
  cuda: boolean;
  /** true in the emulated test build (LGRPO_CUDA_EMU): its one cuda:0 runs on the CPU */
  cudaEmulated: boolean;
  /** why cudaDevices is empty, in the CUDA runtime's words ('' when it is not) */
  cudaUnavailable: string;
  /** devices usable now (empty without a GPU or driver) */
  cudaDevices: CudaDeviceInfo[];
  /** the GEMM of the CUDA twins: cuBLASLt (loaded at run time, with its precision) or
   * the project's own tiled kernel, with the reason cuBLASLt is not used */
  cudaMatmul: string;
  /** vector instruction set of the CPU twins */
  simd: string;
  /** CPU threads the kernels use (LGRPO_NUM_THREADS overrides) */
  threads: number;
  /** CPU tensors share memory with native code both ways (always true here) */
  zeroCopy: boolean;
  /** false where the runtime forbids external ArrayBuffers: native outputs then live in
   * V8-owned memory, still written in place, but freed by the GC after dispose() */
  externalBuffers: boolean;
  /** which build was loaded: the addon's path */
  addonPath: string;
}

export function buildInfo(): BuildInfo {
  const { addon, path } = loadAddon();
  const native = addon.buildInfo();
  const pkg = findPackageJson();
  return { version: pkg.version, ...native, cudaMatmul: addon.cudaMatmul(), zeroCopy: true, addonPath: path };
}

function findPackageJson(): { version: string } {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const pkg = require(candidate) as { name?: string; version: string };
      if (pkg.name === 'lgrpo-native') return pkg;
    } catch {
      // try the next layout (src/ when run from dist/src)
    }
  }
  return { version: 'unknown' };
}

/** Sets the number of CPU threads the kernels use. */
export function setNumThreads(n: number): void {
  // The addon reads an int32: 1.5 would silently become 1 and 2^32 + 2 would become 2.
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024)
    throw new RangeError(`threads: expected an integer in [1, 1024], got ${String(n)}`);
  loadAddon().addon.setNumThreads(n);
}

/**
 * The device-memory cache of `device` ('cuda:N'). Freed device tensors and scratch
 * blocks are kept and reused, as PyTorch's caching allocator does, so a training loop
 * whose shapes repeat makes no cudaMalloc after its first step.
 */
export function cudaMemoryStats(device: string): CudaMemoryStats {
  return loadAddon().addon.cudaMemoryStats(cudaDeviceArg(device));
}

/** Returns the cached (freed) blocks of `device` to the driver, e.g. before another process needs the memory. */
export function emptyCudaCache(device: string): void {
  loadAddon().addon.emptyCudaCache(cudaDeviceArg(device));
}

/**
 * Waits until every kernel queued on `device` has finished, and turns a pending CUDA error
 * into a JS Error. Kernels run asynchronously: time device work with this at both ends.
 */
export function cudaSynchronize(device: string): void {
  loadAddon().addon.cudaSynchronize(cudaDeviceArg(device));
}

export type MatmulPrecision = 'highest' | 'high' | 'medium';

/**
 * The precision of f32 matrix products on CUDA devices when cuBLASLt runs them, as
 * torch.set_float32_matmul_precision: 'highest' (f32 products, the default), 'high'
 * (TF32 tensor cores), 'medium' (bf16 tensor cores); f32 accumulation in all three.
 * The own GEMM (no cuBLASLt) is always 'highest'. LGRPO_MATMUL_PRECISION sets the start value.
 */
export function setMatmulPrecision(precision: MatmulPrecision): void {
  if (precision !== 'highest' && precision !== 'high' && precision !== 'medium')
    throw new RangeError(`precision: expected 'highest', 'high' or 'medium', got ${JSON.stringify(precision)}`);
  loadAddon().addon.setMatmulPrecision(precision);
}

function cudaDeviceArg(device: string): string {
  const d = parseDevice(device, 'device');
  if (d === 'cpu') throw new TypeError("device: expected a CUDA device such as 'cuda:0', got 'cpu'");
  return d;
}
