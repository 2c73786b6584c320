// The command line end to end: spawns the compiled bin as a user would. Checks the
// shape of `info --json` and `bench --quick --json` and that every reported number is
// finite and positive; never how fast anything is.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { statSync } from 'node:fs';
import { MAIN, assertPositive, cli as run } from './run_cli.js';
import { ON_GPU, TEST_DEVICE } from '../helpers.js';


test('info --json describes the build', () => {
  const r = run(['info', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.equal(typeof info.version, 'string');
  assert.equal(typeof info.cuda, 'boolean');
  assert.ok(Array.isArray(info.cudaDevices));
  assert.equal(typeof info.simd, 'string');
  assert.ok(Number.isInteger(info.threads) && info.threads >= 1, `threads ${info.threads}`);
  assert.equal(typeof info.addonPath, 'string');
});

test('info prints text by default', () => {
  const r = run(['info']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^lgrpo-native \d+\.\d+\.\d+/);
  assert.match(r.stdout, /simd:/);
});

test('unknown commands and options are errors', () => {
  const unknownCommand = run(['frobnicate']);
  assert.equal(unknownCommand.status, 1);
  assert.match(unknownCommand.stderr, /unknown command "frobnicate" \(the commands: train, eval, sample, compare, bench, info\)/);
  const typo = run(['trian']);
  assert.equal(typo.status, 1);
  assert.match(typo.stderr, /unknown command "trian" \(did you mean train\?\)/);
  const unknownOption = run(['info', '--frobnicate']);
  assert.equal(unknownOption.status, 1);
  assert.match(unknownOption.stderr, /unknown option --frobnicate/);
  const noCommand = run([]);
  assert.equal(noCommand.status, 1);
  const badKernel = run(['bench', '--only', 'noSuchKernel']);
  assert.equal(badKernel.status, 1);
  assert.match(badKernel.stderr, /only: unknown kernel 'noSuchKernel'/);
});

test('a usage error is one line naming the nearest valid flag or value, then where the help is (not the help itself)', () => {
  const cases: Array<[string[], RegExp]> = [
    [['compare', '--loss', 'grpo'], /^lgrpo-native: unknown option --loss \(did you mean --losses\?\)$/],
    [['train', '--stpes', '3'], /^lgrpo-native: unknown option --stpes \(did you mean --steps\?\)$/],
    [['eval', '--model', 'x', '--evl-size', '3'], /^lgrpo-native: unknown option --evl-size \(did you mean --eval-size\?\)$/],
    [['train', '--loss', 'lamda'], /^lgrpo-native: --loss: "lamda" is not one of lambda, grpo, dapo, dr_grpo \(did you mean lambda\?\)$/],
    [['train', '--steps'], /^lgrpo-native: --steps needs a value$/],
    [['eval'], /^lgrpo-native: missing --model$/],
    [['train', '--reward', 'math=abc'], /^lgrpo-native: --reward: the weight in "math=abc" is not a number: "abc"/],
  ];
  for (const [args, pattern] of cases) {
    const r = run(args);
    assert.equal(r.status, 1, args.join(' '));
    const lines = r.stderr.trim().split('\n');
    assert.match(lines[0], pattern, args.join(' '));
    assert.ok(lines.length <= 2, `${args.join(' ')}: expected at most two lines, got:\n${r.stderr}`);
    if (!args.includes('math=abc')) assert.equal(lines[1], `Run 'lgrpo-native ${args[0]} --help' for the options.`);
    assert.doesNotMatch(r.stderr, /run directory/);
    assert.doesNotMatch(r.stderr + r.stdout, /Options:|--help +Show help/);
  }
});

test('--help lists the commands', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /bench/);
  assert.match(r.stdout, /info/);
});

test('bench --quick --json reports every kernel with finite positive numbers', () => {
  const args = ['bench', '--quick', '--json'];
  if (ON_GPU) args.push('--device', TEST_DEVICE);
  const r = run([...args]);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.errors, [], `kernels failed:\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(report.schema, 'lgrpo-native-bench/1');
  assert.equal(report.quick, true);
  assert.equal(typeof report.machine.cpu, 'string');
  assertPositive(report.machine.logicalCpus, 'machine.logicalCpus');
  for (const key of ['readGBs', 'readGBsOneThread', 'copyGBs', 'copyGBsOneThread', 'bufferBytes'])
    assertPositive(report.ceiling[key], `ceiling.${key}`);

  const kernels = new Set(report.results.map((x: { kernel: string }) => x.kernel));
  // gemm and attention are engine leaves benchmarked on the CPU only: the CUDA bench times the five kernels.
  const expected = ['attention', 'gemm', 'groupAdvantages', 'grpoLoss', 'lambdaWeights', 'linearTokenLogprobs', 'tokenLogprobs'];
  assert.deepEqual([...kernels].sort(), ON_GPU ? expected.filter((k) => k !== 'gemm' && k !== 'attention') : expected);
  for (const res of report.results) {
    const label = `${res.kernel} ${res.variant}`;
    for (const key of ['medianMs', 'minMs', 'runs']) assertPositive(res[key], `${label}.${key}`);
    assert.ok(res.minMs <= res.medianMs, `${label}: min ${res.minMs} > median ${res.medianMs}`);
    if (res.kernel === 'linearTokenLogprobs') {
      assertPositive(res.flops, `${label}.flops`);
      assertPositive(res.gflopPerS, `${label}.gflopPerS`);
      if (!ON_GPU) {
        assert.equal(typeof res.peakRssGrowth.bytes, 'number', `${label}.peakRssGrowth`);
        assert.ok(res.peakRssGrowth.bytes >= 0, `${label}.peakRssGrowth.bytes`);
      }
    }
    if (res.kernel === 'tokenLogprobs' || res.kernel === 'grpoLoss') {
      for (const key of ['bytes', 'gbPerS']) assertPositive(res[key], `${label}.${key}`);
      if (!ON_GPU) assertPositive(res.pctOfCeiling, `${label}.pctOfCeiling`);
    }
    assert.ok(res.naive, `${label}: no naive comparison`);
    for (const key of ['medianMs', 'speedup', 'rowsTimed', 'totalRows']) assertPositive(res.naive[key], `${label}.naive.${key}`);
    // Kernel and naive computed the same thing (loose: bf16 and f32 summation order differ).
    assert.ok(Number.isFinite(res.naive.maxAbsDiff) && res.naive.maxAbsDiff < 0.05, `${label}: kernel and naive differ by ${res.naive.maxAbsDiff}`);
  }
});

test('bench --only runs just the named kernels', () => {
  const args = ['bench', '--quick', '--json', '--only', 'lambdaWeights,groupAdvantages'];
  if (ON_GPU) args.push('--device', TEST_DEVICE);
  const r = run([...args]);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.results.map((x: { kernel: string }) => x.kernel), ['groupAdvantages', 'lambdaWeights']);
});

test('the bin is executable, so `npx lgrpo-native` runs it', { skip: process.platform === 'win32' }, () => {
  assert.ok((statSync(MAIN).mode & 0o111) !== 0, `${MAIN} has no execute permission`);
});
