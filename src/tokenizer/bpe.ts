// Byte-level BPE (GPT-2 family), id-for-id compatible with Hugging Face's `tokenizers`:
// added tokens are split out whole, the rest is cut by GPT-2's regex, each piece's UTF-8 bytes are
// mapped to printable characters, and pieces are merged by merge rank.

export class TokenizerError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'TokenizerError';
  }
}

// HF's regex engine (Oniguruma) takes \s as Unicode White_Space; JS's \s differs (adds U+FEFF, lacks U+0085).
const WS = '\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** GPT-2's pre-tokenizer split (global: callers that loop with exec() need their own copy). */
export const GPT2_SPLIT = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
  'gu',
);
const WORD_CACHE_LIMIT = 10_000;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
function byteToUnicodeTable(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
}
export const BYTE_TO_CHAR = byteToUnicodeTable();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

export interface AddedToken {
  id: number;
  content: string;
  /** Swallow whitespace to the token's left / right (HF's lstrip / rstrip). */
  lstrip?: boolean;
  rstrip?: boolean;
  special?: boolean;
}

export interface BpeOptions {
  addPrefixSpace: boolean;
  useRegex: boolean;
  /** Words already in the vocabulary skip merging (HF's ignore_merges). */
  ignoreMerges: boolean;
  unkId?: number;
}

const DEFAULT_OPTIONS: BpeOptions = { addPrefixSpace: false, useRegex: true, ignoreMerges: false };

export class Tokenizer {
  private readonly ranks = new Map<string, number>();
  private readonly idToTokenTable: string[] = [];
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  /** Longest first, so regex alternation gives HF's leftmost-longest match; group i ↔ entry i. */
  private readonly addedInMatchOrder: AddedToken[];
  private readonly addedSplit?: RegExp;
  private readonly cache = new Map<string, number[]>();
  private readonly utf8 = new TextEncoder();
  private readonly options: BpeOptions;
  readonly vocabSize: number;

  /** Lower level than fromJSON/fromEncoderAndMerges: `merges` in rank order. */
  constructor(
    readonly source: string,
    private readonly vocab: Map<string, number>,
    merges: [string, string][],
    addedTokens: AddedToken[] = [],
    options: Partial<BpeOptions> = {},
  ) {
    this.options = { ...DEFAULT_OPTIONS, ...options };
    for (const [token, id] of vocab) this.idToTokenTable[id] = token;
    merges.forEach(([a, b], rank) => {
      for (const part of [a, b, a + b]) {
        if (!vocab.has(part)) throw new TokenizerError(source, `merge ${rank + 1} ('${a}' '${b}') uses '${part}', which is not in the vocabulary`);
      }
      if (!this.ranks.has(pairKey(a, b))) this.ranks.set(pairKey(a, b), rank);
    });
    for (const t of addedTokens) {
      this.addedById.set(t.id, t);
      this.addedByContent.set(t.content, t);
    }
    this.addedInMatchOrder = [...addedTokens].sort((a, b) => b.content.length - a.content.length || a.id - b.id);
    this.addedSplit = addedTokenPattern(this.addedInMatchOrder);
    this.vocabSize = Math.max(this.idToTokenTable.length, ...addedTokens.map((t) => t.id + 1));
  }

  /** Hugging Face tokenizer.json (already parsed). */
  static fromJSON(json: unknown, source = 'tokenizer.json'): Tokenizer {
    return fromTokenizerJson(json, source);
  }

  /**
   * OpenAI's original files: encoder.json (token → id) and vocab.bpe (merges, one "a b" per line).
   * Entries named like `<|endoftext|>` become special tokens, as in Hugging Face's conversion.
   */
  static fromEncoderAndMerges(encoderJson: unknown, vocabBpeText: string, source = 'encoder.json/vocab.bpe'): Tokenizer {
    const vocab = parseVocab(encoderJson, source);
    const merges = vocabBpeText.split(/\r?\n/)
      .filter((line) => line.trim() !== '' && !line.startsWith('#version'))
      .map((line, i) => parseMergeString(line, i, source));
    const specials = [...vocab].filter(([token]) => /^<\|.+\|>$/.test(token)).map(([content, id]) => ({ id, content, special: true }));
    return new Tokenizer(source, vocab, merges, specials);
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.idToTokenTable[id];
  }

