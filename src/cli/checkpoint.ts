// Checkpoints Hugging Face can load: DIR/config.json, DIR/model.safetensors (GPT2LMHeadModel names),
// the tokenizer copied, plus our optimizer state and train log.
//
// A save never leaves DIR without a complete checkpoint, and never touches DIR's other files:
//   1. the new files are written (and flushed) into DIR/.semfreeze-staging with a list of their names;
//   2. staging is renamed to DIR/.semfreeze-commit: from here on the new checkpoint is complete;
//   3. each file is renamed from commit into DIR, checkpoint files the new one lacks are removed,
//      then commit is removed.
// A crash in 1 leaves the old checkpoint in DIR (the next run removes the partial staging); a crash
// in 2–3 leaves a complete new one in commit, which the next run finishes moving (recoverCheckpoint).
import { existsSync, readdirSync, readFileSync, statSync, statfsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { UserError, progress } from './common.ts';
import { fileOp, syncDir, writeDurable, type FileData } from './fileops.ts';
import { acquireLock } from './lock.ts';
import { assertWritableDir, fsReason, removeIfEmpty } from './paths.ts';
import { serializeSafetensors, type TensorToWrite, parseSafetensors } from '../io/safetensors.ts';
import { hfModelFiles, type HfModelContents } from '../model/save.ts';

export interface CheckpointContents extends HfModelContents {
  /** The model's files when not hfModelFiles(this) (a LoRA run's PEFT adapter directory). */
  modelFiles?: { name: string; data: FileData }[];
  optimizer: TensorToWrite[];
  /** Everything needed to resume exactly: step, data position, arguments. */
  state: Record<string, unknown>;
  log: unknown[];
}

export const MARKER = 'train-state.json';
/** Every file a checkpoint may have; the only names a save writes or removes in DIR. */
export const CHECKPOINT_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', MARKER, 'train-log.json'] as const;
/** What a checkpoint left by an earlier semfreeze version (before LoRA) always holds. */
const LEGACY_FILES = ['config.json', 'model.safetensors', 'optimizer.safetensors', MARKER, 'train-log.json'] as const;
const STAGING = '.semfreeze-staging';
const COMMIT = '.semfreeze-commit';
const MANIFEST = 'files.json';
/** Our own entries in DIR (staging, commit, lock, probe): not the user's files. */
const isOwnEntry = (name: string) => name.startsWith('.semfreeze-');

/** The step of the checkpoint in DIR (complete in DIR or waiting in its commit directory), or null if there is none. */
export function checkpointStep(dir: string): number | null {
  for (const p of [join(dir, MARKER), join(dir, COMMIT, MARKER)]) {
    try {
      const step = (JSON.parse(readFileSync(p, 'utf8')) as { step?: unknown }).step;
      return typeof step === 'number' ? step : -1;
    } catch {
      if (existsSync(p)) return -1;
    }
  }
  return null;
}

/**
 * --out must be new, empty, or a semfreeze checkpoint; an existing checkpoint is replaced only when
 * resuming it or with --overwrite. (Other files in it are never touched.)
 */
export function checkOutputDir(dir: string, opts: { resumingIt: boolean; overwrite: boolean }): void {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) throw new UserError(`--out ${dir}: exists and is not a directory`);
  const step = checkpointStep(dir);
  if (step === null) {
    if (readdirSync(dir).some((e) => !isOwnEntry(e))) throw new UserError(`--out ${dir}: exists and is not a semfreeze checkpoint (no ${MARKER}); choose a new or empty directory`);
    return;
  }
  if (!opts.resumingIt && !opts.overwrite) {
    throw new UserError(`--out ${dir}: holds a semfreeze checkpoint${step >= 0 ? ` (step ${step})` : ''}; give --resume ${dir} to continue it, or --overwrite to replace it`);
  }
}

/**
 * Makes DIR this run's output before any other work: writable (probed), locked against a second run,
 * recovered from a crash, and new, empty or a checkpoint the run may replace. release() unlocks it
 * and removes it again if this run created it and left nothing in it.
 */
