// Timing, the machine's own ceilings measured in the same process, and the report.
//
// A kernel's GB/s means little without the bandwidth this machine can actually move,
// which varies between hosts (and between runs when neighbours are busy), so the
// ceiling is measured here, in the same run, with the simplest code that streams
// memory: glibc memchr (read) and memmove (copy), reached through Buffer.indexOf and
// TypedArray.prototype.set, on one thread and on as many threads as the kernels use.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { buildInfo, cudaSynchronize, type BuildInfo } from '../build_info.js';
import type { DType, TypedArray } from '../dtype.js';
import { measurePeakFlops } from '../ops/gemm.js';
import { Tensor, type Device } from '../tensor.js';

// ---------------------------------------------------------------------------------
// What each kernel's benchmark receives

export interface BenchContext {
  /** small sizes and short timings (CI) */
  quick: boolean;
  device: Device;
  /** progress, as each step starts (stderr) */
  log(message: string): void;
  /** keeps a result (and prints its progress line) */
  record(result: BenchResult): void;
  /** the bandwidth ceiling, measured on first use */
  ceiling(): Promise<Ceiling>;
  /** timing options scaled for --quick */
  timing(options?: TimingOptions): TimingOptions;
}

export interface KernelBench {
  name: string;
  run(ctx: BenchContext): Promise<void>;
}

// ---------------------------------------------------------------------------------
// Inputs. Benchmarks need many values fast (622 M logits), not statistical quality:
// xorshift32 fills ~1 ns per element where Math.random would take several.

export function fillUniform(out: Float32Array, lo: number, hi: number, seed = 0x9e3779b9): Float32Array {
  let s = seed >>> 0 || 1;
  const scale = (hi - lo) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = lo + (s >>> 0) * scale;
  }
  return out;
}

/** Uniform values in [lo, hi) stored as bf16 bits (truncated, which is fine for timing). */
export function fillUniformBf16(out: Uint16Array, lo: number, hi: number, seed = 0x85ebca6b): Uint16Array {
  const word = new Float32Array(1), bits = new Uint32Array(word.buffer);
  let s = seed >>> 0 || 1;
  const scale = (hi - lo) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    word[0] = lo + (s >>> 0) * scale;
    out[i] = bits[0] >>> 16;
  }
  return out;
}

export function randomInts(n: number, hiExclusive: number, seed = 0xc2b2ae35): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = (s >>> 0) % hiExclusive;
  }
  return out;
}

/** Wraps an array as a tensor on `device` (no copy on the CPU). */
export function place(array: TypedArray, shape: readonly number[] | undefined, device: Device, dtype?: DType): Tensor {
  const t = Tensor.from(array, shape, dtype);
  if (device === 'cpu') return t;
  const moved = t.to(device);
  t.dispose();
  return moved;
}

/**
 * A copy of a tensor's first `count` values (default all) on the CPU: a copy, so it
 * outlives the tensor's dispose().
 */
export function hostData(t: Tensor, count = t.numel): TypedArray {
  if (!t.isCuda) return t.cpuData('tensor').slice(0, count);
  const moved = t.to('cpu');
  const data = moved.cpuData('tensor').slice(0, count);
  moved.dispose();
  return data;
}

