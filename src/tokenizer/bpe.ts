// BPE tokenizers from Hugging Face tokenizer.json, id-for-id compatible with `tokenizers` (0.23):
// byte-level BPE (GPT-2; Llama 3 and Qwen2 with their Split regexes, NFC, ignore_merges) and
// SentencePiece-style BPE with byte fallback (Llama 2, Gemma). The pipeline is the library's:
//   1. added tokens whose `normalized` is false are cut out of the raw text;
//   2. each other stretch is normalized, then added tokens whose `normalized` is true are cut out;
//   3. the pre-tokenizer splits the rest into pieces, and the BPE model turns each piece into ids;
//   4. encode(text, { addSpecialTokens: true }) adds the post-processor's template tokens (BOS...).
// decode() maps ids to token strings and runs the decoder chain over them. The components read are
// in pipeline.ts; any other one is refused with a TokenizerError naming the file and the component.
// tokenizer.json's `truncation` and `padding` are not applied: they are policies for batches, and
// encode() always returns the whole text's ids.

import {
  byteLevelDecoder, byteLevelPreTokenizer, ComponentError, parseDecoder, parseNormalizer, parsePostProcessor,
  parsePreTokenizer, preTokenize, toByteLevel, WS, type Decoder, type Normalizer, type PreTokenizer, type Template,
} from './pipeline.ts';

export { BYTE_TO_CHAR, GPT2_SPLIT } from './pipeline.ts';

export class TokenizerError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'TokenizerError';
  }
}

const WORD_CACHE_LIMIT = 10_000;
/** Pieces this long or longer are not cached (a SentencePiece-style model sees whole texts). */
const WORD_CACHE_MAX_LENGTH = 256;
/** Pair keys are left·2^21 + right. */
const ID_LIMIT = 2 ** 21;
/** Heap entries are rank·2^32 + position. */
const POS_LIMIT = 2 ** 32;

export interface AddedToken {
  id: number;
  content: string;
  /** Swallow whitespace to the token's left / right (HF's lstrip / rstrip). */
  lstrip?: boolean;
  rstrip?: boolean;
  /** Only match when no word character touches it on either side. */
  singleWord?: boolean;
  /** Matched in the normalized text, as the normalizer rewrites it (default: !special, as in HF). */
  normalized?: boolean;
  special?: boolean;
}

/** The tokenizer.json parts around the model. */
export interface Pipeline {
  normalizer?: Normalizer;
  preTokenizer: PreTokenizer;
  decoder: Decoder;
  /** Post-processor tokens around a single sequence, added by encode(text, { addSpecialTokens: true }). */
  template: Template;
}

export interface BpeOptions {
  /** GPT-2's ByteLevel pre-tokenizer settings; used when no `pipeline` is given. */
  addPrefixSpace: boolean;
  useRegex: boolean;
  /** Words already in the vocabulary skip merging (HF's ignore_merges). */
  ignoreMerges: boolean;
  unkId?: number;
  /** HF's unk_token by name (resolved in the vocabulary when unkId is not given). */
  unkToken?: string;
  /** Characters not in the vocabulary become their UTF-8 bytes' `<0xNN>` tokens. */
  byteFallback: boolean;
  /** Consecutive unknown characters make one unk token. */
  fuseUnk: boolean;
  /** Normalizer, pre-tokenizer, decoder and template; default GPT-2's (ByteLevel, nothing else). */
  pipeline?: Pipeline;
}

export interface EncodeOptions {
  /**
   * Add the post-processor's special tokens, as HF's encode(text, add_special_tokens=True) does:
   * Llama 3's <|begin_of_text|>, Llama 2's <s>, Gemma's <bos>. GPT-2 and Qwen2 add none. Default false.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens, as HF's decode(ids, skip_special_tokens=True). Default false: they are kept as text. */
  skipSpecialTokens?: boolean;
}

const DEFAULT_OPTIONS: BpeOptions = { addPrefixSpace: false, useRegex: true, ignoreMerges: false, byteFallback: false, fuseUnk: false };