  /** Token ids for `text`, without any template tokens (HF's encode(text, add_special_tokens=False)). */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const [segment, addedId] of this.splitAddedTokens(text)) {
      if (addedId !== undefined) ids.push(addedId);
      else for (const word of this.preTokenize(segment)) for (const id of this.encodeWord(word)) ids.push(id);
    }
    return ids;
  }

  /** Text for `ids`; special tokens are kept as their text. Invalid UTF-8 becomes U+FFFD, as in HF. */
  decode(ids: ArrayLike<number>): string {
    let text = '';
    let bytes: number[] = [];
    // ignoreBOM keeps a leading U+FEFF: it is text here, not a byte-order mark (HF keeps it too).
    const flush = () => { text += new TextDecoder('utf-8', { ignoreBOM: true }).decode(new Uint8Array(bytes)); bytes = []; };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const added = this.addedById.get(id);
      if (added) {
        flush();
        text += added.content;
        continue;
      }
      const token = this.idToTokenTable[id];
      if (token === undefined) throw new TokenizerError(this.source, `cannot decode id ${id} at position ${i}: not in the vocabulary (size ${this.vocabSize})`);
      for (const ch of token) bytes.push(CHAR_TO_BYTE.get(ch) ?? 0x3f); // '?' for a non-byte-level symbol
    }
    flush();
    return text;
  }

  /** [text, undefined] for ordinary text and ['', id] for an added token, in order. */
  private *splitAddedTokens(text: string): Generator<[string, number | undefined]> {
    if (!this.addedSplit) {
      yield [text, undefined];
      return;
    }
    let last = 0;
    for (const m of text.matchAll(this.addedSplit)) {
      if (m.index > last) yield [text.slice(last, m.index), undefined];
      const group = m.slice(1).findIndex((g) => g !== undefined);
      yield ['', this.addedInMatchOrder[group]!.id];
      last = m.index + m[0].length;
    }
    if (last < text.length) yield [text.slice(last), undefined];
  }

  private preTokenize(segment: string): string[] {
    if (segment === '') return [];
    // HF checks for a literal space here, not any whitespace: "\nhi" becomes " \nhi".
    const text = this.options.addPrefixSpace && !segment.startsWith(' ') ? ' ' + segment : segment;
    return this.options.useRegex ? text.match(GPT2_SPLIT) ?? [] : [text];
  }

  private encodeWord(word: string): number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let symbols = '';
    for (const b of this.utf8.encode(word)) symbols += BYTE_TO_CHAR[b];
    const ids = this.bpe(symbols);
    if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }

  /** Merge the lowest-ranked adjacent pair (all its occurrences, left to right) until none is left. */
  private bpe(symbols: string): number[] {
    const whole = this.vocab.get(symbols);
    if (this.options.ignoreMerges && whole !== undefined) return [whole];
    let parts = [...symbols];
    while (parts.length > 1) {
      let best = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) best = Math.min(best, this.ranks.get(pairKey(parts[i]!, parts[i + 1]!)) ?? Infinity);
      if (best === Infinity) break;
      parts = this.mergeAll(parts, best);
    }
    return parts.flatMap((p) => {
      const id = this.vocab.get(p) ?? this.options.unkId;
      return id === undefined ? [] : [id]; // HF drops symbols it cannot map when there is no unk token
    });
  }

  private mergeAll(parts: string[], rank: number): string[] {
    const merged: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      if (i + 1 < parts.length && this.ranks.get(pairKey(parts[i]!, parts[i + 1]!)) === rank) {
        merged.push(parts[i]! + parts[i + 1]!);
        i++;
      } else {
        merged.push(parts[i]!);
      }
    }
    return merged;
  }
}

// Byte-level symbols never contain U+0000 (byte 0 maps to U+0100), so it cannot collide.
function pairKey(a: string, b: string): string {
  return a + '\u0000' + b;
}

