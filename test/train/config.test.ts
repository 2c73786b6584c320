// Train options: defaults < resumed checkpoint < --config file < command-line flags, every
// invalid value rejected with an error that starts with its option, consistency checks,
// paths resolved against the right folder, and the JSON form round-tripping.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import {
  ConfigError, CONFIG_KEYS, OPTIONS, DEFAULT_MICRO_BATCH_CAP, configDiff, configHash, configToJson, resolveConfig,
  trainOptions, writeRunConfig, type ConfigKey,
} from '../../src/train/config.js';
import { writeCheckpoint } from '../../src/train/checkpoint.js';
import { Rng } from '../../src/train/rng.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-config-'));
after(() => rmSync(root, { recursive: true, force: true }));
const NOW = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
let counter = 0;
function freshDir(): string {
  const dir = join(root, `case-${++counter}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function writeJson(path: string, value: unknown): string {
  writeFileSync(path, JSON.stringify(value));
  return path;
}

/** The ConfigError thrown by fn (fails if none). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${(e as Error).stack}`);
    return e;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

function assertNames(error: ConfigError, flag: string, detail?: RegExp): void {
  assert.ok(
    error.problems.some((p) => p.startsWith(`--${flag}:`) && (!detail || detail.test(p))),
    `no problem starting with --${flag}:${detail ? ` matching ${detail}` : ''} in:\n${error.message}`,
  );
}

test('no arguments: every default, a derived micro-batch, a timestamped run directory, no warnings', () => {
  const cwd = freshDir();
  const { config, sources, warnings } = resolveConfig({}, undefined, { cwd, now: NOW });
  for (const key of CONFIG_KEYS) {
    assert.equal(sources[key], 'default', key);
    const d = OPTIONS[key].default;
    if (d === undefined) continue; // derived below
    if (key === 'reward') assert.deepEqual(config.reward, [{ kind: 'builtin', name: 'math', weight: 1 }]);
    else assert.deepEqual(config[key], d, key);
  }
  assert.equal(config.epsilonHigh, config.epsilon);
  assert.equal((config.promptsPerStep * config.groupSize) % config.microBatch, 0);
  assert.ok(config.microBatch <= DEFAULT_MICRO_BATCH_CAP);
  assert.equal(config.out, join(cwd, 'runs', 'arith-lambda-20260102-030405'));
  assert.equal(config.refModel, null);
  assert.deepEqual(warnings, []);
  // The contract's fixed defaults.
  assert.equal(config.loss, 'lambda');
  assert.equal(config.groupSize, 8);
  assert.equal(config.epsilon, 0.2);
  assert.equal(config.beta, 0);
  assert.equal(config.lambdaInit, 0);
  assert.equal(config.lambdaLr, 0.1);
  assert.equal(config.temperature, 1);
  assert.ok(Math.abs(config.lambdaR - 0.1111) < 1e-4);
});

test("the README's default-run paragraph describes the recipe that `train` with no flags resolves", () => {
  // The recipe is retuned by sweeps (docs/defaults-sweep.md); its description and results in the
  // README must move with it, so the numbers the README gives are the ones the defaults produce.
  const { config } = resolveConfig({}, undefined, { cwd: freshDir(), now: NOW });
  const readme = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'README.md'), 'utf8');
  const start = readme.indexOf('## Training: `npx lgrpo-native train`');
  assert.ok(start >= 0, 'README.md has no "## Training: `npx lgrpo-native train`" section');
  const paragraph = readme.slice(start, readme.indexOf('\n\n', readme.indexOf('\n\n', start) + 2)).replace(/\s+/g, ' ');
  const expected = [
    `supervised warm-up (${config.sftSteps} steps`,
    `then ${config.steps} λ-GRPO steps of ${config.promptsPerStep} prompts × ${config.groupSize} samples at lr ${config.lr.toExponential()}`,
    `evaluated every ${config.evalEvery} steps on ${config.evalSize} held-out prompts`,
    config.lrSchedule === 'constant' ? 'constant' : `along a ${config.lrSchedule}`,
    `temperature ${config.temperature}`,
    `seed ${config.seed}`,
  ];
  for (const phrase of expected) assert.ok(paragraph.includes(phrase), `README's default-run paragraph lacks "${phrase}":\n${paragraph}`);
});

