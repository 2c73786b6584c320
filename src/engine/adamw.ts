// AdamW over named f32 parameters, as torch.optim.AdamW with Hugging Face Trainer's
// conventions: decoupled weight decay on every parameter except biases and norm weights,
// global grad-norm clipping (torch.nn.utils.clip_grad_norm_'s rule), an optional
// learning-rate schedule. The parameters ARE the fp32 master weights (the engine computes
// in fp32); the two moments per parameter live in native memory.
//
// One step: the global norm √(Σ_p Σ g²) (each Σ g² deterministic in native code, added
// in parameter order), then — only once the norm is known to be finite — clipping and the
// fused per-parameter update (src/ops/adamw.ts). A non-finite norm throws before anything
// is written, so the caller may skip the batch and carry on.
//
// State files are one safetensors file: the moments as `<name>.exp_avg` and
// `<name>.exp_avg_sq`, the scalars as JSON in the header's metadata. One file written by
// rename can never pair the moments of one save with the step count of another.
import { addon } from '../native.js';
import { Tensor } from '../tensor.js';
import { adamwStep, gradSumSquares, scaleInPlace } from '../ops/adamw.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors, type TensorInput } from './safetensors.js';
import type { LrSchedule } from './schedule.js';

export type ParamBuffer = Float32Array | Tensor;
export type NamedBuffers =
  | Map<string, ParamBuffer>
  | Record<string, ParamBuffer>
  | Iterable<readonly [string, ParamBuffer]>;

export interface AdamWOptions {
  /** A constant rate, or a schedule called with the 1-based number of each update (see schedule.ts). */
  lr: number | LrSchedule;
  /** (β1, β2); default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Added to √v̂; default 1e-8. */
  eps?: number;
  /** Decoupled weight decay for the parameters that decay; default 0 (Hugging Face Trainer's). */
  weightDecay?: number;
  /** Clip the global gradient norm to this; undefined or 0: no clipping. */
  maxGradNorm?: number;
  /** Parameters exempt from weight decay; default defaultNoDecay (biases and norm weights). */
  noDecay?: (name: string) => boolean;
}

export interface AdamWHyperparameters {
  /** The constant rate, or null when the rate is a schedule (code, which a state cannot hold). */
  lr: number | null;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  /** null: no clipping. */
  maxGradNorm: number | null;
}

export interface AdamWStepResult {
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Whether the gradients were scaled down to maxGradNorm. */
  clipped: boolean;
  /** The rate this update used. */
  lr: number;
  /** 1-based number of this update (Adam's t). */
  step: number;
}

