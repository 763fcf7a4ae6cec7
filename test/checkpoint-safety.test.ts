// The checkpoint save against crashes and full disks, in process: a crash is injected before every
// single file operation of a save (src/cli/fileops.ts; after it no operation runs, as after a real
// SIGKILL), and after each the directory must recover to one complete checkpoint, old or new, with
// the user's other files untouched. Also: the output-path checks and the --out lock.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CHECKPOINT_FILES, CheckpointWriteError, checkOutputDir, readResumeState, recoverCheckpoint, writeCheckpoint, type CheckpointContents } from '../src/cli/checkpoint.ts';
import { SimulatedCrash, fileOpCount, setFaultPlan } from '../src/cli/fileops.ts';
import { LOCK_FILE, acquireLock } from '../src/cli/lock.ts';
import { assertNotInput } from '../src/cli/paths.ts';
import { hostParams } from '../src/model/weights.ts';
import { removeDir, tempDir } from './util/cli.ts';
import { fixture } from './util/fixtures.ts';

const f = fixture('gpt2-tiny');
const TOKENIZER = readFileSync(join(f.dir, 'tokenizer.json'), 'utf8');

/** Checkpoint contents of "step" n: distinct weights, optimizer state and log per step. */
const PARAMS = await hostParams({ config: f.config, weights: f.model });

function contents(step: number, tokenizer = true): CheckpointContents {
  const params = new Map([...PARAMS].map(([k, v]) => [k, v.slice()]));
  params.get('wte.weight')![0] = step;
  return {
    config: f.config,
    configJson: readFileSync(join(f.dir, 'config.json'), 'utf8'),
    params,
    tokenizerJson: tokenizer ? TOKENIZER : null,
    optimizer: [{ name: 'm', dtype: 'F32', shape: [3], data: new Float32Array([step, step, step]) }],
    state: { step, freeze: 1, loader: { epoch: 0, cursor: step } },
    log: [{ step }],
  };
}

let tmp: string;
/** The files of a complete save of contents(step), to compare against. */
const reference = new Map<number, Map<string, Buffer>>();
beforeAll(async () => {
  tmp = tempDir('ckpt-safety');
  for (const step of [1, 2]) {
    const dir = join(tmp, `ref-${step}`);
    await writeCheckpoint(dir, contents(step));
    reference.set(step, new Map(readdirSync(dir).map((n) => [n, readFileSync(join(dir, n))])));
  }
});
afterAll(() => removeDir(tmp));
afterEach(() => setFaultPlan(null));

/** The step of the complete checkpoint in DIR; fails unless every file is exactly that step's. */
function completeStep(dir: string): number {
  const step = (JSON.parse(readFileSync(join(dir, 'train-state.json'), 'utf8')) as { step: number }).step;
  const ref = reference.get(step)!;
  expect(readdirSync(dir).filter((n) => (CHECKPOINT_FILES as readonly string[]).includes(n)).sort()).toEqual([...ref.keys()].sort());
  for (const [name, bytes] of ref) expect(readFileSync(join(dir, name)).equals(bytes), `${dir}/${name} is step ${step}'s`).toBe(true);
  return step;
}

/** Runs a save with a crash before operation `at`; true if it crashed (false: the save had fewer operations). */
async function saveCrashingAt(dir: string, step: number, at: number): Promise<boolean> {
  setFaultPlan({ kind: 'crash', at, simulate: true });
  try {
    await writeCheckpoint(dir, contents(step));
    return false;
  } catch (e) {
    expect(e).toBeInstanceOf(SimulatedCrash);
    return true;
  } finally {
    setFaultPlan(null);
  }
}

describe('a crash at any instant of a save', () => {
  it('over an earlier checkpoint: after recovery the old or the new one is complete, the user\'s file kept', async () => {
    const base = join(tmp, 'base');
    await writeCheckpoint(base, contents(1));
    writeFileSync(join(base, 'notes.txt'), 'mine');
    cpSync(base, join(tmp, 'count'), { recursive: true });
    setFaultPlan(null);
    await writeCheckpoint(join(tmp, 'count'), contents(2));
    const ops = fileOpCount();
    expect(ops).toBeGreaterThan(10);
    const seen = new Set<number>();
    for (let at = 1; at <= ops; at++) {
      const dir = join(tmp, `crash-${at}`);
      cpSync(base, dir, { recursive: true });
      expect(await saveCrashingAt(dir, 2, at), `a crash before operation ${at}`).toBe(true);
      // Before any recovery, DIR holds a complete checkpoint or the complete new one waits beside it.
      if (existsSync(join(dir, '.semfreeze-commit'))) expect(existsSync(join(dir, '.semfreeze-commit', 'files.json')) || readdirSync(join(dir, '.semfreeze-commit')).length === 0).toBe(true);
      else completeStep(dir);
      await recoverCheckpoint(dir);
      const step = completeStep(dir);
      seen.add(step);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine');
      expect(readdirSync(dir).filter((n) => n.startsWith('.')), `leftovers after a crash at ${at}`).toEqual([]);
      const resume = await readResumeState(dir);
      expect(resume.state.step).toBe(step);
      expect(resume.optimizer[0]!.data[0]).toBe(step);
    }
    expect([...seen].sort()).toEqual([1, 2]);
  });

  it('the first save: after recovery there is the complete checkpoint or none (and the directory counts as empty)', async () => {
    setFaultPlan(null);
    await writeCheckpoint(join(tmp, 'count-first'), contents(2));
    const ops = fileOpCount();
    for (let at = 1; at <= ops; at++) {
      const dir = join(tmp, `first-${at}`);
      expect(await saveCrashingAt(dir, 2, at)).toBe(true);
      await recoverCheckpoint(dir);
      if (existsSync(join(dir, 'train-state.json'))) expect(completeStep(dir)).toBe(2);
      else {
        expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
        expect(() => checkOutputDir(dir, { resumingIt: false, overwrite: false })).not.toThrow();
      }
    }
  });

  it('recovery restores a complete checkpoint an earlier version left beside a missing --out, never deletes it', async () => {
    const parent = join(tmp, 'legacy');
    mkdirSync(parent);
    cpSync(join(tmp, 'ref-2'), join(parent, '.ckpt.tmp-123-456.old'), { recursive: true });
    const dir = join(parent, 'ckpt');
    const notes = await recoverCheckpoint(dir);
    expect(notes.join('\n')).toMatch(/restored/);
    expect(completeStep(dir)).toBe(2);
  });
});

