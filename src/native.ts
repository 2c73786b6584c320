// Loads the compiled addon. Builds live side by side: cmake-js writes build-cmake/,
// node-gyp writes build/, the emulated-CUDA test build build-emu/, the scalar test build
// (no AVX2: what a CPU without it runs) build-scalar/. LGRPO_ADDON=cmake|gyp|emu|scalar|<path>
// picks one; otherwise the cmake-js build (which may include CUDA) is preferred.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'native'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('lgrpo-native: cannot find the package root');
    dir = parent;
  }
  return dir;
}

function candidatePaths(root: string): string[] {
  const cmake = join(root, 'build-cmake', 'Release', 'lgrpo_native.node');
  const gyp = join(root, 'build', 'Release', 'lgrpo_native.node');
  const choice = process.env.LGRPO_ADDON;
  if (choice === 'cmake') return [cmake];
  if (choice === 'gyp') return [gyp];
  if (choice === 'emu') return [join(root, 'build-emu', 'Release', 'lgrpo_native.node')];
  if (choice === 'scalar') return [join(root, 'build-scalar', 'Release', 'lgrpo_native.node')];
  if (choice) return [resolve(choice)];
  return [cmake, gyp];
}

/** Raw native tensor object as it crosses the Node-API boundary. */
export interface NativeTensor {
  dtype: string;
  shape: number[];
  device: string;
  data?: ArrayBufferView;
  handle?: object;
  /** bytes into the handle's memory where a CUDA view starts */
  offset?: number;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
export interface NativeAddon {
  empty(shape: number[], dtype: string, device: string): NativeTensor;
  release(tensor: NativeTensor): void;
  toDevice(tensor: NativeTensor, device: string): NativeTensor;
  buildInfo(): { cuda: boolean; cudaEmulated: boolean; cudaUnavailable: string; cudaDevices: CudaDeviceInfo[]; simd: string; threads: number; externalBuffers: boolean };
  setNumThreads(n: number): void;
  cudaMemoryStats(device: string): CudaMemoryStats;
  emptyCudaCache(device: string): void;
  cudaSynchronize(device: string): void;
  cudaMatmul(): string;
  setMatmulPrecision(precision: string): void;
  liveNativeBlocks(): number;
  [kernel: string]: any;
}

/** The device-memory cache of one CUDA device (see cudaMemoryStats in build_info.ts). */
export interface CudaMemoryStats {
  /** cudaMalloc calls so far: a training loop at a steady shape adds none */
  mallocCalls: number;
  /** allocations served from blocks freed earlier */
  reusedBlocks: number;
  /** bytes of the blocks held by live tensors and running calls */
  inUseBytes: number;
  /** bytes of freed blocks kept for reuse (emptyCudaCache returns them) */
  cachedBytes: number;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
}

let cached: { addon: NativeAddon; path: string } | undefined;

export function loadAddon(): { addon: NativeAddon; path: string } {
  if (cached) return cached;
  const root = packageRoot();
  const tried: string[] = [];
  for (const path of candidatePaths(root)) {
    if (!existsSync(path)) {
      tried.push(`${path} (missing)`);
      continue;
    }
    cached = { addon: require(path) as NativeAddon, path };
    return cached;
  }
  throw new Error(
    `lgrpo-native: the native addon is not built. Run \`npm run build:addon\` in ${root}.\nLooked for:\n  ${tried.join('\n  ')}`,
  );
}

export function addon(): NativeAddon {
  return loadAddon().addon;
}
