// `semfreeze finetune` (and trace, analyze) never destroy the user's files, and --resume cannot go
// wrong silently (issue 8, items 5–10), end to end on gpt2-tiny: outputs that are inputs, --out that
// cannot be written, a full disk mid-run, SIGKILL in the middle of a save (SEMFREEZE_TEST_FAULT,
// src/cli/fileops.ts), a second run on the same --out, and resumes of another run.
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, copyModel, removeDir, runCli, tempDir, userErrorLine, type CliResult, type RunOptions } from './util/cli.ts';
import { FIXTURES } from './util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
const TEXT = join(TINY, 'train.txt');
const SMALL = ['--batch', '2', '--seq', '16', '--freeze', '1'];

let tmp: string;
beforeAll(() => { tmp = tempDir('ft-safety'); });
afterAll(() => {
  for (const m of mounts) execFileSync('umount', [m]);
  removeDir(tmp);
});

const finetune = (args: string[], opts: RunOptions = {}) => runCli(['finetune', ...args], { timeoutMs: 300_000, ...opts });
const ok = (r: CliResult) => {
  expect(r.code, describeRun(r)).toBe(0);
  return r;
};
const stepOf = (dir: string) => (JSON.parse(readFileSync(join(dir, 'train-state.json'), 'utf8')) as { step: number }).step;
const leftovers = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.'));

/** A tmpfs at DIR (root only, e.g. not in CI containers without the capability): false if it cannot be mounted. */
const mounts: string[] = [];
function mountTmpfs(dir: string, options: string): boolean {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'ignore' });
    mounts.push(dir);
    return true;
  } catch {
    return false;
  }
}

// File operations of a run (fileop N in SEMFREEZE_TEST_FAULT=log): creating --out and its probe file
// (3), then per save onto an existing directory: mkdir staging, 6 files + their list, the commit
// rename, 6 moves, removing the list and the commit directory, a directory sync (18).
const PROBE_OPS = 3;
const SAVE_OPS = 18;
const secondSaveOp = (k: number) => PROBE_OPS + SAVE_OPS + k;

describe('outputs are never the inputs (item 5)', () => {
  it('finetune --out in or at --model, trace --out onto the weights, analyze --plot onto the data: refused, nothing changed', async () => {
    const model = copyModel(TINY, 'safety-in');
    const data = join(model, 'train.txt');
    const before = readFileSync(join(model, 'model.safetensors'));
    const dataBefore = readFileSync(data);
    const [inside, same, trace, plot] = await Promise.all([
      finetune(['--model', model, '--data', data, ...SMALL, '--steps', '1', '--out', join(model, 'ckpt')]),
      finetune(['--model', model, '--data', data, ...SMALL, '--steps', '1', '--out', model]),
      runCli(['trace', '--model', model, '--tokens', '1,2,3', '--out', join(model, 'model.safetensors')]),
      runCli(['analyze', '--model', model, '--data', data, '--seq', '16', '--max-windows', '4', '--plot', data]),
    ]);
    expect(userErrorLine(inside)).toMatch(/^semfreeze: --out \S+ckpt: is inside the model directory \(--model /);
    expect(userErrorLine(same)).toMatch(/^semfreeze: --out \S+: is the directory of --model /);
    expect(userErrorLine(trace)).toMatch(/^semfreeze: --out \S+model\.safetensors: is inside the model directory .*would replace one of its files/);
    expect(userErrorLine(plot)).toMatch(/^semfreeze: --plot \S+train\.txt: is the file of --data/);
    expect(readFileSync(join(model, 'model.safetensors')).equals(before)).toBe(true);
    expect(readFileSync(data).equals(dataBefore)).toBe(true);
    expect(readdirSync(model).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'train.txt']);
    removeDir(model);
  });
});

