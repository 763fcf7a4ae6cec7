// Checkpoints Hugging Face can load: DIR/config.json, DIR/model.safetensors (GPT2LMHeadModel names),
// the tokenizer copied, plus our optimizer state and train log. The whole directory is written
// under a temporary name and swapped in by rename, so a killed run leaves the previous checkpoint
// (or none), never a half-written one.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, dirname, basename, resolve } from 'node:path';
import { UserError } from './common.ts';
import { serializeSafetensors, type TensorToWrite, parseSafetensors } from '../io/safetensors.ts';
import { configToJson, type ModelConfig } from '../model/config.ts';
import { hfName, paramSpecs } from '../model/params.ts';

export interface CheckpointContents {
  config: ModelConfig;
  /** The input model's config.json text: its other fields (token ids, dropout, …) are kept. */
  configJson?: string | null;
  params: Map<string, Float32Array>;
  tokenizerJson: string | null;
  optimizer: TensorToWrite[];
  /** Everything needed to resume exactly: step, data position, arguments. */
  state: Record<string, unknown>;
  log: unknown[];
}

const MARKER = 'train-state.json';

/** Fields of the input config.json that ours does not set (bos/eos ids, dropout, task params…). */
function originalFields(text: string | null | undefined): Record<string, unknown> {
  if (!text) return {};
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    return typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? raw : {};
  } catch {
    return {};
  }
}

/**
 * --out must be new, empty, or an earlier semfreeze checkpoint (it is replaced whole), and never
 * the input model's directory.
 */
export function checkOutputDir(dir: string, inputs: (string | undefined)[]): void {
  const out = resolve(dir);
  for (const i of inputs) {
    if (i && resolve(i) === out && !existsSync(join(out, MARKER))) throw new UserError(`--out ${dir} is the input model's directory; choose another directory`);
  }
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) throw new UserError(`--out ${dir} exists and is not a directory`);
  const entries = readdirSync(out);
  if (entries.length > 0 && !entries.includes(MARKER)) {
    throw new UserError(`--out ${dir} exists and is not a semfreeze checkpoint (no ${MARKER}); it would be replaced whole, so choose a new or empty directory`);
  }
}

/** Leftovers of a run killed while writing (temporary checkpoint directories). */
async function removeStaleTemps(parent: string, name: string): Promise<void> {
  for (const e of existsSync(parent) ? readdirSync(parent) : []) {
    if (e.startsWith(`.${name}.tmp-`)) await rm(join(parent, e), { recursive: true, force: true });
  }
}

export async function writeCheckpoint(dir: string, c: CheckpointContents): Promise<void> {
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  await removeStaleTemps(parent, basename(dir));
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}-${Date.now()}`);
  await mkdir(tmp, { recursive: true });
  try {
    const tensors: TensorToWrite[] = paramSpecs(c.config).map((s) => ({ name: hfName(s.name), dtype: 'F32', shape: s.shape, data: c.params.get(s.name)! }));
    await writeFile(join(tmp, 'model.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
    await writeFile(join(tmp, 'config.json'), configToJson(c.config, originalFields(c.configJson)));
    if (c.tokenizerJson) await writeFile(join(tmp, 'tokenizer.json'), c.tokenizerJson);
    await writeFile(join(tmp, 'optimizer.safetensors'), serializeSafetensors(c.optimizer, { format: 'semfreeze-optimizer' }));
    await writeFile(join(tmp, 'train-state.json'), `${JSON.stringify(c.state, null, 2)}\n`);
    await writeFile(join(tmp, 'train-log.json'), `${JSON.stringify(c.log, null, 1)}\n`);
    const old = existsSync(dir) ? `${tmp}.old` : null;
    if (old) await rename(dir, old);
    await rename(tmp, dir);
    if (old) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw new Error(`${dir}: cannot write the checkpoint (${(e as Error).message})`);
  }
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