export class Tokenizer {
  /** Pair key → merge rank (the last of duplicate merges wins, as in HF's merge map). */
  private readonly mergeRank = new Map<number, number>();
  /** Merge rank → id of the merged token. */
  private readonly mergedId: Int32Array;
  private readonly idToTokenTable: string[] = [];
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  /** Token text used when decoding a normalized added token whose normalized form differs (HF does this). */
  private readonly addedDecodeForm = new Map<number, string>();
  private readonly specialContents = new Set<string>();
  private readonly rawSplitter?: AddedSplitter;
  private readonly normalizedSplitter?: AddedSplitter;
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly cache = new Map<string, number[]>();
  private readonly options: BpeOptions;
  private readonly pipeline: Pipeline;
  private readonly unkId?: number;
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
    this.pipeline = this.options.pipeline ?? {
      preTokenizer: byteLevelPreTokenizer(this.options.addPrefixSpace, this.options.useRegex),
      decoder: byteLevelDecoder,
      template: { prefix: [], suffix: [] },
    };
    for (const [token, id] of vocab) {
      if (id >= ID_LIMIT) throw new TokenizerError(source, `vocabulary entry '${token}' has id ${id}; ids from ${ID_LIMIT} on are not supported`);
      this.idToTokenTable[id] = token;
    }
    this.mergedId = new Int32Array(merges.length);
    merges.forEach(([a, b], rank) => {
      for (const part of [a, b, a + b]) {
        if (!vocab.has(part)) throw new TokenizerError(source, `merge ${rank + 1} ('${a}' '${b}') uses '${part}', which is not in the vocabulary`);
      }
      this.mergeRank.set(vocab.get(a)! * ID_LIMIT + vocab.get(b)!, rank);
      this.mergedId[rank] = vocab.get(a + b)!;
    });
    if (merges.length >= ID_LIMIT) throw new TokenizerError(source, `${merges.length} merges; at most ${ID_LIMIT - 1} are supported`);
    for (let b = 0; b < 256; b++) this.byteIds[b] = vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) ?? -1;
    this.unkId = this.options.unkId ?? (this.options.unkToken === undefined ? undefined : vocab.get(this.options.unkToken));

    const raw: [AddedToken, string][] = [];
    const normalized: [AddedToken, string][] = [];
    for (const t of addedTokens) {
      this.addedById.set(t.id, t);
      this.addedByContent.set(t.content, t);
      if (t.special) this.specialContents.add(t.content);
      if (t.normalized ?? !t.special) {
        const form = this.pipeline.normalizer ? this.pipeline.normalizer(t.content) : t.content;
        if (form !== t.content) this.addedDecodeForm.set(t.id, form);
        normalized.push([t, form]);
      } else {
        raw.push([t, t.content]);
      }
    }
    if (raw.length > 0) this.rawSplitter = new AddedSplitter(raw);
    if (normalized.length > 0) this.normalizedSplitter = new AddedSplitter(normalized);
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

  /**
   * Token ids for `text`. By default without the post-processor's template tokens, i.e. HF's
   * encode(text, add_special_tokens=False); `{ addSpecialTokens: true }` gives HF's default
   * encode(text), which for Llama 3 / Llama 2 / Gemma starts with the BOS token. Special tokens
   * written in the text (e.g. "<|eot_id|>") are recognised either way, as in HF.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const { template, normalizer } = this.pipeline;
    const ids: number[] = options.addSpecialTokens ? [...template.prefix] : [];
    const input = wellFormed(text);
    for (const seg of split(this.rawSplitter, input)) {
      if (seg.id !== undefined) {
        ids.push(seg.id);
        continue;
      }
      const part = normalizer ? normalizer(input.slice(seg.start, seg.end)) : input.slice(seg.start, seg.end);
      for (const sub of split(this.normalizedSplitter, part)) {
        if (sub.id !== undefined) ids.push(sub.id);
        else this.encodeText(part.slice(sub.start, sub.end), seg.start === 0 && sub.start === 0, ids);
      }
    }
    if (options.addSpecialTokens) ids.push(...template.suffix);
    return ids;
  }

  /**
   * Text for `ids`, through the decoder as HF's decode(ids): special tokens are kept as text unless
   * `skipSpecialTokens`. Invalid UTF-8 becomes U+FFFD (byte-level) or one U+FFFD per byte token
   * (byte fallback), as in HF. An id outside the vocabulary is an error (HF would skip it).
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const added = this.addedById.get(id);
      const token = added ? this.addedDecodeForm.get(id) ?? added.content : this.idToTokenTable[id];
      if (token === undefined) throw new TokenizerError(this.source, `cannot decode id ${id} at position ${i}: not in the vocabulary (size ${this.vocabSize})`);
      if (options.skipSpecialTokens && this.specialContents.has(token)) continue;
      tokens.push(token);
    }
    return this.pipeline.decoder(tokens).join('');
  }

  private encodeText(segment: string, atStart: boolean, ids: number[]): void {
    if (segment === '') return;
    const pre = this.pipeline.preTokenizer;
    for (const text of pre.steps.length === 0 ? [segment] : preTokenize(pre, segment, atStart)) {
      const cached = this.cache.get(text);
      if (cached) {
        for (const id of cached) ids.push(id);
        continue;
      }
      const word = this.tokenize(pre.byteLevelLast ? toByteLevel(text) : text);
      if (text.length < WORD_CACHE_MAX_LENGTH) {
        if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
        this.cache.set(text, word);
      }
      for (const id of word) ids.push(id);
    }
  }

  /** HF's BPE::tokenize on one pre-tokenized piece. */
  private tokenize(word: string): number[] {
    if (word === '') return [];
    if (this.options.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    return this.mergeAll(this.initialSymbols(word));
  }

  /** One symbol per character; unknown ones become byte tokens, or unk (fused if fuse_unk), or nothing. */
  private initialSymbols(word: string): number[] {
    const symbols: number[] = [];
    let pendingUnk = false;
    const unk = (): number => {
      if (this.unkId === undefined) throw new TokenizerError(this.source, `unk_token '${this.options.unkToken}' is not in the vocabulary`);
      return this.unkId;
    };
    for (const ch of word) {
      const id = this.vocab.get(ch);
      if (id !== undefined) {
        if (pendingUnk) symbols.push(unk());
        pendingUnk = false;
        symbols.push(id);
        continue;
      }
      if (this.options.byteFallback) {
        const bytes = utf8.encode(ch);
        if (bytes.every((b) => this.byteIds[b]! >= 0)) {
          // As in HF, a waiting unk is not put in first: it follows these byte tokens.
          for (const b of bytes) symbols.push(this.byteIds[b]!);
          continue;
        }
      }
      if (this.unkId === undefined && this.options.unkToken === undefined) continue; // HF drops it
      if (pendingUnk && !this.options.fuseUnk) symbols.push(unk());
      else if (!pendingUnk) unk();
      pendingUnk = true;
    }
    if (pendingUnk) symbols.push(unk());
    return symbols;
  }

  /**
   * HF's Word::merge_all: repeatedly merge the pair with the lowest rank (leftmost first), with a
   * heap of (rank, position) and a linked list of symbols, so long words stay O(n log n).
   */
  private mergeAll(symbols: number[]): number[] {
    const n = symbols.length;
    if (n < 2 || this.mergeRank.size === 0) return symbols;
    if (n >= POS_LIMIT) throw new TokenizerError(this.source, `a piece of ${n} symbols is too long to merge`);
    const c = Int32Array.from(symbols);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new MinHeap();
    const rankOf = (left: number, right: number) => this.mergeRank.get(left * ID_LIMIT + right);
    for (let i = 0; i + 1 < n; i++) {
      const r = rankOf(c[i]!, c[i + 1]!);
      if (r !== undefined) heap.push(r * POS_LIMIT + i);
    }
    for (let top = heap.pop(); top !== undefined; top = heap.pop()) {
      const rank = Math.floor(top / POS_LIMIT);
      const pos = top - rank * POS_LIMIT;
      const right = next[pos]!;
      if (!alive[pos] || right === -1) continue;
      const current = rankOf(c[pos]!, c[right]!);
      const merged = this.mergedId[rank]!;
      if (current === undefined || this.mergedId[current] !== merged) continue; // stale entry
      c[pos] = merged;
      alive[right] = 0;
      next[pos] = next[right]!;
      if (next[pos] !== -1) prev[next[pos]!] = pos;
      if (prev[pos]! >= 0) {
        const r = rankOf(c[prev[pos]!]!, merged);
        if (r !== undefined) heap.push(r * POS_LIMIT + prev[pos]!);
      }
      if (next[pos] !== -1) {
        const r = rankOf(merged, c[next[pos]!]!);
        if (r !== undefined) heap.push(r * POS_LIMIT + pos);
      }
    }
    const out: number[] = [];
    for (let i = 0; i !== -1; i = next[i]!) out.push(c[i]!);
    return out;
  }
}

