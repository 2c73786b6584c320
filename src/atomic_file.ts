// Durable writes shared by the safetensors writer and the run-directory modules: a file is either its
// old content or its complete new content, never half of each, even across a crash or a
// power cut (write a temporary sibling, fsync it, rename it over, fsync the folder).
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * fsyncs a directory so that a rename or creation inside it survives a power cut. Some
 * platforms (Windows) cannot open a directory for fsync; the rename is still atomic there,
 * only its durability is left to the OS, so that failure is ignored.
 */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // see above
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done);
}

/**
 * Writes `path` atomically and durably through `write(fd)`, which fills a temporary
 * sibling; on any error the temporary file is removed and `path` is left as it was.
 */
export function writeAtomically(path: string, write: (fd: number) => void): void {
  const tmp = `${path}.tmp-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) try { closeSync(fd); } catch { /* keep the first error */ }
    try { unlinkSync(tmp); } catch { /* never created */ }
    throw new Error(`${path}: cannot write: ${(e as Error).message}`, { cause: e });
  }
  fsyncDir(dirname(path));
}

/** Replaces `path` with `data` atomically and durably. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  writeAtomically(path, (fd) => writeAll(fd, bytes));
}

/**
 * `mkdir -p` that fails instead of spinning. Node 20's recursive mkdirSync loops forever
 * at 100% CPU under /proc (mkdir answers ENOENT for a parent that exists), so the missing
 * components are created one at a time, each failure reported with the path.
 */
export function ensureDir(dir: string, argument = 'dir'): void {
  if (typeof dir !== 'string' || dir === '') throw new TypeError(`${argument}: expected a directory path`);
  const missing: string[] = [];
  let at = resolve(dir);
  for (;;) {
    let isDir: boolean | undefined;
    try {
      isDir = statSync(at).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR')  // ENOTDIR: an ancestor is a file, found further up
        throw new Error(`${argument}: cannot create ${dir}: ${(e as Error).message}`, { cause: e });
    }
    if (isDir === false) throw new Error(`${argument}: cannot create ${dir}: ${at} exists and is not a directory`);
    if (isDir) break;
    missing.push(at);
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && statSync(path).isDirectory()) continue;  // made concurrently
      throw new Error(`${argument}: cannot create ${dir}: ${(e as Error).message}`, { cause: e });
    }
  }
}