test('precedence: defaults < --config file < command-line flags', () => {
  const cwd = freshDir();
  const file = writeJson(join(cwd, 'c.json'), { steps: 20, lr: 0.01, loss: 'grpo', groupSize: 4, 'mask-truncated': true });
  const { config, sources } = resolveConfig({ steps: 30, 'mask-truncated': false }, file, { cwd, now: NOW });
  assert.equal(config.steps, 30);
  assert.equal(sources.steps, 'cli');
  assert.equal(config.lr, 0.01);
  assert.equal(sources.lr, 'file');
  assert.equal(config.loss, 'grpo');
  assert.equal(config.groupSize, 4); // camelCase keys are accepted in the file too
  assert.equal(config.maskTruncated, false); // an explicit false beats the file's true
  assert.equal(sources.maskTruncated, 'cli');
  assert.equal(config.iterations, 1);
  assert.equal(sources.iterations, 'default');
  // the file may also come from cliArgs.config
  assert.equal(resolveConfig({ config: file }, undefined, { cwd }).config.lr, 0.01);
});

test('through yargs: flags not typed never override the config file, and --help documents every option', async () => {
  const cwd = freshDir();
  const file = writeJson(join(cwd, 'c.json'), { lr: 0.02, 'group-size': 4, temperature: 0.7, reward: ['math=2'] });
  const parse = (argv: string[]) => trainOptions(yargs(argv)).strict().exitProcess(false).parseSync() as Record<string, unknown>;
  const argv = parse(['--config', file, '--steps', '7', '--lambda-init', '-0.5']);
  const { config, sources } = resolveConfig(argv, undefined, { cwd });
  assert.equal(config.lr, 0.02);
  assert.equal(config.groupSize, 4);
  assert.equal(config.temperature, 0.7);
  assert.deepEqual(config.reward, [{ kind: 'builtin', name: 'math', weight: 2 }]);
  assert.equal(config.steps, 7);
  assert.equal(config.lambdaInit, -0.5);
  assert.equal(sources.maxNewTokens, 'default');

  const repeated = configError(() => resolveConfig(parse(['--steps', '3', '--steps', '4']), undefined, { cwd }));
  assertNames(repeated, 'steps', /more than once/);
  const notANumber = configError(() => resolveConfig(parse(['--group-size', 'eight']), undefined, { cwd }));
  assertNames(notANumber, 'group-size', /NaN/);

  const help = await trainOptions(yargs([])).scriptName('t').wrap(null).getHelp();
  for (const key of CONFIG_KEYS) {
    assert.match(help, new RegExp(`--${OPTIONS[key].flag}\\b`), key);
    assert.ok(help.includes(OPTIONS[key].describe), `help of --${OPTIONS[key].flag}`);
  }
  assert.match(help, /--config\b/);
  assert.match(help, /--group-size.*\[default: 8\]/);
});

test('every invalid value is an error naming its option, from the command line and from a file', () => {
  const cwd = freshDir();
  const wrongType: Record<string, unknown> = { number: 'x', integer: 'x', boolean: 'yes', string: 42, strings: [3] };
  let checked = 0;
  for (const key of CONFIG_KEYS) {
    const spec = OPTIONS[key];
    const bad: unknown[] = [wrongType[spec.kind]];
    if (spec.kind === 'number' || spec.kind === 'integer') bad.push(Number.NaN, Infinity);
    if (spec.kind === 'integer') bad.push(2.5);
    if (spec.min !== undefined) bad.push(spec.min - 1);
    if (spec.above !== undefined) bad.push(spec.above);
    if (spec.max !== undefined) bad.push(spec.max + 1);
    if (spec.choices) bad.push('bogus');
    if (spec.kind === 'string' || spec.kind === 'strings') bad.push('');
    for (const value of bad) {
      const fromCli = configError(() => resolveConfig({ [spec.flag]: value }, undefined, { cwd }));
      assertNames(fromCli, spec.flag);
      if (Number.isFinite(value as number) || typeof value !== 'number') {
        const file = writeJson(join(cwd, `bad-${key}.json`), { [spec.flag]: value });
        const fromFile = configError(() => resolveConfig({}, file, { cwd }));
        assertNames(fromFile, spec.flag);
        assert.ok(fromFile.message.includes(file), `the message names the file: ${fromFile.message}`);
      }
      checked++;
    }
  }
  assert.ok(checked > 3 * CONFIG_KEYS.length, `checked ${checked} bad values`);

  // Several problems are reported together.
  const many = configError(() => resolveConfig({ steps: 0, lr: -1, loss: 'ppo' }, undefined, { cwd }));
  assert.equal(many.problems.length, 3);
  for (const flag of ['steps', 'lr', 'loss']) assertNames(many, flag);
});

