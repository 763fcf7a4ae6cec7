// The real corpora (issue 9): the pure transforms on hand-made inputs, and `semfreeze data build` on
// the installed packages: deterministic, splits disjoint, classification lines in analyze's format.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brownPassages, detokenizeBrown, emailText, isHeldOut, spread, toJsonl } from '../src/data/corpus.ts';
import { parseClassificationJsonl } from '../src/data/classification.ts';
import { describeRun, removeDir, runCli, stdoutJson, tempDir } from './util/cli.ts';

describe('corpus transforms', () => {
  it('strips Brown tags and rejoins punctuation, quotes and contractions', () => {
    const tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` it's/pps+bez fine/jj ''/'' ,/, and/cc (/( so/rb )/) didn't/dod* stop/vb ./.\n\n\tAnd/cc then/rb ?/.\n";
    expect(detokenizeBrown(tagged)).toBe('The jury said "it\'s fine", and (so) didn\'t stop. And then?');
  });

  it('keeps slashes inside words (the tag follows the last one)', () => {
    expect(detokenizeBrown('and/or/cc 1/2/cd')).toBe('and/or 1/2');
  });

  it('groups Brown sentences into passages of at least n words', () => {
    const tagged = ['a/at b/nn ./.', 'c/at d/nn ./.', 'e/at f/nn ./.'].join('\n\n');
    expect(brownPassages(tagged, 5)).toEqual(['a b. c d.']);
    expect(brownPassages(tagged, 3)).toEqual(['a b.', 'c d.', 'e f.']);
  });

  it('reduces an e-mail to its subject and visible body', () => {
    const raw = 'From: x@y\r\nSubject:  Cheap <b>pills</b>\r\nX-Spam: yes\r\n\r\n<html><style>p{}</style><p>Buy&nbsp;now &amp; save</p>\n\n\nbye</html>';
    expect(emailText(raw, 1000)).toBe('Subject: Cheap <b>pills</b>\nBuy now & save bye');
    expect(emailText(`Subject: s\n\n${'word '.repeat(100)}`, 40)).toBe('Subject: s\nword word word word word word');
  });

  it('holds out every n-th item and spreads a cap evenly', () => {
    expect([0, 1, 2, 3, 4, 5, 9].filter((i) => isHeldOut(i, 5))).toEqual([4, 9]);
    expect(spread([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 3)).toEqual([0, 3, 6]);
    expect(spread([1, 2], 5)).toEqual([1, 2]);
    expect(parseClassificationJsonl(toJsonl([{ text: 'a\n"b"', label: 'x' }]), 't').map((e) => [e.text, e.label])).toEqual([['a\n"b"', 'x']]);
  });
});

describe('semfreeze data build', () => {
  let dir: string;
  beforeAll(() => { dir = tempDir('data'); });
  afterAll(() => removeDir(dir));

  it('writes every data set deterministically, with disjoint splits', async () => {
    const a = await runCli(['data', 'build', 'all', '--out', join(dir, 'a'), '--json'], { timeoutMs: 120_000 });
    expect(a.code, describeRun(a)).toBe(0);
    const b = await runCli(['data', 'build', 'prose', 'code', 'spam', 'genre', '--out', join(dir, 'b')], { timeoutMs: 120_000 });
    expect(b.code, describeRun(b)).toBe(0);
    const manifest = stdoutJson<{ dataset: string; split: string; path: string; items: number; bytes: number }[]>(a);
    expect(manifest.map((m) => `${m.dataset}/${m.split}`)).toEqual(['prose/train', 'prose/heldout-sotu', 'prose/heldout-brown', 'code/train', 'code/heldout', 'spam/train', 'spam/heldout', 'genre/train', 'genre/heldout']);
    for (const m of manifest) {
      const text = readFileSync(m.path, 'utf8');
      expect(readFileSync(m.path.replace(join(dir, 'a'), join(dir, 'b')), 'utf8')).toBe(text);
      expect(Buffer.byteLength(text)).toBe(m.bytes);
      expect(m.items).toBeGreaterThan(0);
    }
    const read = (d: string, f: string) => readFileSync(join(dir, 'a', d, f), 'utf8');
    const prose = read('prose', 'train.txt');
    expect(prose.length).toBeGreaterThan(10_000_000);
    // Speeches from 2000 on and the adventure genre never reach the training text.
    for (const line of read('prose', 'heldout-sotu.txt').split('\n\n').slice(0, 5)) expect(prose.includes(line.slice(0, 200))).toBe(false);
    for (const doc of read('prose', 'heldout-brown.txt').split('\n\n').slice(0, 5)) expect(prose.includes(doc.slice(0, 200))).toBe(false);
    const codeTrain = read('code', 'train.txt');
    // Held out by whole file (the lib files repeat some declarations, so compare whole files).
    const codeFiles = read('code', 'heldout.txt').split('\n\n/*! ').slice(1);
    expect(codeFiles.length).toBeGreaterThan(3);
    for (const f of codeFiles) expect(codeTrain.includes(f)).toBe(false);
    // Classification: balanced spam/ham, five genres; held-out genre passages never in the prose training text.
    const spam = parseClassificationJsonl(read('spam', 'train.jsonl'), 'spam');
    expect(spam.filter((e) => e.label === 'spam').length).toBe(spam.filter((e) => e.label === 'ham').length);
    const genre = parseClassificationJsonl(read('genre', 'heldout.jsonl'), 'genre');
    expect(new Set(genre.map((e) => e.label))).toEqual(new Set(['news', 'religion', 'hobbies', 'science', 'romance']));
    for (const e of genre.slice(0, 20)) expect(prose.includes(e.text.replace(/\nGenre:$/, '').slice(0, 150))).toBe(false);
  });

  it('refuses an unknown data set', async () => {
    const r = await runCli(['data', 'build', 'poetry', '--out', join(dir, 'c')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unknown data set 'poetry'/);
  });
});
