// Byte-level BPE training that writes Hugging Face's tokenizer.json (GPT-2's layout).
//
// It replicates `tokenizers`' BpeTrainer (models/bpe/trainer.rs) step for step, so both give the
// same merges on the same texts: words counted after GPT-2's regex split, a max-heap of pairs
// ordered by count and then by the smaller (left id, right id), lazy re-push of stale counts, and
// incremental pair counts from each merged word's local changes. Ids: the 256 byte symbols in code
// point order (= GPT-2's order), then one per new token in merge order, then the special tokens
// (GPT-2 puts <|endoftext|> last too; HF's trainer puts them first, which shifts every id but
// changes no merge). Unlike HF, special tokens in the training text are cut out before counting,
// as the encoder does, instead of being learned as ordinary text.
import { BYTE_TO_CHAR, GPT2_SPLIT, TokenizerError } from './bpe.ts';

export interface TrainProgress {
  phase: 'count' | 'merge';
  /** count: texts read so far; merge: merges done. */
  done: number;
  /** merge: the most merges this vocabulary size allows (training may stop earlier). */
  total?: number;
  /** count: distinct words so far. */
  words?: number;
}

export interface TrainOptions {
  /** Final vocabulary size, byte symbols and special tokens included. */
  vocabSize: number;
  /** Pairs seen fewer times are never merged (HF's min_frequency; default 0). */
  minFrequency?: number;
  specialTokens?: string[];
  onProgress?: (p: TrainProgress) => void;
}

export interface TrainedBpe {
  /** tokenizer.json text, deterministic byte for byte. */
  json: string;
  vocabSize: number;
  merges: [string, string][];
  /** Distinct pre-tokenized words and their total count. */
  distinctWords: number;
  totalWords: number;
}

const BYTE_SYMBOLS = [...BYTE_TO_CHAR].sort((x, y) => x.codePointAt(0)! - y.codePointAt(0)!);
const BYTE_ID = new Int32Array(256).map((_, b) => BYTE_SYMBOLS.indexOf(BYTE_TO_CHAR[b]!));
// Pair (left, right) as one number; 2^21 ids is far beyond any byte-level vocabulary.
const ID_LIMIT = 2 ** 21;
const key = (left: number, right: number) => left * ID_LIMIT + right;

export function trainBpe(texts: Iterable<string>, options: TrainOptions): TrainedBpe {
  const specials = [...new Set(options.specialTokens ?? [])];
  const { vocabSize, minFrequency = 0, onProgress } = options;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + specials.length || vocabSize >= ID_LIMIT) {
    throw new TokenizerError('vocabSize', `must be an integer from ${256 + specials.length} (256 byte symbols + ${specials.length} special) to ${ID_LIMIT - 1}, got ${vocabSize}`);
  }
  if (specials.some((s) => s === '')) throw new TokenizerError('specialTokens', 'a special token cannot be empty');

  const wordCounts = countWords(texts, specials, onProgress);
  const { words, counts } = wordsAsByteIds(wordCounts);
  const tokens = [...BYTE_SYMBOLS];
  const merges = learnMerges(words, counts, tokens, vocabSize - specials.length, minFrequency, onProgress);
  let totalWords = 0;
  for (const c of counts) totalWords += c;
  return {
    json: tokenizerJson(tokens, merges, specials),
    vocabSize: tokens.length + specials.length,
    merges,
    distinctWords: words.length,
    totalWords,
  };
}

function countWords(texts: Iterable<string>, specials: string[], onProgress?: (p: TrainProgress) => void): Map<string, number> {
  const counts = new Map<string, number>();
  const split = new RegExp(GPT2_SPLIT.source, GPT2_SPLIT.flags);
  const specialSplit = specials.length > 0
    ? new RegExp(specials.map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|'), 'u')
    : undefined;
  let done = 0;
  for (const text of texts) {
    for (const segment of specialSplit ? text.split(specialSplit) : [text]) {
      split.lastIndex = 0;
      for (let m = split.exec(segment); m !== null; m = split.exec(segment)) {
        const word = m[0];
        counts.set(word, (counts.get(word) ?? 0) + 1);
      }
    }
    onProgress?.({ phase: 'count', done: ++done, words: counts.size });
  }
  return counts;
}

/** Each word as its UTF-8 bytes' symbol ids (lone surrogates become U+FFFD, as when encoding). */
function wordsAsByteIds(wordCounts: Map<string, number>): { words: number[][]; counts: number[] } {
  const utf8 = new TextEncoder();
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [word, count] of wordCounts) {
    words.push(Array.from(utf8.encode(word), (b) => BYTE_ID[b]!));
    counts.push(count);
  }
  return { words, counts };
}

interface Candidate {
  left: number;
  right: number;
  count: number;
  /** Words that contained the pair when this entry was pushed (a superset later on). */
  where: Set<number>;
}

/**
 * HF's merge loop. `tokens` (the byte symbols) grows by one per new token; returns the merges in
 * rank order. Two merges can build the same string ("a bc", "ab c"): the second adds no token.
 */