test('the config file: unknown keys, a key given twice, bad JSON, a missing file', () => {
  const cwd = freshDir();
  const unknown = configError(() => resolveConfig({}, writeJson(join(cwd, 'u.json'), { 'grup-size': 4, frobnicate: 1 }), { cwd }));
  assert.ok(unknown.problems.some((p) => p.startsWith('"grup-size": unknown option') && p.includes('did you mean "group-size"')), unknown.message);
  assert.ok(unknown.problems.some((p) => p.startsWith('"frobnicate": unknown option') && !p.includes('did you mean')), unknown.message);

  const twice = configError(() => resolveConfig({}, writeJson(join(cwd, 't.json'), { 'group-size': 4, groupSize: 4 }), { cwd }));
  assertNames(twice, 'group-size', /twice/);

  writeFileSync(join(cwd, 'bad.json'), '{"steps": 3,');
  assertNames(configError(() => resolveConfig({}, join(cwd, 'bad.json'), { cwd })), 'config', /not valid JSON/);
  assertNames(configError(() => resolveConfig({}, writeJson(join(cwd, 'arr.json'), [1]), { cwd })), 'config', /expected a JSON object/);
  assertNames(configError(() => resolveConfig({}, join(cwd, 'absent.json'), { cwd })), 'config', /no such file/);
});

test('consistency: micro-batch divides P × G, group size >= 2, epsilon-high >= 0, beta and the reference', () => {
  const cwd = freshDir();
  const e = configError(() => resolveConfig({ 'prompts-per-step': 3, 'group-size': 4, 'micro-batch': 5 }, undefined, { cwd }));
  assertNames(e, 'micro-batch', /does not divide .* = 12 \(divisors: 1, 2, 3, 4, 6, 12\)/);
  assert.equal(resolveConfig({ 'prompts-per-step': 3, 'group-size': 4, 'micro-batch': 6 }, undefined, { cwd }).config.microBatch, 6);
  // Without --micro-batch any P and G work: the derived micro-batch always divides P × G.
  const rng = new Rng(7);
  for (let i = 0; i < 50; i++) {
    const P = 1 + rng.int(40);
    const G = 2 + rng.int(40);
    const { microBatch } = resolveConfig({ 'prompts-per-step': P, 'group-size': G }, undefined, { cwd }).config;
    assert.equal((P * G) % microBatch, 0, `P=${P} G=${G} micro=${microBatch}`);
    assert.ok(microBatch >= 1 && microBatch <= DEFAULT_MICRO_BATCH_CAP);
  }

  assertNames(configError(() => resolveConfig({ 'group-size': 1 }, undefined, { cwd })), 'group-size', />= 2/);
  assertNames(configError(() => resolveConfig({ 'epsilon-high': -0.01 }, undefined, { cwd })), 'epsilon-high', />= 0/);
  assert.equal(resolveConfig({ epsilon: 0.25 }, undefined, { cwd }).config.epsilonHigh, 0.25);
  assert.equal(resolveConfig({ epsilon: 0.2, 'epsilon-high': 0.28 }, undefined, { cwd }).config.epsilonHigh, 0.28);

  // beta > 0: the reference defaults to the policy's starting weights.
  assert.equal(resolveConfig({ beta: 0.04 }, undefined, { cwd }).config.refModel, 'tiny');
  const modelDir = join(cwd, 'model');
  mkdirSync(modelDir);
  const withRef = resolveConfig({ beta: 0.04, 'ref-model': 'model' }, undefined, { cwd });
  assert.equal(withRef.config.refModel, modelDir);
  assertNames(configError(() => resolveConfig({ beta: 0.04, 'ref-model': 'missing' }, undefined, { cwd })), 'ref-model', /does not exist/);
  const unused = resolveConfig({ 'ref-model': 'model' }, undefined, { cwd });
  assert.equal(unused.config.refModel, null);
  assert.ok(unused.warnings.some((w) => w.startsWith('--ref-model:')), unused.warnings.join('\n'));
});