const utf8 = new TextEncoder();

/** Lone surrogates become U+FFFD, as the UTF-8 encoding of the text would make them. */
function wellFormed(text: string): string {
  return /\p{Cs}/u.test(text) ? text.replace(/\p{Cs}/gu, '\ufffd') : text;
}

class MinHeap {
  private readonly a: number[] = [];

  push(x: number): void {
    const a = this.a;
    let i = a.push(x) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= x) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = x;
  }

  pop(): number | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const child = r < a.length && a[r]! < a[l]! ? r : l;
      if (a[child]! >= last) break;
      a[i] = a[child]!;
      i = child;
    }
    a[i] = last;
    return top;
  }
}

interface Segment {
  start: number;
  end: number;
  /** Set when the segment is an added token. */
  id?: number;
}

function split(splitter: AddedSplitter | undefined, text: string): Segment[] {
  if (text === '') return [];
  return splitter ? splitter.split(text) : [{ start: 0, end: text.length }];
}

const WS_CHAR = new RegExp(`^[${WS}]$`, 'u');
/** Rust regex's Unicode \w, which `tokenizers` uses for single_word. */
const WORD_CHAR = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;

/** HF's AddedVocabulary::find_matches: leftmost-longest matches, then single_word, lstrip, rstrip. */
class AddedSplitter {
  private readonly pattern: RegExp;
  private readonly byText = new Map<string, AddedToken>();

