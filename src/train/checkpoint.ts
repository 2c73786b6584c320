// Checkpoint directories in a run directory, written so that a crash at any instant leaves
// either the previous checkpoints or the new one complete — never a half-written
// checkpoint that --resume would pick up:
//
//   <out>/checkpoint-<step>.tmp-<pid>/   everything is written here first (the caller's
//                                        weights, tokenizer, optimiser state; trainer_state.json),
//                                        every file fsynced,
//   <out>/checkpoint-<step>/             then the folder is renamed into place (atomic),
//   <out>/latest                         then this pointer file is replaced atomically.
//
// This module owns that layout and trainer_state.json; what else goes into a checkpoint
// is the caller's, written through the callback of writeCheckpoint.
import { existsSync, fsyncSync, closeSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ensureDir, fsyncDir, writeFileAtomic } from '../atomic_file.js';
import { checkRngState, type RngState } from './rng.js';

export const LATEST_FILE = 'latest';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const TRAINER_STATE_FORMAT = 'lgrpo-native/trainer-state';
export const TRAINER_STATE_VERSION = 1;

const CHECKPOINT_PATTERN = /^checkpoint-(\d+)$/;
// A folder being written (.tmp) or a complete checkpoint moved aside while a checkpoint of
// the same step replaces it (.old); either is left behind only by a crash.
const SIDE_PATTERN = /^checkpoint-(\d+)\.(tmp|old)-(\d+)$/;

export interface DataCursor {
  /** Passes completed over the training prompts. */
  epoch: number;
  /** Prompts consumed in the current pass. */
  offset: number;
}

export interface LambdaOptimizerState {
  /** e.g. 'sgd' */
  kind: string;
  /** Its scalars (momentum, Adam moments, step count); {} for plain SGD. */
  state: Record<string, number>;
}

export interface TrainerState {
  /** Optimiser steps completed; the checkpoint's folder is checkpoint-<step>. */
  step: number;
  lambda: number;
  lambdaOptimizer: LambdaOptimizerState;
  /** Named generator states (e.g. data, sampling), each from Rng.getState(). */
  rng: Record<string, RngState>;
  dataCursor: DataCursor;
  /** configHash() of the run's config. */
  configHash: string;
  /** configToJson() of the run's config: what a resumed run starts from. */
  config?: Record<string, unknown>;
  /** Training time so far, so that timings and ETAs continue across a resume. */
  elapsedSeconds?: number;
  /** Anything else the trainer keeps (JSON). */
  extra?: Record<string, unknown>;
}

export interface FoundCheckpoint {
  /** The checkpoint directory. */
  dir: string;
  /** The run directory holding it. */
  runDir: string;
  step: number;
  state: TrainerState;
  /** Set when `latest` was missing or broken and the newest complete checkpoint was taken instead. */
  note?: string;
}

export interface WriteCheckpointOptions {
  /** Written as trainer_state.json before the callback runs (its step must be `step`). */
  state?: TrainerState;
  /** Keep only the newest K checkpoints afterwards (0 or undefined: keep all). */
  keepLast?: number;
}

export function checkpointName(step: number): string {
  return `checkpoint-${step}`;
}

function checkStep(step: unknown, name = 'step'): number {
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0)
    throw new RangeError(`${name}: expected a non-negative integer, got ${String(step)}`);
  return step;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// trainer_state.json

const STATE_KEYS = new Set(['format', 'version', 'step', 'lambda', 'lambdaOptimizer', 'rng', 'dataCursor', 'configHash', 'config', 'elapsedSeconds', 'extra']);

