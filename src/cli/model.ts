// Loading a model directory and token data for the CLI commands (the core's loaders, src/model/load.ts,
// with the Node platform, the shared runtime and a progress line).
import { basename } from 'node:path';
import type { Runtime } from '../gpu/runtime.ts';
import { describeModel, loadModel as loadModelCore, loadTokens as loadTokensCore, type LoadedModel as CoreLoadedModel } from '../model/load.ts';
import type { ModelFiles } from '../model/weights.ts';
import { nodePlatform } from '../platform/node.ts';
import { UserError, openRuntime, progress } from './common.ts';

export interface LoadedModel extends CoreLoadedModel {
  rt: Runtime;
}

export async function loadModel(dir: string, opts: { quiet?: boolean } = {}): Promise<LoadedModel> {
  const rt = await openRuntime();
  const m = await loadModelCore(nodePlatform, rt, dir);
  if (!opts.quiet) progress(describeModel(dir, m));
  return { ...m, rt };
}

/** Token ids from --data: .txt (tokenized with the model's tokenizer.json), .json ids, or llm.c .bin. */
export function loadTokens(path: string, files: ModelFiles): Promise<Int32Array> {
  return loadTokensCore(nodePlatform, path, files);
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