  constructor(entries: [AddedToken, string][]) {
    const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
    const sorted = [...entries].sort(([ta, a], [tb, b]) => b.length - a.length || ta.id - tb.id);
    for (const [token, text] of sorted) if (text !== '' && !this.byText.has(text)) this.byText.set(text, token);
    this.pattern = new RegExp([...this.byText.keys()].map(escape).join('|'), 'gu');
  }

  split(text: string): Segment[] {
    const out: Segment[] = [];
    let startOffset = 0;
    for (const m of text.matchAll(this.pattern)) {
      const token = this.byText.get(m[0])!;
      let start = m.index;
      let stop = start + m[0].length;
      if (token.singleWord) {
        const before = start > 0 ? String.fromCodePoint(codePointBefore(text, start)) : '';
        const after = stop < text.length ? String.fromCodePoint(text.codePointAt(stop)!) : '';
        if (WORD_CHAR.test(before) || WORD_CHAR.test(after)) continue;
      }
      if (token.lstrip) {
        let s = start;
        while (s > 0 && WS_CHAR.test(text[s - 1]!)) s--; // White_Space is all in the BMP
        start = Math.max(s, startOffset);
      }
      if (token.rstrip) while (stop < text.length && WS_CHAR.test(text[stop]!)) stop++;
      if (startOffset < start) out.push({ start: startOffset, end: start });
      out.push({ start, end: stop, id: token.id });
      startOffset = stop;
    }
    if (startOffset < text.length) out.push({ start: startOffset, end: text.length });
    return out;
  }
}

function codePointBefore(text: string, index: number): number {
  const low = text.charCodeAt(index - 1);
  if (index >= 2 && low >= 0xdc00 && low <= 0xdfff) {
    const high = text.charCodeAt(index - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.codePointAt(index - 2)!;
  }
  return low;
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
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('not a JSON object');
  const root = json as Record<string, unknown>;
  const model = (root.model ?? {}) as Record<string, unknown>;
  if (model.type !== undefined && model.type !== 'BPE') fail(`model type '${String(model.type)}' is not supported (only BPE)`);
  if (model.continuing_subword_prefix || model.end_of_word_suffix) fail('BPE with a subword prefix or end-of-word suffix is not supported');
  if (typeof model.dropout === 'number' && model.dropout > 0) fail('BPE dropout is not supported');
  if (!Array.isArray(model.merges)) fail(`model.merges is missing or not a list`);
  if (model.unk_token !== undefined && model.unk_token !== null && typeof model.unk_token !== 'string') fail('model.unk_token is not a string');

  let pipeline: Pipeline;
  try {
    pipeline = {
      normalizer: parseNormalizer(root.normalizer),
      preTokenizer: parsePreTokenizer(root.pre_tokenizer),
      decoder: parseDecoder(root.decoder),
      template: parsePostProcessor(root.post_processor),
    };
  } catch (e) {
    if (e instanceof ComponentError) return fail(e.message);
    throw e;
  }
  const vocab = parseVocab(model.vocab, source);
  const merges = (model.merges as unknown[]).map((m, i) => parseMerge(m, i, source));
  const added = parseAddedTokens(root.added_tokens, source);
  return new Tokenizer(source, vocab, merges, added, {
    ignoreMerges: model.ignore_merges === true,
    unkToken: typeof model.unk_token === 'string' ? model.unk_token : undefined,
    byteFallback: model.byte_fallback === true,
    fuseUnk: model.fuse_unk === true,
    pipeline,
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
    const special = e.special === true;
    return {
      id: e.id,
      content: e.content,
      lstrip: e.lstrip === true,
      rstrip: e.rstrip === true,
      singleWord: e.single_word === true,
      normalized: typeof e.normalized === 'boolean' ? e.normalized : !special,
      special,
    };
  });
}