export interface AdamWMoments {
  shape: number[];
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

/** Everything needed to continue a run bit for bit, given the same parameters and gradients. */
export interface AdamWState {
  /** Updates made so far. */
  step: number;
  hyperparameters: AdamWHyperparameters;
  /** Names of the parameters exempt from weight decay. */
  noDecay: string[];
  /** Per parameter, in parameter order. */
  moments: Map<string, AdamWMoments> | Record<string, AdamWMoments>;
}

/**
 * Hugging Face Trainer's rule: no weight decay on biases and on normalisation weights
 * (input_layernorm, post_attention_layernorm, model.norm, ...).
 */
export function defaultNoDecay(name: string): boolean {
  const lower = name.toLowerCase();
  return lower === 'bias' || lower.endsWith('.bias') || lower.includes('norm');
}

/** Thrown by step() when the gradient norm is NaN or infinite; nothing was changed. */
export class NonFiniteGradError extends Error {
  /** The first parameter (in order) whose gradient holds a NaN or an infinity. */
  readonly parameter: string | undefined;
  readonly gradNorm: number;
  /** The update that was refused (1-based). */
  readonly step: number;
  constructor(gradNorm: number, parameter: string | undefined, step: number) {
    super(
      `AdamW.step: the gradient norm is ${gradNorm} at update ${step}` +
        (parameter === undefined ? '' : `; the first non-finite gradient is ${JSON.stringify(parameter)}`) +
        '. Parameters, moments and step count are unchanged.',
    );
    this.name = 'NonFiniteGradError';
    this.parameter = parameter;
    this.gradNorm = gradNorm;
    this.step = step;
  }
}

interface Slot {
  name: string;
  shape: number[];
  numel: number;
  param: Tensor;
  grad: Tensor;
  expAvg: Tensor;
  expAvgSq: Tensor;
  decay: boolean;
}

// torch's clip_grad_norm_ adds this to the norm before dividing max_norm by it.
const CLIP_EPS = 1e-6;
const STATE_FORMAT = 'lgrpo-adamw';
const STATE_KEY = 'lgrpo_adamw';
const STATE_VERSION = 1;

const shapeText = (shape: readonly number[]) => `[${shape.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function entriesOf<T>(value: unknown, name: string): Array<readonly [string, T]> {
  let list: Array<readonly [string, T]>;
  if (value instanceof Map) list = [...value.entries()];
  else if (value !== null && typeof value === 'object' && typeof (value as Iterable<unknown>)[Symbol.iterator] === 'function')
    list = [...(value as Iterable<readonly [string, T]>)];
  else if (isPlainObject(value)) list = Object.entries(value) as Array<[string, T]>;
  else throw new TypeError(`${name}: expected a Map, an object or an iterable of [name, value] pairs`);
  const seen = new Set<string>();
  for (const entry of list) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || entry[0].length === 0)
      throw new TypeError(`${name}: names must be non-empty strings`);
    if (seen.has(entry[0])) throw new TypeError(`${name}[${JSON.stringify(entry[0])}]: duplicate name`);
    seen.add(entry[0]);
  }
  return list;
}

/** The buffer as an f32 CPU Tensor over the same memory (never a copy). */
function hostCopy(t: Tensor): Float32Array {
  if (!t.isCuda) return (t.data as Float32Array).slice();
  const host = t.to('cpu');
  return host.data as Float32Array;
}

function wrap(value: unknown, arg: string): Tensor {
  if (value instanceof Tensor) {
    value.assertAlive(arg);
    if (value.dtype !== 'f32') throw new TypeError(`${arg}: expected dtype f32, got ${value.dtype}`);
    return value;
  }
  if (value instanceof Float32Array) return Tensor.from(value);
  const got = value === null ? 'null' : ArrayBuffer.isView(value) ? value.constructor.name : typeof value;
  throw new TypeError(`${arg}: expected a Float32Array or an f32 Tensor, got ${got}`);
}

function finiteAtLeast(value: unknown, name: string, min: number, strict = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || (strict ? value <= min : value < min))
    throw new RangeError(`${name}: expected a finite number ${strict ? '>' : '>='} ${min}, got ${String(value)}`);
  return value;
}

function checkLr(value: unknown, name = 'lr'): number | LrSchedule {
  if (typeof value === 'function') return value as LrSchedule;
  return finiteAtLeast(value, name, 0);
}

function checkBetas(value: unknown, name = 'betas'): [number, number] {
  if (!Array.isArray(value) || value.length !== 2) throw new TypeError(`${name}: expected [beta1, beta2]`);
  for (const b of value)
    if (typeof b !== 'number' || !(b >= 0 && b < 1)) throw new RangeError(`${name}: each beta must be in [0, 1), got [${value.join(', ')}]`);
  return [value[0], value[1]];
}

function checkMaxGradNorm(value: unknown, name = 'maxGradNorm'): number | null {
  if (value === undefined || value === null) return null;
  const v = finiteAtLeast(value, name, 0);
  return v === 0 ? null : v;
}

function checkHyperparameters(value: unknown, source: string): AdamWHyperparameters {
  if (!isPlainObject(value)) throw new TypeError(`${source}: hyperparameters: expected an object`);
  const h = value;
  const at = (key: string) => `${source}: hyperparameters.${key}`;
  return {
    lr: h.lr === null ? null : finiteAtLeast(h.lr, at('lr'), 0),
    betas: checkBetas(h.betas, at('betas')),
    eps: finiteAtLeast(h.eps, at('eps'), 0, true),
    weightDecay: finiteAtLeast(h.weightDecay, at('weightDecay'), 0),
    maxGradNorm: checkMaxGradNorm(h.maxGradNorm, at('maxGradNorm')),
  };
}

function checkStepCount(value: unknown, source: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${source}: step: expected a non-negative integer, got ${String(value)}`);
  return value;
}