function learnMerges(
  words: number[][], counts: number[], tokens: string[], maxTokens: number, minFrequency: number,
  onProgress?: (p: TrainProgress) => void,
): [string, string][] {
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const pairCounts = new Map<number, number>();
  let where = new Map<number, Set<number>>();
  const note = (pair: number, delta: number, word: number) => {
    pairCounts.set(pair, (pairCounts.get(pair) ?? 0) + delta);
    if (delta > 0) {
      let set = where.get(pair);
      if (!set) where.set(pair, (set = new Set()));
      set.add(word);
    }
  };
  words.forEach((w, i) => {
    for (let j = 0; j + 1 < w.length; j++) note(key(w[j]!, w[j + 1]!), counts[i]!, i);
  });
  const queue = new MaxHeap();
  const pushTouched = () => {
    for (const [pair, set] of where) {
      const count = pairCounts.get(pair)!;
      if (count > 0) queue.push({ left: Math.floor(pair / ID_LIMIT), right: pair % ID_LIMIT, count, where: set });
    }
    where = new Map();
  };
  pushTouched();

  const merges: [string, string][] = [];
  const total = maxTokens - tokens.length;
  while (tokens.length < maxTokens) {
    const top = queue.pop();
    if (!top) break;
    const pair = key(top.left, top.right);
    const current = pairCounts.get(pair)!;
    if (top.count !== current) {
      top.count = current;
      queue.push(top);
      continue;
    }
    if (top.count < 1 || top.count < minFrequency) break;

    const left = tokens[top.left]!;
    const right = tokens[top.right]!;
    const merged = left + right;
    let id = idOf.get(merged);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(merged);
      idOf.set(merged, id);
    }
    merges.push([left, right]);
    for (const w of top.where) {
      mergeWord(words[w]!, top.left, top.right, id, (a, b, change) => note(key(a, b), change * counts[w]!, w));
    }
    pushTouched();
    onProgress?.({ phase: 'merge', done: merges.length, total });
  }
  return merges;
}

/** Replace each (left, right), left to right, in place; report the neighbouring pairs it changes. */
function mergeWord(symbols: number[], left: number, right: number, id: number, change: (a: number, b: number, delta: number) => void): void {
  let out = 0;
  for (let i = 0; i < symbols.length;) {
    if (symbols[i] === left && symbols[i + 1] === right && i + 1 < symbols.length) {
      if (out > 0) {
        change(symbols[out - 1]!, left, -1);
        change(symbols[out - 1]!, id, 1);
      }
      if (i + 2 < symbols.length) {
        change(right, symbols[i + 2]!, -1);
        change(id, symbols[i + 2]!, 1);
      }
      symbols[out++] = id;
      i += 2;
    } else {
      symbols[out++] = symbols[i++]!;
    }
  }
  symbols.length = out;
}

/** Highest count first; ties go to the smaller (left, right) ids, as HF's Merge ordering does. */
function before(x: Candidate, y: Candidate): boolean {
  if (x.count !== y.count) return x.count > y.count;
  return x.left !== y.left ? x.left < y.left : x.right < y.right;
}

class MaxHeap {
  private readonly items: Candidate[] = [];

  push(item: Candidate): void {
    const a = this.items;
    let i = a.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(a[i]!, a[parent]!)) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): Candidate | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    a[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < a.length && before(a[l]!, a[best]!)) best = l;
      if (r < a.length && before(a[r]!, a[best]!)) best = r;
      if (best === i) break;
      [a[i], a[best]] = [a[best]!, a[i]!];
      i = best;
    }
    return top;
  }
}

// GPT-2's tokenizer.json settings, verbatim.
const PRE_TOKENIZER = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const POST_PROCESSOR = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
const DECODER = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };

/**
 * Written by hand rather than by JSON.stringify of an object, which would move integer-like keys
 * ("19", "200") to the front of the vocabulary; this keeps the file in id order.
 */
function tokenizerJson(tokens: string[], merges: [string, string][], specials: string[]): string {
  const s = JSON.stringify;
  const added = specials.map((content, i) => ({
    id: tokens.length + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const vocab = tokens.map((t, i) => `      ${s(t)}: ${i}`).join(',\n');
  const mergeLines = merges.map(([a, b]) => `      ${s(`${a} ${b}`)}`).join(',\n');
  return [
    '{',
    '  "version": "1.0",',
    '  "truncation": null,',
    '  "padding": null,',
    `  "added_tokens": [${added.map((t) => `\n    ${s(t)}`).join(',')}${added.length ? '\n  ' : ''}],`,
    '  "normalizer": null,',
    `  "pre_tokenizer": ${s(PRE_TOKENIZER)},`,
    `  "post_processor": ${s(POST_PROCESSOR)},`,
    `  "decoder": ${s(DECODER)},`,
    '  "model": {',
    '    "type": "BPE",',
    '    "dropout": null,',
    '    "unk_token": null,',
    '    "continuing_subword_prefix": "",',
    '    "end_of_word_suffix": "",',
    '    "fuse_unk": false,',
    '    "byte_fallback": false,',
    `    "vocab": {\n${vocab}\n    },`,
    `    "merges": [${merges.length ? `\n${mergeLines}\n    ` : ''}]`,
    '  }',
    '}',
    '',
  ].join('\n');
}