export async function claimOutputDir(dir: string, opts: { resumingIt: boolean; overwrite: boolean }): Promise<{ release(): Promise<void> }> {
  const { created } = await assertWritableDir('--out', dir);
  const lock = acquireLock('--out', dir);
  const release = async () => {
    lock.release();
    if (created) await removeIfEmpty(dir);
  };
  try {
    for (const note of await recoverCheckpoint(dir)) progress(note);
    checkOutputDir(dir, opts);
  } catch (e) {
    await release();
    throw e;
  }
  return { release };
}

/** Finishes a commit (steps 3 of the save): idempotent, so it also completes one a crash interrupted. */
async function completeCommit(dir: string): Promise<void> {
  const commit = join(dir, COMMIT);
  const manifest = join(commit, MANIFEST);
  if (existsSync(manifest)) {
    const names = JSON.parse(await readFile(manifest, 'utf8')) as string[];
    for (const n of names) if (existsSync(join(commit, n))) await fileOp(`rename ${COMMIT}/${n} → ${n}`, () => rename(join(commit, n), join(dir, n)));
    for (const n of CHECKPOINT_FILES) if (!names.includes(n) && existsSync(join(dir, n))) await fileOp(`remove old ${n}`, () => rm(join(dir, n)));
    await fileOp(`remove ${COMMIT}/${MANIFEST}`, () => rm(manifest));
  }
  await fileOp(`remove ${COMMIT}`, () => rm(commit, { recursive: true, force: true }));
  await fileOp(`sync ${dir}`, () => syncDir(dir));
}

/**
 * Brings DIR back to one complete checkpoint after a crash: finishes an interrupted commit, drops
 * a partial staging (the old checkpoint is still whole then), and restores a complete checkpoint
 * that an earlier semfreeze version left beside DIR (`.NAME.tmp-*`) when DIR itself is missing.
 * Call it only while holding DIR's lock. Returns what it did, one line each.
 */
export async function recoverCheckpoint(dir: string): Promise<string[]> {
  const notes: string[] = [];
  if (existsSync(join(dir, COMMIT))) {
    await completeCommit(dir);
    notes.push(`${dir}: completed the checkpoint save that an interrupted run had left (now at step ${checkpointStep(dir)})`);
  }
  if (existsSync(join(dir, STAGING))) {
    await fileOp(`remove ${STAGING}`, () => rm(join(dir, STAGING), { recursive: true, force: true }));
    notes.push(`${dir}: removed a partly written checkpoint of an interrupted run (the complete one before it is kept)`);
  }
  if (!existsSync(join(dir, MARKER))) {
    const parent = dirname(dir);
    const legacy = existsSync(parent) ? readdirSync(parent).filter((e) => e.startsWith(`.${basename(dir)}.tmp-`)) : [];
    // Newest first, and the new copy (.tmp-PID-TIME) before the old one set aside (.tmp-PID-TIME.old).
    legacy.sort((a, b) => Number(a.endsWith('.old')) - Number(b.endsWith('.old')) || b.localeCompare(a));
    const complete = legacy.find((e) => LEGACY_FILES.every((f) => existsSync(join(parent, e, f))));
    if (complete && (!existsSync(dir) || readdirSync(dir).every(isOwnEntry))) {
      const from = join(parent, complete);
      await mkdir(dir, { recursive: true });
      for (const f of readdirSync(from)) await rename(join(from, f), join(dir, f));
      await rm(from, { recursive: true });
      notes.push(`${dir}: restored the complete checkpoint an interrupted run had left in ${join(parent, complete)}`);
    }
  }
  return notes;
}

/** A save that failed: the previous checkpoint (if any) is untouched, and this is what the save needs. */
export class CheckpointWriteError extends Error {
  constructor(readonly dir: string, override readonly cause: unknown, readonly neededBytes: number) {
    super(`${dir}: cannot write the checkpoint: ${fsReason(cause)}`);
    this.name = 'CheckpointWriteError';
  }

  /** Free space where the checkpoint goes, or null if unknown. */
  availableBytes(): number | null {
    try {
      const s = statfsSync(existsSync(this.dir) ? this.dir : dirname(this.dir));
      return s.bavail * s.bsize;
    } catch {
      return null;
    }
  }
}

