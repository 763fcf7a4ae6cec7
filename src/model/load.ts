// Loading what every job starts from, through the platform (paths in Node, URLs or picked files in a
// browser): a model directory onto the GPU, and token data checked against its vocabulary.
import type { Runtime } from '../gpu/runtime.ts';
import { checkVocab, parseTokenFile, tokenFileKind } from '../data/tokens.ts';
import type { Platform } from '../platform/types.ts';
import { UserError } from '../util/errors.ts';
import { GpuWeights, hostParams, readModelDir, type ModelFiles } from './weights.ts';

export interface LoadedModel {
  files: ModelFiles;
  weights: GpuWeights;
  /** Wall time of reading, checking and uploading. */
  seconds: number;
}

export async function loadModel(platform: Platform, rt: Runtime, dir: string): Promise<LoadedModel> {
  const t0 = platform.now();
  const files = await readModelDir(platform, dir);
  const weights = GpuWeights.upload(rt, files.config, await hostParams(files));
  return { files, weights, seconds: (platform.now() - t0) / 1000 };
}

/** One line describing a loaded model (the CLI's and the page's first progress line). */
export function describeModel(dir: string, m: LoadedModel): string {
  const c = m.files.config;
  return `model ${dir}: ${c.nLayer} blocks × ${c.nEmbd}, ${c.nHead} heads, vocab ${c.vocabSize}, context ${c.nPositions} (loaded in ${m.seconds.toFixed(1)} s)`;
}

/** The file-kind of a data path or URL: its extension, ignoring a URL's query and fragment. */
export function dataName(path: string): string {
  return /^[a-z][a-z0-9+.-]*:/i.test(path) ? path.replace(/[?#].*$/, '') : path;
}

/** Token ids from a data file: .txt (tokenized with the model's tokenizer.json), .json ids, or llm.c .bin. */
export async function loadTokens(platform: Platform, path: string, files: ModelFiles): Promise<Int32Array> {
  const kind = tokenFileKind(dataName(path));
  if (kind === '.txt' && !files.tokenizer) throw new UserError(`${path}: a .txt file needs the model's tokenizer.json, and ${files.dir} has none`);
  const ids = parseTokenFile(await platform.readBytes(path), path, kind, files.tokenizer ?? undefined);
  checkVocab(ids, files.config.vocabSize, path);
  return ids;
}
