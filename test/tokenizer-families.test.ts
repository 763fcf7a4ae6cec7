// Llama 3 / Qwen2 (byte-level BPE with Split regexes) and Llama 2 / Gemma (SentencePiece-style BPE
// with byte fallback) tokenizer.json files: our encode/decode against the ids and strings recorded
// from Hugging Face `tokenizers` (test/fixtures/make_tokenizer_fixtures.py), then clear errors for
// what is not supported, then (only where a Python with `tokenizers` is at hand) random strings
// checked against the library itself.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Tokenizer, TokenizerError } from '../src/tokenizer/bpe.ts';
import { onigurumaToJs } from '../src/tokenizer/pipeline.ts';
import { findPython } from './util/python.ts';

const fixtures = new URL('./fixtures/tokenizers/', import.meta.url);
const kinds = readdirSync(fixtures).filter((k) => existsSync(new URL(`${k}/expected.json`, fixtures))).sort();
const readJson = (kind: string, file: string) => JSON.parse(readFileSync(new URL(`${kind}/${file}`, fixtures), 'utf8'));
const load = (kind: string, edit?: (json: any) => void) => {
  const json = readJson(kind, 'tokenizer.json');
  edit?.(json);
  return Tokenizer.fromJSON(json, `${kind}/tokenizer.json`);
};

interface Case { text: string; ids: number[]; tokens: string[]; ids_with_special: number[]; decoded: string; decoded_skip_special: string }
interface Expected { library: string; kind: string; vocab_size: number; cases: Case[]; decodes: { ids: number[]; decoded: string; decoded_skip_special: string }[] }

const label = (text: string) => JSON.stringify(text.length > 40 ? text.slice(0, 40) + '…' : text);

it('has the six fixture kinds', () => {
  expect(kinds).toEqual(['gemma', 'llama2', 'llama2-metaspace', 'llama3', 'qwen2', 'sp-partial-bytes']);
});

for (const kind of kinds) {
  describe(`${kind}: tokenizer.json matches Hugging Face tokenizers`, () => {
    const expected: Expected = readJson(kind, 'expected.json');
    const tok = load(kind);
    // HF's Encoding.tokens shows an added token as the text it matched (" <mask> " with lstrip/rstrip).
    const added = new Set((readJson(kind, 'tokenizer.json').added_tokens as { id: number }[]).map((t) => t.id));

    it('has the same vocabulary size', () => {
      expect(tok.vocabSize).toBe(expected.vocab_size);
    });

    for (const c of expected.cases) {
      it(`encodes and decodes ${label(c.text)}`, () => {
        expect(tok.encode(c.text)).toEqual(c.ids);
        expect(c.ids.map((id, i) => (added.has(id) ? c.tokens[i] : tok.idToToken(id)))).toEqual(c.tokens);
        expect(tok.encode(c.text, { addSpecialTokens: true })).toEqual(c.ids_with_special);
        expect(tok.decode(c.ids_with_special)).toBe(c.decoded);
        expect(tok.decode(c.ids_with_special, { skipSpecialTokens: true })).toBe(c.decoded_skip_special);
      });
    }

    it('decodes arbitrary id lists (split UTF-8, byte tokens, special tokens) as the library does', () => {
      for (const d of expected.decodes) {
        expect(tok.decode(d.ids), JSON.stringify(d.ids)).toBe(d.decoded);
        expect(tok.decode(d.ids, { skipSpecialTokens: true }), JSON.stringify(d.ids)).toBe(d.decoded_skip_special);
      }
    });

    it('gives the same ids again from its cache', () => {
      for (const c of expected.cases) expect(tok.encode(c.text)).toEqual(c.ids);
    });
  });
}

