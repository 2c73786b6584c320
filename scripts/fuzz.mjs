#!/usr/bin/env node
// A seeded fuzzer over the public API (every exported kernel, Tensor, Policy, AdamW,
// setNumThreads, release). Cases run in child processes, so a crash (a signal, or a
// V8 fatal error) is counted against the case that was running, never fatal to the run;
// a case that runs past its time limit is a hang and its child is killed.
//
// Each case is a pure function of (seed, index): `--seed S --case K` replays one case
// alone in a fresh child, printing what it called. A case passes when the call returns
// finite numbers or throws a TypeError/RangeError (Error for file and model problems)
// whose message names what was wrong ("name: ..."). Also counted, as failures:
//   non-finite: a call returned NaN or ±Inf where the inputs were finite
//   unclear:    an error of another class, or one without an argument name
//               (e.g. "Cannot read properties of undefined", "lgrpo-native: ...")
//
//   node scripts/fuzz.mjs                       # the CI run: seed 1, 45 s
//   node scripts/fuzz.mjs --long                # 20 minutes (or --seconds N / --cases N)
//   node scripts/fuzz.mjs --seed 7 --case 1234  # replay one case
//
// Prints `N cases, C crashes, H hangs` (and the other counts) and exits 1 on any failure.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Set by the parent when replaying one case: targets describe what they call on stderr.
const trace = (...what) => {
  if (process.env.LGRPO_FUZZ_TRACE) console.error('trace:', ...what.map((w) => (typeof w === 'string' ? w : JSON.stringify(w, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)))));
};