/** Validates a trainer state (as parsed from JSON); errors start with `where` and name the field. */
export function checkTrainerState(value: unknown, where = 'trainer state'): TrainerState {
  const fail = (field: string, problem: string): never => {
    throw new TypeError(`${where}: ${field}: ${problem}`);
  };
  if (!isPlainObject(value)) return fail('(top level)', `expected an object, got ${JSON.stringify(value)}`);
  for (const key of Object.keys(value)) if (!STATE_KEYS.has(key)) fail(key, 'unknown field');
  const v = value;
  const step = v.step;
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) fail('step', `expected a non-negative integer, got ${JSON.stringify(step)}`);
  if (typeof v.lambda !== 'number' || !Number.isFinite(v.lambda)) fail('lambda', `expected a finite number, got ${JSON.stringify(v.lambda)}`);

  const opt = v.lambdaOptimizer;
  if (!isPlainObject(opt) || typeof opt.kind !== 'string' || opt.kind === '' || !isPlainObject(opt.state))
    fail('lambdaOptimizer', `expected {kind: string, state: {name: number}}, got ${JSON.stringify(opt)}`);
  const optState = (opt as { state: Record<string, unknown> }).state;
  for (const [k, x] of Object.entries(optState))
    if (typeof x !== 'number' || !Number.isFinite(x)) fail(`lambdaOptimizer.state.${k}`, `expected a finite number, got ${JSON.stringify(x)}`);

  if (!isPlainObject(v.rng)) fail('rng', `expected an object of named generator states, got ${JSON.stringify(v.rng)}`);
  const rng: Record<string, RngState> = {};
  for (const [name, s] of Object.entries(v.rng as Record<string, unknown>)) {
    try {
      rng[name] = checkRngState(s, `rng.${name}`);
    } catch (e) {
      throw new TypeError(`${where}: ${(e as Error).message}`);
    }
  }

  const cursor = v.dataCursor;
  if (!isPlainObject(cursor)) fail('dataCursor', `expected {epoch, offset}, got ${JSON.stringify(cursor)}`);
  for (const k of ['epoch', 'offset'] as const) {
    const x = (cursor as Record<string, unknown>)[k];
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) fail(`dataCursor.${k}`, `expected a non-negative integer, got ${JSON.stringify(x)}`);
  }
  for (const k of Object.keys(cursor as object)) if (k !== 'epoch' && k !== 'offset') fail(`dataCursor.${k}`, 'unknown field');

  if (typeof v.configHash !== 'string' || v.configHash === '') fail('configHash', `expected a non-empty string, got ${JSON.stringify(v.configHash)}`);
  if (v.config !== undefined && !isPlainObject(v.config)) fail('config', `expected an object, got ${JSON.stringify(v.config)}`);
  if (v.elapsedSeconds !== undefined && (typeof v.elapsedSeconds !== 'number' || !Number.isFinite(v.elapsedSeconds) || v.elapsedSeconds < 0))
    fail('elapsedSeconds', `expected a finite number >= 0, got ${JSON.stringify(v.elapsedSeconds)}`);
  if (v.extra !== undefined && !isPlainObject(v.extra)) fail('extra', `expected an object, got ${JSON.stringify(v.extra)}`);

  const out: TrainerState = {
    step: step as number,
    lambda: v.lambda as number,
    lambdaOptimizer: { kind: (opt as { kind: string }).kind, state: { ...(optState as Record<string, number>) } },
    rng,
    dataCursor: { epoch: (cursor as unknown as DataCursor).epoch, offset: (cursor as unknown as DataCursor).offset },
    configHash: v.configHash as string,
  };
  if (v.config !== undefined) out.config = v.config as Record<string, unknown>;
  if (v.elapsedSeconds !== undefined) out.elapsedSeconds = v.elapsedSeconds as number;
  if (v.extra !== undefined) out.extra = v.extra as Record<string, unknown>;
  return out;
}

/** Writes `<dir>/trainer_state.json` (validated first) atomically. */
export function writeTrainerState(dir: string, state: TrainerState): string {
  const checked = checkTrainerState(JSON.parse(JSON.stringify(state)), 'state');
  const path = join(dir, TRAINER_STATE_FILE);
  writeFileAtomic(path, `${JSON.stringify({ format: TRAINER_STATE_FORMAT, version: TRAINER_STATE_VERSION, ...checked }, null, 2)}\n`);
  return path;
}