/** Frees every Tensor among an output object's values (one level, and one level of nesting). */
export function disposeAll(output: unknown): void {
  if (output instanceof Tensor) return output.dispose();
  if (!output || typeof output !== 'object') return;
  for (const value of Object.values(output)) {
    if (value instanceof Tensor) value.dispose();
    else if (value && typeof value === 'object' && !ArrayBuffer.isView(value))
      for (const inner of Object.values(value)) if (inner instanceof Tensor) inner.dispose();
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, count = Math.min(a.length, b.length)): number {
  let worst = 0;
  for (let i = 0; i < count; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return NaN;  // a NaN on either side is a disagreement, never hidden
    if (d > worst) worst = d;
  }
  return worst;
}

// ---------------------------------------------------------------------------------
// Timing

export interface TimingOptions {
  /** untimed calls first (page faults, JIT, caches); default 1 */
  warmup?: number;
  /** at least this many timed runs; default 5 */
  minRuns?: number;
  /** and at least this much timed time in total; default 1 s */
  minSeconds?: number;
  /** stop after this many runs even if minSeconds is not reached; default 10000 */
  maxRuns?: number;
  /** stop once this much timed time has passed, even below minRuns (always >= 1 run); default 60 s */
  maxSeconds?: number;
}

export interface Timing {
  medianMs: number;
  minMs: number;
  runs: number;
}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Times `fn`: warm-up calls, then timed calls until both minRuns and minSeconds are
 * met. Only the call itself is timed; `after` (freeing outputs, for instance) runs
 * outside the timed region.
 */
// TimingOptions with their defaults filled in, times in ms.
function timingLimits(options: TimingOptions) {
  return {
    warmup: options.warmup ?? 1, minRuns: options.minRuns ?? 5, minMs: (options.minSeconds ?? 1) * 1000,
    maxRuns: options.maxRuns ?? 10000, maxMs: (options.maxSeconds ?? 60) * 1000,
  };
}

export function timeIt<R>(fn: () => R, options: TimingOptions = {}, after?: (result: R) => void): Timing {
  const { warmup, minRuns, minMs, maxRuns, maxMs } = timingLimits(options);
  for (let i = 0; i < warmup; i++) {
    const r = fn();
    after?.(r);
  }
  const samples: number[] = [];
  let total = 0;
  while (samples.length < maxRuns) {
    const t0 = nowMs();
    const r = fn();
    const dt = nowMs() - t0;
    after?.(r);
    samples.push(dt);
    total += dt;
    if (samples.length >= minRuns && total >= minMs) break;
    if (total >= maxMs) break;
  }
  return { medianMs: median(samples), minMs: Math.min(...samples), runs: samples.length };
}

/**
 * Several functions timed in turn, one call of each per round, so that a drift of the
 * machine's speed (this project's VMs drift by 2× within minutes) falls on all of them
 * alike. Stops as timeIt does, counting runs and time per function (the slowest decides).
 * `ratios[i][j]`: the median over rounds of time(fn i) / time(fn j) in the same round.
 * `between`, untimed, runs before every round and after the last (ReadProbe.measure).
 */
export function timeAlternating(fns: readonly (() => void)[], options: TimingOptions = {}, between?: () => void): { timings: Timing[]; ratios: number[][] } {
  const { warmup, minRuns, minMs, maxRuns, maxMs } = timingLimits(options);
  for (let i = 0; i < warmup; i++) for (const fn of fns) fn();
  const samples: number[][] = fns.map(() => []);
  const totals = fns.map(() => 0);
  for (let round = 0; round < maxRuns; round++) {
    between?.();
    if (!timeRound(round)) break;
  }
  between?.();
  const timings = samples.map((s) => ({ medianMs: median(s), minMs: Math.min(...s), runs: s.length }));
  const ratios = samples.map((a) => samples.map((b) => median(a.map((t, r) => t / b[r]))));
  return { timings, ratios };

  // One round of every fn; false once the limits say stop.
  function timeRound(round: number): boolean {
    fns.forEach((fn, i) => {
      const t0 = nowMs();
      fn();
      const dt = nowMs() - t0;
      samples[i].push(dt);
      totals[i] += dt;
    });
    return !(round + 1 >= minRuns && Math.min(...totals) >= minMs) && Math.max(...totals) < maxMs;
  }
}

/** One timed call and its result, for kernels too slow to repeat (tens of seconds). */
export function timeOnce<R>(fn: () => R): { timing: Timing; result: R } {
  const t0 = nowMs();
  const result = fn();
  const dt = nowMs() - t0;
  return { timing: { medianMs: dt, minMs: dt, runs: 1 }, result };
}

// ---------------------------------------------------------------------------------
// Peak memory. maxRSS is the kernel's own high-water mark, so it catches a peak inside
// a synchronous native call that no sampling from JS could see. It only ever rises, so
// a call's peak is known exactly only if it rose above the mark set before the call;
// otherwise all we know is an upper bound (the mark minus the RSS before the call).

export interface PeakGrowth {
  /** bytes the process's resident set grew to above its size just before the call */
  bytes: number;
  /** 'exact' when the call set a new high-water mark, else 'upper-bound' */
  bound: 'exact' | 'upper-bound';
}

export function peakRssGrowth<R>(fn: () => R): { growth: PeakGrowth; result: R } {
  const rssBefore = process.memoryUsage.rss();
  const markBefore = process.resourceUsage().maxRSS * 1024;
  const result = fn();
  const markAfter = process.resourceUsage().maxRSS * 1024;
  if (markAfter > markBefore) return { growth: { bytes: Math.max(0, markAfter - rssBefore), bound: 'exact' }, result };
  return { growth: { bytes: Math.max(0, markBefore - rssBefore), bound: 'upper-bound' }, result };
}

// ---------------------------------------------------------------------------------
// Bandwidth ceiling

export interface Ceiling {
  /** streaming read, the best of one thread and `threads` threads (GB/s = 1e9 B/s) */
  readGBs: number;
  readGBsOneThread: number;
  /** copy, counting bytes read + bytes written, best of one and `threads` threads */
  copyGBs: number;
  copyGBsOneThread: number;
  threads: number;
  bufferBytes: number;
  method: string;
  /** FLOP ceiling in GFLOP/s: native register-only FMA chains on every kernel thread */
  gflops: number;
  flopNote: string;
}

// Each worker copies its own slice of one shared buffer into the other, `reps` times, and
// reports its own elapsed time. (The parallel read is a ReadProbe's, below.)
const COPY_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { src, dst, offset, length, reps } = workerData;
const a = new Uint8Array(src, offset, length), b = new Uint8Array(dst, offset, length);
parentPort.on('message', () => {
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < reps; r++) b.set(a);
  parentPort.postMessage(Number(process.hrtime.bigint() - t0) / 1e9);
});
`;

async function parallelCopy(src: SharedArrayBuffer, dst: SharedArrayBuffer, threads: number, reps: number): Promise<number> {
  const bytes = src.byteLength;
  const slice = Math.floor(bytes / threads / 4096) * 4096;
  const workers = Array.from({ length: threads }, (_, i) => new Worker(COPY_WORKER_SOURCE, {
    eval: true,
    workerData: { src, dst, offset: i * slice, length: i === threads - 1 ? bytes - i * slice : slice, reps },
  }));
  try {
    const round = () => Promise.all(workers.map((w) => new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.postMessage('go');
    })));
    await round();  // warm-up: page faults, worker start-up
    let best = Infinity;
    for (let i = 0; i < 3; i++) best = Math.min(best, Math.max(...(await round())));
    return (bytes * reps * 2) / best / 1e9;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

function oneThreadStream(kind: 'read' | 'copy', src: SharedArrayBuffer, dst: SharedArrayBuffer, reps: number): number {
  const a = Buffer.from(src);
  const b = new Uint8Array(dst);
  const run = () => {
    for (let r = 0; r < reps; r++) {
      if (kind === 'read') { if (a.indexOf(0) !== -1) throw new Error('unexpected zero byte'); }
      else b.set(a);
    }
  };
  const t = timeIt(run, { warmup: 1, minRuns: 3, minSeconds: 0.2 });
  return (src.byteLength * reps * (kind === 'copy' ? 2 : 1)) / (t.minMs / 1000) / 1e9;
}

/**
 * Measures streaming read and copy bandwidth over `bytes` (default 256 MB: far beyond
 * any last-level cache, so this is DRAM). Best-of-several, as the ceiling should be
 * the most this machine was seen to do.
 */
export async function measureCeiling(bytes = 256 * 1024 * 1024, threads = buildInfo().threads): Promise<Ceiling> {
  const src = new SharedArrayBuffer(bytes);
  const dst = new SharedArrayBuffer(bytes);
  new Uint8Array(src).fill(1);
  new Uint8Array(dst).fill(1);
  const reps = Math.max(1, Math.round((256 * 1024 * 1024) / bytes));
  const readOne = oneThreadStream('read', src, dst, reps);
  const copyOne = oneThreadStream('copy', src, dst, reps);
  const t = Math.max(1, threads);
  let readPar = readOne;
  if (t > 1) {
    const probe = await openReadProbe({ buffer: src, threads: t, reps });
    try {
      readPar = probe.measure();
    } finally {
      await probe.close();
    }
  }
  const copyPar = t > 1 ? await parallelCopy(src, dst, t, reps) : copyOne;
  return {
    readGBs: Math.max(readOne, readPar),
    readGBsOneThread: readOne,
    copyGBs: Math.max(copyOne, copyPar),
    copyGBsOneThread: copyOne,
    threads: t,
    bufferBytes: bytes,
    method: `memchr (read) and memmove (copy, read+write counted) over ${formatBytes(bytes)}, 1 and ${t} thread(s), best of 3`,
    gflops: measurePeakFlops(),
    flopNote: 'FLOP ceiling: measurePeakFlops(), independent FMA chains in registers on every kernel thread, with the vector width the kernels use',
  };
}

/**
 * Streaming read bandwidth, measured synchronously, so that it can run between the calls of
 * timeAlternating: on a host whose memory speed drifts (45 to 82 GB/s within minutes on this
 * project's VMs), a kernel's share of a ceiling measured minutes earlier says more about the
 * drift than about the kernel. memchr over the buffer (for a byte that is absent it reads
 * every byte), one slice per thread, `reps` times per pass: the calling thread reads the
 * first slice while workers, woken through Atomics, read the others. measureCeiling's
 * parallel read is one measure() of a probe over its buffer.
 */
export interface ReadProbe {
  /** GB/s now: the best of 3 passes; also appended to samples */
  measure(): number;
  readonly samples: number[];
  close(): Promise<void>;
}

const PROBE_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { src, offset, length, reps, control, times, index } = workerData;
const a = Buffer.from(src, offset, length);
const c = new Int32Array(control), t = new Float64Array(times);
parentPort.postMessage('ready');
for (let seen = 0; ;) {
  Atomics.wait(c, 0, seen);  // c[0]: the pass number, -1 to stop
  seen = Atomics.load(c, 0);
  if (seen < 0) break;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < reps; r++) if (a.indexOf(0) !== -1) throw new Error('unexpected zero byte');
  t[index] = Number(process.hrtime.bigint() - t0) / 1e9;
  Atomics.add(c, 1, 1);  // c[1]: workers done with this pass
  Atomics.notify(c, 1);
}
`;