test('warnings: λ options without --loss lambda, warmup past the end, evaluation never due', () => {
  const cwd = freshDir();
  const r = resolveConfig({ loss: 'grpo', 'lambda-lr': 0.5, 'lambda-fixed': true, warmup: 50, steps: 40, 'eval-every': 41 }, undefined, { cwd });
  for (const flag of ['lambda-lr', 'lambda-fixed', 'warmup', 'eval-every'])
    assert.ok(r.warnings.some((w) => w.startsWith(`--${flag}:`)), `${flag} in ${r.warnings.join('\n')}`);
  assert.ok(!r.warnings.some((w) => w.startsWith('--lambda-init:')), 'defaults never warn');
  assert.equal(r.config.lambdaLr, 0.5); // still recorded
  assert.deepEqual(resolveConfig({ loss: 'lambda', 'lambda-lr': 0.5 }, undefined, { cwd }).warnings, []);
  const dapo = resolveConfig({ 'lambda-fixed': true }, undefined, { cwd });
  assert.ok(dapo.warnings.some((w) => w.startsWith('--lambda-fixed:') && w.includes('dapo')));
});

test('paths: relative to the working directory on the command line, to the file in a config file', () => {
  const cwd = freshDir();
  mkdirSync(join(cwd, 'sub', 'data'), { recursive: true });
  mkdirSync(join(cwd, 'sub', 'hf-model'));
  writeFileSync(join(cwd, 'sub', 'data', 'train.jsonl'), '{"prompt":"1+1=","answer":"2"}\n');
  writeFileSync(join(cwd, 'sub', 'brevity.mjs'), 'export default () => 0;\n');
  const file = writeJson(join(cwd, 'sub', 'c.json'), { task: 'data/train.jsonl', model: 'hf-model', reward: ['math', 'brevity.mjs=-0.5'], out: 'out' });
  const { config } = resolveConfig({}, file, { cwd });
  assert.equal(config.task, join(cwd, 'sub', 'data', 'train.jsonl'));
  assert.equal(config.model, join(cwd, 'sub', 'hf-model'));
  assert.deepEqual(config.reward, [
    { kind: 'builtin', name: 'math', weight: 1 },
    { kind: 'module', path: join(cwd, 'sub', 'brevity.mjs'), weight: -0.5 },
  ]);
  assert.equal(config.out, join(cwd, 'sub', 'out'));
  const cli = resolveConfig({ task: 'sub/data/train.jsonl', out: 'x' }, undefined, { cwd, now: NOW });
  assert.equal(cli.config.task, join(cwd, 'sub', 'data', 'train.jsonl'));
  assert.equal(cli.config.out, join(cwd, 'x'));
  // The default run name uses the task file's name.
  assert.equal(resolveConfig({ task: 'sub/data/train.jsonl', loss: 'dapo' }, undefined, { cwd, now: NOW }).config.out, join(cwd, 'runs', 'train-dapo-20260102-030405'));

  assertNames(configError(() => resolveConfig({ task: 'nope.jsonl' }, undefined, { cwd })), 'task', /does not exist/);
  assertNames(configError(() => resolveConfig({ task: 'sub' }, undefined, { cwd })), 'task', /not a file/);
  assertNames(configError(() => resolveConfig({ model: 'sub/data/train.jsonl' }, undefined, { cwd })), 'model', /not a directory/);
  assertNames(configError(() => resolveConfig({ model: 'nowhere' }, undefined, { cwd })), 'model', /does not exist/);
  assertNames(configError(() => resolveConfig({ reward: ['sub/r.ts'] }, undefined, { cwd })), 'reward', /compile TypeScript/);
  assertNames(configError(() => resolveConfig({ reward: ['sub/missing.js'] }, undefined, { cwd })), 'reward', /does not exist/);
  assertNames(configError(() => resolveConfig({ reward: ['exact_match'] }, undefined, { cwd })), 'reward', /unknown built-in/);
  assertNames(configError(() => resolveConfig({ reward: ['math=abc'] }, undefined, { cwd })), 'reward', /the weight in "math=abc" is not a number: "abc"/);
  assertNames(configError(() => resolveConfig({ out: 'sub/data/train.jsonl' }, undefined, { cwd })), 'out', /not a directory/);
});

