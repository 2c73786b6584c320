// Replacing a directory (the run's reference policy): at every moment the old copy or the
// new one is there to read, whatever fails or stops the process in between.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recoverDir, writeDirAtomic } from '../../src/train/atomic_dir.js';

const root = mkdtempSync(join(tmpdir(), 'lgrpo-atomic-dir-'));
after(() => rmSync(root, { recursive: true, force: true }));

function withOld(name: string): string {
  const dir = join(root, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'weights'), 'old');
  return dir;
}

test('a directory is replaced by its new content, and nothing is left beside it', () => {
  const dir = withOld('plain');
  writeDirAtomic(dir, (tmp) => writeFileSync(join(tmp, 'weights'), 'new'));
  assert.equal(readFileSync(join(dir, 'weights'), 'utf8'), 'new');
  assert.deepEqual(readdirSync(root).filter((n) => n.startsWith('plain')), ['plain']);
  const fresh = join(root, 'fresh');
  writeDirAtomic(fresh, (tmp) => writeFileSync(join(tmp, 'weights'), 'new'));
  assert.equal(readFileSync(join(fresh, 'weights'), 'utf8'), 'new');
});

test('when the new copy cannot be moved into place, the old copy is still there', () => {
  const dir = withOld('failing');
  // The filled folder vanishes before the swap (a disk error, another process): the rename fails.
  assert.throws(() => writeDirAtomic(dir, (tmp) => { writeFileSync(join(tmp, 'weights'), 'new'); rmSync(tmp, { recursive: true }); }));
  assert.equal(readFileSync(join(dir, 'weights'), 'utf8'), 'old');
  // A fill that throws leaves the old copy too, and no temporary folder.
  assert.throws(() => writeDirAtomic(dir, () => { throw new Error('disk full'); }), /disk full/);
  assert.equal(readFileSync(join(dir, 'weights'), 'utf8'), 'old');
  assert.deepEqual(readdirSync(root).filter((n) => n.startsWith('failing')), ['failing']);
});

test('a process stopped between moving the old copy aside and the new one in: the old copy comes back', () => {
  const dir = withOld('stopped');
  // What such a process leaves: the old copy moved aside, the new one still temporary.
  renameSync(dir, `${dir}.old-999999`);
  mkdirSync(`${dir}.tmp-999999`);
  assert.equal(existsSync(dir), false);
  recoverDir(dir);
  assert.equal(readFileSync(join(dir, 'weights'), 'utf8'), 'old');
  assert.deepEqual(readdirSync(root).filter((n) => n.startsWith('stopped')), ['stopped']);
  // With the new copy in place, a left-over old copy is only removed.
  mkdirSync(`${dir}.old-999998`);
  recoverDir(dir);
  assert.deepEqual(readdirSync(root).filter((n) => n.startsWith('stopped')), ['stopped']);
});