/** Reads and validates `<dir>/trainer_state.json`. */
export function readTrainerState(dir: string): TrainerState {
  const path = join(dir, TRAINER_STATE_FILE);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${path}: ${code === 'ENOENT' ? 'missing (not a complete checkpoint)' : `cannot read: ${(e as Error).message}`}`);
  }
  if (!isPlainObject(json)) throw new TypeError(`${path}: expected a JSON object`);
  if (json.format !== TRAINER_STATE_FORMAT) throw new TypeError(`${path}: format: expected ${JSON.stringify(TRAINER_STATE_FORMAT)}, got ${JSON.stringify(json.format)}`);
  if (json.version !== TRAINER_STATE_VERSION)
    throw new TypeError(`${path}: version: this lgrpo-native reads version ${TRAINER_STATE_VERSION}, the file is version ${JSON.stringify(json.version)}`);
  return checkTrainerState(json, path);
}

// ---------------------------------------------------------------------------------------
// Layout of a run directory

/** Complete checkpoints (checkpoint-N folders holding trainer_state.json), oldest first. */
export function listCheckpoints(runDir: string): Array<{ step: number; dir: string }> {
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch {
    return [];
  }
  const out: Array<{ step: number; dir: string }> = [];
  for (const name of names) {
    const m = CHECKPOINT_PATTERN.exec(name);
    if (!m) continue;
    const dir = join(runDir, name);
    if (isDir(dir) && existsSync(join(dir, TRAINER_STATE_FILE))) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The folder name `latest` points to, or undefined when there is no `latest`. */
export function readLatest(runDir: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(runDir, LATEST_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const name = text.trim();
  // Only a checkpoint-N name beside the pointer: never a path that leads elsewhere.
  if (!CHECKPOINT_PATTERN.test(name)) throw new Error(`${join(runDir, LATEST_FILE)}: expected a checkpoint-N folder name, got ${JSON.stringify(name)}`);
  return name;
}

function writeLatest(runDir: string, name: string | undefined): void {
  const path = join(runDir, LATEST_FILE);
  if (name === undefined) rmSync(path, { force: true });
  else writeFileAtomic(path, `${name}\n`);
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// Run directories this process is writing a checkpoint into right now.
const writing = new Set<string>();

/**
 * Removes what crashed saves left in a run directory: .tmp folders of processes that are
 * gone (or of this one, when it is not saving there now). A .old folder is a complete
 * checkpoint moved aside while a checkpoint of the same step replaced it: it goes back
 * into place when the replacement never arrived, and is deleted otherwise.
 * Returns the paths removed or restored.
 */
export function cleanStaleTemps(runDir: string): string[] {
  const dir = resolve(runDir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const touched: string[] = [];
  for (const name of names) {
    const m = SIDE_PATTERN.exec(name);
    if (!m) continue;
    const pid = Number(m[3]);
    const ours = pid === process.pid;
    if (ours ? writing.has(dir) : isAlive(pid)) continue;
    const path = join(dir, name);
    const final = join(dir, checkpointName(Number(m[1])));
    if (m[2] === 'old' && !existsSync(final)) renameSync(path, final);
    else rmSync(path, { recursive: true, force: true });
    touched.push(path);
  }
  if (touched.length) fsyncDir(dir);
  return touched;
}

function fsyncTree(path: string): void {
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) fsyncTree(child);
    else if (entry.isFile()) {
      const fd = openSync(child, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  fsyncDir(path);
}

/**
 * Writes checkpoint-<step> in `out` atomically: `write(tmpDir)` fills a temporary folder
 * (options.state, when given, is already there as trainer_state.json); once it resolves
 * and the folder holds a valid trainer_state.json for this step, every file is fsynced,
 * the folder is renamed to checkpoint-<step> and `latest` is pointed at it. If `write`
 * throws, the temporary folder is removed and the error rethrown: the run directory is as
 * it was. A checkpoint of the same step is replaced. Returns the checkpoint's path.
 */
export async function writeCheckpoint(
  out: string,
  step: number,
  write: (tmpDir: string) => void | Promise<void>,
  options: WriteCheckpointOptions = {},
): Promise<string> {
  checkStep(step);
  if (typeof write !== 'function') throw new TypeError('write: expected a function (tmpDir) => void | Promise<void>');
  const keepLast = options.keepLast ?? 0;
  checkStep(keepLast, 'keepLast');
  if (options.state !== undefined && options.state.step !== step)
    throw new RangeError(`state.step: ${options.state.step} differs from the checkpoint's step ${step}`);

  const runDir = resolve(out);
  ensureDir(runDir, 'out');
  if (writing.has(runDir)) throw new Error(`${runDir}: this process is already writing a checkpoint there`);
  cleanStaleTemps(runDir);
  writing.add(runDir);
  try {
    const name = checkpointName(step);
    const tmp = join(runDir, `${name}.tmp-${process.pid}`);
    const final = join(runDir, name);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    try {
      if (options.state !== undefined) writeTrainerState(tmp, options.state);
      await write(tmp);
      const state = readTrainerState(tmp);
      if (state.step !== step) throw new RangeError(`${join(tmp, TRAINER_STATE_FILE)}: step ${state.step} differs from the checkpoint's step ${step}`);
      fsyncTree(tmp);
      if (existsSync(final)) {
        // rename() cannot replace a non-empty folder: move the old one aside first. A crash
        // between the two renames leaves the .old folder, which cleanStaleTemps restores.
        const old = join(runDir, `${name}.old-${process.pid}`);
        rmSync(old, { recursive: true, force: true });
        renameSync(final, old);
        renameSync(tmp, final);
        fsyncDir(runDir);
        rmSync(old, { recursive: true, force: true });
      } else {
        renameSync(tmp, final);
      }
      fsyncDir(runDir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
    writeLatest(runDir, name);
    if (keepLast > 0) pruneCheckpoints(runDir, keepLast);
    return final;
  } finally {
    writing.delete(runDir);
  }
}

/**
 * Deletes all but the newest `keepLast` checkpoints (never the one `latest` points to).
 * Returns the deleted paths.
 */
export function pruneCheckpoints(runDir: string, keepLast: number): string[] {
  checkStep(keepLast, 'keepLast');
  if (keepLast === 0) return [];
  const dir = resolve(runDir);
  const latest = readLatest(dir);
  const all = listCheckpoints(dir);
  const removed: string[] = [];
  for (const c of all.slice(0, Math.max(0, all.length - keepLast))) {
    if (basename(c.dir) === latest) continue;
    rmSync(c.dir, { recursive: true, force: true });
    removed.push(c.dir);
  }
  if (removed.length) fsyncDir(dir);
  return removed;
}

/**
 * Deletes the checkpoints after `step` and points `latest` at the newest one left. A run
 * resumed from an earlier checkpoint calls this so its directory holds one history, as an
 * uninterrupted run's would (metrics.jsonl is truncated the same way).
 */
export function removeCheckpointsAfter(runDir: string, step: number): string[] {
  checkStep(step);
  const dir = resolve(runDir);
  const removed: string[] = [];
  for (const c of listCheckpoints(dir)) {
    if (c.step <= step) continue;
    rmSync(c.dir, { recursive: true, force: true });
    removed.push(c.dir);
  }
  if (removed.length) {
    const left = listCheckpoints(dir);
    writeLatest(dir, left.length ? basename(left[left.length - 1].dir) : undefined);
    fsyncDir(dir);
  }
  return removed;
}

function loadFound(dir: string, note?: string): FoundCheckpoint {
  const state = readTrainerState(dir);
  const m = CHECKPOINT_PATTERN.exec(basename(dir));
  if (m && Number(m[1]) !== state.step)
    throw new Error(`resume: ${dir} holds the state of step ${state.step}, not ${m[1]} (a folder renamed by hand?)`);
  const found: FoundCheckpoint = { dir, runDir: dirname(dir), step: state.step, state };
  if (note !== undefined) found.note = note;
  return found;
}

/**
 * --restart: clears the metrics of a run that stopped before its first checkpoint, so a
 * new run can start over in its directory (nothing there can be resumed). A directory
 * holding a complete checkpoint is refused: that run can be resumed, and would be lost.
 */
export function clearUnfinishedRun(runDir: string): void {
  if (!existsSync(runDir)) return;
  cleanStaleTemps(runDir);
  const checkpoints = listCheckpoints(runDir);
  if (checkpoints.length)
    throw new Error(`--restart: ${runDir} holds ${checkpoints.length} checkpoint(s) (newest: step ${checkpoints[checkpoints.length - 1].step}); resume it with --resume ${runDir}, or choose another --out`);
  for (const name of ['metrics.jsonl', LATEST_FILE]) rmSync(join(runDir, name), { force: true });
}

/**
 * Resolves --resume: a checkpoint directory (it holds trainer_state.json) as is; a run
 * directory to the checkpoint `latest` names (or, if `latest` is missing or points
 * nowhere, its newest complete checkpoint). A run directory is first repaired with
 * cleanStaleTemps (a checkpoint moved aside by a save that crashed goes back in place), as
 * the resumed run is about to write there anyway. Errors start with "resume:" and say
 * what the path is instead.
 */
export function findCheckpoint(pathOrRunDir: string): FoundCheckpoint {
  if (typeof pathOrRunDir !== 'string' || pathOrRunDir === '') throw new TypeError(`resume: expected a path, got ${JSON.stringify(pathOrRunDir)}`);
  const path = resolve(pathOrRunDir);
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    throw new Error(`resume: ${path} does not exist`);
  }
  if (!isDirectory) throw new Error(`resume: ${path} is a file; expected a run directory or a checkpoint directory`);
  const name = basename(path);
  if (SIDE_PATTERN.test(name))
    throw new Error(`resume: ${path} is an unfinished or replaced checkpoint left by a crash while saving; resume from the run directory ${dirname(path)} instead`);
  if (existsSync(join(path, TRAINER_STATE_FILE))) {
    try {
      return loadFound(path);
    } catch (e) {
      throw new Error(`resume: ${(e as Error).message.replace(/^resume: /, '')}`, { cause: e });
    }
  }
  if (CHECKPOINT_PATTERN.test(name))
    throw new Error(`resume: ${path} has no ${TRAINER_STATE_FILE}: not a complete checkpoint`);

  cleanStaleTemps(path);
  let latest: string | undefined;
  let note: string | undefined;
  try {
    latest = readLatest(path);
  } catch (e) {
    note = `${(e as Error).message}; took the newest complete checkpoint instead`;
  }
  if (latest !== undefined) {
    const dir = join(path, latest);
    if (existsSync(join(dir, TRAINER_STATE_FILE))) return loadFound(dir);
    note = `${join(path, LATEST_FILE)} names ${latest}, which is missing or incomplete; took the newest complete checkpoint instead`;
  }
  const all = listCheckpoints(path);
  if (all.length) return loadFound(all[all.length - 1].dir, note);
  const stoppedEarly = existsSync(join(path, 'metrics.jsonl'));
  throw new Error(
    `resume: ${path} is neither a checkpoint directory (no ${TRAINER_STATE_FILE}) nor a run directory with checkpoints (no complete checkpoint-N folder${latest !== undefined ? `; '${LATEST_FILE}' names ${latest}, which is missing` : ''})` +
    (stoppedEarly ? `; its run stopped before its first checkpoint: start it over with --out ${path} --restart` : ''),
  );
}

/** Whether a directory is a checkpoint (its trainer state) or a run directory (its metrics), as findCheckpoint searches them. */
export function isRunOrCheckpoint(path: string): boolean {
  return existsSync(join(path, TRAINER_STATE_FILE)) || existsSync(join(path, 'metrics.jsonl'));
}