describe('family specifics', () => {
  it('Llama 3: <|begin_of_text|> only with addSpecialTokens; special tokens in the text always', () => {
    const tok = load('llama3');
    const bos = tok.tokenToId('<|begin_of_text|>')!;
    const hi = tok.encode('Hi');
    expect(tok.encode('Hi', { addSpecialTokens: true })).toEqual([bos, ...hi]);
    expect(tok.encode('<|eot_id|>')).toEqual([tok.tokenToId('<|eot_id|>')]);
    expect(tok.decode([bos, ...hi])).toBe('<|begin_of_text|>Hi');
    expect(tok.decode([bos, ...hi], { skipSpecialTokens: true })).toBe('Hi');
  });

  it('Llama 3: ignore_merges takes a whole word found in the vocabulary', () => {
    const word = ' semfreeze'; // in the vocabulary, but no merge builds it
    const id = load('llama3').tokenToId('\u0120semfreeze')!;
    expect(load('llama3').encode(word)).toEqual([id]);
    const merged = load('llama3', (json) => { json.model.ignore_merges = false; }).encode(word);
    expect(merged.length).toBeGreaterThan(1);
    expect(merged).not.toContain(id);
  });

  it('Qwen2: NFC makes the NFD spelling encode like the NFC one', () => {
    const tok = load('qwen2');
    expect(tok.encode('cafe\u0301')).toEqual(tok.encode('caf\u00e9'));
    const raw = load('qwen2', (json) => { json.normalizer = null; });
    expect(raw.encode('cafe\u0301')).not.toEqual(raw.encode('caf\u00e9'));
  });

  it('Llama 2: text outside the vocabulary falls back to <0xNN> byte tokens and decodes back', () => {
    const tok = load('llama2');
    const ids = tok.encode('\u4e2d');
    expect(ids.map((id) => tok.idToToken(id))).toEqual(['\u2581', '<0xE4>', '<0xB8>', '<0xAD>']);
    expect(tok.decode(ids)).toBe('\u4e2d');
    expect(tok.decode(ids.slice(0, 3))).toBe('\ufffd\ufffd'); // one U+FFFD per byte of invalid UTF-8, as HF
    expect(tok.encode('x', { addSpecialTokens: true })[0]).toBe(tok.tokenToId('<s>'));
  });

  it('Gemma: no "▁" is prepended, and the decoder strips no space', () => {
    const tok = load('gemma');
    expect(tok.idToToken(tok.encode('Hello')[0]!)!.startsWith('\u2581')).toBe(false);
    expect(tok.decode(tok.encode(' Hello'))).toBe(' Hello');
    expect(tok.encode('x', { addSpecialTokens: true })[0]).toBe(tok.tokenToId('<bos>'));
  });

  it('sentencepiece style: unknown characters without byte tokens become one fused <unk>', () => {
    const tok = load('sp-partial-bytes');
    const unk = tok.tokenToId('<unk>')!;
    expect(tok.encode('\u4e2d\u6587\u00a7').filter((id) => id === unk)).toEqual([unk]);
    const unfused = load('sp-partial-bytes', (json) => { json.model.fuse_unk = false; });
    expect(unfused.encode('\u4e2d\u6587\u00a7').filter((id) => id === unk)).toEqual([unk, unk, unk]);
  });

  it('without byte_fallback, Llama 2 gives <unk> for what it cannot spell', () => {
    const tok = load('llama2', (json) => { json.model.byte_fallback = false; });
    const unk = tok.tokenToId('<unk>')!;
    expect(tok.encode('\u4e2d\u6587')).toEqual([tok.tokenToId('\u2581'), unk]);
  });
});

