// One run per output directory: DIR/.semfreeze-lock names the process holding it (pid, host, start,
// command). A second run is refused with that name; a lock whose process is gone is taken over.
import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UserError, progress } from './common.ts';

export const LOCK_FILE = '.semfreeze-lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
  command: string;
}

export interface Lock {
  release(): void;
}

function readLock(path: string): LockInfo | null {
  try {
    const raw = JSON.parse(readFileSync(path, 'utf8')) as LockInfo;
    return Number.isInteger(raw.pid) ? raw : null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote the lock still runs (a pid reused by another program does not count). */
function holderAlive(info: LockInfo): boolean {
  if (info.host !== hostname() || info.pid === process.pid) return true; // another host: cannot tell, assume it runs
  try {
    process.kill(info.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const cmdline = `/proc/${info.pid}/cmdline`;
  return !existsSync(cmdline) || readFileSync(cmdline, 'utf8').includes('semfreeze');
}

const describe = (i: LockInfo) => `pid ${i.pid}${i.host !== hostname() ? ` on ${i.host}` : ''}, started ${i.started}: semfreeze ${i.command}`;

export function acquireLock(flag: string, dir: string): Lock {
  const path = join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString(), command: process.argv.slice(2).join(' ') };
  const text = `${JSON.stringify(mine)}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(path, text, { flag: 'wx' });
      const release = () => {
        process.off('exit', release);
        if (existsSync(path) && readFileSync(path, 'utf8') === text) unlinkSync(path);
      };
      process.on('exit', release);
      return { release };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new UserError(`${flag} ${dir}: cannot create the lock file ${LOCK_FILE} (${(e as Error).message})`);
    }
    const holder = readLock(path);
    // A lock being written right now reads as empty: look again before calling it stale.
    if (!holder && attempt < 2) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
      continue;
    }
    if (holder && holderAlive(holder)) {
      throw new UserError(`${flag} ${dir}: in use by another semfreeze run (${describe(holder)}); wait for it to finish or stop it (if it is gone, delete ${join(dir, LOCK_FILE)})`);
    }
    // Take the stale lock aside first: of two runs doing this at once, only one gets it.
    const aside = `${path}.stale-${process.pid}`;
    try {
      renameSync(path, aside);
    } catch {
      continue;
    }
    const taken = readLock(aside);
    if (taken && holder && taken.pid !== holder.pid && holderAlive(taken)) {
      renameSync(aside, path); // a live run locked it meanwhile: give it back
      throw new UserError(`${flag} ${dir}: in use by another semfreeze run (${describe(taken)}); wait for it to finish or stop it`);
    }
    unlinkSync(aside);
    progress(`${flag} ${dir}: taking over the lock of a run that is gone (${holder ? describe(holder) : 'unreadable lock file'})`);
  }
  throw new UserError(`${flag} ${dir}: cannot take the lock ${join(dir, LOCK_FILE)}`);
}
