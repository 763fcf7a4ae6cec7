// Token data for language-model training: read from .json (id array), .bin (llm.c) or .txt, then cut
// into fixed-length training windows.

import type { Tokenizer } from '../tokenizer/bpe.ts';
import { decodeText } from '../util/utf8.ts';

export class TokenDataError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'TokenDataError';
  }
}

export type TokenFileKind = '.json' | '.bin' | '.txt';

/** llm.c's token file: 256 int32 header words (magic, version, count), then the ids. */
export const LLMC_MAGIC = 20240520;
const LLMC_VERSION_UINT16 = 1;
const LLMC_HEADER_BYTES = 256 * 4;

/** The kind of a token file, from its name's extension. */
export function tokenFileKind(name: string): TokenFileKind {
  const ext = name.slice(name.lastIndexOf('.')).toLowerCase();
  if (ext === '.json' || ext === '.bin' || ext === '.txt') return ext;
  throw new TokenDataError(name, `unknown token file type '${ext}' (expected .json, .bin or .txt)`);
}

/** Token ids from a file's bytes; a .txt file needs the tokenizer to encode it. Text is decoded as src/util/utf8.ts says (invalid UTF-8 → U+FFFD). */
export function parseTokenFile(bytes: Uint8Array, source: string, kind: TokenFileKind, tokenizer?: Pick<Tokenizer, 'encode'>): Int32Array {
  switch (kind) {
    case '.json': return parseJsonTokens(decodeText(bytes), source);
    case '.bin': return parseLlmcTokens(bytes, source);
    case '.txt': {
      if (!tokenizer) throw new TokenDataError(source, 'a .txt file needs a tokenizer to turn its text into tokens');
      return Int32Array.from(tokenizer.encode(decodeText(bytes)));
    }
  }
}

function parseJsonTokens(text: string, source: string): Int32Array {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new TokenDataError(source, `not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(raw)) throw new TokenDataError(source, 'expected a JSON array of token ids');
  const ids = new Int32Array(raw.length);
  raw.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new TokenDataError(source, `element ${i} is ${JSON.stringify(v)}, not a non-negative integer token id`);
    }
    ids[i] = v;
  });
  return ids;
}

function parseLlmcTokens(bytes: Uint8Array, source: string): Int32Array {
  if (bytes.length < LLMC_HEADER_BYTES) throw new TokenDataError(source, `file is ${bytes.length} bytes, shorter than llm.c's ${LLMC_HEADER_BYTES}-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [magic, version, count] = [0, 1, 2].map((i) => view.getInt32(i * 4, true)) as [number, number, number];
  if (magic !== LLMC_MAGIC) throw new TokenDataError(source, `bad magic number ${magic} (an llm.c token file starts with ${LLMC_MAGIC})`);
  if (version !== LLMC_VERSION_UINT16) throw new TokenDataError(source, `llm.c token file version ${version} is not supported (only version ${LLMC_VERSION_UINT16}: uint16 tokens)`);
  if (count < 0) throw new TokenDataError(source, `header token count ${count} is negative`);
  const needed = LLMC_HEADER_BYTES + 2 * count;
  if (bytes.length < needed) throw new TokenDataError(source, `header says ${count} tokens (${needed} bytes) but the file is only ${bytes.length} bytes: truncated?`);
  const ids = new Int32Array(count);
  for (let i = 0; i < count; i++) ids[i] = view.getUint16(LLMC_HEADER_BYTES + 2 * i, true);
  return ids;
}

/** An llm.c version-1 token file (uint16 ids). */
export function writeLlmcTokenFile(ids: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(LLMC_HEADER_BYTES + 2 * ids.length);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, LLMC_MAGIC, true);
  view.setInt32(4, LLMC_VERSION_UINT16, true);
  view.setInt32(8, ids.length, true);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new Error(`writeLlmcTokenFile: token ${id} at position ${i} does not fit in uint16`);
    view.setUint16(LLMC_HEADER_BYTES + 2 * i, id, true);
  }
  return bytes;
}

/** Error naming the first id that the vocabulary cannot embed. */
export function checkVocab(ids: ArrayLike<number>, vocabSize: number, source: string): void {
  for (let i = 0; i < ids.length; i++) {
    if (ids[i]! >= vocabSize || ids[i]! < 0) throw new TokenDataError(source, `token id ${ids[i]} at position ${i} is out of range for a vocabulary of ${vocabSize}`);
  }
}

/**
 * Non-overlapping training windows of seq+1 tokens from the start of the data: window i covers
 * tokens [i·(seq+1), (i+1)·(seq+1)); the partial tail is dropped. All arrays are views of `tokens`.
 */
export interface TokenWindows {
  count: number;
  seq: number;
  /** count·(seq+1) tokens, window after window. */
  tokens: Int32Array;
  /** The window's first seq tokens. */
  inputs(i: number): Int32Array;
  /** The window's last seq tokens: inputs shifted by one. */
  targets(i: number): Int32Array;
}

export function windows(ids: Int32Array | number[], seq: number, source: string): TokenWindows {
  if (!Number.isInteger(seq) || seq < 1) throw new TokenDataError(source, `sequence length ${seq} must be a positive integer`);
  const span = seq + 1;
  const count = Math.floor(ids.length / span);
  if (count === 0) throw new TokenDataError(source, `${ids.length} tokens are too few for one window of ${span} tokens (sequence length ${seq} + 1)`);
  const all = ids instanceof Int32Array ? ids : Int32Array.from(ids);
  const tokens = all.subarray(0, count * span);
  const window = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= count) throw new RangeError(`${source}: window ${i} does not exist (${count} windows)`);
    return tokens.subarray(i * span, (i + 1) * span);
  };
  return {
    count,
    seq,
    tokens,
    inputs: (i) => window(i).subarray(0, seq),
    targets: (i) => window(i).subarray(1),
  };
}