interface LayoutEntry {
  name: string;
  shape: number[];
}

export class AdamW {
  readonly #slots: Slot[];
  readonly #byName: Map<string, Slot>;
  #lr: number | LrSchedule;
  #betas: [number, number];
  #eps: number;
  #weightDecay: number;
  #maxGradNorm: number | null;
  #step = 0;
  #disposed = false;

  /**
   * params and grads: the same names, each gradient as many f32 values as its parameter.
   * Both are used in place for the optimiser's lifetime (Float32Arrays are wrapped, not
   * copied); no two of them may share memory. Moments start at zero.
   */
  constructor(params: NamedBuffers, grads: NamedBuffers, options: AdamWOptions) {
    if (!isPlainObject(options)) throw new TypeError('options: expected an object with at least lr');
    if (options.lr === undefined) throw new TypeError('lr: required (a number or a schedule function)');
    this.#lr = checkLr(options.lr);
    this.#betas = checkBetas(options.betas ?? [0.9, 0.999]);
    this.#eps = finiteAtLeast(options.eps ?? 1e-8, 'eps', 0, true);
    this.#weightDecay = finiteAtLeast(options.weightDecay ?? 0, 'weightDecay', 0);
    this.#maxGradNorm = checkMaxGradNorm(options.maxGradNorm);
    const noDecay = options.noDecay ?? defaultNoDecay;
    if (typeof noDecay !== 'function') throw new TypeError('noDecay: expected a function (name) => boolean');

    const paramList = entriesOf<ParamBuffer>(params, 'params');
    const gradMap = new Map(entriesOf<ParamBuffer>(grads, 'grads'));
    const paramNames = new Set(paramList.map(([name]) => name));
    for (const name of gradMap.keys())
      if (!paramNames.has(name)) throw new TypeError(`grads[${JSON.stringify(name)}]: not one of the parameters`);

    const wrapped = paramList.map(([name, value]) => {
      const param = wrap(value, `params[${JSON.stringify(name)}]`);
      if (!gradMap.has(name)) throw new TypeError(`grads: no gradient for parameter ${JSON.stringify(name)}`);
      const grad = wrap(gradMap.get(name), `grads[${JSON.stringify(name)}]`);
      if (grad.device !== param.device)
        throw new TypeError(`grads[${JSON.stringify(name)}]: is on ${grad.device} but its parameter is on ${param.device}`);
      if (grad.numel !== param.numel)
        throw new RangeError(`grads[${JSON.stringify(name)}]: has ${grad.numel} values, the parameter has ${param.numel}`);
      return { name, param, grad };
    });
    AdamW.#checkDisjoint(wrapped);
    const slots: Slot[] = wrapped.map(({ name, param, grad }) => ({
      name, shape: [...param.shape], numel: param.numel, param, grad,
      // Moments live where their parameter does (a CUDA policy's optimiser never leaves the device).
      expAvg: Tensor.zeros(param.shape, 'f32', param.device), expAvgSq: Tensor.zeros(param.shape, 'f32', param.device),
      decay: !noDecay(name),
    }));
    this.#slots = slots;
    this.#byName = new Map(slots.map((s) => [s.name, s]));
  }

