#!/usr/bin/env node
// The whole GPU check in one run, for the day a device is lent (scripts/gpu-check.sh
// starts it there), and on the emulated cuda:0 here (--emulated), so that only the
// hardware is untested. Steps, each a row of one table (gpu-check.md in --out):
//   1. build     the addon has CUDA and sees a device
//   2. suite     the whole test suite with every kernel test on cuda:0
//   3. sanitizer compute-sanitizer memcheck, racecheck, synccheck over the kernel tests
//                (where it is installed; not meaningful on the emulator)
//   4. bench     bench --device cuda:0 (--quick when emulated)
//   5. pytorch   tokenLogprobs (+ backward) and grpoLoss (loss, token gradients, ∂L/∂λ)
//                against PyTorch autograd on the same inputs, where torch imports
// Usage: node scripts/gpu-check.mjs [--emulated] [--out DIR] [--only build,pytorch,...]
//   DIR defaults to $OUT or gpu-check-out; --only runs the steps whose names start so.
//   LGRPO_PYTHON picks the Python with torch (else python3, then /usr/bin/python3).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
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
  return { ok, detail: `${devices.join('; ') || 'no CUDA device'}; emulated: ${info.cudaEmulated}; addon ${info.addonPath}` };
});

step('suite on cuda:0', () => {
  const r = run(process.execPath, [join(root, 'scripts', 'run-tests.mjs')], { env: { LGRPO_TEST_DEVICE: 'cuda:0' } });
  writeFileSync(join(out, 'suite.log'), r.text);
  const c = counts(r.text);
  return { ok: r.status === 0, detail: `${c.pass}/${c.tests} passed, ${c.fail} failed, ${c.skipped} skipped (log: suite.log)` };
});

for (const tool of ['memcheck', 'racecheck', 'synccheck']) {
  step(`compute-sanitizer ${tool}`, () => {
    if (emulated) return { ok: null, detail: 'not run on the emulated device (the emulator does its own checks)' };
    if (!hasCommand('compute-sanitizer')) return { ok: null, detail: 'compute-sanitizer is not installed' };
    const r = run('compute-sanitizer', ['--tool', tool, '--target-processes', 'all', '--error-exitcode', '86',
      process.execPath, '--test', ...KERNEL_TESTS], { env: { LGRPO_TEST_DEVICE: 'cuda:0' } });
    writeFileSync(join(out, `sanitizer-${tool}.log`), r.text);
    const summary = r.text.match(/ERROR SUMMARY: \d+ errors?/g) ?? [];
    const errors = summary.reduce((n, s) => n + Number(s.match(/\d+/)[0]), 0);
    return { ok: r.status === 0 && errors === 0, detail: `${errors} errors over ${summary.length} processes (log: sanitizer-${tool}.log)` };
  });
}

step('bench --device cuda:0', () => {
  const r = run(process.execPath, [join(root, 'dist', 'src', 'cli', 'main.js'), 'bench', '--device', 'cuda:0', '--json', ...(emulated ? ['--quick'] : [])]);
  writeFileSync(join(out, 'bench.json'), r.stdout ?? '');
  if (r.status !== 0) return { ok: false, detail: r.text.trim().split('\n').pop() };
  const report = JSON.parse(r.stdout);
  const parts = report.results.map((x) => `${x.kernel} ${x.variant}: ${x.medianMs.toFixed(3)} ms${x.gbPerS ? `, ${x.gbPerS.toFixed(0)} GB/s` : ''}${x.gflopPerS ? `, ${x.gflopPerS.toFixed(0)} GFLOP/s` : ''}`);
  writeFileSync(join(out, 'bench.md'), parts.map((p) => `- ${p}`).join('\n') + '\n');
  return { ok: report.errors.length === 0, detail: `${report.results.length} rows (bench.json, bench.md)${emulated ? '; emulated: timings mean nothing' : ''}` };
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
console.log(`\n${table}`);
process.exit(rows.some((r) => r.result === 'FAIL') ? 1 : 0);
