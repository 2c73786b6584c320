#!/usr/bin/env node
// The whole GPU check in one run, for the day a device is lent (scripts/gpu-check.sh
// starts it there), and on the emulated cuda:0 here (--emulated), so that only the
// hardware is untested. Steps, each a row of one table (gpu-check.md in --out):
//   1. build     the addon has CUDA and sees a device
//   2. suite     the whole test suite with every kernel test on cuda:0
//   3. bench     bench --device cuda:0 (--quick when emulated)
//   4. pytorch   tokenLogprobs (+ backward) and grpoLoss (loss, token gradients, ∂L/∂λ)
//                against PyTorch autograd on the same inputs, where torch imports
//   5. engine    a Qwen2-shaped model made by PyTorch (transformers' Qwen2ForCausalLM where
//                installed, else the plain-PyTorch Qwen2 of bench-torch.py), random weights,
//                saved as a model directory, loaded by Policy.fromPretrained on cuda:0 and
//                compared logit by logit; 20 training steps of a Qwen2.5-0.5B-shaped policy
//                on the device (3 steps of a tiny one when emulated); bench --engine --device
//                cuda:0 (0.5B and 1.5B shapes, against PyTorch bf16 where it imports)
//   6. sanitizer compute-sanitizer memcheck, racecheck, synccheck over the kernel tests
//                (where it is installed; not meaningful on the emulator). Last, being the
//                slowest: the table is rewritten after every step, so a run stopped by its
//                time limit still reports the steps before.
// Usage: node scripts/gpu-check.mjs [--emulated] [--out DIR] [--only build,pytorch,...] [--engine-cases LIST]
//   DIR defaults to $OUT or gpu-check-out; --only runs the steps whose names start so;
//   --engine-cases passes LIST to bench --engine --only (default: every configuration).
//   LGRPO_PYTHON picks the Python with torch (else python3, then /usr/bin/python3).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const emulated = argv.includes('--emulated');
const outIndex = argv.indexOf('--out');
const out = outIndex >= 0 ? argv[outIndex + 1] : process.env.OUT || join(root, 'gpu-check-out');
mkdirSync(out, { recursive: true });
const onlyIndex = argv.indexOf('--only');
const only = onlyIndex >= 0 ? argv[onlyIndex + 1].split(',') : undefined;
const casesIndex = argv.indexOf('--engine-cases');
const engineCases = casesIndex >= 0 ? ['--only', argv[casesIndex + 1]] : [];
const env = { ...process.env, LGRPO_ADDON: emulated ? 'emu' : process.env.LGRPO_ADDON || 'cmake' };
process.env.LGRPO_ADDON = env.LGRPO_ADDON;  // the PyTorch step loads the addon in this process
const KERNEL_TESTS = ['token_logprobs', 'linear_token_logprobs', 'group_advantages', 'lambda_weights', 'grpo_loss']
  .map((k) => join(root, 'dist', 'test', 'ops', `${k}.test.js`));
const rows = [];