describe('Oniguruma regexes as JavaScript', () => {
  const matches = (pattern: string, text: string) => [...text.matchAll(onigurumaToJs(pattern, 'p'))].map((m) => m[0]);

  // Expected values from `tokenizers`' Split(Regex(...)) on the same text (Oniguruma).
  it('matches Oniguruma on \\s, ., ^, $, \\d and (?i:...) case folding', () => {
    expect(matches('\\s', 'a\u0085b\ufeffc\u00a0d\u200be')).toEqual(['\u0085', '\u00a0']);
    expect(matches('.', 'a\nb\r')).toEqual(['a', 'b', '\r']);
    expect(matches('^a|b$', 'a\nab\nb\r\nb')).toEqual(['a', 'a', 'b', 'b']);
    expect(matches('\\d', '1\u0663x\u00b2')).toEqual(['1', '\u0663']);
    expect(matches("(?i:'s|k)", "'s'S'\u017fkK\u212a")).toEqual(["'s", "'S", "'\u017f", 'k', 'K', '\u212a']);
  });

  it('refuses what it cannot translate faithfully, naming the construct', () => {
    expect(() => onigurumaToJs('\\bword', 'p')).toThrow(/uses \\b, which is not supported/);
    expect(() => onigurumaToJs('\\w+', 'p')).toThrow(/uses \\w/);
    expect(() => onigurumaToJs('a++', 'p')).toThrow(/possessive quantifier/);
    expect(() => onigurumaToJs('(?>a)', 'p')).toThrow(/group syntax/);
    expect(() => onigurumaToJs('(?i:ss)', 'p')).toThrow(/folds to one character/);
    expect(() => onigurumaToJs('[[:alpha:]]', 'p')).toThrow(/nested character class/);
  });
});