function parseArgs(argv) {
  const args = { seed: 1, seconds: 45, cases: Infinity, jobs: 2, timeoutMs: 20_000, case: undefined, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], next = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a}: expected a non-negative number, got ${argv[i]}`);
      return v;
    };
    if (a === '--seed') args.seed = next();
    else if (a === '--seconds') args.seconds = next();
    else if (a === '--cases') args.cases = next();
    else if (a === '--jobs') args.jobs = Math.max(1, Math.floor(next()));
    else if (a === '--timeout') args.timeoutMs = next() * 1000;
    else if (a === '--case') args.case = next();
    else if (a === '--long') args.seconds = 20 * 60;
    else if (a === '--verbose') args.verbose = true;
    else if (a === '--child') args.child = true;
    else throw new Error(`unknown argument ${a} (see the top of scripts/fuzz.mjs)`);
  }
  return args;
}

// ---------------------------------------------------------------------------------------
// The case generator (runs in the child).

function mulberry32(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(seed, index) {
    this.next = mulberry32((Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca77)) >>> 0);
    this.log = [];
  }
  chance(p) { return this.next() < p; }
  /** Marks the case as having drawn an extreme finite value (results may overflow f32). */
  extreme(v) { this.extremes = true; return v; }
  int(lo, hi) { return lo + Math.floor(this.next() * (hi - lo)); }
  pick(items) { return items[Math.floor(this.next() * items.length)]; }
  /** A dimension: usually small, sometimes zero, rarely absurd or not an integer. */
  dim(max = 9) {
    // Absurd sizes are ones that must be refused: a valid 2^31-element tensor would just be slow.
    if (this.chance(0.04)) return this.pick([2 ** 32 + 1, 2 ** 52, 2 ** 53, -1, 1.5, NaN, Infinity, 1e300]);
    if (this.chance(0.06)) return 0;
    return this.int(1, max + 1);
  }
  float() {
    if (this.chance(0.03)) return this.extreme(this.pick([NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e-45, 1e8, -1e8, 1e30]));
    return (this.next() - 0.5) * this.pick([0.1, 2, 20, 200]);
  }
  floats(n) { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = this.float(); return a; }
  finiteFloats(n, scale = 2) { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = (this.next() - 0.5) * scale; return a; }
  ids(n, limit) {
    const a = new Int32Array(n);
    for (let i = 0; i < n; i++)
      a[i] = this.chance(0.03) ? this.pick([-1, limit, 2 ** 31 - 1, -(2 ** 31)]) : this.int(0, Math.max(limit, 1));
    return a;
  }
  /** A number option: valid most of the time, else of the wrong type or extreme. */
  num(valid) {
    if (this.chance(0.85)) return valid;
    return this.extreme(this.pick([undefined, null, 'x', '1', {}, [], true, NaN, Infinity, -Infinity, -1, 0, -0, 1e-40, 1e-38, 1e-300, 1e308, 2 ** 53, 1.5, 10n]));
  }
  temperature() {
    return this.chance(0.8) ? this.pick([1, 0.7, 2, 0.05]) : this.extreme(this.pick([1e-5, 1e-38, 1e-40, 1e-46, 0, -1, NaN, Infinity, 1e30, '1', null]));
  }
}

/**
 * Wraps an array as what a caller might pass: the array, a Tensor over it, a disposed
 * Tensor, an array of the wrong type, a plain JS array, null. Mostly the first two.
 */
function argument(g, api, array, shape, dtype) {
  const r = g.next();
  if (r < 0.45) return array;
  if (r < 0.9) {
    try { return api.Tensor.from(array, shape, dtype); } catch { return array; }
  }
  if (r < 0.93) {
    const t = api.Tensor.zeros([array.length], array instanceof Int32Array ? 'i32' : array instanceof Uint8Array ? 'u8' : 'f32');
    t.dispose();
    return t;
  }
  if (r < 0.96) return array instanceof Float32Array ? Int32Array.from(array, (x) => x | 0) : Float32Array.from(array);
  if (r < 0.98) return Array.from(array);
  return g.pick([null, undefined, 42, 'tensor', {}]);
}

function tinyConfig(g) {
  const heads = g.pick([1, 2, 4]);
  const config = {
    model_type: g.pick(['qwen2', 'llama']), hidden_size: heads * g.pick([2, 4, 6]), intermediate_size: g.int(1, 20),
    num_hidden_layers: g.int(1, 3), num_attention_heads: heads, num_key_value_heads: g.pick([1, heads]),
    vocab_size: g.int(3, 40), max_position_embeddings: g.int(4, 40), rms_norm_eps: 1e-6, rope_theta: 10000,
    tie_word_embeddings: g.chance(0.5), eos_token_id: 2,
  };
  if (g.chance(0.1)) {
    const key = g.pick(Object.keys(config));
    // 2^31 − 1 (the largest size a config may name) is too large for any machine's memory;
    // 1e9 was not: a 128 GiB machine accepted the 30 GiB model and spent minutes filling it.
    config[key] = g.pick([0, -1, 2 ** 31 - 1, 2 ** 40, 1.5, 'x', null, NaN]);
  }
  return config;
}

// One entry per API surface: (g, api, ctx) → the call's result (checked for finiteness).
const TARGETS = {
  'Tensor.zeros': (g, api) => {
    const shape = Array.from({ length: g.int(0, 4) }, () => g.dim(64));
    return api.Tensor.zeros(g.chance(0.95) ? shape : g.pick([null, 5, 'x', [[1]]]), g.chance(0.9) ? g.pick(['f32', 'bf16', 'f16', 'i32', 'u8']) : g.pick(['f64', '', 1]),
      g.chance(0.95) ? 'cpu' : g.pick(['cuda:0', 'gpu', 'cuda:99', 7]));
  },
  'Tensor.from/to/toFloat32': (g, api) => {
    const n = g.dim(30);
    const array = Number.isSafeInteger(n) && n >= 0 && n < 1e6 ? g.floats(n) : new Float32Array(3);
    const shape = g.chance(0.7) ? [array.length] : [g.dim(6), g.dim(6)];
    const t = api.Tensor.from(g.chance(0.95) ? array : g.pick([[1, 2], null, new Uint16Array(3)]), shape, g.chance(0.9) ? undefined : g.pick(['bf16', 'f16', 'f32', 'x']));
    if (g.chance(0.3)) t.dispose();
    const copy = t.to(g.chance(0.95) ? 'cpu' : 'cuda:0');
    const values = copy.toFloat32();
    if (g.chance(0.5)) api.release(copy);
    return { skipFinite: true, values };
  },
  tokenLogprobs: (g, api) => {
    const N = g.dim(6), V = g.dim(40);
    const n = Number.isSafeInteger(N) && N >= 0 && N < 100 ? N : 2, v = Number.isSafeInteger(V) && V >= 0 && V < 100 ? V : 3;
    const logits = argument(g, api, g.floats(n * v), [n, v]);
    const targets = argument(g, api, g.ids(n, v), [n]);
    return api.tokenLogprobs(logits, targets, { temperature: g.temperature(), entropy: g.num(g.chance(0.5)) });
  },
  tokenLogprobsBackward: (g, api) => {
    const n = g.int(0, 6), v = g.int(1, 40);
    const logitsData = g.floats(n * v), targets = g.ids(n, v);
    const temperature = g.temperature();
    let lse = g.floats(n), entropy = g.floats(n);
    try {
      const fwd = api.tokenLogprobs(logitsData, targets, { temperature, entropy: true });
      // A random lse must be refused when it is below the true one, and is finite otherwise.
      if (g.chance(0.8)) { lse = fwd.lse; entropy = fwd.entropy; }
    } catch { g.extreme(); /* the backward sees the same bad input */ }
    const withEntropy = g.chance(0.4);
    return api.tokenLogprobsBackward(argument(g, api, logitsData, [n, v]), argument(g, api, targets, [n]), argument(g, api, lse, [n]),
      argument(g, api, g.floats(n), [n]), {
        temperature, inPlace: g.num(g.chance(0.3)),
        ...(withEntropy ? { gradEntropy: argument(g, api, g.floats(n), [n]), entropy: g.chance(0.9) ? entropy : undefined } : {}),
      });
  },
  linearTokenLogprobs: (g, api) => {
    const n = g.int(0, 6), d = g.int(1, 8), v = g.int(1, 20);
    return api.linearTokenLogprobs(argument(g, api, g.floats(n * d), [n, d]), argument(g, api, g.floats(v * d), [v, d]),
      argument(g, api, g.ids(n, v), [n]), { temperature: g.temperature(), entropy: g.num(g.chance(0.5)) });
  },
  linearTokenLogprobsBackward: (g, api) => {
    const n = g.int(0, 6), d = g.int(1, 8), v = g.int(1, 20);
    const hidden = g.floats(n * d), weight = g.floats(v * d), targets = g.ids(n, v), temperature = g.temperature();
    let lse = g.floats(n), entropy = g.floats(n);
    try {
      const fwd = api.linearTokenLogprobs(hidden, weight, targets, { temperature, entropy: true });
      // A random lse must be refused when it is below the true one (or far from a large
      // one), and gives finite gradients otherwise.
      if (g.chance(0.8)) { lse = fwd.lse; entropy = fwd.entropy; }
    } catch { g.extreme(); /* the backward sees the same bad input */ }
    const withEntropy = g.chance(0.4);
    return api.linearTokenLogprobsBackward(argument(g, api, hidden, [n, d]), argument(g, api, weight, [v, d]), argument(g, api, targets, [n]),
      argument(g, api, lse, [n]), argument(g, api, g.floats(n), [n]), {
        temperature,
        ...(withEntropy ? { gradEntropy: argument(g, api, g.floats(n), [n]), entropy: g.chance(0.9) ? entropy : undefined } : {}),
      });
  },
  groupAdvantages: (g, api) => {
    const B = g.int(0, 12);
    return api.groupAdvantages(argument(g, api, g.floats(B), [B]), argument(g, api, g.ids(B, g.int(1, B + 2)), [B]), {
      mode: g.chance(0.9) ? g.pick(['std', 'mean', 'batch', 'rloo']) : g.pick(['zscore', 1, null]),
      eps: g.num(1e-6), std: g.chance(0.9) ? g.pick(['unbiased', 'population']) : 'x',
      ...(g.chance(0.3) ? { groups: g.num(g.int(0, B + 2)) } : {}),
    });
  },
  lambdaWeights: (g, api) => {
    const B = g.int(0, 12);
    const lengths = g.chance(0.5) ? g.ids(B, 30) : g.floats(B).map(Math.abs);
    return api.lambdaWeights(argument(g, api, lengths, [B]), argument(g, api, g.ids(B, g.int(1, B + 2)), [B]), {
      lambda: g.num(g.pick([0, 0.5, -1, 3, 40, -40])), r: g.num(g.pick([1 / 9, 0, 2, 1e6])),
      ...(g.chance(0.3) ? { groups: g.num(g.int(0, 2 ** 20)) } : {}),
    });
  },
  grpoLoss: (g, api) => {
    const B = g.int(0, 8), T = g.int(0, 12);
    const lp = g.finiteFloats(B * T, 4).map((x) => x - 2);
    const old = g.chance(0.2) ? g.floats(B * T) : lp.map((x) => x + (g.next() - 0.5) * g.pick([0.1, 1, 200]));
    const mask = new Uint8Array(B * T).map(() => (g.chance(0.02) ? 2 : g.chance(0.7) ? 1 : 0));
    const aggregation = g.chance(0.95) ? g.pick(['grpo', 'dapo', 'dr_grpo', 'lambda']) : g.pick(['mean', undefined, 3]);
    const input = {
      logprobs: argument(g, api, lp, [B, T]), oldLogprobs: argument(g, api, old, [B, T]),
      advantages: argument(g, api, g.chance(0.9) ? g.finiteFloats(B, 4) : g.floats(B), [B]),
      mask: argument(g, api, g.chance(0.8) ? mask : Float32Array.from(mask), [B, T]),
      groupIds: argument(g, api, g.ids(B, g.int(1, B + 2)), [B]), aggregation,
      lambda: g.num(g.pick([0, 0.5, -2])), epsLow: g.num(0.2), epsHigh: g.num(0.28), beta: g.num(g.pick([0, 0.04])),
    };
    if (g.chance(0.3)) input.refLogprobs = argument(g, api, lp.map((x) => x + (g.next() - 0.5) * g.pick([0.1, 100])), [B, T]);
    if (g.chance(0.2)) input.dualClip = g.num(3);
    if (g.chance(0.2)) input.normalizer = g.num(g.pick([1, 37, 1e-300, 1e-30]));
    if (g.chance(0.2)) input.maxLength = g.num(T + 1);
    if (g.chance(0.2)) input.groups = g.num(g.int(0, 2 ** 20));
    if (g.chance(0.15)) {
      try {
        const w = api.grpoLossWeights(g.ids(B, T + 1), g.ids(B, B + 1), { aggregation: aggregation === 'dr_grpo' ? 'dapo' : aggregation, lambda: 0.3 });
        input.weights = w.weights;
        if (aggregation === 'lambda') input.dWeightsDLambda = w.dWeightsDLambda;
        input.normalizer = w.normalizer;
      } catch { /* weights are optional */ }
    }
    return api.grpoLoss(g.chance(0.98) ? input : g.pick([null, 5, 'x']));
  },
  grpoLossWeights: (g, api) => {
    const B = g.int(0, 10);
    return api.grpoLossWeights(argument(g, api, g.ids(B, 20), [B]), argument(g, api, g.ids(B, B + 1), [B]), {
      aggregation: g.pick(['grpo', 'dapo', 'dr_grpo', 'lambda', 'x']), lambda: g.num(0.3), maxLength: g.num(g.int(1, 30)),
      ...(g.chance(0.2) ? { groups: g.num(2 ** 30) } : {}),
    });
  },
  Policy: (g, api, ctx) => {
    const config = tinyConfig(g);
    trace('config', config);
    const policy = api.Policy.random(config, { seed: g.num(g.int(0, 1000)), recompute: g.chance(0.2) });
    const V = policy.config.vocabSize, maxPos = policy.config.maxPositionEmbeddings;
    const rowsOf = () => Array.from({ length: g.int(0, 4) }, () => Array.from({ length: g.int(g.chance(0.9) ? 1 : 0, 6) }, () =>
      (g.chance(0.03) ? g.pick([-1, V, 1.5, NaN, 2 ** 31]) : g.int(0, V))));
    const results = [];
    const op = g.pick(['forward+backward', 'generate', 'sequenceLogprobs', 'save+load', 'adamw', 'disposed']);
    trace('op', op);
    try {
      if (op === 'forward+backward') {
        const ids = rowsOf();
        const out = policy.forward({ ids });
        const grad = g.chance(0.9) ? g.finiteFloats(out.hidden.shape[0] * policy.config.hiddenSize) : g.floats(out.hidden.shape[0] * policy.config.hiddenSize);
        const head = g.chance(0.3) ? { gradLmHead: g.chance(0.8) ? g.finiteFloats(V * policy.config.hiddenSize) : g.floats(V * policy.config.hiddenSize) } : undefined;
        policy.backward(grad, head);
        results.push(out.hidden.toFloat32(), ...policy.gradients().values());
      } else if (op === 'generate') {
        const out = policy.generate(rowsOf(), {
          maxNewTokens: g.num(g.int(0, Math.min(6, maxPos))), temperature: g.temperature(), topP: g.num(g.pick([1, 0.9, 0])),
          topK: g.num(g.int(0, 5)), seed: g.num(7),
        });
        results.push(...out.logprobs);
      } else if (op === 'sequenceLogprobs') {
        const prompts = rowsOf();
        results.push(...policy.sequenceLogprobs(prompts, prompts.map(() => Array.from({ length: g.int(0, 4) }, () => g.int(0, V))), { temperature: g.temperature() }));
      } else if (op === 'save+load') {
        const dir = join(ctx.tmp, `p${ctx.index}`);
        policy.save(g.chance(0.95) ? dir : g.pick(['/proc/fuzz', '', '/dev/null/x']), g.chance(0.3) ? { maxShardBytes: g.num(g.int(1, 4000)) } : undefined);
        const loaded = api.Policy.fromPretrained(dir);
        results.push(...loaded.parameters().values());
        loaded.dispose();
        rmSync(dir, { recursive: true, force: true });
      } else if (op === 'adamw') {
        const opt = new api.AdamW(policy.parameters(), policy.gradients(), {
          lr: g.num(1e-3), weightDecay: g.num(0.01), maxGradNorm: g.num(g.pick([1, 0])), betas: g.chance(0.9) ? [0.9, 0.999] : g.pick([[1, 1], [0.9], 'x']),
        });
        for (const grad of policy.gradients().values()) grad.set(g.chance(0.95) ? g.finiteFloats(grad.length) : g.floats(grad.length));
        results.push(opt.step(), ...policy.parameters().values());
        opt.dispose();
      } else {
        policy.dispose();
        policy.forward({ ids: [[1]] });
      }
    } finally {
      policy.dispose();
    }
    return results;
  },
  'setNumThreads/buildInfo/release': (g, api) => {
    api.setNumThreads(g.chance(0.8) ? g.int(1, 4) : g.pick([0, 1.5, -1, 2 ** 32 + 2, NaN, '2', null, 5000]));
    const info = api.buildInfo();
    api.release(g.pick([null, 1, 'x', {}, [new Float32Array(3)], api.Tensor.zeros([2])]));
    return { skipFinite: true, info };
  },
};
const TARGET_NAMES = Object.keys(TARGETS);

/** Every number reachable from `value` (TypedArrays, arrays, plain objects), to check finiteness. */
function nonFinite(value, depth = 0) {
  if (depth > 5 || value === null || value === undefined) return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : String(value);
  if (ArrayBuffer.isView(value)) {
    if (value instanceof Float32Array) for (let i = 0; i < value.length; i++) if (!Number.isFinite(value[i])) return `element ${i} = ${value[i]}`;
    return undefined;
  }
  if (typeof value === 'object') {
    if (value.skipFinite) return undefined;
    if (typeof value.toFloat32 === 'function' && value.data) return nonFinite(value.data, depth + 1);
    for (const [k, v] of Object.entries(value)) {
      const bad = nonFinite(v, depth + 1);
      if (bad) return `${k}: ${bad}`;
    }
  }
  return undefined;
}

// Errors that name their argument: "name: ...", "name[3]: ...", "tensors["x"]: ...", "/path: ...".
const NAMED = /^(?:[A-Za-z_][\w.]*(?:\[[^\]]*\])*|\/\S*|\S+\.(?:json|safetensors)|dir|backward|forward|lgrpo-native: the CUDA|threads): /;

async function runCase(api, seed, index, tmp) {
  const g = new Gen(seed, index);
  const name = TARGET_NAMES[Math.floor(g.next() * TARGET_NAMES.length)];
  process.send?.({ started: name });  // so a crash or hang is reported against its target
  try {
    const result = TARGETS[name](g, api, { tmp, index });
    // Finite inputs of ordinary size must give finite results; extreme ones (3.4e38, τ = 1e-5)
    // may legitimately overflow f32 in an output, so only a thrown error or a return is checked.
    const bad = g.extremes ? undefined : nonFinite(result);
    api.release(result);
    return bad ? { outcome: 'non-finite', name, detail: bad } : { outcome: 'ok', name };
  } catch (e) {
    const cls = e?.constructor?.name;
    const message = String(e?.message ?? e);
    const clear = /built without CUDA|CUDA (engine )?backend is not available/.test(message) || (cls === 'TypeError' || cls === 'RangeError' || cls === 'Error' || cls === 'NonFiniteGradError') && NAMED.test(message) &&
      !/Cannot read prop|is not a function|is not iterable|undefined is not|Maximum call stack|Invalid typed array length|Array buffer allocation failed/.test(message);
    return clear ? { outcome: 'error', name } : { outcome: 'unclear', name, detail: `${cls}: ${message.slice(0, 300)}` };
  }
}

async function child() {
  const api = await import(pathToFileURL(join(root, 'dist', 'src', 'index.js')).href);
  const tmp = mkdtempSync(join(tmpdir(), 'lgrpo-fuzz-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  process.on('message', async (msg) => {
    if (msg.stop) process.exit(0);
    const result = await runCase(api, msg.seed, msg.index, tmp);
    process.send({ index: msg.index, ...result });
  });
  process.send({ ready: true });
}

// ---------------------------------------------------------------------------------------
// The parent: hands out case indices to `jobs` children, restarting any that die.

async function parent(args) {
  const deadline = Date.now() + args.seconds * 1000;
  const single = args.case !== undefined;
  let nextIndex = single ? args.case : 0;
  const limit = single ? args.case + 1 : args.cases;
  const counts = { cases: 0, ok: 0, error: 0, crash: 0, hang: 0, 'non-finite': 0, unclear: 0 };
  const failures = [];
  const byTarget = {};

  const record = (index, outcome, name, detail) => {
    counts.cases++;
    counts[outcome]++;
    byTarget[name] ??= {};
    byTarget[name][outcome] = (byTarget[name][outcome] ?? 0) + 1;
    if (outcome !== 'ok' && outcome !== 'error') failures.push({ index, outcome, name, detail });
    if (args.verbose || single) console.log(`case ${index} ${name}: ${outcome}${detail ? ` (${detail})` : ''}`);
  };

  const more = () => nextIndex < limit && (single || Date.now() < deadline);

  const worker = () => new Promise((resolve) => {
    let current, currentName = 'case', timer, stderr = '';
    const start = () => {
      const proc = fork(fileURLToPath(import.meta.url), ['--child'], {
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: single ? { ...process.env, LGRPO_FUZZ_TRACE: '1' } : process.env,
      });
      proc.stderr.on('data', (d) => {
        stderr = (stderr + d).slice(-2000);
        if (single) process.stderr.write(d);
      });
      const send = () => {
        if (!more()) { proc.send({ stop: true }); return; }
        current = nextIndex++;
        currentName = 'case';
        stderr = '';
        proc.send({ seed: args.seed, index: current });
        timer = setTimeout(() => {
          record(current, 'hang', currentName, `no answer within ${args.timeoutMs / 1000} s`);
          current = undefined;
          proc.kill('SIGKILL');
        }, args.timeoutMs);
      };
      proc.on('message', (msg) => {
        if (msg.ready) return send();
        if (msg.started) { currentName = msg.started; return; }
        clearTimeout(timer);
        record(msg.index, msg.outcome, msg.name, msg.detail);
        current = undefined;
        send();
      });
      proc.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (current !== undefined) {
          record(current, 'crash', currentName, `exit ${code ?? ''}${signal ?? ''}: ${stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
          current = undefined;
        }
        if (more()) start(); else resolve();
      });
    };
    start();
  });

  const started = Date.now();
  await Promise.all(Array.from({ length: single ? 1 : args.jobs }, worker));
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  failures.sort((a, b) => ['crash', 'hang', 'unclear', 'non-finite'].indexOf(a.outcome) - ['crash', 'hang', 'unclear', 'non-finite'].indexOf(b.outcome));
  for (const f of failures.slice(0, 30)) console.log(`FAIL ${f.outcome} case ${f.index} (${f.name}): ${f.detail ?? ''}  [replay: node scripts/fuzz.mjs --seed ${args.seed} --case ${f.index}]`);
  if (failures.length > 30) console.log(`... and ${failures.length - 30} more`);
  if (args.verbose) for (const [name, c] of Object.entries(byTarget)) console.log(`  ${name}: ${JSON.stringify(c)}`);
  console.log(`seed ${args.seed}, ${seconds} s: ${counts.ok} returned, ${counts.error} clear errors, ${counts['non-finite']} non-finite results, ${counts.unclear} unclear errors`);
  console.log(`${counts.cases} cases, ${counts.crash} crashes, ${counts.hang} hangs`);
  process.exitCode = failures.length ? 1 : 0;
}

const args = parseArgs(process.argv.slice(2));
if (args.child) await child();
else await parent(args);
