// Checkpoint directories: complete or absent whatever fails when, `latest` always naming a
// complete checkpoint, leftovers of crashed saves cleaned up, --resume resolution with
// clear errors, pruning, and trainer_state.json validated field by field.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LATEST_FILE, TRAINER_STATE_FILE, checkTrainerState, cleanStaleTemps, findCheckpoint, listCheckpoints, pruneCheckpoints,
  readLatest, readTrainerState, removeCheckpointsAfter, writeCheckpoint, writeTrainerState, type TrainerState,
} from '../../src/train/checkpoint.js';
import { Rng } from '../../src/train/rng.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-train-checkpoint-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const dir = join(root, `run-${++counter}`);
  mkdirSync(dir);
  return dir;
}

function stateAt(step: number, extra: Partial<TrainerState> = {}): TrainerState {
  const data = new Rng(step);
  const sampling = new Rng(1000 + step);
  for (let i = 0; i < step; i++) sampling.nextUint32();
  return {
    step,
    lambda: 0.01 * step - 0.05,
    lambdaOptimizer: { kind: 'sgd', state: {} },
    rng: { data: data.getState(), sampling: sampling.getState() },
    dataCursor: { epoch: Math.floor(step / 10), offset: (step % 10) * 8 },
    configHash: 'a1b2c3',
    ...extra,
  };
}

/** A checkpoint as a trainer writes it: state plus the caller's files. */
function save(runDir: string, step: number, keepLast = 0): Promise<string> {
  return writeCheckpoint(runDir, step, (tmp) => {
    writeFileSync(join(tmp, 'model.safetensors'), `weights of step ${step}`);
    mkdirSync(join(tmp, 'tokenizer'));
    writeFileSync(join(tmp, 'tokenizer', 'tokenizer.json'), '{}');
  }, { state: stateAt(step), keepLast });
}

