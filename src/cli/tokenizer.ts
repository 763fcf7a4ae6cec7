// `semfreeze tokenizer train|encode|decode`: byte-level BPE on the user's text files.
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { readText, writeFileAtomic } from '../platform/node.ts';
import { Tokenizer } from '../tokenizer/bpe.ts';
import { trainBpe, type TrainProgress } from '../tokenizer/train.ts';
import { ProgressLine, UserError, formatEta, printJson, progress } from './common.ts';

export interface TrainCommandOptions {
  data: string[];
  vocab: number;
  out: string;
  minFrequency?: number;
  /** Comma-separated; '' for none. */
  special: string;
}

export async function tokenizerTrainCommand(o: TrainCommandOptions): Promise<void> {
  const specials = o.special.split(',').filter((s) => s !== '');
  if (o.vocab < 256 + specials.length) throw new UserError(`--vocab must be at least ${256 + specials.length} (256 byte symbols + ${specials.length} special), got ${o.vocab}`);
  if (o.data.some((d) => resolve(d) === resolve(o.out))) throw new UserError(`--out ${o.out} is also a --data file; it would overwrite the training text`);
  const t0 = performance.now();
  // Invalid UTF-8 becomes U+FFFD here, the same way every other command reads text.
  const texts: string[] = [];
  let chars = 0;
  for (const path of o.data) {
    const text = await readText(path);
    texts.push(text);
    chars += text.length;
  }
  progress(`read ${o.data.length} file${o.data.length === 1 ? '' : 's'}, ${(chars / 1e6).toFixed(1)}M characters`);

  const line = new ProgressLine();
  let mergeStart = 0;
  const onProgress = (p: TrainProgress) => {
    if (p.phase === 'count') {
      line.update(`counting words: file ${p.done}/${texts.length}, ${p.words} distinct`, p.done === texts.length);
      return;
    }
    mergeStart ||= performance.now();
    const perMerge = (performance.now() - mergeStart) / 1000 / p.done;
    line.update(`merges ${p.done}/${p.total}, ETA ${formatEta(perMerge * (p.total! - p.done))}`, p.done === p.total);
  };
  const trained = trainBpe(texts, { vocabSize: o.vocab, minFrequency: o.minFrequency, specialTokens: specials, onProgress });
  line.done();
  await writeFileAtomic(o.out, trained.json);
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  progress(`wrote ${o.out}: vocab ${trained.vocabSize} (256 byte symbols, ${trained.merges.length} merges, ${specials.length} special) from ${trained.totalWords} words (${trained.distinctWords} distinct) in ${seconds} s`);
  if (trained.vocabSize < o.vocab) {
    progress(`note: stopped at ${trained.vocabSize} of ${o.vocab} tokens: no pair left that occurs ${Math.max(1, o.minFrequency ?? 0)}+ times`);
  }
}

/** tokenizer.json, or a model directory that holds one. */
async function loadTokenizer(path: string): Promise<Tokenizer> {
  const file = (await stat(path).catch(() => null))?.isDirectory() ? join(path, 'tokenizer.json') : path;
  const text = await readText(file);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return Tokenizer.fromJSON(json, file);
}

export async function tokenizerEncodeCommand(o: { tokenizer: string; text?: string; file?: string; json?: boolean }): Promise<void> {
  if ((o.text === undefined) === (o.file === undefined)) throw new UserError('give exactly one of --text or --file');
  const tok = await loadTokenizer(o.tokenizer);
  const ids = tok.encode(o.text ?? await readText(o.file!));
  if (o.json) printJson({ ids, tokens: ids.map((id) => tok.idToToken(id)) });
  else process.stdout.write(`${ids.join(',')}\n`);
}

export async function tokenizerDecodeCommand(o: { tokenizer: string; ids: string }): Promise<void> {
  const tok = await loadTokenizer(o.tokenizer);
  process.stdout.write(tok.decode(parseIds(o.ids)));
}

/** "1,2,3" (spaces allowed) → ids. */
export function parseIds(value: string): number[] {
  return value.split(/[\s,]+/).filter((s) => s !== '').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new UserError(`--ids: '${s}' is not a token id`);
    return n;
  });
}