function run(command, args, options = {}) {
  const t0 = Date.now();
  const r = spawnSync(command, args, { cwd: root, env: { ...env, ...options.env }, encoding: 'utf8', maxBuffer: 1 << 28, timeout: options.timeout });
  return { ...r, seconds: (Date.now() - t0) / 1000, text: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function step(name, body) {
  if (only && !only.some((o) => name.startsWith(o))) return;
  const t0 = Date.now();
  try {
    const { ok, detail } = body();
    rows.push({ name, result: ok === null ? 'skipped' : ok ? 'pass' : 'FAIL', detail, seconds: (Date.now() - t0) / 1000 });
  } catch (e) {
    rows.push({ name, result: 'FAIL', detail: String(e?.message ?? e).split('\n')[0], seconds: (Date.now() - t0) / 1000 });
  }
  const last = rows[rows.length - 1];
  console.log(`[gpu-check] ${name}: ${last.result} (${last.seconds.toFixed(1)} s) ${last.detail}`);
  writeTable();  // after every step: a run stopped by its time limit keeps what it did
}

const hasCommand = (c) => spawnSync('sh', ['-c', `command -v ${c}`], { encoding: 'utf8' }).status === 0;
const counts = (text) => Object.fromEntries(['tests', 'pass', 'fail', 'skipped'].map((k) => [k, Number(text.match(new RegExp(`ℹ ${k} (\\d+)`))?.[1] ?? NaN)]));
const index = async () => import(join(root, 'dist', 'src', 'index.js'));

let info;
step('build', () => {
  const r = run(process.execPath, ['-e', "import('./dist/src/index.js').then(m => console.log(JSON.stringify(m.buildInfo())))"]);
  if (r.status !== 0) return { ok: false, detail: r.text.trim().split('\n').pop() };
  info = JSON.parse(r.stdout);
  const devices = info.cudaDevices.map((d) => `cuda:${d.index} ${d.name} (sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(0)} GiB)`);
  const ok = info.cuda && info.cudaDevices.length > 0 && info.cudaEmulated === emulated;
  return { ok, detail: `${devices.join('; ') || 'no CUDA device'}; emulated: ${info.cudaEmulated}; GEMM: ${info.cudaMatmul}; addon ${info.addonPath}` };
});

step('suite on cuda:0', () => {
  const r = run(process.execPath, [join(root, 'scripts', 'run-tests.mjs')], { env: { LGRPO_TEST_DEVICE: 'cuda:0' } });
  writeFileSync(join(out, 'suite.log'), r.text);
  const c = counts(r.text);
  return { ok: r.status === 0, detail: `${c.pass}/${c.tests} passed, ${c.fail} failed, ${c.skipped} skipped (log: suite.log)` };
});

// cuBLASLt sums in its own order (by shape), so the suite's bit-for-bit rollout checks
// hold only for the engine's own GEMM: where cuBLASLt was used above, the device tests run
// again with LGRPO_CUDA_MATMUL=own.
step('suite on cuda:0 with the own GEMM', () => {
  if (!info?.cudaMatmul?.startsWith('cuBLASLt')) return { ok: null, detail: `the suite above used it: ${info?.cudaMatmul}` };
  const r = run(process.execPath, [join(root, 'scripts', 'run-tests.mjs'), 'test/ops/', 'test/engine/', 'cuda'], { env: { LGRPO_TEST_DEVICE: 'cuda:0', LGRPO_CUDA_MATMUL: 'own' } });
  writeFileSync(join(out, 'suite-own-gemm.log'), r.text);
  const c = counts(r.text);
  return { ok: r.status === 0, detail: `test/ops, test/engine and the cuda tests: ${c.pass}/${c.tests} passed, ${c.fail} failed, ${c.skipped} skipped (log: suite-own-gemm.log)` };
});

step('bench --device cuda:0', () => {
  const r = run(process.execPath, [join(root, 'dist', 'src', 'cli', 'main.js'), 'bench', '--device', 'cuda:0', '--json', ...(emulated ? ['--quick'] : [])]);
  writeFileSync(join(out, 'bench.json'), r.stdout ?? '');
  if (r.status !== 0) return { ok: false, detail: r.text.trim().split('\n').pop() };
  const report = JSON.parse(r.stdout);
  const parts = report.results.map((x) => `${x.kernel} ${x.variant} [${x.size}]: ${x.medianMs.toFixed(3)} ms${x.gbPerS ? `, ${x.gbPerS.toFixed(0)} GB/s` : ''}` +
    `${x.pctOfCeiling !== undefined ? ` (${x.pctOfCeiling.toFixed(0)}% of ${x.ceiling})` : ''}${x.gflopPerS ? `, ${x.gflopPerS.toFixed(0)} GFLOP/s` : ''}`);
  const d = report.deviceCeiling;
  writeFileSync(join(out, 'bench.md'), `${d ? `device copy ${d.copyGBs.toFixed(0)} GB/s (read+write)\n` : ''}${parts.map((p) => `- ${p}`).join('\n')}\n`);
  return { ok: report.errors.length === 0, detail: `${report.results.length} rows${d ? `, device copy ${d.copyGBs.toFixed(0)} GB/s` : ''} (bench.json, bench.md)${emulated ? '; emulated: timings mean nothing' : ''}` };
});

// The CUDA LM head runs as row chunks through cuBLASLt where it is loaded, else as the
// fused kernels: both timed here in one run, at the kernel bench's sizes.
step('LM head: chunks through the GEMM vs the fused kernels', () => {
  if (emulated) return { ok: null, detail: 'timings mean nothing on the emulated device' };
  const time = (mode) => {
    const r = run(process.execPath, [join(root, 'dist', 'src', 'cli', 'main.js'), 'bench', '--device', 'cuda:0', '--only', 'linearTokenLogprobs', '--json'], { env: { LGRPO_CUDA_LM_HEAD: mode } });
    if (r.status !== 0) throw new Error(`LGRPO_CUDA_LM_HEAD=${mode}: ${r.text.trim().split('\n').pop()}`);
    return JSON.parse(r.stdout).results.map((x) => ({ variant: `${x.variant} [${x.size}]`, ms: x.medianMs, diff: x.naive?.maxAbsDiff }));
  };
  const chunked = time('chunked'), fused = time('fused');
  writeFileSync(join(out, 'lm-head.json'), JSON.stringify({ chunked, fused }, null, 2));
  const parts = chunked.map((c, i) => `${c.variant}: chunked ${c.ms.toFixed(1)} ms, fused ${fused[i].ms.toFixed(1)} ms (${(fused[i].ms / c.ms).toFixed(2)}×), max |Δ| vs naive ${c.diff?.toExponential(1)}`);
  return { ok: chunked.every((c) => c.diff < 1e-3), detail: `${parts.join('; ')} (lm-head.json)` };
});

// Inputs for PyTorch, and our kernels' outputs on them, as raw little-endian arrays.
async function writeTorchCase(dir) {
  const m = await index();
  mkdirSync(dir, { recursive: true });
  const save = (name, a) => writeFileSync(join(dir, `${name}.bin`), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  let seed = 12345;
  const uniform = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  const host = (t) => (t.isCuda ? t.to('cpu') : t).data;
  const cuda = (a, shape) => m.Tensor.from(a, shape).to('cuda:0');

  const N = emulated ? 37 : 257, V = emulated ? 5003 : 151_936, temperature = 0.7;
  const logits = Float32Array.from({ length: N * V }, () => normal() * 3);
  const targets = Int32Array.from({ length: N }, () => Math.floor(uniform() * V));
  const g = Float32Array.from({ length: N }, normal), e = Float32Array.from({ length: N }, normal);
  const x = cuda(logits, [N, V]), y = cuda(targets);
  const f = m.tokenLogprobs(x, y, { temperature, entropy: true });
  const grad = m.tokenLogprobsBackward(x, y, f.lse, cuda(g), { temperature, gradEntropy: cuda(e), entropy: f.entropy });
  for (const [k, a] of Object.entries({ tl_logits: logits, tl_targets: targets, tl_g: g, tl_e: e })) save(k, a);
  save('tl_out_logprobs', host(f.logprobs));
  save('tl_out_entropy', host(f.entropy));
  save('tl_out_grad', host(grad));

  const groups = 8, perGroup = 8, B = groups * perGroup, T = emulated ? 300 : 4099;
  const ids = Int32Array.from({ length: B }, (_, i) => Math.floor(i / perGroup));
  const mask = new Uint8Array(B * T), old = new Float32Array(B * T), lp = new Float32Array(B * T), ref = new Float32Array(B * T);
  const adv = Float32Array.from({ length: B }, normal);
  for (let i = 0; i < B; i++) {
    const len = i % perGroup === 0 ? 0 : 1 + Math.floor(uniform() * T);
    for (let t = 0; t < T; t++) {
      const k = i * T + t;
      mask[k] = t < len ? 1 : 0;
      old[k] = -Math.abs(normal()) - 0.05;
      lp[k] = old[k] + normal() * 0.3;
      ref[k] = old[k] + normal() * 0.1;
    }
  }
  const opts = { lambda: 0.7, r: 1 / 9, epsLow: 0.2, epsHigh: 0.28, beta: 0.05 };
  const loss = m.grpoLoss({
    logprobs: cuda(lp, [B, T]), oldLogprobs: cuda(old, [B, T]), refLogprobs: cuda(ref, [B, T]), advantages: cuda(adv),
    mask: cuda(mask, [B, T]), groupIds: cuda(ids), aggregation: 'lambda', groups, ...opts,
  });
  for (const [k, a] of Object.entries({ gl_logprobs: lp, gl_old: old, gl_ref: ref, gl_adv: adv, gl_mask: mask, gl_ids: ids })) save(k, a);
  save('gl_out_loss', Float32Array.of(loss.loss));
  save('gl_out_grad', host(loss.gradLogprobs));
  save('gl_out_gradlambda', Float32Array.of(loss.gradLambda));
  writeFileSync(join(dir, 'case.json'), JSON.stringify({ tokenLogprobs: { rows: N, vocab: V, temperature }, grpoLoss: { B, T, ...opts } }));
  return { N, V, B, T };
}

// Tolerances: fp32 kernels against float64 autograd.
const TOLERANCE = {
  'tokenLogprobs.logprobs': 5e-5, 'tokenLogprobs.entropy': 5e-5, 'tokenLogprobs.gradLogits': 1e-5,
  'grpoLoss.loss': 1e-5, 'grpoLoss.gradLogprobs': 1e-7, 'grpoLoss.gradLambda': 1e-5,
};

let torchCase;
const python = [process.env.LGRPO_PYTHON, 'python3', '/usr/bin/python3']
  .find((p) => p && spawnSync(p, ['-c', 'import torch, numpy'], { encoding: 'utf8' }).status === 0);
const torchReady = python !== undefined;
if (torchReady && (!only || only.some((o) => 'PyTorch'.startsWith(o) || o.startsWith('PyTorch')))) {
  try {
    torchCase = await writeTorchCase(join(out, 'torch-case'));
  } catch (e) {
    torchCase = e;
  }
}
step('PyTorch autograd cross-check', () => {
  if (!torchReady) return { ok: null, detail: 'no python3 here can import torch and numpy' };
  if (torchCase instanceof Error) throw torchCase;
  const r = run(python, [join(root, 'scripts', 'torch_reference.py'), join(out, 'torch-case')]);
  if (r.status !== 0) return { ok: false, detail: r.text.trim().split('\n').pop() };
  const result = JSON.parse(r.stdout);
  writeFileSync(join(out, 'torch.json'), JSON.stringify(result, null, 2));
  const bad = [], parts = [];
  for (const [op, fields] of Object.entries(result)) {
    if (typeof fields !== 'object') continue;
    for (const [field, err] of Object.entries(fields)) {
      const key = `${op}.${field}`;
      parts.push(`${key} max |Δ| ${err.maxAbs.toExponential(1)}`);
      if (!err.finite || !(err.maxAbs <= TOLERANCE[key])) bad.push(key);
    }
  }
  const c = torchCase;
  return { ok: bad.length === 0, detail: `torch ${result.torch} on ${result.device}; N=${c.N} V=${c.V}, B=${c.B} T=${c.T}; ${parts.join('; ')}${bad.length ? `; over tolerance: ${bad.join(', ')}` : ''}` };
});

// ---------------------------------------------------------------------------------
// The engine on the device

const QWEN2 = { model_type: 'qwen2', rms_norm_eps: 1e-6, rope_theta: 1_000_000, max_position_embeddings: 4096, initializer_range: 0.05 };
const engineWanted = !only || only.some((o) => 'engine'.startsWith(o) || o.startsWith('engine'));
const engineModule = engineWanted ? await index() : undefined;
// The LM head's logits, whole: the engine itself never forms them (linearTokenLogprobs).
const { gemm } = engineWanted ? await import(join(root, 'dist', 'src', 'ops', 'gemm.js')) : {};

// Logits of a Qwen2 directory written by PyTorch, position by position, against ours.
const logitsCase = emulated
  ? { config: { ...QWEN2, hidden_size: 64, intermediate_size: 136, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 1001, tie_word_embeddings: true }, lengths: [9, 3, 12, 1] }
  : { config: { ...QWEN2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 4, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true }, lengths: [70, 5, 128, 1] };
step('engine: Qwen2 logits vs PyTorch', () => {
  if (!torchReady) return { ok: null, detail: 'no python3 here can import torch and numpy' };
  const m = engineModule;
  const dir = join(out, 'qwen2-model');
  const V = logitsCase.config.vocab_size;
  let seed = 99;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const idRows = logitsCase.lengths.map((n) => Array.from({ length: n }, () => Math.floor(rand() * V)));
  const r = spawnSync(python, [join(root, 'scripts', 'torch_qwen2_logits.py')], {
    cwd: root, encoding: 'utf8', maxBuffer: 1 << 26,
    input: JSON.stringify({ config: logitsCase.config, seed: 5, rows: idRows, dir, device: emulated ? 'cpu' : 'cuda:0' }),
  });
  if (r.status !== 0) return { ok: false, detail: `torch_qwen2_logits.py: ${(r.stderr || r.stdout).trim().split('\n').pop()}` };
  const meta = JSON.parse(r.stdout);
  const ref = new Float64Array(readFileSync(join(dir, 'logits.bin')).buffer.slice(0));
  const policy = m.Policy.fromPretrained(dir, { device: 'cuda:0' });
  try {
    const f = policy.forward({ ids: idRows });
    const logits = m.Tensor.zeros([f.batch * f.seq, V], 'f32', 'cuda:0');
    gemm(f.hidden, policy.lmHeadWeight, logits, { transB: true });
    const ours = logits.to('cpu').data;
    logits.dispose();
    let worst = 0, argmaxMismatch = 0, k = 0;
    idRows.forEach((row, b) => {
      for (let t = 0; t < row.length; t++, k++) {
        let scale = 1, err = 0, a = 0, best = 0;
        for (let v = 0; v < V; v++) {
          const x = ref[k * V + v], y = ours[(b * f.seq + t) * V + v];
          scale = Math.max(scale, Math.abs(x));
          const d = Math.abs(x - y);
          err = d > err || !(d === d) ? (d === d ? d : Infinity) : err;
          if (x > ref[k * V + a]) a = v;
          if (y > ours[(b * f.seq + t) * V + best]) best = v;
        }
        worst = Math.max(worst, err / scale);
        if (a !== best) argmaxMismatch++;
      }
    });
    if (k !== meta.positions) return { ok: false, detail: `PyTorch wrote ${meta.positions} positions, expected ${k}` };
    // f32 engine against a float64 reference: ~1e-6 relative in practice; a wrong layout is O(1).
    const tolerance = 1e-4;
    return {
      ok: worst <= tolerance,
      detail: `${meta.implementation}, torch ${meta.torch}; ${k} positions × V=${V}; max |Δ| / max(1, |logit|) ${worst.toExponential(2)} (tolerance ${tolerance}); argmax differs at ${argmaxMismatch}`,
    };
  } finally {
    policy.dispose();
  }
});

// cuBLASLt (loaded at run time where the machine has it) against the CPU twin, at the
// precisions a user can choose: f32 products within the f32 bound, bf16 within bf16's.
step('engine: cuBLASLt GEMM vs the CPU twin', () => {
  const m = engineModule;
  const which = m.buildInfo().cudaMatmul;
  if (!which.startsWith('cuBLASLt')) return { ok: null, detail: `not in use here: ${which}` };
  let seed = 3;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const shapes = [[1, 896, 896], [37, 4864, 896], [513, 32003, 896], [1000, 896, 4864], [7, 13, 1]];
  const inputs = shapes.map(([M, N, K]) => ({ a: Float32Array.from({ length: M * K }, rand), b: Float32Array.from({ length: K * N }, rand), c0: Float32Array.from({ length: M * N }, rand) }));
  const worst = {};
  try {
    for (const precision of ['highest', 'medium']) {
      m.setMatmulPrecision(precision);
      let w = 0;
      for (const [s, [M, N, K]] of shapes.entries()) for (const transA of [false, true]) for (const transB of [false, true]) for (const beta of [0, 1]) {
        const { a, b, c0 } = inputs[s];
        const A = m.Tensor.from(a, transA ? [K, M] : [M, K]), B = m.Tensor.from(b, transB ? [N, K] : [K, N]);
        const cpu = m.Tensor.from(Float32Array.from(c0), [M, N]);
        gemm(A, B, cpu, { transA, transB, beta });
        const dev = m.Tensor.from(Float32Array.from(c0), [M, N]).to('cuda:0');
        gemm(A.to('cuda:0'), B.to('cuda:0'), dev, { transA, transB, beta });
        const got = dev.to('cpu').data, want = cpu.data;
        // |Δ| relative to Σ|a||b| ≈ K·E|a||b| = K/4 for uniform(−1, 1) inputs.
        for (let i = 0; i < got.length; i++) w = Math.max(w, Number.isFinite(got[i]) ? Math.abs(got[i] - want[i]) / (K / 4 + Math.abs(beta * c0[i])) : Infinity);
      }
      worst[precision] = w;
    }
  } finally {
    m.setMatmulPrecision('highest');
  }
  // f32: (K + 4)·2^-24 per term bound, K ≤ 4864, twice (two implementations) → < 1e-3 of Σ|ab|/K·K; bf16 inputs: 2·2^-8.
  const ok = worst.highest <= 1e-5 && worst.medium <= 2 ** -6;
  return { ok, detail: `${which}; max |Δ| / Σ|a·b| at 'highest' ${worst.highest.toExponential(2)} (≤ 1e-5), at 'medium' ${worst.medium.toExponential(2)} (≤ 2^-6); ${shapes.length} shapes × 4 transposes × beta 0/1` };
});

// Training steps on the device, as a user's script runs them: every advantage +1, so the
// clipped surrogate must fall as the targets' log-probs rise.
const trainCase = emulated
  ? { config: { ...QWEN2, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 1000, tie_word_embeddings: true }, batch: 2, seq: 16, steps: 3, name: 'tiny Qwen2 shape' }
  : { config: { ...QWEN2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true }, batch: 8, seq: 512, steps: 20, name: 'Qwen2.5-0.5B shape' };
step(`engine: ${trainCase.steps} training steps, ${trainCase.name}`, () => {
  const m = engineModule;
  const { batch: B, seq: T, steps } = trainCase;
  const device = 'cuda:0';
  const policy = m.Policy.random(trainCase.config, { seed: 1, device });
  try {
    const V = policy.config.vocabSize, N = B * T;
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const ids = Int32Array.from({ length: N }, () => Math.floor(rand() * V));
    const targets = m.Tensor.from(Int32Array.from({ length: N }, (_, i) => ids[(i + 1) % N])).to(device);
    const idsT = m.Tensor.from(ids, [B, T]);
    const onDevice = (a, shape) => m.Tensor.from(a, shape).to(device);
    const advantages = onDevice(new Float32Array(B).fill(1)), mask = onDevice(new Uint8Array(N).fill(1), [B, T]);
    const groupIds = onDevice(new Int32Array(B));
    const { parameters, gradients } = policy.tensors();
    const opt = new m.AdamW(parameters, gradients, { lr: 1e-4, maxGradNorm: 1 });
    const first = policy.forward({ ids: idsT });
    const lp0 = m.linearTokenLogprobs(first.hidden, policy.lmHeadWeight, targets);
    const old = lp0.logprobs.view(0, [B, T]);
    const losses = [], norms = [];
    const t0 = Date.now();
    for (let s = 0; s < steps; s++) {
      policy.zeroGrad();
      const { hidden } = policy.forward({ ids: idsT });
      const out = m.linearTokenLogprobs(hidden, policy.lmHeadWeight, targets);
      const loss = m.grpoLoss({ logprobs: out.logprobs.view(0, [B, T]), oldLogprobs: old, advantages, mask, groupIds, aggregation: 'grpo', epsHigh: 10 });
      const g = m.linearTokenLogprobsBackward(hidden, policy.lmHeadWeight, targets, out.lse, loss.gradLogprobs.view(0, [N]));
      policy.backward(g.gradHidden, { gradLmHead: g.gradWeight });
      norms.push(opt.step().gradNorm);
      losses.push(loss.loss);
      for (const t of [out.logprobs, out.lse, g.gradHidden, g.gradWeight, loss.gradLogprobs]) t.dispose();
    }
    m.cudaSynchronize(device);
    const seconds = (Date.now() - t0) / 1000;
    opt.dispose();
    const finite = losses.every(Number.isFinite) && norms.every(Number.isFinite);
    const mem = m.cudaMemoryStats(device);
    return {
      ok: finite && losses[losses.length - 1] < losses[0],
      detail: `${(policy.numParameters / 1e6).toFixed(0)} M parameters, B×T ${B}×${T}: loss ${losses[0].toFixed(5)} → ${losses[losses.length - 1].toFixed(5)}, ` +
        `grad norm ${norms[0].toPrecision(3)} → ${norms[norms.length - 1].toPrecision(3)}; ${(steps * N / seconds).toFixed(0)} tokens/s over ${steps} steps; ` +
        `device memory in use ${(mem.inUseBytes / 2 ** 30).toFixed(1)} GiB, ${mem.mallocCalls} cudaMalloc calls in all`,
    };
  } finally {
    policy.dispose();
  }
});

step('engine: bench --engine --device cuda:0', () => {
  const r = run(process.execPath, [join(root, 'dist', 'src', 'cli', 'main.js'), 'bench', '--engine', '--device', 'cuda:0', '--json', ...(emulated ? ['--quick'] : engineCases)], { timeout: 480_000 });
  writeFileSync(join(out, 'bench-engine.json'), r.stdout ?? '');
  writeFileSync(join(out, 'bench-engine.log'), r.stderr ?? '');
  if (r.status !== 0 && !r.stdout) return { ok: false, detail: r.text.trim().split('\n').pop() };
  const report = JSON.parse(r.stdout);
  const parts = report.cases.map((c) => `${c.name}: train ${c.train.tokensPerS.toFixed(0)} tok/s (${(100 * c.train.fractionOfOwnGemm).toFixed(0)}% of the engine's f32 GEMM` +
    `${c.train.fractionOfBf16Matmul ? `, ${(100 * c.train.fractionOfBf16Matmul).toFixed(0)}% of bf16 matmul` : ''}), decode ${c.decode.tokensPerS.toFixed(0)} tok/s ` +
    `(${(100 * c.decode.fractionOfCopyBandwidth).toFixed(0)}% of copy bandwidth)${c.ratio ? `, vs torch ${c.ratio.train.toFixed(2)}× / ${c.ratio.decode.toFixed(2)}×` : ''}`);
  return { ok: report.errors.length === 0, detail: `${parts.join('; ')}${report.skipped.length ? `; skipped ${report.skipped.map((k) => k.case).join(', ')}` : ''} (bench-engine.json)${emulated ? '; emulated: timings mean nothing' : ''}` };
});

// Last: the slowest steps (each kernel test under a sanitizer), so a device call that runs
// out of time has everything else in its table already.
for (const tool of ['memcheck', 'racecheck', 'synccheck']) {
  step(`compute-sanitizer ${tool}`, () => {
    if (emulated) return { ok: null, detail: 'not run on the emulated device (the emulator does its own checks)' };
    if (!hasCommand('compute-sanitizer')) return { ok: null, detail: 'compute-sanitizer is not installed' };
    const r = run('compute-sanitizer', ['--tool', tool, '--target-processes', 'all', '--error-exitcode', '86',
      process.execPath, '--test', ...KERNEL_TESTS], { env: { LGRPO_TEST_DEVICE: 'cuda:0' } });
    writeFileSync(join(out, `sanitizer-${tool}.log`), r.text);
    // memcheck and synccheck end with "ERROR SUMMARY: N errors", racecheck with
    // "RACECHECK SUMMARY: H hazards displayed (N errors, W warnings)".
    const summary = [...r.text.matchAll(/ERROR SUMMARY: (\d+) errors?|RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?/g)];
    const errors = summary.reduce((n, m) => n + Number(m[1] ?? m[2]), 0);
    const tests = counts(r.text.replace(/^# (tests|pass|fail|skipped) /gm, 'ℹ $1 '));
    const ran = `${tests.pass}/${tests.tests} kernel tests passed under it`;
    return { ok: r.status === 0 && errors === 0 && summary.length > 0, detail: `${errors} errors in ${summary.length} summaries; ${ran} (log: sanitizer-${tool}.log)` };
  });
}

function writeTable() {
  const machine = info ? info.cudaDevices.map((d) => d.name).join(', ') : 'unknown';
  const table = [
    `# GPU check: ${emulated ? 'emulated cuda:0 (no hardware)' : machine}`,
    '',
    `${new Date().toISOString()}, node ${process.version}, ${readdirSync(out).length} files in ${out}`,
    '',
    '| step | result | seconds | detail |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.name} | ${r.result} | ${r.seconds.toFixed(1)} | ${r.detail.replace(/\|/g, '\\|')} |`),
    '',
  ].join('\n');
  writeFileSync(join(out, 'gpu-check.md'), table);
  return table;
}
console.log(`\n${writeTable()}`);
process.exit(rows.some((r) => r.result === 'FAIL') ? 1 : 0);
