// Opening files a user points us at (checkpoints, configs) without blocking or escaping.
// A FIFO, a device such as /dev/urandom, or a symlink to one blocks forever or never
// ends when read, so only regular files are opened; O_NONBLOCK keeps the open itself
// from blocking on a FIFO with no writer. Symlinks are followed only where they stay in
// the checkpoint directory, or in the Hugging Face hub cache's own blob store.
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
import { basename, dirname, relative, isAbsolute } from 'node:path';

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * The folders a file of checkpoint directory `root` may resolve into: root itself and,
 * when root is a hub-cache snapshot (<repo>/snapshots/<revision>), <repo>/blobs, where
 * the hub keeps the files that snapshot symlinks point at.
 */
function allowedRoots(root: string): string[] {
  const real = realpathSync(root);
  const roots = [real];
  const snapshots = dirname(real);
  if (basename(snapshots) === 'snapshots' && basename(dirname(snapshots)).startsWith('models--'))
    roots.push(`${dirname(snapshots)}/blobs`);
  return roots;
}

/**
 * Opens `path` read-only after checking it is a regular file and, given `root`, that its
 * real path stays inside root. Errors name the path and say what it is instead.
 */
export function openRegularFile(path: string, root?: string): number {
  if (root !== undefined) {
    let real: string;
    try {
      real = realpathSync(path);
    } catch (e) {
      throw new Error(`${path}: cannot open: ${(e as Error).message}`, { cause: e });
    }
    if (!allowedRoots(root).some((r) => inside(r, real)))
      throw new Error(`${path}: is a symlink to ${real}, outside the checkpoint directory ${root}; refusing to follow it`);
  }
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new Error(`${path}: cannot open: ${(e as Error).message}`, { cause: e });
  }
  const stat = fstatSync(fd);
  if (!stat.isFile()) {
    closeSync(fd);
    const kind = stat.isFIFO() ? 'a FIFO' : stat.isCharacterDevice() ? 'a character device' : stat.isBlockDevice() ? 'a block device'
      : stat.isSocket() ? 'a socket' : stat.isDirectory() ? 'a directory' : 'not a regular file';
    throw new Error(`${path}: is ${kind}, not a regular file; refusing to read it`);
  }
  return fd;
}

/** Reads a whole regular file (see openRegularFile) as UTF-8, refusing more than maxBytes. */
export function readRegularFileText(path: string, root?: string, maxBytes = 64 * 1024 * 1024): string {
  const fd = openRegularFile(path, root);
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) throw new Error(`${path}: is ${size} bytes; a JSON file this large is not a checkpoint's (limit ${maxBytes})`);
    const bytes = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, bytes, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return bytes.subarray(0, done).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
