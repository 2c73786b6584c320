// Runs the selected kernel benchmarks and assembles the report. Each kernel's module
// is loaded only when selected, and a kernel that fails is reported as an error while
// the others still run.
import os from 'node:os';
import { buildInfo, setNumThreads } from '../build_info.js';
import type { Device } from '../tensor.js';
import {
  describeMachine, formatBytes, formatProgressLine, measureCeiling, measureDeviceCopy, withBandwidth, withDeviceBandwidth,
  type BenchContext, type BenchError, type BenchReport, type BenchResult, type Ceiling, type DeviceCeiling, type KernelBench, type TimingOptions,
} from './harness.js';

// linearTokenLogprobs runs first: its peak-memory figure comes from the process's RSS
// high-water mark, which the multi-GB logits of tokenLogprobs would otherwise mask.
export const KERNELS = ['linearTokenLogprobs', 'tokenLogprobs', 'grpoLoss', 'groupAdvantages', 'lambdaWeights', 'gemm', 'attention'] as const;
export type KernelName = (typeof KERNELS)[number];

const loaders: Record<KernelName, () => Promise<KernelBench>> = {
  linearTokenLogprobs: async () => (await import('./linear_token_logprobs.js')).linearTokenLogprobsBench,
  tokenLogprobs: async () => (await import('./token_logprobs.js')).tokenLogprobsBench,
  grpoLoss: async () => (await import('./grpo_loss.js')).grpoLossBench,
  groupAdvantages: async () => (await import('./group_advantages.js')).groupAdvantagesBench,
  lambdaWeights: async () => (await import('./lambda_weights.js')).lambdaWeightsBench,
  gemm: async () => (await import('./gemm.js')).gemmBench,
  attention: async () => (await import('./attention.js')).attentionBench,
};

export interface BenchOptions {
  quick?: boolean;
  device?: Device;
  /** kernels to run, in any order (they run in KERNELS order); default all */
  only?: readonly KernelName[];
  /** kernel threads (setNumThreads) for this run */
  threads?: number;
  /** progress messages; default none */
  log?: (message: string) => void;
}

export function parseKernelList(list: string): KernelName[] {
  const names = list.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names)
    if (!(KERNELS as readonly string[]).includes(n))
      throw new RangeError(`only: unknown kernel '${n}'; expected a comma-separated list of ${KERNELS.join(', ')}`);
  if (names.length === 0) throw new RangeError(`only: expected a comma-separated list of ${KERNELS.join(', ')}`);
  return names as KernelName[];
}

export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const loadAtStart = os.loadavg();
  const quick = options.quick ?? false;
  const device = options.device ?? 'cpu';
  const log = options.log ?? (() => {});
  if (options.threads !== undefined) setNumThreads(options.threads);
  const selected = KERNELS.filter((k) => !options.only || options.only.includes(k));

  let ceiling: Ceiling | undefined;
  const measure = async (): Promise<Ceiling> => {
    if (!ceiling) {
      const bytes = quick ? 64 * 1024 * 1024 : 256 * 1024 * 1024;
      log(`ceiling: measuring read and copy bandwidth over ${bytes >> 20} MB...`);
      ceiling = await measureCeiling(bytes, buildInfo().threads);
      log(`ceiling: read ${ceiling.readGBs.toFixed(1)} GB/s, copy ${ceiling.copyGBs.toFixed(1)} GB/s (read+write), FMA peak ${ceiling.gflops.toFixed(0)} GFLOP/s`);
    }
    return ceiling;
  };
  // Percentages against host DRAM or host FMAs say nothing about a GPU kernel: there the
  // base is the device's own copy bandwidth, measured first in the same run.
  let deviceCeiling: DeviceCeiling | undefined;
  if (device !== 'cpu') {
    const bytes = quick ? 1 << 22 : 2 ** 31;
    log(`device ceiling: copying ${formatBytes(bytes)} on ${device}...`);
    deviceCeiling = measureDeviceCopy(device, bytes, quick ? { warmup: 1, minRuns: 1, minSeconds: 0, maxSeconds: 1 } : { warmup: 2, minRuns: 10, minSeconds: 1, maxSeconds: 10 });
    log(`device ceiling: copy ${deviceCeiling.copyGBs.toFixed(0)} GB/s (read+write)`);
  }
  const finish = (r: BenchResult): BenchResult => {
    if (deviceCeiling) return withDeviceBandwidth(r, deviceCeiling);
    return ceiling ? withBandwidth(r, ceiling) : r;
  };

  const results: BenchResult[] = [];
  const errors: BenchError[] = [];
  const ctx: BenchContext = {
    quick,
    device,
    log,
    ceiling: measure,
    record(result) {
      results.push(result);
      log(`  ${formatProgressLine(finish(result))}`);
    },
    timing(t: TimingOptions = {}): TimingOptions {
      if (!quick) return t;
      return { ...t, warmup: Math.min(t.warmup ?? 1, 2), minRuns: Math.min(t.minRuns ?? 5, 3), minSeconds: 0.05, maxSeconds: 2 };
    },
  };

  for (const name of selected) {
    const started = Date.now();
    log(`${name}: starting`);
    try {
      const bench = await loaders[name]();
      await bench.run(ctx);
      log(`${name}: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      errors.push({ kernel: name, message });
      log(`${name}: FAILED: ${message}`);
    }
  }
  await measure();
  return {
    schema: 'lgrpo-native-bench/1',
    quick,
    machine: describeMachine(device, loadAtStart),
    ceiling: ceiling!,
    ...(deviceCeiling ? { deviceCeiling } : {}),
    results: results.map(finish),
    errors,
  };
}

export { formatReport } from './harness.js';
