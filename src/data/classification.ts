// Text classification data for prompt-style fine-tuning: each label is scored by the LM's logit for
// the first token of a label word ("great" / "terrible"), so labels must map to distinct token ids.

import type { Tokenizer } from '../tokenizer/bpe.ts';
import { TokenDataError } from './tokens.ts';

export interface ClassificationExample {
  text: string;
  /** Numeric labels in the file (SST-2's 0/1) become their decimal strings. */
  label: string;
  /** 1-based line in the source file, for later error messages. */
  line: number;
}

/** One {"text": ..., "label": ...} object per line; blank lines are skipped. */
export function parseClassificationJsonl(text: string, source: string): ClassificationExample[] {
  const examples: ClassificationExample[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === '') return;
    const fail = (problem: string): never => { throw new TokenDataError(source, `line ${line}: ${problem}`); };
    let row: unknown;
    try {
      row = JSON.parse(raw);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) fail('expected a JSON object with "text" and "label"');
    const { text: t, label } = row as Record<string, unknown>;
    if (typeof t !== 'string') fail(`"text" must be a string, got ${JSON.stringify(t) ?? 'nothing'}`);
    if (typeof label !== 'string' && !(typeof label === 'number' && Number.isInteger(label))) {
      fail(`"label" must be a string or an integer, got ${JSON.stringify(label) ?? 'nothing'}`);
    }
    examples.push({ text: t as string, label: String(label), line });
  });
  if (examples.length === 0) throw new TokenDataError(source, 'contains no examples');
  return examples;
}

/**
 * Map each label to the first token of its label word, from a spec like "pos=great,neg=terrible".
 * The word follows other text after a space, so its first token is taken as it comes after text:
 * GPT-2's " great", SentencePiece's "▁great" (encoding " great" alone would give a bare "▁" first
 * under Llama 2's prepended "▁"). Found as the first id where `x great` and `x` differ.
 */
export function resolveLabelWords(
  spec: string,
  tokenizer: Pick<Tokenizer, 'encode'>,
  labelsSeen: Iterable<string>,
  source: string,
): Map<string, number> {
  const words = parseLabelSpec(spec, source);
  for (const label of labelsSeen) {
    if (!words.has(label)) throw new TokenDataError(source, `label '${label}' has no label word in '${spec}' (it gives: ${[...words.keys()].join(', ')})`);
  }
  const ids = new Map<string, number>();
  const labelOfId = new Map<number, string>();
  for (const [label, word] of words) {
    const context = tokenizer.encode('x');
    const withWord = tokenizer.encode(`x ${word}`);
    let at = 0;
    while (at < context.length && withWord[at] === context[at]) at++;
    const id = withWord[at];
    if (id === undefined) throw new TokenDataError(source, `label word '${word}' for label '${label}' tokenizes to nothing`);
    const clash = labelOfId.get(id);
    if (clash !== undefined) throw new TokenDataError(source, `labels '${clash}' and '${label}' both start with token ${id}; pick label words with distinct first tokens`);
    ids.set(label, id);
    labelOfId.set(id, label);
  }
  return ids;
}

function parseLabelSpec(spec: string, source: string): Map<string, string> {
  const words = new Map<string, string>();
  for (const entry of spec.split(',')) {
    const match = /^\s*([^=\s][^=]*?)\s*=\s*([^=\s][^=]*?)\s*$/.exec(entry);
    if (!match) throw new TokenDataError(source, `label spec '${spec}' is malformed at '${entry}' (expected label=word, comma separated)`);
    const [, label, word] = match as unknown as [string, string, string];
    if (words.has(label)) throw new TokenDataError(source, `label spec '${spec}' gives label '${label}' twice`);
    words.set(label, word);
  }
  return words;
}
