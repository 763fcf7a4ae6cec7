// Loading a model directory and token data for the CLI commands.
import { basename } from 'node:path';
import type { Runtime } from '../gpu/runtime.ts';
import { checkVocab, parseTokenFile, tokenFileKind } from '../data/tokens.ts';
import { nodePlatform, readBytes } from '../platform/node.ts';
import { GpuWeights, hostParams, readModelDir, type ModelFiles } from '../model/weights.ts';
import { UserError, openRuntime, progress } from './common.ts';

export interface LoadedModel {
  rt: Runtime;
  files: ModelFiles;
  weights: GpuWeights;
}

export async function loadModel(dir: string, opts: { quiet?: boolean } = {}): Promise<LoadedModel> {
  const t0 = performance.now();
  const files = await readModelDir(nodePlatform, dir);
  const params = await hostParams(files);
  const rt = await openRuntime();
  const weights = GpuWeights.upload(rt, files.config, params);
  const c = files.config;
  if (!opts.quiet) progress(`model ${dir}: ${c.nLayer} blocks × ${c.nEmbd}, ${c.nHead} heads, vocab ${c.vocabSize}, context ${c.nPositions} (loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  return { rt, files, weights };
}

/** Token ids from --data: .txt (tokenized with the model's tokenizer.json), .json ids, or llm.c .bin. */
export async function loadTokens(path: string, files: ModelFiles): Promise<Int32Array> {
  const kind = tokenFileKind(path);
  if (kind === '.txt' && !files.tokenizer) throw new UserError(`${path}: a .txt file needs the model's tokenizer.json, and ${files.dir} has none`);
  const ids = parseTokenFile(await readBytes(path), path, kind, files.tokenizer ?? undefined);
  checkVocab(ids, files.config.vocabSize, path);
  return ids;
}

/** Ids from --tokens "1,2,3" or --text "..." (tokenized). */
export function promptIds(opts: { tokens?: string; text?: string }, files: ModelFiles): number[] {
  if ((opts.tokens === undefined) === (opts.text === undefined)) throw new UserError('give exactly one of --tokens or --text');
  let ids: number[];
  if (opts.tokens !== undefined) {
    ids = opts.tokens.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new UserError(`--tokens: '${s}' is not a token id`);
      return n;
    });
  } else {
    if (!files.tokenizer) throw new UserError(`--text needs the model's tokenizer.json, and ${files.dir} has none`);
    ids = files.tokenizer.encode(opts.text!);
  }
  if (ids.length === 0) throw new UserError('the prompt has no tokens');
  const V = files.config.vocabSize;
  const bad = ids.findIndex((id) => id >= V);
  if (bad >= 0) throw new UserError(`token id ${ids[bad]} at position ${bad} is outside the vocabulary (vocab_size ${V})`);
  if (ids.length > files.config.nPositions) throw new UserError(`the prompt has ${ids.length} tokens, more than the model's context n_positions = ${files.config.nPositions}`);
  return ids;
}

export const fileLabel = (p: string) => basename(p);