test('device: cpu, cuda (= cuda:0), cuda:N; anything else is an error', () => {
  const cwd = freshDir();
  assert.equal(resolveConfig({ device: 'cuda' }, undefined, { cwd }).config.device, 'cuda:0');
  assert.equal(resolveConfig({ device: 'cuda:3' }, undefined, { cwd }).config.device, 'cuda:3');
  for (const bad of ['gpu', 'cuda:', 'CPU', 'cuda:x']) assertNames(configError(() => resolveConfig({ device: bad }, undefined, { cwd })), 'device');
});

test('configToJson: the saved config.json reproduces the config; configHash ignores what a resume may change', () => {
  const cwd = freshDir();
  writeFileSync(join(cwd, 'r.js'), 'export default () => 1;\n');
  const args = { loss: 'dr_grpo', lr: 3e-4, 'epsilon-high': 0.28, beta: 0.01, reward: ['math', 'r.js=0.25'], seed: 99, out: 'run', 'lr-schedule': 'cosine' };
  const first = resolveConfig(args, undefined, { cwd }).config;
  const path = writeRunConfig(cwd, first);
  const json = JSON.parse(readFileSync(path, 'utf8'));
  assert.deepEqual(Object.keys(json), CONFIG_KEYS.map((k) => OPTIONS[k].flag));
  const again = resolveConfig({}, path, { cwd: root }).config;
  assert.deepEqual(again, first);
  assert.deepEqual(configDiff(first, again), []);
  assert.equal(configHash(again), configHash(first));

  const changed = (over: Record<string, unknown>) => resolveConfig({ ...args, ...over }, undefined, { cwd }).config;
  assert.notEqual(configHash(changed({ lr: 1e-4 })), configHash(first));
  assert.deepEqual(configDiff(first, changed({ lr: 1e-4 })), ['lr'] as ConfigKey[]);
  assert.equal(configHash(changed({ out: 'elsewhere', 'save-every': 3, device: 'cuda' })), configHash(first));
  // a cosine schedule depends on --steps; a constant one does not
  assert.notEqual(configHash(changed({ steps: 500 })), configHash(first));
  assert.equal(configHash(changed({ steps: 500, 'lr-schedule': 'constant' })), configHash(changed({ 'lr-schedule': 'constant' })));
});

test('--resume: the checkpoint\'s config is the base layer, the run directory the default --out', async () => {
  const cwd = freshDir();
  // A constant rate: --steps may change on resume.
  const base = resolveConfig({ lr: 0.05, steps: 10, 'group-size': 4, 'lr-schedule': 'constant', out: 'run' }, undefined, { cwd }).config;
  const runDir = join(cwd, 'run');
  await writeCheckpoint(runDir, 10, () => {}, {
    state: {
      step: 10, lambda: 0.3, lambdaOptimizer: { kind: 'sgd', state: {} }, rng: { data: new Rng(1).getState() },
      dataCursor: { epoch: 0, offset: 80 }, configHash: configHash(base), config: configToJson(base),
    },
  });
  const file = writeJson(join(cwd, 'more.json'), { 'eval-every': 2 });
  const r = resolveConfig({ resume: 'run', steps: 20 }, file, { cwd });
  assert.equal(r.config.lr, 0.05);
  assert.equal(r.sources.lr, 'checkpoint');
  assert.equal(r.config.groupSize, 4);
  assert.equal(r.config.steps, 20);
  assert.equal(r.config.evalEvery, 2);
  assert.equal(r.config.out, runDir);
  assert.equal(r.config.resume, runDir);
  assert.equal(r.checkpoint?.step, 10);
  assert.equal(r.checkpoint?.dir, join(runDir, 'checkpoint-10'));
  assert.equal(configHash(r.config), configHash(base));
  assert.deepEqual(r.warnings, []);
  // resuming one checkpoint directory works the same way
  assert.equal(resolveConfig({ resume: join(runDir, 'checkpoint-10') }, undefined, { cwd }).config.out, runDir);

  assertNames(configError(() => resolveConfig({ resume: 'nothing-here' }, undefined, { cwd })), 'resume', /does not exist/);
  assertNames(configError(() => resolveConfig({ resume: '.' }, undefined, { cwd })), 'resume', /neither a checkpoint/);
});
