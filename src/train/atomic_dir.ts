// A directory replaced as a whole (the run's reference policy): a reader finds the old copy
// or the new one, never neither. rename() cannot replace a non-empty directory, so the
// old copy is moved aside first; if the process stops between the two renames, the next
// reader (recoverDir) moves it back. The same scheme as checkpoint.ts's checkpoints.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir } from '../atomic_file.js';

/** Writes `dir` by filling a temporary sibling and renaming it into place; on failure `dir` is as it was. */
export function writeDirAtomic(dir: string, fill: (tmp: string) => void): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  const old = `${dir}.old-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    fill(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const had = existsSync(dir);
  if (had) {
    rmSync(old, { recursive: true, force: true });
    renameSync(dir, old);
  }
  try {
    renameSync(tmp, dir);
  } catch (e) {
    if (had) renameSync(old, dir);
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncDir(resolve(dir, '..'));
  if (had) rmSync(old, { recursive: true, force: true });
}

function alive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Finishes what a stopped writeDirAtomic left of `dir`: an old copy moved aside goes back
 * into place when no new copy arrived, and is deleted otherwise; temporary copies are
 * deleted. Leftovers of a live process (another writer at work) are left alone.
 */
export function recoverDir(dir: string): void {
  const parent = dirname(resolve(dir));
  const name = basename(dir);
  let entries: string[];
  try {
    entries = readdirSync(parent);
  } catch {
    return;
  }
  let touched = false;
  for (const entry of entries) {
    if (!entry.startsWith(`${name}.`)) continue;
    const m = /^\.(old|tmp)-(\d+)$/.exec(entry.slice(name.length));
    if (!m || alive(Number(m[2]))) continue;
    const path = join(parent, entry);
    if (m[1] === 'old' && !existsSync(dir)) renameSync(path, dir);
    else rmSync(path, { recursive: true, force: true });
    touched = true;
  }
  if (touched) fsyncDir(parent);
}