function checkpointFiles(c: CheckpointContents): { name: string; data: FileData }[] {
  return [
    ...(c.modelFiles ?? hfModelFiles(c)),
    { name: 'optimizer.safetensors', data: serializeSafetensors(c.optimizer, { format: 'semfreeze-optimizer' }) },
    { name: 'train-log.json', data: `${JSON.stringify(c.log, null, 1)}\n` },
    { name: MARKER, data: `${JSON.stringify(c.state, null, 2)}\n` },
  ];
}

const byteLength = (d: FileData): number => (typeof d === 'string' ? Buffer.byteLength(d) : Array.isArray(d) ? d.reduce((s, c) => s + c.byteLength, 0) : d.byteLength);

export async function writeCheckpoint(dir: string, c: CheckpointContents): Promise<void> {
  const files = checkpointFiles(c);
  const needed = files.reduce((s, f) => s + byteLength(f.data), 0);
  const staging = join(dir, STAGING);
  try {
    if (!existsSync(dir)) await fileOp(`mkdir ${dir}`, () => mkdir(dir, { recursive: true }));
    if (existsSync(staging)) await fileOp(`remove ${STAGING}`, () => rm(staging, { recursive: true, force: true }));
    await fileOp(`mkdir ${STAGING}`, () => mkdir(staging));
    for (const f of files) await fileOp(`write ${STAGING}/${f.name}`, () => writeDurable(join(staging, f.name), f.data));
    await fileOp(`write ${STAGING}/${MANIFEST}`, () => writeDurable(join(staging, MANIFEST), JSON.stringify(files.map((f) => f.name))));
  } catch (e) {
    if ((e as Error).name === 'SimulatedCrash') throw e;
    await fileOp(`remove ${STAGING}`, () => rm(staging, { recursive: true, force: true })).catch(() => {});
    throw new CheckpointWriteError(dir, e, needed);
  }
  await fileOp(`rename ${STAGING} → ${COMMIT}`, () => rename(staging, join(dir, COMMIT)));
  await completeCommit(dir);
}

export interface ResumeState {
  state: Record<string, unknown>;
  log: unknown[];
  optimizer: { name: string; data: Float32Array | Int32Array }[];
}

export async function readResumeState(dir: string): Promise<ResumeState> {
  const need = (f: string) => {
    const p = join(dir, f);
    if (!existsSync(p)) throw new UserError(`--resume ${dir}: not a semfreeze checkpoint to resume (missing ${f})`);
    return p;
  };
  const statePath = need('train-state.json');
  const state = await readJsonFile(statePath);
  if (typeof state !== 'object' || state === null || Array.isArray(state)) throw new UserError(`${statePath}: expected a JSON object`);
  const st = state as Record<string, unknown>;
  if (!(Number.isInteger(st.step) && (st.step as number) >= 0)) throw new UserError(`${statePath}: 'step' must be an integer ≥ 0, got ${JSON.stringify(st.step)}`);
  if (!(st.freeze === null || Number.isInteger(st.freeze))) throw new UserError(`${statePath}: 'freeze' must be null or a block count, got ${JSON.stringify(st.freeze)}`);
  const loader = st.loader as Record<string, unknown> | undefined;
  if (!loader || !Number.isInteger(loader.epoch) || !Number.isInteger(loader.cursor)) throw new UserError(`${statePath}: 'loader' must hold integer epoch and cursor, got ${JSON.stringify(st.loader)}`);
  const logPath = need('train-log.json');
  const log = await readJsonFile(logPath);
  if (!Array.isArray(log)) throw new UserError(`${logPath}: expected a JSON array`);
  const optPath = need('optimizer.safetensors');
  const opt = parseSafetensors(new Uint8Array(await readFile(optPath)), optPath);
  const optimizer = [...opt.tensors.entries()].map(([name, info]) => {
    if (info.dtype !== 'F32' && info.dtype !== 'I32') throw new UserError(`${optPath}: tensor '${name}' is ${info.dtype}, expected F32 (or I32)`);
    const data = info.dtype === 'F32' ? opt.getFloat32(name) : opt.getInt32(name);
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new UserError(`${optPath}: tensor '${name}' holds a non-finite value (${data[bad]} at index ${bad})`);
    return { name, data };
  });
  return { state: st, log, optimizer };
}

async function readJsonFile(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message}); the checkpoint is corrupt`);
  }
}
