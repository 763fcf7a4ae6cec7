// Output paths, checked before any work: never one of the command's own inputs, and writable now
// rather than after hours of training.
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { UserError } from './common.ts';
import { fileOp } from './fileops.ts';

/** The absolute path with symlinks resolved; a path that does not exist (yet) resolves through its nearest existing ancestor. */
export function realPath(p: string): string {
  const abs = resolve(p);
  try {
    return realpathSync(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(realPath(parent), basename(abs));
  }
}

const isInside = (path: string, dir: string) => {
  const r = relative(dir, path);
  return r !== '' && !r.startsWith('..') && !isAbsolute(r);
};

export interface InputPath {
  /** The flag that named it, e.g. --model. */
  flag: string;
  path: string;
  /** A model directory: its files are all inputs. */
  dir?: boolean;
}

/**
 * Refuses an output that would be written over one of the command's inputs: the same path (after
 * symlinks), one of a model directory's files, or (a directory output) a place inside the model
 * directory or whose `writes` would replace an input file.
 */
export function assertNotInput(flag: string, out: string, inputs: InputPath[], outKind: 'file' | 'dir', writes: readonly string[] = []): void {
  const o = realPath(out);
  for (const input of inputs) {
    if (o === realPath(input.path)) throw new UserError(`${flag} ${out}: is the ${input.dir ? 'directory' : 'file'} of ${input.flag} ${input.path}; writing there would destroy it, choose another ${outKind === 'dir' ? 'directory' : 'file'}`);
  }
  for (const input of inputs) {
    const i = realPath(input.path);
    const what = `${input.flag} ${input.path}`;
    if (input.dir && isInside(o, i) && (outKind === 'dir' || existsSync(o))) {
      throw new UserError(`${flag} ${out}: is inside the model directory (${what})${outKind === 'file' ? ' and would replace one of its files' : ''}; choose a path outside it`);
    }
    if (!input.dir && outKind === 'dir' && dirname(i) === o && writes.includes(basename(i))) {
      throw new UserError(`${flag} ${out}: saving there would replace ${what}; choose another directory`);
    }
  }
}

/** mkdir -p, but with the real error: Node's recursive mkdir reports ENOENT where the disk is read-only. */
async function makeDir(dir: string): Promise<void> {
  try {
    await mkdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(dir).isDirectory()) return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw e;
    await makeDir(dirname(dir));
    await mkdir(dir);
  }
}

const REASONS: Record<string, string> = {
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a part of the path is a file, not a directory',
  EEXIST: 'exists and is not a directory',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  ENOENT: 'a parent directory is missing',
  ENAMETOOLONG: 'name too long',
  EISDIR: 'is a directory',
};

/** The reason in words with its code, e.g. "read-only file system (EROFS)". */
export function fsReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code && REASONS[code]) return `${REASONS[code]} (${code})`;
  return (e as Error).message;
}

export const PROBE_PREFIX = '.semfreeze-probe-';

/**
 * Creates DIR if needed, then writes and removes a probe file in it: a read-only or full disk, a
 * missing permission or a file in the way fails here, with its real reason. Returns whether DIR was
 * created (so a run that fails later can remove it again).
 */
export async function assertWritableDir(flag: string, dir: string): Promise<{ created: boolean }> {
  const existed = existsSync(dir);
  if (existed && !statSync(dir).isDirectory()) throw new UserError(`${flag} ${dir}: exists and is not a directory`);
  try {
    if (!existed) await fileOp(`mkdir ${dir}`, () => makeDir(dir));
  } catch (e) {
    throw new UserError(`${flag} ${dir}: cannot create the directory: ${fsReason(e)}`);
  }
  const probe = join(dir, `${PROBE_PREFIX}${process.pid}`);
  try {
    await fileOp(`write ${probe}`, () => writeFile(probe, 'semfreeze write test\n'));
    await fileOp(`remove ${probe}`, () => rm(probe, { force: true }));
  } catch (e) {
    await rm(probe, { force: true }).catch(() => {});
    if (!existed) await rmdir(dir).catch(() => {});
    throw new UserError(`${flag} ${dir}: cannot write there: ${fsReason(e)}`);
  }
  return { created: !existed };
}

/** Removes DIR if it holds nothing (a directory this run created and then did not use). */
export async function removeIfEmpty(dir: string): Promise<void> {
  if (existsSync(dir) && readdirSync(dir).length === 0) await rmdir(dir).catch(() => {});
}

/** For an output file (trace --out, analyze --plot): its directory is created and probed now. */
export async function assertWritableFile(flag: string, file: string): Promise<void> {
  if (existsSync(file) && statSync(file).isDirectory()) throw new UserError(`${flag} ${file}: is a directory, expected a file`);
  await assertWritableDir(flag, dirname(resolve(file)));
}