function deadPid(): number {
  // A child that has exited: its pid names no process (barring reuse within the test).
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('a checkpoint is written through a temporary folder, renamed into place, and `latest` names it', async () => {
  const run = freshDir();
  let seenTmp = '';
  const dir = await writeCheckpoint(run, 7, async (tmp) => {
    seenTmp = tmp;
    assert.match(tmp, new RegExp(`checkpoint-7\\.tmp-${process.pid}$`));
    assert.ok(existsSync(join(tmp, TRAINER_STATE_FILE)), 'the state is there before the callback runs');
    assert.ok(!existsSync(join(run, 'checkpoint-7')), 'nothing visible under the final name yet');
    await new Promise((r) => setTimeout(r, 5));
    writeFileSync(join(tmp, 'model.safetensors'), 'w7');
  }, { state: stateAt(7) });
  assert.equal(dir, join(run, 'checkpoint-7'));
  assert.ok(!existsSync(seenTmp));
  assert.deepEqual(readdirSync(run).sort(), ['checkpoint-7', LATEST_FILE]);
  assert.equal(readFileSync(join(run, LATEST_FILE), 'utf8'), 'checkpoint-7\n');
  assert.equal(readFileSync(join(dir, 'model.safetensors'), 'utf8'), 'w7');
  assert.deepEqual(readTrainerState(dir), stateAt(7));
  assert.deepEqual(findCheckpoint(run), { dir, runDir: run, step: 7, state: stateAt(7) });

  // The callback may write the state itself instead.
  await writeCheckpoint(run, 8, (tmp) => void writeTrainerState(tmp, stateAt(8)));
  assert.equal(readLatest(run), 'checkpoint-8');
});

test('a crash inside the callback leaves no checkpoint-N, no temporary folder, and `latest` as it was', async () => {
  const run = freshDir();
  await save(run, 10);
  const before = readFileSync(join(run, 'checkpoint-10', 'model.safetensors'), 'utf8');
  const boom = new Error('disk full (simulated)');
  await assert.rejects(
    writeCheckpoint(run, 20, (tmp) => {
      writeFileSync(join(tmp, 'model.safetensors'), 'half');
      throw boom;
    }, { state: stateAt(20) }),
    (e) => e === boom,
  );
  await assert.rejects(writeCheckpoint(run, 20, async () => {
    await new Promise((r) => setTimeout(r, 1));
    throw new Error('async failure');
  }, { state: stateAt(20) }), /async failure/);
  // Without a trainer_state.json the folder is not a checkpoint: refused.
  await assert.rejects(writeCheckpoint(run, 20, (tmp) => writeFileSync(join(tmp, 'x'), '')), /trainer_state\.json: missing/);
  // A state for another step is refused too.
  await assert.rejects(writeCheckpoint(run, 20, () => {}, { state: stateAt(19) }), /state\.step: 19 differs/);
  await assert.rejects(writeCheckpoint(run, 20, (tmp) => void writeTrainerState(tmp, stateAt(21))), /step 21 differs/);

  assert.deepEqual(readdirSync(run).sort(), ['checkpoint-10', LATEST_FILE]);
  assert.equal(readLatest(run), 'checkpoint-10');
  assert.equal(readFileSync(join(run, 'checkpoint-10', 'model.safetensors'), 'utf8'), before);
  assert.equal(findCheckpoint(run).step, 10);
});

test('leftovers of crashed saves are cleaned up; a live process\'s save in progress is not touched', async () => {
  const run = freshDir();
  await save(run, 1);
  const dead = deadPid();
  const deadTmp = join(run, `checkpoint-2.tmp-${dead}`);
  const ownTmp = join(run, `checkpoint-3.tmp-${process.pid}`);
  const liveTmp = join(run, `checkpoint-4.tmp-${process.ppid}`);
  for (const d of [deadTmp, ownTmp, liveTmp]) {
    mkdirSync(d);
    writeFileSync(join(d, 'model.safetensors'), 'partial');
  }
  // A complete checkpoint moved aside by a save that then crashed before its replacement arrived.
  const movedAside = join(run, `checkpoint-1.old-${dead}`);
  renameSync(join(run, 'checkpoint-1'), movedAside);

  await save(run, 5);
  assert.ok(!existsSync(deadTmp), 'a dead process\'s temporary folder is removed');
  assert.ok(!existsSync(ownTmp), 'this process\'s old temporary folder is removed');
  assert.ok(existsSync(liveTmp), 'a live process\'s folder is left alone');
  assert.ok(!existsSync(movedAside) && existsSync(join(run, 'checkpoint-1', TRAINER_STATE_FILE)), 'the moved-aside checkpoint is restored');
  assert.equal(readFileSync(join(run, 'checkpoint-1', 'model.safetensors'), 'utf8'), 'weights of step 1');
  assert.deepEqual(cleanStaleTemps(run), []);

  // Resolving --resume repairs the run directory the same way before it looks.
  const run2 = freshDir();
  await save(run2, 1);
  renameSync(join(run2, 'checkpoint-1'), join(run2, `checkpoint-1.old-${dead}`));
  mkdirSync(join(run2, `checkpoint-2.tmp-${dead}`));
  const found = findCheckpoint(run2);
  assert.equal(found.step, 1);
  assert.equal(found.note, undefined);
  assert.deepEqual(readdirSync(run2).sort(), ['checkpoint-1', LATEST_FILE]);
});

test('saving a step again replaces that checkpoint whole', async () => {
  const run = freshDir();
  await save(run, 3);
  await writeCheckpoint(run, 3, (tmp) => writeFileSync(join(tmp, 'other.bin'), 'new'), { state: stateAt(3, { lambda: 9 }) });
  assert.deepEqual(readdirSync(run).sort(), ['checkpoint-3', LATEST_FILE]);
  assert.deepEqual(readdirSync(join(run, 'checkpoint-3')).sort(), ['other.bin', TRAINER_STATE_FILE]);
  assert.equal(readTrainerState(join(run, 'checkpoint-3')).lambda, 9);
});

test('one save at a time per run directory', async () => {
  const run = freshDir();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const first = writeCheckpoint(run, 1, () => gate, { state: stateAt(1) });
  await assert.rejects(save(run, 2), /already writing a checkpoint/);
  release();
  await first;
  assert.equal(readLatest(run), 'checkpoint-1');
});

test('findCheckpoint: run directory, checkpoint directory, and clear errors for everything else', async () => {
  const run = freshDir();
  for (const step of [2, 4, 6]) await save(run, step);
  const c4 = join(run, 'checkpoint-4');
  assert.equal(findCheckpoint(run).dir, join(run, 'checkpoint-6'));
  assert.equal(findCheckpoint(c4).step, 4);
  assert.equal(findCheckpoint(c4).runDir, run);
  assert.deepEqual(listCheckpoints(run).map((c) => c.step), [2, 4, 6]);

  assert.throws(() => findCheckpoint(join(run, 'missing')), /^Error: resume: .*missing does not exist$/);
  assert.throws(() => findCheckpoint(join(run, LATEST_FILE)), /resume: .* is a file/);
  const empty = freshDir();
  assert.throws(() => findCheckpoint(empty), /resume: .* is neither a checkpoint directory .* nor a run directory/);
  const tmp = join(run, `checkpoint-8.tmp-${process.pid}`);
  mkdirSync(tmp);
  assert.throws(() => findCheckpoint(tmp), /unfinished or replaced checkpoint .*resume from the run directory/);
  rmSync(tmp, { recursive: true });
  const incomplete = join(run, 'checkpoint-9');
  mkdirSync(incomplete);
  assert.throws(() => findCheckpoint(incomplete), /no trainer_state\.json: not a complete checkpoint/);
  assert.deepEqual(listCheckpoints(run).map((c) => c.step), [2, 4, 6], 'an incomplete folder is not listed');
  rmSync(incomplete, { recursive: true });
  // A folder renamed by hand: name and content disagree.
  const renamed = join(run, 'checkpoint-5');
  cpSync(c4, renamed, { recursive: true });
  assert.throws(() => findCheckpoint(renamed), /holds the state of step 4, not 5/);
  rmSync(renamed, { recursive: true });

  // A broken or dangling `latest` falls back to the newest complete checkpoint, saying so.
  writeFileSync(join(run, LATEST_FILE), '../../etc\n');
  const fallback = findCheckpoint(run);
  assert.equal(fallback.step, 6);
  assert.match(fallback.note ?? '', /expected a checkpoint-N folder name/);
  writeFileSync(join(run, LATEST_FILE), 'checkpoint-99\n');
  assert.match(findCheckpoint(run).note ?? '', /names checkpoint-99, which is missing/);
  // A run directory with checkpoints but no `latest` (a crash right after the rename).
  rmSync(join(run, LATEST_FILE));
  assert.equal(findCheckpoint(run).step, 6);
});

test('pruning keeps the newest K and never the one `latest` names; resuming earlier removes later ones', async () => {
  const run = freshDir();
  for (let step = 1; step <= 5; step++) await save(run, step, 2);
  assert.deepEqual(listCheckpoints(run).map((c) => c.step), [4, 5]);
  assert.equal(readLatest(run), 'checkpoint-5');

  const run2 = freshDir();
  for (let step = 1; step <= 5; step++) await save(run2, step);
  assert.deepEqual(listCheckpoints(run2).map((c) => c.step), [1, 2, 3, 4, 5]);
  writeFileSync(join(run2, LATEST_FILE), 'checkpoint-1\n');
  const removed = pruneCheckpoints(run2, 2);
  assert.deepEqual(removed.map((d) => d.slice(run2.length + 1)).sort(), ['checkpoint-2', 'checkpoint-3']);
  assert.deepEqual(listCheckpoints(run2).map((c) => c.step), [1, 4, 5]);
  assert.deepEqual(pruneCheckpoints(run2, 0), [], '0 keeps all');

  const run3 = freshDir();
  for (let step = 10; step <= 50; step += 10) await save(run3, step);
  removeCheckpointsAfter(run3, 30);
  assert.deepEqual(listCheckpoints(run3).map((c) => c.step), [10, 20, 30]);
  assert.equal(readLatest(run3), 'checkpoint-30');
  removeCheckpointsAfter(run3, 5);
  assert.deepEqual(listCheckpoints(run3), []);
  assert.equal(readLatest(run3), undefined);
});

test('trainer_state.json: round trip, and every bad field named', () => {
  const dir = freshDir();
  const state = stateAt(12, { config: { loss: 'lambda', 'group-size': 8 }, elapsedSeconds: 61.5, extra: { best: 0.5 } });
  writeTrainerState(dir, state);
  const back = readTrainerState(dir);
  assert.deepEqual(back, state);
  // The generator continues exactly where it was saved.
  const a = new Rng(1012);
  for (let i = 0; i < 12; i++) a.nextUint32();
  const b = Rng.fromState(back.rng.sampling);
  for (let i = 0; i < 5; i++) assert.equal(b.nextUint32(), a.nextUint32());

  const good = JSON.parse(JSON.stringify(state)) as Record<string, unknown>;
  const cases: Array<[string, (s: Record<string, unknown>) => void]> = [
    ['step', (s) => (s.step = -1)],
    ['step', (s) => (s.step = 1.5)],
    ['lambda', (s) => (s.lambda = 'x')],
    ['lambdaOptimizer', (s) => (s.lambdaOptimizer = { kind: '' , state: {} })],
    ['lambdaOptimizer.state.m', (s) => (s.lambdaOptimizer = { kind: 'sgd', state: { m: 'x' } })],
    ['rng.data.state', (s) => ((s.rng as Record<string, { state: number[] }>).data.state = [1, 2, 3])],
    ['rng.data.state', (s) => ((s.rng as Record<string, { state: number[] }>).data.state = [0, 0, 0, 0])],
    ['rng.sampling.algorithm', (s) => ((s.rng as Record<string, { algorithm: string }>).sampling.algorithm = 'mt19937')],
    ['dataCursor.offset', (s) => (s.dataCursor = { epoch: 0, offset: -3 })],
    ['dataCursor.epoch', (s) => (s.dataCursor = { offset: 3 })],
    ['dataCursor.page', (s) => (s.dataCursor = { epoch: 0, offset: 3, page: 1 })],
    ['configHash', (s) => (s.configHash = '')],
    ['config', (s) => (s.config = [1])],
    ['elapsedSeconds', (s) => (s.elapsedSeconds = -1)],
    ['extra', (s) => (s.extra = 3)],
    ['bogus', (s) => (s.bogus = 1)],
  ];
  for (const [field, mutate] of cases) {
    const bad = JSON.parse(JSON.stringify(good)) as Record<string, unknown>;
    mutate(bad);
    assert.throws(() => checkTrainerState(bad, 'S'), (e: Error) => e.message.startsWith(`S: ${field}:`) || e.message.startsWith(`S: ${field}`), field);
    assert.throws(() => writeTrainerState(dir, bad as unknown as TrainerState), new RegExp(field.replace(/\./g, '\\.')));
  }
  assert.deepEqual(readTrainerState(dir), state, 'a refused write leaves the file as it was');

  const path = join(dir, TRAINER_STATE_FILE);
  writeFileSync(path, JSON.stringify({ ...good, format: 'lgrpo-native/trainer-state', version: 2 }));
  assert.throws(() => readTrainerState(dir), /version: this lgrpo-native reads version 1, the file is version 2/);
  writeFileSync(path, JSON.stringify({ ...good, version: 1 }));
  assert.throws(() => readTrainerState(dir), /format/);
  writeFileSync(path, '{');
  assert.throws(() => readTrainerState(dir), /cannot read/);
});
