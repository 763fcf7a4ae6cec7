// The parts of Hugging Face's tokenizer.json around the model (normalizer, pre_tokenizer, decoder,
// post_processor), each implemented as `tokenizers` (0.23) does it, for the components that the
// GPT-2, Llama 2/3, Qwen2 and Gemma families use. Anything else is refused by name.

/** Unicode White_Space, which is what Oniguruma's and Rust's \s match; JS's \s differs (adds U+FEFF, lacks U+0085). */
export const WS = '\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
function byteToUnicodeTable(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
}
export const BYTE_TO_CHAR = byteToUnicodeTable();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** GPT-2's pre-tokenizer split (global: callers that loop with exec() need their own copy). */
export const GPT2_SPLIT = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
  'gu',
);

const utf8 = new TextEncoder();

/** Each UTF-8 byte of `text` as its byte-level symbol. */
export function toByteLevel(text: string): string {
  let out = '';
  for (const b of utf8.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** Bytes as text, invalid UTF-8 as U+FFFD (Rust's from_utf8_lossy); a leading U+FEFF is text, not a BOM. */
export function lossyUtf8(bytes: ArrayLike<number>): string {
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes));
}

/** Thrown while reading a component; the caller adds the file name. */
export class ComponentError extends Error {}
const unsupported = (where: string, type: unknown, supported: string[]): never => {
  throw new ComponentError(`${where} ${JSON.stringify(type ?? null)} is not supported (supported: ${supported.join(', ')})`);
};
const bad = (where: string, problem: string): never => {
  throw new ComponentError(`${where}: ${problem}`);
};

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const obj = (v: unknown, where: string): Json => (isObject(v) ? v : bad(where, 'is not a JSON object'));
const list = (v: unknown, where: string): unknown[] => (Array.isArray(v) ? v : bad(where, 'is not a list'));
const str = (v: unknown, where: string): string => (typeof v === 'string' ? v : bad(where, `is ${JSON.stringify(v)}, not a string`));
const oneChar = (v: unknown, where: string): string => {
  const s = str(v, where);
  return [...s].length === 1 ? s : bad(where, `is ${JSON.stringify(s)}, not one character`);
};
const count = (v: unknown, where: string): number =>
  (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : bad(where, `is ${JSON.stringify(v)}, not a non-negative integer`));

// ---------------------------------------------------------------------------------------------
// Oniguruma patterns (what `tokenizers` compiles Regex patterns with) as JavaScript RegExps.

/** Extra code points that Unicode case folding gives an ASCII letter under (?i): K→U+212A, s→U+017F. */
const EXTRA_FOLDS: Record<string, string> = { k: '\u212a', s: '\u017f' };
/** Letter pairs that fold to one character (ß, ﬀ, ﬁ, ﬂ, ﬆ): a (?i) group holding one would match more in Oniguruma. */
const MULTI_FOLDS = new Set(['ss', 'ff', 'fi', 'fl', 'st']);
const JS_SYNTAX = new Set([...'^$\\.*+?()[]{}|/']);

/**
 * Oniguruma (Ruby syntax, as `tokenizers` uses it) to a JS RegExp with the same matches, for the
 * constructs tokenizer regexes use: \s \S \d \D \p{..} \P{..}, classes, (?:) (?=) (?!) (?<=) (?<!),
 * (?i:...) over ASCII letters, greedy and lazy quantifiers, . (anything but \n), ^ $ (line anchors).
 * Anything else (\w \b \h \R, possessive quantifiers, atomic groups, nested classes, flags) is refused.
 */
export function onigurumaToJs(pattern: string, where: string): RegExp {
  const refuse = (what: string): never => bad(where, `regex ${JSON.stringify(pattern)} uses ${what}, which is not supported`);
  const groups: boolean[] = []; // true: a (?i:...) group
  const caseless = () => groups.includes(true);
  let out = '';
  let i = 0;
  let prevLetter = ''; // the literal letter just emitted inside (?i:...), for MULTI_FOLDS
  let quantifiable = false; // the last item can take a quantifier
  let lastWasQuantifier = false;

  const property = (negated: boolean): string => {
    // at "\p{...}" or "\P{...}" (i points at p/P)
    const close = pattern.indexOf('}', i);
    if (pattern[i + 1] !== '{' || close < 0) refuse(`\\${pattern[i]} without {name}`);
    let name = pattern.slice(i + 2, close);
    if (name.startsWith('^')) {
      negated = !negated;
      name = name.slice(1);
    }
    i = close + 1;
    if (caseless()) refuse('a Unicode property inside (?i:...)');
    for (const candidate of [name, `Script=${name}`]) {
      const escaped = `\\${negated ? 'P' : 'p'}{${candidate}}`;
      try {
        new RegExp(escaped, 'u');
        return escaped;
      } catch { /* try the next spelling */ }
    }
    return refuse(`the Unicode property ${JSON.stringify(name)}`);
  };

  const escape = (inClass: boolean): string => {
    // at a backslash; returns the JS text and moves i past the escape
    const c = pattern[i + 1];
    if (c === undefined) return refuse('a trailing backslash');
    i += 1;
    switch (c) {
      case 's': i++; return inClass ? WS : `[${WS}]`;
      case 'S': i++; return inClass ? refuse('\\S inside a character class') : `[^${WS}]`;
      case 'd': i++; return '\\p{Nd}';
      case 'D': i++; return inClass ? refuse('\\D inside a character class') : '\\P{Nd}';
      case 'p': return property(false);
      case 'P': return property(true);
      case 'r': case 'n': case 't': case 'f': case 'v': i++; return `\\${c}`;
      case 'a': i++; return '\\x07';
      case 'e': i++; return '\\x1b';
      case 'x': {
        const braced = /^x\{([0-9a-fA-F]{1,8})\}/.exec(pattern.slice(i));
        if (braced) { i += braced[0].length; return `\\u{${braced[1]}}`; }
        const short = /^x([0-9a-fA-F]{1,2})/.exec(pattern.slice(i));
        if (short) { i += short[0].length; return `\\x${short[1]!.padStart(2, '0')}`; }
        return refuse('\\x without hex digits');
      }
      case 'u': {
        const hex = /^u([0-9a-fA-F]{4})/.exec(pattern.slice(i));
        if (hex) { i += hex[0].length; return `\\u${hex[1]}`; }
        return refuse('\\u without four hex digits');
      }
      default:
        if (/[0-9A-Za-z]/.test(c)) return refuse(`\\${c}`);
        i += c.length;
        if (inClass) return /[\\\]\[^-]/.test(c) ? `\\${c}` : c;
        return JS_SYNTAX.has(c) || c === ']' || c === '}' ? `\\${c}` : c;
    }
  };

  const charClass = (): string => {
    // at "["; copies through the matching "]"
    let body = '[';
    i++;
    if (pattern[i] === '^') { body += '^'; i++; }
    if (pattern[i] === ']') { body += '\\]'; i++; } // a leading ] is literal in Oniguruma
    for (;;) {
      const c = pattern[i];
      if (c === undefined) return refuse('an unterminated character class');
      if (c === ']') { i++; return body + ']'; }
      if (c === '[') return refuse('a nested character class or POSIX bracket');
      if (c === '&' && pattern[i + 1] === '&') return refuse('class intersection (&&)');
      if (c === '\\') { body += escape(true); continue; }
      const cp = String.fromCodePoint(pattern.codePointAt(i)!);
      if (caseless() && /\p{L}/u.test(cp)) refuse('letters in a character class inside (?i:...)');
      body += cp;
      i += cp.length;
    }
  };

  while (i < pattern.length) {
    const c = pattern[i]!;
    const quantifier = /^(?:[*+?]|\{(\d*),?(\d*)\})/.exec(pattern.slice(i));
    if (quantifier && (c !== '{' || /^\{\d+(,\d*)?\}|^\{,\d+\}/.test(quantifier[0]))) {
      if (!quantifiable) {
        if (c === '?' && lastWasQuantifier) { out += '?'; i++; lastWasQuantifier = false; continue; } // lazy
        if (c === '+' && lastWasQuantifier) refuse('a possessive quantifier (X*+, X++, X?+)');
        if (lastWasQuantifier) refuse('a quantifier on a quantifier');
        refuse(`a quantifier with nothing to repeat at offset ${i}`);
      }
      out += quantifier[0].startsWith('{,') ? `{0${quantifier[0].slice(1)}` : quantifier[0];
      i += quantifier[0].length;
      quantifiable = false;
      lastWasQuantifier = true;
      prevLetter = '';
      continue;
    }
    lastWasQuantifier = false;
    if (c === '(') {
      prevLetter = '';
      quantifiable = false;
      const rest = pattern.slice(i);
      const open = ['(?:', '(?=', '(?!', '(?<=', '(?<!'].find((p) => rest.startsWith(p));
      if (open) { out += open; i += open.length; groups.push(false); continue; }
      if (rest.startsWith('(?i:')) { out += '(?:'; i += 4; groups.push(true); continue; }
      const named = /^\(\?<([A-Za-z_]\w*)>/.exec(rest);
      if (named) { out += named[0]; i += named[0].length; groups.push(false); continue; }
      if (rest.startsWith('(?')) refuse(`the group syntax ${JSON.stringify(rest.slice(0, 4))}`);
      out += '('; i++; groups.push(false);
      continue;
    }
    if (c === ')') {
      if (groups.pop() === undefined) refuse('an unbalanced )');
      out += ')'; i++; quantifiable = true; prevLetter = '';
      continue;
    }
    if (c === '|') { out += '|'; i++; quantifiable = false; prevLetter = ''; continue; }
    if (c === '^') { out += '(?<![^\\n])'; i++; quantifiable = false; prevLetter = ''; continue; }
    if (c === '$') { out += '(?![^\\n])'; i++; quantifiable = false; prevLetter = ''; continue; }
    quantifiable = true;
    if (c === '[') { out += charClass(); prevLetter = ''; continue; }
    if (c === '\\') { out += escape(false); prevLetter = ''; continue; }
    if (c === '.') { out += '[^\\n]'; i++; prevLetter = ''; continue; }
    const cp = String.fromCodePoint(pattern.codePointAt(i)!);
    i += cp.length;
    if (caseless() && /\p{L}/u.test(cp)) {
      const lower = cp.toLowerCase();
      if (!/^[a-z]$/.test(lower)) refuse(`the non-ASCII letter ${JSON.stringify(cp)} inside (?i:...)`);
      if (MULTI_FOLDS.has(prevLetter + lower)) refuse(`"${prevLetter}${lower}" inside (?i:...) (it folds to one character)`);
      out += `[${lower}${lower.toUpperCase()}${EXTRA_FOLDS[lower] ?? ''}]`;
      prevLetter = lower;
      continue;
    }
    prevLetter = '';
    out += JS_SYNTAX.has(cp) || cp === ']' || cp === '}' ? `\\${cp}` : cp;
  }
  if (groups.length > 0) refuse('an unclosed (');
  try {
    return new RegExp(out, 'gu');
  } catch (e) {
    return refuse(`a construct JavaScript rejects (${(e as Error).message})`);
  }
}

/** A tokenizer.json pattern: {"String": literal} or {"Regex": Oniguruma pattern}. */
function parsePattern(v: unknown, where: string): RegExp | null {
  const p = obj(v, where);
  if (typeof p.String === 'string') return p.String === '' ? null : new RegExp(p.String.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&'), 'gu');
  if (typeof p.Regex === 'string') return onigurumaToJs(p.Regex, where);
  return bad(where, 'is neither {"String": ...} nor {"Regex": ...}');
}

interface Span { start: number; end: number; match: boolean }

/** `tokenizers`' Pattern::find_matches: the whole text as alternating non-match / match spans. */
function findMatches(text: string, re: RegExp | null): Span[] {
  if (text === '' || re === null) return [{ start: 0, end: text.length, match: false }];
  const spans: Span[] = [];
  let prev = 0;
  for (const m of text.matchAll(re)) {
    if (m[0] === '') continue; // an empty match would make an empty piece, which is dropped anyway
    if (prev !== m.index) spans.push({ start: prev, end: m.index, match: false });
    spans.push({ start: m.index, end: m.index + m[0].length, match: true });
    prev = m.index + m[0].length;
  }
  if (prev !== text.length) spans.push({ start: prev, end: text.length, match: false });
  return spans;
}

export type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: SplitBehavior[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

/** NormalizedString::split: [start, end) ranges to keep, in order (empty ones included). */
function splitSpans(spans: Span[], behavior: SplitBehavior): [number, number][] {
  const kept: [number, number][] = [];
  switch (behavior) {
    case 'Isolated':
      for (const s of spans) kept.push([s.start, s.end]);
      return kept;
    case 'Removed':
      for (const s of spans) if (!s.match) kept.push([s.start, s.end]);
      return kept;
    case 'Contiguous': {
      let previous = false;
      for (const s of spans) {
        if (s.match === previous && kept.length > 0) kept[kept.length - 1]![1] = s.end;
        else kept.push([s.start, s.end]);
        previous = s.match;
      }
      return kept;
    }
    case 'MergedWithPrevious': {
      let previous = false;
      for (const s of spans) {
        if (s.match && !previous && kept.length > 0) kept[kept.length - 1]![1] = s.end;
        else kept.push([s.start, s.end]);
        previous = s.match;
      }
      return kept;
    }
    case 'MergedWithNext': {
      let previous = false;
      for (let k = spans.length - 1; k >= 0; k--) {
        const s = spans[k]!;
        if (s.match && !previous && kept.length > 0) kept[kept.length - 1]![0] = s.start;
        else kept.push([s.start, s.end]);
        previous = s.match;
      }
      return kept.reverse();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Normalizers

export type Normalizer = (text: string) => string;

const NORMALIZERS = ['NFC', 'NFD', 'NFKC', 'NFKD', 'Lowercase', 'Prepend', 'Replace', 'Strip', 'ByteLevel', 'Sequence'];

export function parseNormalizer(v: unknown, where = 'normalizer'): Normalizer | undefined {
  if (v === null || v === undefined) return undefined;
  const n = obj(v, where);
  switch (n.type) {
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
      const form = n.type;
      return (t) => t.normalize(form);
    }
    case 'Lowercase':
      // Rust's char::to_lowercase, one character at a time (no final-sigma rule, unlike String.toLowerCase).
      return (t) => { let o = ''; for (const c of t) o += c.toLowerCase(); return o; };
    case 'Prepend': {
      const prefix = str(n.prepend, `${where}.prepend`);
      return (t) => (t === '' ? t : prefix + t);
    }
    case 'Replace': {
      const re = parsePattern(n.pattern, `${where}.pattern`);
      const content = str(n.content, `${where}.content`);
      return (t) => replaceAll(t, re, content);
    }
    case 'Strip': {
      const left = n.strip_left === true;
      const right = n.strip_right === true;
      const lead = new RegExp(`^[${WS}]+`, 'u');
      const trail = new RegExp(`[${WS}]+$`, 'u');
      return (t) => { if (left) t = t.replace(lead, ''); if (right) t = t.replace(trail, ''); return t; };
    }
    case 'ByteLevel':
      return toByteLevel;
    case 'Sequence': {
      const steps = list(n.normalizers, `${where}.normalizers`)
        .map((s, k) => parseNormalizer(s, `${where}.normalizers[${k}]`))
        .filter((s): s is Normalizer => s !== undefined);
      return (t) => steps.reduce((acc, step) => step(acc), t);
    }
    default:
      return unsupported(where, n.type, NORMALIZERS);
  }
}

function replaceAll(text: string, re: RegExp | null, content: string): string {
  if (re === null) return text;
  let out = '';
  for (const s of findMatches(text, re)) out += s.match ? content : text.slice(s.start, s.end);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

/**
 * A step turns one piece of text into pieces. `atStart`: the piece begins at offset 0 of the input
 * (what Metaspace's prepend_scheme "first" asks). Only a list's first piece can, so a step says
 * whether its first output still does.
 */
type Step = (text: string, atStart: boolean) => Pieces;
export interface Pieces {
  texts: string[];
  firstAtStart: boolean;
}

export interface PreTokenizer {
  steps: Step[];
  /**
   * The chain ends with ByteLevel's byte-to-symbol mapping, left to the model stage so that a piece
   * is mapped only when it is not in the encoder's cache.
   */
  byteLevelLast: boolean;
}

const PRE_TOKENIZERS = ['ByteLevel', 'Split', 'Metaspace', 'Digits', 'Sequence'];

function splitPiece(text: string, atStart: boolean, re: RegExp | null, behavior: SplitBehavior, invert = false): Pieces {
  if (behavior === 'Isolated' && re !== null) return isolate(text, atStart, re); // the common case, without span objects
  const spans = findMatches(text, re);
  if (invert) for (const s of spans) s.match = !s.match;
  const texts: string[] = [];
  let firstAtStart = false;
  for (const [start, end] of splitSpans(spans, behavior)) {
    if (end <= start) continue; // empty pieces are dropped
    if (texts.length === 0) firstAtStart = atStart && start === 0;
    texts.push(text.slice(start, end));
  }
  return { texts, firstAtStart };
}

/** Isolated split (inverting changes nothing here): matches and the text between them, in order. */
function isolate(text: string, atStart: boolean, re: RegExp): Pieces {
  // Fast path: when the matches cover the text (GPT-2's and Llama 3's regexes always do), they are the pieces.
  const all: string[] = text.match(re) ?? [];
  let covered = 0;
  for (const m of all) covered += m.length;
  if (covered === text.length) return { texts: all.includes('') ? all.filter((m) => m !== '') : all, firstAtStart: atStart };
  const texts: string[] = [];
  let prev = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const end = m.index + m[0].length;
    if (end === m.index) { re.lastIndex++; continue; }
    if (prev !== m.index) texts.push(text.slice(prev, m.index));
    texts.push(m[0]);
    prev = end;
  }
  if (prev !== text.length) texts.push(text.slice(prev));
  return { texts, firstAtStart: atStart };
}

const byteLevelStep: Step = (text, atStart) => ({ texts: [toByteLevel(text)], firstAtStart: atStart });

/** The pre-tokenizer's steps (flattened); the byte-level mapping is a step of its own. */
function parsePreSteps(v: unknown, where: string): Step[] {
  const p = obj(v, where);
  switch (p.type) {
    case 'ByteLevel': {
      const prefix = p.add_prefix_space === true;
      const regex = p.use_regex !== false;
      const split = new RegExp(GPT2_SPLIT.source, GPT2_SPLIT.flags);
      const cut: Step = (text, atStart) => {
        // HF checks for a literal space here, not any whitespace: "\nhi" becomes " \nhi".
        const t = prefix && !text.startsWith(' ') ? ' ' + text : text;
        return regex ? isolate(t, atStart, split) : { texts: [t], firstAtStart: atStart };
      };
      return [cut, byteLevelStep];
    }
    case 'Split': {
      const re = parsePattern(p.pattern, `${where}.pattern`);
      const behavior = p.behavior as SplitBehavior;
      if (!BEHAVIORS.includes(behavior)) bad(`${where}.behavior`, `is ${JSON.stringify(p.behavior)}, not one of ${BEHAVIORS.join(', ')}`);
      const invert = p.invert === true;
      return [(text, atStart) => splitPiece(text, atStart, re, behavior, invert)];
    }
    case 'Metaspace': {
      const replacement = oneChar(p.replacement, `${where}.replacement`);
      const scheme = metaspaceScheme(p, where);
      const split = p.split !== false;
      const spaces = / /g;
      const marker = new RegExp(replacement.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&'), 'gu');
      return [(text, atStart) => {
        let t = text.replace(spaces, replacement);
        if (!t.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && atStart))) t = replacement + t;
        return split ? splitPiece(t, atStart, marker, 'MergedWithNext') : { texts: [t], firstAtStart: atStart };
      }];
    }
    case 'Digits': {
      const behavior: SplitBehavior = p.individual_digits === true ? 'Isolated' : 'Contiguous';
      const digit = /\p{N}/gu;
      return [(text, atStart) => splitPiece(text, atStart, digit, behavior)];
    }
    case 'Sequence':
      return list(p.pretokenizers, `${where}.pretokenizers`).flatMap((s, k) => parsePreSteps(s, `${where}.pretokenizers[${k}]`));
    default:
      return unsupported(where, p.type, PRE_TOKENIZERS);
  }
}

export function parsePreTokenizer(v: unknown, where = 'pre_tokenizer'): PreTokenizer {
  if (v === null || v === undefined) return { steps: [], byteLevelLast: false };
  const steps = parsePreSteps(v, where);
  const byteLevelLast = steps[steps.length - 1] === byteLevelStep;
  return { steps: byteLevelLast ? steps.slice(0, -1) : steps, byteLevelLast };
}

/** GPT-2's pre-tokenizer: ByteLevel with the given settings. */
export function byteLevelPreTokenizer(addPrefixSpace: boolean, useRegex: boolean): PreTokenizer {
  return parsePreTokenizer({ type: 'ByteLevel', add_prefix_space: addPrefixSpace, use_regex: useRegex });
}

/** The pieces the model sees (before the deferred byte-level mapping, if any); none are empty. */
export function preTokenize(pre: PreTokenizer, text: string, atStart: boolean): string[] {
  let texts = [text];
  let first = atStart;
  for (const step of pre.steps) {
    if (texts.length === 1) {
      ({ texts, firstAtStart: first } = step(texts[0]!, first));
      continue;
    }
    const next: string[] = [];
    let nextFirst = false;
    texts.forEach((t, k) => {
      const out = step(t, k === 0 && first);
      if (next.length === 0 && k === 0) nextFirst = out.firstAtStart;
      for (const piece of out.texts) next.push(piece);
    });
    texts = next;
    first = nextFirst;
  }
  return texts;
}

type PrependScheme = 'always' | 'first' | 'never';
function metaspaceScheme(p: Json, where: string): PrependScheme {
  let scheme = (p.prepend_scheme ?? 'always') as PrependScheme;
  if (!['always', 'first', 'never'].includes(scheme)) bad(`${where}.prepend_scheme`, `is ${JSON.stringify(p.prepend_scheme)}, not always, first or never`);
  if (p.add_prefix_space === false) {
    // As `tokenizers` reads older files: add_prefix_space false means "never", and must not contradict.
    if (p.prepend_scheme !== undefined && scheme !== 'never') bad(where, 'add_prefix_space false does not match prepend_scheme');
    scheme = 'never';
  }
  return scheme;
}

// ---------------------------------------------------------------------------------------------
// Decoders: decode_chain on the list of token strings; the results are joined.

export type Decoder = (tokens: string[]) => string[];

const DECODERS = ['ByteLevel', 'Replace', 'ByteFallback', 'Fuse', 'Strip', 'Metaspace', 'Sequence'];

/** No decoder: tokens joined by spaces, as `tokenizers` does. */
export const NO_DECODER: Decoder = (tokens) => [tokens.join(' ')];

export const byteLevelDecoder: Decoder = (tokens) => {
  const bytes: number[] = [];
  for (const token of tokens) {
    const mapped: number[] = [];
    let ok = true;
    for (const ch of token) {
      const b = CHAR_TO_BYTE.get(ch);
      if (b === undefined) { ok = false; break; }
      mapped.push(b);
    }
    // A token with any non-byte-level character goes in as its own UTF-8 (an added token, say).
    for (const b of ok ? mapped : utf8.encode(token)) bytes.push(b);
  }
  return [lossyUtf8(bytes)];
};

export function parseDecoder(v: unknown, where = 'decoder'): Decoder {
  if (v === null || v === undefined) return NO_DECODER;
  const d = obj(v, where);
  switch (d.type) {
    case 'ByteLevel':
      return byteLevelDecoder;
    case 'Replace': {
      const re = parsePattern(d.pattern, `${where}.pattern`);
      const content = str(d.content, `${where}.content`);
      return (tokens) => tokens.map((t) => replaceAll(t, re, content));
    }
    case 'ByteFallback':
      return byteFallbackDecoder;
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Strip': {
      const content = oneChar(d.content, `${where}.content`);
      const start = count(d.start, `${where}.start`);
      const stop = count(d.stop, `${where}.stop`);
      return (tokens) => tokens.map((t) => {
        const chars = [...t];
        let from = 0;
        while (from < start && from < chars.length && chars[from] === content) from++;
        let to = chars.length;
        while (chars.length - to < stop && to > from && chars[to - 1] === content) to--;
        return chars.slice(from, to).join('');
      });
    }
    case 'Metaspace': {
      const replacement = oneChar(d.replacement, `${where}.replacement`);
      const scheme = metaspaceScheme(d, where);
      return (tokens) => tokens.map((t, k) => t.split(replacement).join(k === 0 && scheme !== 'never' ? '' : ' '));
    }
    case 'Sequence': {
      const steps = list(d.decoders, `${where}.decoders`).map((s, k) => parseDecoder(s, `${where}.decoders[${k}]`));
      return (tokens) => steps.reduce((acc, step) => step(acc), tokens);
    }
    default:
      return unsupported(where, d.type, DECODERS);
  }
}

/** `<0xNN>` tokens in a row become their bytes' text, or one U+FFFD per byte if not valid UTF-8. */
const byteFallbackDecoder: Decoder = (tokens) => {
  const out: string[] = [];
  let pending: number[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    // Rust's String::from_utf8 succeeds or fails as a whole.
    if (validUtf8(pending)) out.push(lossyUtf8(pending));
    else for (let k = 0; k < pending.length; k++) out.push('\ufffd');
    pending = [];
  };
  for (const t of tokens) {
    // Rust: len() == 6 bytes, "<0x" .. ">", u8::from_str_radix of the two bytes in between.
    const m = /^<0x([0-9a-fA-F]{2}|\+[0-9a-fA-F])>$/.exec(t);
    if (m) pending.push(parseInt(m[1]!, 16));
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
};

function validUtf8(bytes: number[]): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Uint8Array.from(bytes));
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Post-processors, for a single sequence: the ids put before and after it when special tokens are added.

export interface Template {
  prefix: number[];
  suffix: number[];
}

const POST_PROCESSORS = ['TemplateProcessing', 'ByteLevel', 'RobertaProcessing', 'BertProcessing', 'Sequence'];

export function parsePostProcessor(v: unknown, where = 'post_processor'): Template {
  const none: Template = { prefix: [], suffix: [] };
  if (v === null || v === undefined) return none;
  const p = obj(v, where);
  switch (p.type) {
    case 'ByteLevel':
      return none; // only trims offsets
    case 'RobertaProcessing':
    case 'BertProcessing': {
      const token = (key: string): number => {
        const pair = list(p[key], `${where}.${key}`);
        return count(pair[1], `${where}.${key}[1]`);
      };
      return { prefix: [token('cls')], suffix: [token('sep')] };
    }
    case 'TemplateProcessing': {
      const specials = obj(p.special_tokens, `${where}.special_tokens`);
      const template: Template = { prefix: [], suffix: [] };
      let seenA = false;
      list(p.single, `${where}.single`).forEach((piece, k) => {
        const here = `${where}.single[${k}]`;
        const item = obj(piece, here);
        if (isObject(item.Sequence)) {
          if (item.Sequence.id !== 'A' || seenA) bad(here, 'a single-sequence template holds $A exactly once and no $B');
          seenA = true;
        } else if (isObject(item.SpecialToken)) {
          const name = str(item.SpecialToken.id, `${here}.SpecialToken.id`);
          const entry = obj(specials[name], `${where}.special_tokens[${JSON.stringify(name)}]`);
          const ids = list(entry.ids, `${where}.special_tokens[${JSON.stringify(name)}].ids`).map((id, j) => count(id, `${where}.special_tokens[${JSON.stringify(name)}].ids[${j}]`));
          (seenA ? template.suffix : template.prefix).push(...ids);
        } else {
          bad(here, 'is neither {"SpecialToken": ...} nor {"Sequence": ...}');
        }
      });
      if (!seenA) bad(`${where}.single`, 'has no $A');
      return template;
    }
    case 'Sequence':
      // Each processor wraps what the previous one produced.
      return list(p.processors, `${where}.processors`).reduce<Template>((acc, s, k) => {
        const t = parsePostProcessor(s, `${where}.processors[${k}]`);
        return { prefix: [...t.prefix, ...acc.prefix], suffix: [...acc.suffix, ...t.suffix] };
      }, none);
    default:
      return unsupported(where, p.type, POST_PROCESSORS);
  }
}