function addedTokenPattern(tokens: AddedToken[]): RegExp | undefined {
  if (tokens.length === 0) return undefined;
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const alternatives = tokens.map((t) => `${t.lstrip ? `[${WS}]*` : ''}(${escape(t.content)})${t.rstrip ? `[${WS}]*` : ''}`);
  return new RegExp(alternatives.join('|'), 'gu');
}

function parseVocab(json: unknown, source: string): Map<string, number> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new TokenizerError(source, 'vocabulary is not a JSON object of token → id');
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(json)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new TokenizerError(source, `vocabulary entry '${token}' has id ${JSON.stringify(id)}, not a non-negative integer`);
    vocab.set(token, id);
  }
  return vocab;
}

function parseMergeString(line: string, index: number, source: string): [string, string] {
  const parts = line.split(' ');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new TokenizerError(source, `merge ${index + 1} '${line}' is not two tokens separated by one space`);
  return [parts[0], parts[1]];
}

function parseMerge(merge: unknown, index: number, source: string): [string, string] {
  if (typeof merge === 'string') return parseMergeString(merge, index, source);
  if (Array.isArray(merge) && merge.length === 2 && merge.every((m) => typeof m === 'string')) return [merge[0], merge[1]];
  throw new TokenizerError(source, `merge ${index + 1} ${JSON.stringify(merge)} is neither "a b" nor ["a", "b"]`);
}

function fromTokenizerJson(json: unknown, source: string): Tokenizer {
  const fail = (problem: string): never => { throw new TokenizerError(source, problem); };
  if (typeof json !== 'object' || json === null) return fail('not a JSON object');
  const root = json as Record<string, unknown>;
  const model = (root.model ?? {}) as Record<string, unknown>;
  if (model.type !== undefined && model.type !== 'BPE') fail(`model type '${String(model.type)}' is not supported (only BPE)`);
  const pre = (root.pre_tokenizer ?? {}) as Record<string, unknown>;
  if (pre.type !== 'ByteLevel') fail(`pre_tokenizer ${JSON.stringify(pre.type ?? null)} is not supported (only ByteLevel)`);
  if (root.normalizer) fail(`normalizer ${JSON.stringify((root.normalizer as { type?: unknown }).type)} is not supported (only none)`);
  const decoder = root.decoder as { type?: unknown } | null | undefined;
  if (decoder && decoder.type !== 'ByteLevel') fail(`decoder ${JSON.stringify(decoder.type)} is not supported (only ByteLevel)`);
  if (model.continuing_subword_prefix || model.end_of_word_suffix) fail('BPE with a subword prefix or end-of-word suffix is not supported');
  if (model.byte_fallback) fail('BPE byte_fallback is not supported (byte-level BPE needs none)');
  if (typeof model.dropout === 'number' && model.dropout > 0) fail('BPE dropout is not supported');
  if (!Array.isArray(model.merges)) fail(`model.merges is missing or not a list`);

  const vocab = parseVocab(model.vocab, source);
  const merges = (model.merges as unknown[]).map((m, i) => parseMerge(m, i, source));
  const added = parseAddedTokens(root.added_tokens, source);
  const unk = typeof model.unk_token === 'string' ? vocab.get(model.unk_token) : undefined;
  return new Tokenizer(source, vocab, merges, added, {
    addPrefixSpace: pre.add_prefix_space === true,
    useRegex: pre.use_regex !== false,
    ignoreMerges: model.ignore_merges === true,
    unkId: unk,
  });
}

function parseAddedTokens(list: unknown, source: string): AddedToken[] {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new TokenizerError(source, 'added_tokens is not a list');
  return list.map((t, i) => {
    const e = t as Record<string, unknown>;
    if (typeof e?.content !== 'string' || e.content === '' || typeof e.id !== 'number' || !Number.isInteger(e.id) || e.id < 0) {
      throw new TokenizerError(source, `added_tokens[${i}] needs a non-empty 'content' string and a non-negative integer 'id'`);
    }
    return { id: e.id, content: e.content, lstrip: e.lstrip === true, rstrip: e.rstrip === true, special: e.special === true };
  });
}