export interface ReadProbeOptions {
  /** the buffer to read, every byte nonzero; default: a new one of `bytes` (default 256 MB) */
  buffer?: SharedArrayBuffer;
  bytes?: number;
  /** default: the kernel threads */
  threads?: number;
  /** reads of the buffer per pass; default 1 */
  reps?: number;
}

/**
 * The share of CPU time the hypervisor gave to other guests (steal) from now until
 * fraction() is called, from /proc/stat; undefined where that file is absent (not Linux)
 * or no CPU time passed. A VM's vCPU that is stolen stalls the thread on it, and every
 * join on that thread: timings taken under steal say nothing about the code.
 */
export function stealMeter(): { fraction(): number | undefined } {
  const read = (): { steal: number; total: number } | undefined => {
    try {
      const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
      if (fields.length < 8 || fields.some((x) => !Number.isFinite(x))) return undefined;
      return { steal: fields[7], total: fields.reduce((a, b) => a + b, 0) };
    } catch {
      return undefined;
    }
  };
  const start = read();
  return {
    fraction() {
      const end = read();
      if (!start || !end || end.total <= start.total) return undefined;
      return (end.steal - start.steal) / (end.total - start.total);
    },
  };
}

export async function openReadProbe(options: ReadProbeOptions = {}): Promise<ReadProbe> {
  const src = options.buffer ?? new SharedArrayBuffer(options.bytes ?? 256 * 1024 * 1024);
  if (!options.buffer) new Uint8Array(src).fill(1);
  const bytes = src.byteLength, reps = options.reps ?? 1;
  const t = Math.max(1, options.threads ?? buildInfo().threads);
  const slice = Math.floor(bytes / t / 4096) * 4096;
  const control = new Int32Array(new SharedArrayBuffer(8));
  const times = new Float64Array(new SharedArrayBuffer(8 * t));
  const workers = Array.from({ length: t - 1 }, (_, w) => new Worker(PROBE_WORKER_SOURCE, {
    eval: true,
    workerData: {
      src, offset: (w + 1) * slice, length: w + 1 === t - 1 ? bytes - (w + 1) * slice : slice, reps,
      control: control.buffer, times: times.buffer, index: w + 1,
    },
  }));
  const exited = workers.map((w) => new Promise<void>((resolve) => w.once('exit', () => resolve())));
  const errors: unknown[] = [];
  for (const w of workers) w.on('error', (e) => errors.push(e));
  await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('message', () => resolve());
    w.once('error', reject);
  })));
  const first = Buffer.from(src, 0, slice);
  const pass = (): number => {
    Atomics.store(control, 1, 0);
    Atomics.add(control, 0, 1);
    Atomics.notify(control, 0);
    const t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) if (first.indexOf(0) !== -1) throw new Error('unexpected zero byte');
    times[0] = Number(process.hrtime.bigint() - t0) / 1e9;
    for (let done; (done = Atomics.load(control, 1)) < workers.length;) {
      if (errors.length) throw new Error(`read probe: a worker failed: ${String(errors[0])}`);
      Atomics.wait(control, 1, done, 1000);
    }
    return (bytes * reps) / Math.max(...times) / 1e9;
  };
  pass();  // page faults, worker wake-up
  const samples: number[] = [];
  return {
    samples,
    measure() {
      const best = Math.max(pass(), pass(), pass());
      samples.push(best);
      return best;
    },
    async close() {
      Atomics.store(control, 0, -1);
      Atomics.notify(control, 0);
      await Promise.all(exited);
    },
  };
}