describe('--out that cannot be written (item 7)', () => {
  it('fails before the model loads and before --freeze auto, with the real reason: a file in the way, a read-only disk', async () => {
    writeFileSync(join(tmp, 'a-file'), 'x');
    const roMounted = mountTmpfs(join(tmp, 'ro'), 'ro,size=1m');
    const args = ['--model', TINY, '--data', TEXT, '--batch', '2', '--seq', '16', '--freeze', 'auto', '--steps', '1', '--out'];
    const [notDir, hookedRo, realRo] = await Promise.all([
      finetune([...args, join(tmp, 'a-file', 'ckpt')]),
      finetune([...args, join(tmp, 'ro-hook', 'ckpt')], { env: { SEMFREEZE_TEST_FAULT: 'EROFS@1' } }),
      roMounted ? finetune([...args, join(tmp, 'ro', 'ckpt')]) : null,
    ]);
    expect(userErrorLine(notDir)).toMatch(/a-file\/ckpt: cannot create the directory: a part of the path is a file, not a directory \(ENOTDIR\)$/);
    expect(userErrorLine(hookedRo)).toMatch(/ro-hook\/ckpt: cannot create the directory: read-only file system \(EROFS\)$/);
    if (realRo) expect(userErrorLine(realRo)).toMatch(/ro\/ckpt: cannot create the directory: read-only file system \(EROFS\)$/);
    for (const r of [notDir, hookedRo, realRo]) {
      if (!r) continue;
      // Nothing was analysed or loaded: the only line is the error.
      expect(r.messages, describeRun(r)).toHaveLength(1);
    }
    expect(existsSync(join(tmp, 'ro-hook', 'ckpt'))).toBe(false);
  });

  it('a disk that fills mid-run: the previous checkpoint is kept, and the message says so and what a save needs', async () => {
    const hooked = join(tmp, 'full-hook', 'ckpt');
    const fullMounted = mountTmpfs(join(tmp, 'full'), 'size=1200k'); // one checkpoint (~1 MB) fits, two do not
    const real = join(tmp, 'full', 'ckpt');
    const args = ['--model', TINY, '--data', TEXT, ...SMALL, '--steps', '3', '--save-every', '1', '--out'];
    // The second save's first file write fails with ENOSPC.
    const runs = await Promise.all([
      finetune([...args, hooked], { env: { SEMFREEZE_TEST_FAULT: `ENOSPC@${secondSaveOp(2)}` } }),
      fullMounted ? finetune([...args, real]) : null,
    ]);
    for (const [i, r] of runs.entries()) {
      if (!r) continue;
      const out = i === 0 ? hooked : real;
      expect(userErrorLine(r)).toMatch(/^semfreeze: --out \S+ckpt: cannot save the checkpoint of step 2: no space left on device \(ENOSPC\); the checkpoint of step 1 there is kept\. A save needs 0\.9 MiB free there \(\d+\.\d MiB available now\)$/);
      expect(stepOf(out)).toBe(1);
      expect(leftovers(out)).toEqual([]);
      expect(readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.json', 'train-log.json', 'train-state.json']);
    }
  });
});

describe('SIGKILL in the middle of a save (item 8)', () => {
  // Killed before: a file write into the staging directory; the first move out of the commit
  // directory; the fourth move (three files of the new checkpoint in place, three of the old).
  const CRASH_AT = [secondSaveOp(4), secondSaveOp(10), secondSaveOp(13)];
  const args = ['--model', TINY, '--data', TEXT, ...SMALL, '--save-every', '1', '--steps', '3'];
  const straight = () => join(tmp, 'straight', 'ckpt');
  let straightRun: Promise<CliResult> | null = null;
  it.each(CRASH_AT)('killed before file operation %i: the next --resume finds a complete checkpoint and ends as a straight run does', async (at) => {
    const out = join(tmp, `killed-${at}`, 'ckpt');
    straightRun ??= finetune([...args, '--out', straight()]);
    const killed = await finetune([...args, '--out', out], { env: { SEMFREEZE_TEST_FAULT: `crash@${at}` } });
    expect(killed.signal, describeRun(killed)).toBe('SIGKILL');
    ok(await straightRun);
    const resumed = ok(await finetune([...args, '--resume', out, '--out', out]));
    expect(resumed.stderr).toMatch(at <= secondSaveOp(9) ? /removed a partly written checkpoint/ : /completed the checkpoint save that an interrupted run had left \(now at step 2\)/);
    expect(resumed.stderr).toContain(`resuming ${out} at step ${at <= secondSaveOp(9) ? 1 : 2}`);
    expect(stepOf(out)).toBe(3);
    expect(leftovers(out)).toEqual([]);
    for (const f of ['model.safetensors', 'optimizer.safetensors']) expect(readFileSync(join(out, f)).equals(readFileSync(join(straight(), f))), f).toBe(true);
  });
});

describe('one run per --out (item 9)', () => {
  it('a second run is refused naming the first one\'s pid; once that one is killed, its lock is taken over', async () => {
    const out = join(tmp, 'locked', 'ckpt');
    let first: import('node:child_process').ChildProcess | undefined;
    let second: CliResult | undefined;
    const firstRun = finetune(['--model', TINY, '--data', TEXT, ...SMALL, '--steps', '100000', '--out', out], {
      onSpawn: (child) => { first = child; },
    });
    const lock = join(out, '.semfreeze-lock');
    // The lock is taken before the model loads: seconds at most.
    for (const t0 = Date.now(); !existsSync(lock) && Date.now() - t0 < 60_000;) await new Promise((r) => setTimeout(r, 50));
    const locked = existsSync(lock);
    if (locked) second = await finetune(['--model', TINY, '--data', TEXT, ...SMALL, '--steps', '1', '--out', out]);
    first!.kill('SIGKILL');
    const killed = await firstRun;
    expect(locked, `no ${lock} within a minute\n${describeRun(killed)}`).toBe(true);
    expect(killed.signal).toBe('SIGKILL');
    expect(userErrorLine(second!)).toMatch(new RegExp(`--out \\S+ckpt: in use by another semfreeze run \\(pid ${first!.pid}, started .*finetune`));
    expect(existsSync(lock), 'the killed run left its lock').toBe(true);
    const third = ok(await finetune(['--model', TINY, '--data', TEXT, ...SMALL, '--steps', '1', '--out', out]));
    expect(third.stderr).toMatch(new RegExp(`taking over the lock of a run that is gone \\(pid ${first!.pid}`));
    expect(stepOf(out)).toBe(1);
    expect(existsSync(lock)).toBe(false);
  });
});

describe('--resume of the same run only (items 6 and 10)', () => {
  let work: string;
  let ckpt: string;
  let data: string;
  let changed: string;
  beforeAll(async () => {
    // Started with relative paths in its own working directory.
    work = join(tmp, 'start-dir');
    mkdirSync(work);
    data = join(work, 'train.txt');
    copyFileSync(TEXT, data);
    changed = join(work, 'changed.txt');
    copyFileSync(TEXT, changed);
    appendFileSync(changed, ' and a few more words.');
    ckpt = join(work, 'ckpt');
    ok(await finetune(['--model', TINY, '--data', 'train.txt', ...SMALL, '--steps', '2', '--out', 'ckpt'], { cwd: work }));
    writeFileSync(join(ckpt, 'notes.txt'), 'mine');
  });

  it('resumes from another working directory (the run was started with relative paths)', async () => {
    const elsewhere = join(tmp, 'elsewhere');
    mkdirSync(elsewhere);
    ok(await finetune(['--model', TINY, ...SMALL, '--data', data, '--steps', '3', '--resume', ckpt, '--out', ckpt], { cwd: elsewhere }));
    expect(stepOf(ckpt)).toBe(3);
  });

  it('refused, checked before the model loads: no flag onto the checkpoint, another model, changed data, another --freeze, --steps below the saved step', async () => {
    const resume = (args: string[], steps = '4') => finetune(['--data', data, '--batch', '2', '--seq', '16', '--steps', steps, '--resume', ckpt, '--out', ckpt, ...args]);
    // One after another: at the same time, all but one would be refused for the lock on --out.
    const plain = await finetune(['--model', TINY, '--data', data, ...SMALL, '--steps', '4', '--out', ckpt]);
    const model = await resume(['--model', join(FIXTURES, 'gpt2-odd'), '--freeze', '1']);
    const changedData = await resume(['--model', TINY, '--freeze', '1', '--data', changed]);
    const freeze = await resume(['--model', TINY, '--freeze', '0']);
    const steps = await resume(['--model', TINY, '--freeze', '1'], '2');
    expect(userErrorLine(plain)).toMatch(/--out \S+ckpt: holds a semfreeze checkpoint \(step 3\); give --resume \S+ to continue it, or --overwrite to replace it$/);
    expect(userErrorLine(model)).toMatch(/--resume \S+: not the same run: --model \S+gpt2-odd is not the model the run started from \(\S+gpt2-tiny: /);
    expect(userErrorLine(changedData)).toMatch(/not the same run: --data \S+changed\.txt is not the run's data \(\S+start-dir\/train\.txt; 46509 bytes then, 46531 bytes now\)/);
    expect(userErrorLine(freeze)).toMatch(/not the same run: --freeze 0, but the run used --freeze 1/);
    expect(userErrorLine(steps)).toMatch(/--steps 2: the checkpoint in \S+ is already at step 3; give --steps 3 or more/);
    expect(stepOf(ckpt)).toBe(3);
  });

  it('accepted: changed data with --force-resume; --overwrite; other files kept', async () => {
    const args = ['--model', TINY, ...SMALL, '--resume', ckpt, '--out', ckpt];
    const forced = ok(await finetune([...args, '--data', changed, '--steps', '4', '--force-resume']));
    expect(forced.stderr).toMatch(/--force-resume: continuing although --data \S+changed\.txt is not the run's data/);
    expect(stepOf(ckpt)).toBe(4);
    ok(await finetune(['--model', TINY, '--data', data, ...SMALL, '--steps', '1', '--out', ckpt, '--overwrite']));
    expect(stepOf(ckpt)).toBe(1);
    expect(readFileSync(join(ckpt, 'notes.txt'), 'utf8')).toBe('mine');
    expect(leftovers(ckpt)).toEqual([]);
  });
});