  // The fused update requires distinct buffers; catching aliasing here (tied weights
  // listed twice, a gradient sharing a parameter's memory) keeps step() all-or-nothing.
  static #checkDisjoint(slots: Array<{ name: string; param: Tensor; grad: Tensor }>): void {
    const spans: Array<{ buffer: object; begin: number; end: number; label: string }> = [];
    for (const s of slots)
      for (const [kind, t] of [['params', s.param], ['grads', s.grad]] as const) {
        const label = `${kind}[${JSON.stringify(s.name)}]`;
        if (t.isCuda) {  // device memory: spans of the same native block (views carry an offset)
          const begin = t.offset ?? 0, bytes = 4 * t.numel;
          if (bytes > 0) spans.push({ buffer: t.handle!, begin, end: begin + bytes, label });
          continue;
        }
        const data = t.data as Float32Array;
        if (data.byteLength > 0)
          spans.push({ buffer: data.buffer, begin: data.byteOffset, end: data.byteOffset + data.byteLength, label });
      }
    const byBuffer = new Map<object, typeof spans>();
    for (const span of spans) {
      const list = byBuffer.get(span.buffer) ?? [];
      list.push(span);
      byBuffer.set(span.buffer, list);
    }
    for (const list of byBuffer.values()) {
      list.sort((a, b) => a.begin - b.begin);
      for (let i = 1; i < list.length; i++)
        if (list[i].begin < list[i - 1].end)
          throw new RangeError(`${list[i].label}: shares memory with ${list[i - 1].label}`);
    }
  }

  /** Parameter names, in update order. */
  get names(): string[] {
    return this.#slots.map((s) => s.name);
  }

  /** Updates made so far. */
  get stepCount(): number {
    return this.#step;
  }

  get lr(): number | LrSchedule {
    return this.#lr;
  }

  set lr(value: number | LrSchedule) {
    this.#lr = checkLr(value);
  }

  get hyperparameters(): AdamWHyperparameters {
    return {
      lr: typeof this.#lr === 'number' ? this.#lr : null,
      betas: [...this.#betas],
      eps: this.#eps,
      weightDecay: this.#weightDecay,
      maxGradNorm: this.#maxGradNorm,
    };
  }

  /** Which parameters get weight decay. */
  paramGroups(): { decay: string[]; noDecay: string[] } {
    return {
      decay: this.#slots.filter((s) => s.decay).map((s) => s.name),
      noDecay: this.#slots.filter((s) => !s.decay).map((s) => s.name),
    };
  }

  /** The rate update `step` (1-based) uses. */
  lrAt(step: number): number {
    if (typeof this.#lr === 'number') return this.#lr;
    const value = this.#lr(step);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
      throw new RangeError(`lr: the schedule returned ${String(value)} for step ${step}; expected a finite number >= 0`);
    return value;
  }

  /** Sets every gradient to 0. */
  zeroGrad(): void {
    this.#checkUsable();
    for (const s of this.#slots) addon().fillZero(s.grad);
  }

  /** √(Σ g²) over all gradients, in parameter order; NaN or Inf when any gradient is. */
  gradNorm(): number {
    this.#checkUsable();
    return Math.sqrt(this.#sumSquares().total);
  }

  #sumSquares(): { total: number; firstBad: string | undefined } {
    let total = 0;
    let firstBad: string | undefined;
    for (const s of this.#slots) {
      const ss = gradSumSquares(s.grad);
      if (!Number.isFinite(ss) && firstBad === undefined) firstBad = s.name;
      total += ss;
    }
    return { total, firstBad };
  }

  // Every buffer still alive and its original size, checked before any write so that a
  // disposed tensor or a detached array fails the whole step rather than half of it.
  #checkUsable(): void {
    if (this.#disposed) throw new TypeError('AdamW: this optimiser was disposed');
    for (const s of this.#slots)
      for (const [kind, t] of [['params', s.param], ['grads', s.grad]] as const) {
        const arg = `${kind}[${JSON.stringify(s.name)}]`;
        t.assertAlive(arg);
        if (t.isCuda) continue;  // device memory cannot be detached behind the tensor's back
        if (t.data === undefined || t.data.length !== s.numel)
          throw new RangeError(`${arg}: now holds ${t.data?.length ?? 0} values, had ${s.numel} (buffer detached or replaced?)`);
      }
  }

  /**
   * One update: global gradient norm, clipping to maxGradNorm when set, then AdamW on
   * every parameter. Throws NonFiniteGradError, changing nothing, when the norm is NaN or
   * infinite. Clipping scales the gradients in place.
   */
  step(): AdamWStepResult {
    this.#checkUsable();
    const t = this.#step + 1;
    const lr = this.lrAt(t);
    const { total, firstBad } = this.#sumSquares();
    const gradNorm = Math.sqrt(total);
    if (!Number.isFinite(gradNorm)) throw new NonFiniteGradError(gradNorm, firstBad, t);

    let clipped = false;
    if (this.#maxGradNorm !== null) {
      const coef = this.#maxGradNorm / (gradNorm + CLIP_EPS);
      if (coef < 1) {
        for (const s of this.#slots) scaleInPlace(s.grad, coef);
        clipped = true;
      }
    }
    const [beta1, beta2] = this.#betas;
    for (const s of this.#slots)
      adamwStep(s.param, s.grad, s.expAvg, s.expAvgSq, {
        lr, beta1, beta2, eps: this.#eps, weightDecay: s.decay ? this.#weightDecay : 0, step: t,
      });
    this.#step = t;
    return { gradNorm, clipped, lr, step: t };
  }

  /** A copy of the optimiser's state (moments copied out of native memory). */
  state(): AdamWState {
    this.#checkUsable();
    const moments = new Map<string, AdamWMoments>();
    for (const s of this.#slots)
      moments.set(s.name, {
        shape: [...s.shape],
        expAvg: hostCopy(s.expAvg),
        expAvgSq: hostCopy(s.expAvgSq),
      });
    return { step: this.#step, hyperparameters: this.hyperparameters, noDecay: this.paramGroups().noDecay, moments };
  }

  /**
   * Restores a state from state() or readStateFile(): step count, moments and the numeric
   * hyperparameters (as torch's load_state_dict does; a schedule function set here stays,
   * and so does a constant rate when the state was saved under a schedule). The names,
   * shapes and weight-decay groups must match this optimiser's; everything is checked
   * before anything changes.
   */
  loadState(state: AdamWState, source = 'state'): void {
    this.#checkUsable();
    if (!isPlainObject(state)) throw new TypeError(`${source}: expected an object from AdamW.state() or AdamW.readStateFile()`);
    const step = checkStepCount(state.step, source);
    const hyper = checkHyperparameters(state.hyperparameters, source);
    if (!Array.isArray(state.noDecay) || !state.noDecay.every((n) => typeof n === 'string'))
      throw new TypeError(`${source}: noDecay: expected an array of parameter names`);
    const moments = entriesOf<AdamWMoments>(state.moments, `${source}: moments`);
    for (const [name, m] of moments)
      if (!isPlainObject(m)) throw new TypeError(`${source}: moments[${JSON.stringify(name)}]: expected {shape, expAvg, expAvgSq}`);
    this.#checkLayout(moments.map(([name, m]) => ({ name, shape: m.shape })), state.noDecay, source);
    for (const [name, m] of moments) {
      const slot = this.#byName.get(name)!;
      for (const key of ['expAvg', 'expAvgSq'] as const) {
        const data = m[key];
        const arg = `${source}: moments[${JSON.stringify(name)}].${key}`;
        if (!(data instanceof Float32Array)) throw new TypeError(`${arg}: expected a Float32Array`);
        if (data.length !== slot.numel) throw new RangeError(`${arg}: has ${data.length} values, the parameter has ${slot.numel}`);
        if (!Number.isFinite(gradSumSquares(data))) throw new RangeError(`${arg}: holds NaN or infinite values`);
      }
    }

    for (const [name, m] of moments) {
      const slot = this.#byName.get(name)!;
      if (slot.param.isCuda) {
        for (const key of ['expAvg', 'expAvgSq'] as const) {
          const moved = Tensor.from(m[key], slot.shape).to(slot.param.device);
          slot[key].dispose();
          slot[key] = moved;
        }
      } else {
        (slot.expAvg.data as Float32Array).set(m.expAvg);
        (slot.expAvgSq.data as Float32Array).set(m.expAvgSq);
      }
    }
    this.#step = step;
    if (hyper.lr !== null && typeof this.#lr === 'number') this.#lr = hyper.lr;
    this.#betas = hyper.betas;
    this.#eps = hyper.eps;
    this.#weightDecay = hyper.weightDecay;
    this.#maxGradNorm = hyper.maxGradNorm;
  }

  // The state must describe exactly these parameters: same names, same shapes, same groups.
  #checkLayout(entries: LayoutEntry[], noDecay: readonly string[], source: string): void {
    const seen = new Set<string>();
    for (const { name, shape } of entries) {
      const slot = this.#byName.get(name);
      if (!slot) throw new Error(`${source}: parameter ${JSON.stringify(name)} is not one of this optimiser's parameters`);
      if (!Array.isArray(shape) || !sameShape(shape, slot.shape))
        throw new Error(`${source}: parameter ${JSON.stringify(name)} has shape ${Array.isArray(shape) ? shapeText(shape) : String(shape)} in the state but ${shapeText(slot.shape)} here`);
      seen.add(name);
    }
    const missing = this.#slots.filter((s) => !seen.has(s.name)).map((s) => s.name);
    if (missing.length > 0)
      throw new Error(`${source}: no state for ${missing.length} of the ${this.#slots.length} parameters, first ${JSON.stringify(missing[0])}`);
    const exempt = new Set(noDecay);
    for (const name of exempt)
      if (!this.#byName.has(name)) throw new Error(`${source}: noDecay names ${JSON.stringify(name)}, which is not one of this optimiser's parameters`);
    for (const s of this.#slots)
      if (exempt.has(s.name) === s.decay)
        throw new Error(
          `${source}: parameter ${JSON.stringify(s.name)} was ${s.decay ? 'exempt from' : 'subject to'} weight decay when saved but is ${s.decay ? 'subject to' : 'exempt from'} it here (a different noDecay?)`,
        );
  }

  /**
   * Writes the state to one safetensors file, atomically (temporary file, then rename):
   * moments as `<name>.exp_avg` / `<name>.exp_avg_sq`, scalars as JSON in the metadata.
   */
  saveState(path: string): void {
    this.#checkUsable();
    const tensors = new Map<string, TensorInput>();
    for (const s of this.#slots) {
      tensors.set(`${s.name}.exp_avg`, { dtype: 'f32', shape: s.shape, data: s.expAvg.isCuda ? hostCopy(s.expAvg) : s.expAvg.data });
      tensors.set(`${s.name}.exp_avg_sq`, { dtype: 'f32', shape: s.shape, data: s.expAvgSq.isCuda ? hostCopy(s.expAvgSq) : s.expAvgSq.data });
    }
    const scalars = {
      version: STATE_VERSION,
      step: this.#step,
      hyperparameters: this.hyperparameters,
      params: this.#slots.map((s) => ({ name: s.name, shape: s.shape, decay: s.decay })),
    };
    saveSafetensors(path, tensors, { metadata: { format: STATE_FORMAT, [STATE_KEY]: JSON.stringify(scalars) } });
  }

  /** Reads a file written by saveState(), checked against this optimiser before its data is read, and loads it. */
  loadStateFile(path: string): void {
    this.#checkUsable();
    const scalars = AdamW.#readScalars(path);
    this.#checkLayout(scalars.params, scalars.params.filter((p) => !p.decay).map((p) => p.name), path);
    this.loadState(AdamW.readStateFile(path), path);
  }

  /** Reads a file written by saveState() into a state for loadState(). */
  static readStateFile(path: string): AdamWState {
    const scalars = AdamW.#readScalars(path);
    const file = loadSafetensors(path);
    const moments = new Map<string, AdamWMoments>();
    for (const { name, shape } of scalars.params)
      moments.set(name, {
        shape,
        expAvg: file.tensors.get(`${name}.exp_avg`)!.data as Float32Array,
        expAvgSq: file.tensors.get(`${name}.exp_avg_sq`)!.data as Float32Array,
      });
    return {
      step: scalars.step,
      hyperparameters: scalars.hyperparameters,
      noDecay: scalars.params.filter((p) => !p.decay).map((p) => p.name),
      moments,
    };
  }

  // The scalars of a state file, and a check that its tensors are exactly the moments they list.
  static #readScalars(path: string): { step: number; hyperparameters: AdamWHyperparameters; params: Array<LayoutEntry & { decay: boolean }> } {
    const header = readSafetensorsHeader(path);
    const fail = (problem: string): never => {
      throw new Error(`${path}: ${problem}`);
    };
    if (header.metadata.format !== STATE_FORMAT || header.metadata[STATE_KEY] === undefined)
      fail(`not an AdamW state file (its metadata lacks format "${STATE_FORMAT}"; written by AdamW.saveState?)`);
    let raw: unknown;
    try {
      raw = JSON.parse(header.metadata[STATE_KEY]);
    } catch (e) {
      fail(`the ${STATE_KEY} metadata is not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(raw)) return fail(`the ${STATE_KEY} metadata must be a JSON object`);
    if (raw.version !== STATE_VERSION) fail(`state version ${JSON.stringify(raw.version)} is not supported (expected ${STATE_VERSION})`);
    const step = checkStepCount(raw.step, path);
    const hyperparameters = checkHyperparameters(raw.hyperparameters, path);
    if (!Array.isArray(raw.params)) fail('"params" must be an array');
    const params: Array<LayoutEntry & { decay: boolean }> = [];
    const names = new Set<string>();
    for (const p of raw.params as unknown[]) {
      if (!isPlainObject(p) || typeof p.name !== 'string' || typeof p.decay !== 'boolean' || !Array.isArray(p.shape) ||
          !p.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        return fail(`each "params" entry must be {name, shape, decay}, got ${JSON.stringify(p)}`);
      if (names.has(p.name)) fail(`parameter ${JSON.stringify(p.name)} is listed twice`);
      names.add(p.name);
      params.push({ name: p.name, shape: [...(p.shape as number[])], decay: p.decay });
    }
    const entries = new Map(header.entries.map((e) => [e.name, e]));
    for (const p of params)
      for (const suffix of ['.exp_avg', '.exp_avg_sq']) {
        const e = entries.get(p.name + suffix);
        if (!e) fail(`tensor ${JSON.stringify(p.name + suffix)} is missing`);
        if (e!.fileDtype !== 'F32') fail(`tensor ${JSON.stringify(p.name + suffix)} is ${e!.fileDtype}, expected F32`);
        if (!sameShape(e!.shape, p.shape))
          fail(`tensor ${JSON.stringify(p.name + suffix)} has shape ${shapeText(e!.shape)}, the metadata says ${shapeText(p.shape)}`);
        entries.delete(p.name + suffix);
      }
    if (entries.size > 0) fail(`tensor ${JSON.stringify(entries.keys().next().value)} belongs to no parameter listed in the metadata`);
    return { step, hyperparameters, params };
  }

  /** Frees the moments now (they are freed with the optimiser otherwise). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const s of this.#slots) {
      s.expAvg.dispose();
      s.expAvgSq.dispose();
    }
  }
}