describe('a save that fails (disk full)', () => {
  it('keeps the previous checkpoint whole, leaves no partial files, and says how many bytes a save needs', async () => {
    const dir = join(tmp, 'full');
    await writeCheckpoint(dir, contents(1));
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    const bytes = [...reference.get(2)!.values()].reduce((s, b) => s + b.length, 0);
    // Fail each operation up to the commit in turn (mkdir, every file write, the file list).
    for (let at = 1; at <= 1 + reference.get(2)!.size + 1; at++) {
      setFaultPlan({ kind: 'ENOSPC', at });
      const err = await writeCheckpoint(dir, contents(2)).then(() => null, (e: unknown) => e);
      setFaultPlan(null);
      expect(err, `ENOSPC at operation ${at}`).toBeInstanceOf(CheckpointWriteError);
      const e = err as CheckpointWriteError;
      expect(e.message).toMatch(/no space left on device \(ENOSPC\)/);
      // Everything but files.json (a few bytes) counts.
      expect(e.neededBytes).toBe(bytes);
      expect(e.availableBytes()).toBeGreaterThan(0);
      expect(completeStep(dir)).toBe(1);
      expect(readdirSync(dir).filter((n) => n.startsWith('.'))).toEqual([]);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    }
  });

  it('a checkpoint without a tokenizer replaces one with a tokenizer completely (the stale tokenizer.json goes)', async () => {
    const dir = join(tmp, 'no-tok');
    await writeCheckpoint(dir, contents(1));
    await writeCheckpoint(dir, contents(2, false));
    expect(existsSync(join(dir, 'tokenizer.json'))).toBe(false);
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(true);
  });
});

describe('--out', () => {
  it('an existing checkpoint is replaced only when resuming it or with --overwrite; a foreign directory never', async () => {
    const dir = join(tmp, 'existing');
    await writeCheckpoint(dir, contents(3));
    expect(() => checkOutputDir(dir, { resumingIt: false, overwrite: false })).toThrow(/holds a semfreeze checkpoint \(step 3\); give --resume .* or --overwrite/);
    expect(() => checkOutputDir(dir, { resumingIt: true, overwrite: false })).not.toThrow();
    expect(() => checkOutputDir(dir, { resumingIt: false, overwrite: true })).not.toThrow();
    const foreign = join(tmp, 'foreign');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'x.txt'), '');
    expect(() => checkOutputDir(foreign, { resumingIt: false, overwrite: true })).toThrow(/not a semfreeze checkpoint/);
  });

  it('is never one of the inputs, also through a symlink', () => {
    const model = join(tmp, 'model');
    mkdirSync(model);
    writeFileSync(join(model, 'model.safetensors'), '');
    writeFileSync(join(tmp, 'data.txt'), '');
    symlinkSync(model, join(tmp, 'model-link'));
    symlinkSync(join(model, 'model.safetensors'), join(tmp, 'weights-link'));
    const inputs = [{ flag: '--model', path: model, dir: true }, { flag: '--data', path: join(tmp, 'data.txt') }];
    const refuse = (out: string, kind: 'file' | 'dir', re: RegExp) => expect(() => assertNotInput('--out', out, inputs, kind, CHECKPOINT_FILES), out).toThrow(re);
    refuse(model, 'dir', /is the directory of --model/);
    refuse(join(tmp, 'model-link'), 'dir', /is the directory of --model/);
    refuse(join(tmp, 'model-link', 'ckpt'), 'dir', /inside the model directory/);
    refuse(join(tmp, 'data.txt'), 'dir', /is the file of --data/);
    refuse(join(model, 'model.safetensors'), 'file', /inside the model directory .* would replace one of its files/);
    refuse(join(tmp, 'weights-link'), 'file', /inside the model directory/);
    // A checkpoint whose save would replace the data file.
    expect(() => assertNotInput('--out', tmp, [{ flag: '--data', path: join(tmp, 'train-log.json') }], 'dir', CHECKPOINT_FILES)).toThrow(/would replace --data/);
    // Allowed: a new file beside the model's, a directory elsewhere.
    expect(() => assertNotInput('--out', join(model, 'trace.safetensors'), inputs, 'file')).not.toThrow();
    expect(() => assertNotInput('--out', join(tmp, 'ckpt'), inputs, 'dir', CHECKPOINT_FILES)).not.toThrow();
  });

  it('the lock: a second holder is refused with the holder\'s pid; a dead holder\'s lock is taken over', () => {
    const dir = join(tmp, 'locked');
    mkdirSync(dir);
    const lock = acquireLock('--out', dir);
    expect(() => acquireLock('--out', dir)).toThrow(new RegExp(`in use by another semfreeze run \\(pid ${process.pid}`));
    lock.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    // pid 2^22 + 1 is above Linux's pid_max limit: no such process.
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 4194305, host: hostname(), started: 'then', command: 'finetune' }));
    const taken = acquireLock('--out', dir);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    taken.release();
  });
});
