// Durable writes shared by the safetensors writer and the run-directory modules: a file is either its
// old content or its complete new content, never half of each, even across a crash or a
// power cut (write a temporary sibling, fsync it, rename it over, fsync the folder).
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

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
