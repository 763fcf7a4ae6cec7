// Checkpoints Hugging Face can load: DIR/config.json, DIR/model.safetensors (GPT2LMHeadModel names),
// the tokenizer copied, plus our optimizer state and train log. The whole directory is written
// under a temporary name and swapped in by rename, so a killed run leaves the previous checkpoint
// (or none), never a half-written one.
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, dirname, basename } from 'node:path';
import { serializeSafetensors, type TensorToWrite, parseSafetensors } from '../io/safetensors.ts';
import { configToJson, type ModelConfig } from '../model/config.ts';
import { hfName, paramSpecs } from '../model/params.ts';

export interface CheckpointContents {
  config: ModelConfig;
  params: Map<string, Float32Array>;
  tokenizerJson: string | null;
  optimizer: TensorToWrite[];
  /** Everything needed to resume exactly: step, data position, arguments. */
  state: Record<string, unknown>;
  log: unknown[];
}

export async function writeCheckpoint(dir: string, c: CheckpointContents): Promise<void> {
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}-${Date.now()}`);
  await mkdir(tmp, { recursive: true });
  try {
    const tensors: TensorToWrite[] = paramSpecs(c.config).map((s) => ({ name: hfName(s.name), dtype: 'F32', shape: s.shape, data: c.params.get(s.name)! }));
    await writeFile(join(tmp, 'model.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
    await writeFile(join(tmp, 'config.json'), configToJson(c.config));
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
    if (!existsSync(p)) throw new Error(`${dir}: not a semfreeze checkpoint to resume (missing ${f})`);
    return p;
  };
  const state = JSON.parse(await readFile(need('train-state.json'), 'utf8')) as Record<string, unknown>;
  const log = JSON.parse(await readFile(need('train-log.json'), 'utf8')) as unknown[];
  const optPath = need('optimizer.safetensors');
  const st = parseSafetensors(new Uint8Array(await readFile(optPath)), optPath);
  const optimizer = [...st.tensors.entries()].map(([name, info]) => ({ name, data: info.dtype === 'F32' ? st.getFloat32(name) : st.getInt32(name) }));
  return { state, log, optimizer };
}
