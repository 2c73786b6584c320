// The supervised warm-up's result kept for reuse: `compare` trains every loss of a seed
// from the same warmed-up weights, computed once. The warm-up is a function of the model,
// the seed and its length alone (its data and its optimiser are its own), so a run that
// loads it continues exactly as one that computed it: the weights are kept as the raw
// fp32 parameter buffer, bit for bit, whatever dtype the model directory stores.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Tensor } from '../tensor.js';
import type { Policy } from '../engine/policy.js';
import { writeDirAtomic } from './atomic_dir.js';
import type { TrainConfig } from './config.js';
import type { WarmupRecord } from './sft.js';

const PARAMS_FILE = 'parameters.f32';
const INFO_FILE = 'warmup.json';

export interface CachedWarmup {
  /** The metric lines the warm-up wrote. */
  records: WarmupRecord[];
  steps: number;
  seconds: number;
  finalLoss: number;
}

/** The folder in `cacheDir` that holds the warm-up this config would compute. */
export function warmupCachePath(
  cacheDir: string,
  c: Pick<TrainConfig, 'model' | 'seed' | 'sftSteps' | 'task'> & Partial<Pick<TrainConfig, 'sftData' | 'sftLr' | 'evalFile' | 'evalFraction' | 'chatTemplate'>>,
): string {
  const model = c.model === 'tiny' ? 'tiny' : resolve(c.model);
  // Whatever chooses the warm-up's data (a JSONL task's train split, --sft-data), its rate and
  // how prompts are written decides its weights as much as the model and seed do.
  const key = createHash('sha256').update(JSON.stringify({
    model, seed: c.seed, sftSteps: c.sftSteps, task: c.task,
    sftData: c.sftData ?? null, sftLr: c.sftLr ?? null, evalFile: c.evalFile ?? null, evalFraction: c.evalFraction ?? null, chatTemplate: c.chatTemplate ?? 'auto',
  })).digest('hex').slice(0, 16);
  return join(resolve(cacheDir), `warmup-${key}`);
}

/** Loads a cached warm-up into `policy` (same architecture); null when there is none. */
export function loadWarmup(dir: string, policy: Policy): CachedWarmup | null {
  if (!existsSync(join(dir, INFO_FILE))) return null;
  const info = JSON.parse(readFileSync(join(dir, INFO_FILE), 'utf8')) as CachedWarmup & { parameters: number };
  const count = policy.parameterBuffer.numel;
  const bytes = readFileSync(join(dir, PARAMS_FILE));
  if (info.parameters !== count || bytes.length !== count * 4)
    throw new Error(`${dir}: the cached warm-up has ${info.parameters} parameters, the policy ${count}; delete the folder to recompute it`);
  // Copied (not viewed): the file's bytes need not be 4-byte aligned, and the policy may live on a GPU.
  policy.parameterBuffer.copyFrom(Tensor.from(new Float32Array(new Uint8Array(bytes).buffer, 0, count)));
  return { records: info.records, steps: info.steps, seconds: info.seconds, finalLoss: info.finalLoss };
}

export function saveWarmup(dir: string, policy: Policy, warmup: CachedWarmup): void {
  const buffer = policy.parameterBuffer;
  const params = (buffer.isCuda ? buffer.to('cpu') : buffer).data as Float32Array;
  writeDirAtomic(dir, (tmp) => {
    writeFileSync(join(tmp, PARAMS_FILE), new Uint8Array(params.buffer, params.byteOffset, params.byteLength));
    writeFileSync(join(tmp, INFO_FILE), `${JSON.stringify({ ...warmup, parameters: params.length }, null, 1)}\n`);
  });
}