// ---------------------------------------------------------------------------------
// Machine description

export interface Machine {
  cpu: string;
  logicalCpus: number;
  cpuFlags: string[];
  memoryBytes: number;
  platform: string;
  node: string;
  build: BuildInfo;
  device: string;
  deviceName?: string;
  /** 1, 5 and 15-minute load averages when the run started (other processes compete for the cores) */
  loadAverageAtStart: number[];
}

function cpuInfoField(field: string): string | undefined {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const line = text.split('\n').find((l) => l.startsWith(field));
    return line?.split(':').slice(1).join(':').trim();
  } catch {
    return undefined;
  }
}

export function describeMachine(device: string, loadAverageAtStart = os.loadavg()): Machine {
  const cpus = os.cpus();
  const model = cpuInfoField('model name') ?? cpus[0]?.model ?? 'unknown CPU';
  const flags = (cpuInfoField('flags') ?? '').split(/\s+/);
  const build = buildInfo();
  const index = device.startsWith('cuda:') ? Number(device.slice(5)) : -1;
  return {
    cpu: model,
    logicalCpus: os.availableParallelism?.() ?? cpus.length,
    cpuFlags: ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_bf16'].filter((f) => flags.includes(f)),
    memoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.arch()}`,
    node: process.version,
    build,
    device,
    deviceName: build.cudaDevices.find((d) => d.index === index)?.name,
    loadAverageAtStart,
  };
}

// ---------------------------------------------------------------------------------
// Results and the report

export interface NaiveComparison {
  /** naive time scaled to the benchmarked size (see rowsTimed) */
  medianMs: number;
  /** rows the naive version ran on; its time was scaled by totalRows / rowsTimed */
  rowsTimed: number;
  totalRows: number;
  /** naive time / kernel time */
  speedup: number;
  /** largest |kernel − naive| over the outputs both computed (a sanity check, not a test) */
  maxAbsDiff: number;
}

export interface BenchResult {
  kernel: string;
  /** what was run: 'forward f32', 'forward+backward lambda β=0.04', ... */
  variant: string;
  size: string;
  dims: Record<string, number>;
  device: string;
  medianMs: number;
  minMs: number;
  runs: number;
  /** bytes the kernel must move at least once (see notes for what is counted) */
  bytes?: number;
  gbPerS?: number;
  /** the ceiling the percentage is taken against: 'read' for read-only streams, 'copy' for
   * read+write, 'flop' for compute-bound kernels (GFLOP/s against the measured FMA peak) */
  ceiling?: 'read' | 'copy' | 'flop' | 'device copy';
  pctOfCeiling?: number;
  flops?: number;
  gflopPerS?: number;
  naive?: NaiveComparison;
  peakRssGrowth?: PeakGrowth & { logitsBytes: number };
  notes: string[];
}

export interface BenchError {
  kernel: string;
  message: string;
}

export interface BenchReport {
  schema: 'lgrpo-native-bench/1';
  quick: boolean;
  machine: Machine;
  ceiling: Ceiling;
  /** on a CUDA device: its copy bandwidth, measured in the same run (the % column's base there) */
  deviceCeiling?: DeviceCeiling;
  results: BenchResult[];
  errors: BenchError[];
}

export interface DeviceCeiling {
  device: string;
  /** device-to-device copy, counting bytes read + bytes written */
  copyGBs: number;
  bufferBytes: number;
  method: string;
}

/**
 * A CUDA device's memory bandwidth: one device-to-device copy between two buffers far
 * larger than its L2, read + write bytes counted, the median of the timed copies.
 */
export function measureDeviceCopy(device: Device, bytes: number, t: TimingOptions): DeviceCeiling {
  const n = Math.floor(bytes / 4);
  const src = Tensor.zeros([n], 'f32', device), dst = Tensor.zeros([n], 'f32', device);
  try {
    const r = timeIt(() => { dst.copyFrom(src); cudaSynchronize(device); }, t);
    return {
      device, copyGBs: (2 * n * 4) / (r.medianMs / 1000) / 1e9, bufferBytes: 2 * n * 4,
      method: `copy: Tensor.copyFrom between two ${formatBytes(n * 4)} buffers on ${device}, median of ${r.runs} timed copies`,
    };
  } finally {
    src.dispose();
    dst.dispose();
  }
}

/** GB/s and % of a CUDA device's copy bandwidth; GFLOP/s rows keep no percentage (no device FLOP ceiling is measured). */
export function withDeviceBandwidth(r: BenchResult, ceiling: DeviceCeiling): BenchResult {
  const { ceiling: _, pctOfCeiling: __, ...rest } = r;
  if (r.bytes === undefined) return rest;
  const gbPerS = r.bytes / (r.medianMs / 1000) / 1e9;
  return { ...rest, gbPerS, ceiling: 'device copy', pctOfCeiling: (100 * gbPerS) / ceiling.copyGBs };
}

/** Fills in GB/s and % of ceiling from bytes and the median time. */
export function withBandwidth(r: BenchResult, ceiling: Ceiling): BenchResult {
  if (r.bytes === undefined) {
    // A kernel that measured its own ceiling next to its timings keeps that percentage.
    if (r.pctOfCeiling !== undefined || r.gflopPerS === undefined || !(ceiling.gflops > 0)) return r;
    return { ...r, ceiling: 'flop', pctOfCeiling: (100 * r.gflopPerS) / ceiling.gflops };
  }
  const gbPerS = r.bytes / (r.medianMs / 1000) / 1e9;
  const kind = r.ceiling ?? 'read';
  const top = kind === 'read' ? ceiling.readGBs : ceiling.copyGBs;
  return { ...r, gbPerS, ceiling: kind, pctOfCeiling: (100 * gbPerS) / top };
}

export function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

function formatMs(ms: number): string {
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toPrecision(3);
}

function rate(r: BenchResult): string {
  if (r.gflopPerS !== undefined) return `${r.gflopPerS.toFixed(1)} GFLOP/s`;
  if (r.gbPerS !== undefined) return `${r.gbPerS.toFixed(2)} GB/s`;
  return '-';
}

/** One line per result, printed as each finishes. */
export function formatProgressLine(r: BenchResult): string {
  const parts = [`${r.kernel} ${r.variant} [${r.size}]: ${formatMs(r.medianMs)} ms median (${r.runs} run${r.runs === 1 ? '' : 's'})`, rate(r)];
  if (r.pctOfCeiling !== undefined) parts.push(`${r.pctOfCeiling.toFixed(0)}% of ${r.ceiling}`);
  if (r.naive) parts.push(`${r.naive.speedup.toFixed(1)}× vs naive TS`);
  return parts.join(', ');
}

export function formatReport(report: BenchReport): string {
  const m = report.machine, c = report.ceiling, b = m.build;
  const lines: string[] = [];
  const device = m.device === 'cpu' ? 'cpu' : `${m.device}${m.deviceName ? ` (${m.deviceName})` : ''}`;
  lines.push(`lgrpo-native ${b.version} bench${report.quick ? ' (--quick: small sizes)' : ''}`);
  lines.push(`machine: ${m.cpu}, ${m.logicalCpus} logical CPUs [${m.cpuFlags.join(' ')}], ${formatBytes(m.memoryBytes)} RAM, ${m.platform}, node ${m.node}`);
  const load = m.loadAverageAtStart[0];
  if (load >= 0.5 * m.logicalCpus)
    lines.push(`! load average ${load.toFixed(1)} on ${m.logicalCpus} CPUs when the run started: other processes were busy, so timings are pessimistic and noisy`);
  lines.push(`addon:   simd ${b.simd}, ${b.threads} kernel thread(s), cuda ${b.cuda ? 'compiled' : 'not compiled'}; device ${device}`);
  lines.push(`ceiling: read ${c.readGBs.toFixed(1)} GB/s (1 thread ${c.readGBsOneThread.toFixed(1)}), copy ${c.copyGBs.toFixed(1)} GB/s read+write (1 thread ${c.copyGBsOneThread.toFixed(1)})`);
  lines.push(`         ${c.method}`);
  lines.push(`         ${c.flopNote}`);
  const d = report.deviceCeiling;
  if (d) lines.push(`device:  ${d.device} copy ${d.copyGBs.toFixed(0)} GB/s read+write (${d.method}); the % column is of this`);
  else if (m.device !== 'cpu') lines.push(`         (host memory: the ${m.device} kernels' GB/s are shown without a percentage)`);
  lines.push('');
  const header = ['kernel', 'variant', 'size', 'median ms', 'min ms', 'GB/s or GFLOP/s', '% of ceiling', '× vs naive TS', 'naive on', 'max |Δ|'];
  const rows = report.results.map((r) => [
    r.kernel, r.variant, r.size, formatMs(r.medianMs), formatMs(r.minMs), rate(r),
    r.pctOfCeiling === undefined ? '-' : `${r.pctOfCeiling.toFixed(0)}% ${r.ceiling}`,
    r.naive ? `${r.naive.speedup.toFixed(1)}×` : '-',
    r.naive ? (r.naive.rowsTimed < r.naive.totalRows ? `${r.naive.rowsTimed}/${r.naive.totalRows} rows` : 'all') : '-',
    r.naive ? r.naive.maxAbsDiff.toExponential(1) : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (row: string[]) => row.map((cell, i) => (i >= 3 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ');
  lines.push(fmt(header));
  lines.push(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) lines.push(fmt(row));
  const notes = report.results.flatMap((r) => {
    const own = r.notes.map((n) => `${r.kernel} ${r.variant}: ${n}`);
    if (r.peakRssGrowth) {
      const g = r.peakRssGrowth;
      own.push(`${r.kernel} ${r.variant}: peak RSS growth during the call ${g.bound === 'exact' ? '' : '≤ '}${formatBytes(g.bytes)} vs ${formatBytes(g.logitsBytes)} to hold the rows×vocab f32 logits`);
    }
    return own;
  });
  lines.push('');
  lines.push('% of ceiling: against measured read bandwidth for read-only streams, the FMA peak for GFLOP/s rows, copy bandwidth (read+write) where the kernel');
  lines.push('          writes as much as it reads (rewriting a buffer in place can beat a copy between two buffers: > 100% is possible).');
  lines.push('× vs naive TS: plain single-threaded TypeScript (src/bench/naive.ts) in this process; the kernel uses all its threads.');
  lines.push('naive on: the rows the naive version ran on; its time is scaled per row to the full size. max |Δ|: largest difference');
  lines.push('          between kernel and naive outputs on those rows (a sanity check; the tests check correctness).');
  for (const n of notes) lines.push(`- ${n}`);
  for (const e of report.errors) lines.push(`! ${e.kernel} failed: ${e.message}`);
  return lines.join('\n');
}