describe('unsupported tokenizer.json components', () => {
  const llama3 = () => readJson('llama3', 'tokenizer.json');
  const attempt = (edit: (json: any) => void) => () => {
    const json = llama3();
    edit(json);
    return Tokenizer.fromJSON(json, 'models/x/tokenizer.json');
  };

  it('are refused with one TokenizerError naming the file and the component', () => {
    expect(attempt((j) => { j.normalizer = { type: 'BertNormalizer' }; })).toThrow(TokenizerError);
    expect(attempt((j) => { j.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Precompiled', precompiled_charsmap: '' }] }; }))
      .toThrow(/^models\/x\/tokenizer\.json: normalizer\.normalizers\[1\] "Precompiled" is not supported \(supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, ByteLevel, Sequence\)$/);
    expect(attempt((j) => { j.pre_tokenizer.pretokenizers[1] = { type: 'Whitespace' }; }))
      .toThrow(/^models\/x\/tokenizer\.json: pre_tokenizer\.pretokenizers\[1\] "Whitespace" is not supported \(supported: ByteLevel, Split, Metaspace, Digits, Sequence\)$/);
    expect(attempt((j) => { j.decoder = { type: 'WordPiece', prefix: '##' }; }))
      .toThrow(/^models\/x\/tokenizer\.json: decoder "WordPiece" is not supported \(supported: /);
    expect(attempt((j) => { j.post_processor.processors[1] = { type: 'Mystery' }; }))
      .toThrow(/^models\/x\/tokenizer\.json: post_processor\.processors\[1\] "Mystery" is not supported \(supported: TemplateProcessing, /);
    expect(attempt((j) => { j.model.type = 'Unigram'; })).toThrow(/^models\/x\/tokenizer\.json: model type 'Unigram' is not supported \(only BPE\)$/);
    expect(attempt((j) => { j.model.dropout = 0.1; })).toThrow(/^models\/x\/tokenizer\.json: BPE dropout is not supported$/);
    expect(attempt((j) => { j.pre_tokenizer.pretokenizers[0].pattern.Regex = "'s|\\w+"; }))
      .toThrow(/^models\/x\/tokenizer\.json: pre_tokenizer\.pretokenizers\[0\]\.pattern: regex "'s\|\\\\w\+" uses \\w, which is not supported$/);
    expect(attempt((j) => { j.pre_tokenizer.pretokenizers[0].behavior = 'Sideways'; })).toThrow(/pre_tokenizer\.pretokenizers\[0\]\.behavior: is "Sideways"/);
  });

  it('names a missing unk token when one is needed', () => {
    const json = readJson('llama2', 'tokenizer.json');
    json.model.byte_fallback = false;
    json.model.unk_token = '<nope>';
    const tok = Tokenizer.fromJSON(json, 'l2.json');
    expect(tok.encode('Hello')).toEqual(load('llama2').encode('Hello'));
    expect(() => tok.encode('\u4e2d')).toThrow(/^l2\.json: unk_token '<nope>' is not in the vocabulary$/);
  });
});

// --- interop: the library itself, on random strings (skipped without a Python that has `tokenizers`) ---

// SEMFREEZE_PYTHON, when set, is the only Python tried (set it to a missing path to skip these tests).
const python = findPython('tokenizers');
const INTEROP_TEXTS = Number(process.env.SEMFREEZE_INTEROP_TEXTS ?? 300);

const INTEROP = `
import json, sys
from tokenizers import Tokenizer
req = json.load(sys.stdin)
tok = Tokenizer.from_str(req["json"])
out = []
for t in req["texts"]:
    ids = tok.encode(t, add_special_tokens=True).ids
    out.append([tok.encode(t, add_special_tokens=False).ids, ids, tok.decode(ids, skip_special_tokens=False), tok.decode(ids, skip_special_tokens=True)])
json.dump(out, sys.stdout)
`;

function randomTexts(seed: number, contents: string[], n: number): string[] {
  let state = seed;
  const rand = (k: number) => { state = (state * 1103515245 + 12345) % 2 ** 31; return state % k; };
  const atoms = [
    'the', ' the', 'License', ' licence', 'Hello', 'world', "'s", "'S", "'ll", "'\u017f", ' ', '  ', '   ', '\n', '\n\n', '\r\n', '\t',
    '1', '23', '4567', '3.14', '\u0663', 'caf\u00e9', 'cafe\u0301', '\u00c5', 'A\u030a', '\u4e2d\u6587', '\u65e5\u672c', '\ud83d\ude00',
    '\ud83d\udc69\u200d\ud83d\udc67', '\u00a0', '\u0085', '\u3000', '\u2581', '<0x41>', '\u0120', '!', '?!', '...', '(', ')', '"', '#', '{',
    '\u03b1\u03b2', '\u043f\u0440\u0438', '\u0167', '\u00a7', 'x', 'Z', '_', '-', '\u00ff', '\u0000', ...contents,
  ];
  return Array.from({ length: n }, () => Array.from({ length: 1 + rand(12) }, () => atoms[rand(atoms.length)]).join(''));
}

/** Our ids and decodes against the library's for one tokenizer.json text. */
function compareWithLibrary(json: any, name: string, texts: string[]): void {
  const run = spawnSync(python!, ['-c', INTEROP], { input: JSON.stringify({ json: JSON.stringify(json), texts }), encoding: 'utf8', maxBuffer: 64 << 20 });
  expect(run.status, run.stderr).toBe(0);
  const results: [number[], number[], string, string][] = JSON.parse(run.stdout);
  const tok = Tokenizer.fromJSON(json, name);
  texts.forEach((text, i) => {
    const [ids, withSpecial, decoded, skipped] = results[i]!;
    const what = `${name}: ${JSON.stringify(text)}`;
    expect(tok.encode(text), what).toEqual(ids);
    expect(tok.encode(text, { addSpecialTokens: true }), what).toEqual(withSpecial);
    expect(tok.decode(withSpecial), what).toBe(decoded);
    expect(tok.decode(withSpecial, { skipSpecialTokens: true }), what).toBe(skipped);
  });
}

const contentsOf = (json: any) => (json.added_tokens as { content: string }[]).map((t) => t.content);

describe.skipIf(!python)('interop with the tokenizers library on random strings', () => {
  for (const kind of kinds) {
    it(`${kind}: same ids and decodes as the library`, () => {
      const json = readJson(kind, 'tokenizer.json');
      compareWithLibrary(json, kind, randomTexts(kinds.indexOf(kind) + 7, contentsOf(json), INTEROP_TEXTS));
    }, 120_000);
  }

  // Components the fixtures do not use, swapped into them.
  const split = (behavior: string, invert = false) => (j: any) => { Object.assign(j.pre_tokenizer.pretokenizers[0], { behavior, invert }); };
  const variants: [string, string, (json: any) => void][] = [
    ['llama3', 'Split Removed', split('Removed')],
    ['llama3', 'Split MergedWithPrevious', split('MergedWithPrevious')],
    ['llama3', 'Split MergedWithNext', split('MergedWithNext')],
    ['llama3', 'Split Contiguous inverted', split('Contiguous', true)],
    ['llama3', 'Split Isolated inverted', split('Isolated', true)],
    ['llama3', 'Split with ^ $ . [^...] {n,m}? and a String pattern', (j) => {
      j.pre_tokenizer.pretokenizers.splice(0, 1,
        { type: 'Split', pattern: { Regex: '^.|.$|[^a-z\\s]{2,3}?|\\d+' }, behavior: 'Isolated', invert: false },
        { type: 'Split', pattern: { String: ' ' }, behavior: 'MergedWithPrevious', invert: false });
    }],
    ['llama3', 'Digits + ByteLevel(add_prefix_space, use_regex)', (j) => {
      j.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }] };
    }],
    ['llama3', 'Digits contiguous', (j) => { j.pre_tokenizer.pretokenizers.unshift({ type: 'Digits', individual_digits: false }); }],
    ['llama3', 'ByteLevel normalizer, no pre-tokenizer', (j) => { j.normalizer = { type: 'ByteLevel' }; j.pre_tokenizer = null; }],
    ['llama3', 'RobertaProcessing', (j) => {
      j.post_processor = { type: 'RobertaProcessing', sep: ['<|end_of_text|>', 701], cls: ['<|begin_of_text|>', 700], trim_offsets: true, add_prefix_space: false };
    }],
    ['llama3', 'BertProcessing', (j) => { j.post_processor = { type: 'BertProcessing', sep: ['<|end_of_text|>', 701], cls: ['<|begin_of_text|>', 700] }; }],
    ['qwen2', 'NFKC, Lowercase, Strip, Replace(Regex)', (j) => {
      j.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' }, { type: 'Strip', strip_left: true, strip_right: true }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }] };
    }],
    ['qwen2', 'NFD, Strip left only', (j) => { j.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFD' }, { type: 'Strip', strip_left: true, strip_right: false }] }; }],
    ['llama2', 'Metaspace always, split', (j) => {
      j.normalizer = null;
      j.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
      j.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
    }],
    ['llama2', 'Metaspace never, split', (j) => {
      j.normalizer = null;
      j.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true };
      j.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true };
    }],
    ['llama2', 'no decoder', (j) => { j.decoder = null; }],
    // (the library panics when Strip's stop meets an empty string, so no added tokens in these texts)
    ['gemma', 'Strip(" ", 2, 1) decoder', (j) => { j.decoder.decoders.push({ type: 'Strip', content: ' ', start: 2, stop: 1 }); j.added_tokens = []; }],
    ['llama2', 'fuse_unk false, no byte_fallback', (j) => { j.model.fuse_unk = false; j.model.byte_fallback = false; }],
    ['qwen2', 'added tokens with lstrip, rstrip, single_word', (j) => {
      Object.assign(j.added_tokens[0], { lstrip: true, single_word: true });
      Object.assign(j.added_tokens[3], { rstrip: true, lstrip: true });
    }],
  ];
  variants.forEach(([kind, name, edit], k) => {
    it(`${kind} with ${name}`, () => {
      const json = readJson(kind, 'tokenizer.json');
      edit(json);
      compareWithLibrary(json, `${kind} (${name})`, randomTexts(100 + k, contentsOf(json), Math.ceil(INTEROP_TEXTS / 2)));
    }, 120_000);
  });
});
