// How semfreeze decodes text, in one place. Every text input (.txt, .json ids, .jsonl, config.json,
// tokenizer.json, a shard index, tokenizer training data) is read the same way: invalid UTF-8
// sequences become U+FFFD (the WHATWG decoder's replacement), never an error, so text from any source
// can be trained on. Only the safetensors header, which the format requires to be UTF-8, is strict.

/** Text from bytes; invalid sequences become U+FFFD, a leading BOM is dropped. */
export function decodeText(bytes: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
}

/** Strict UTF-8: the text, or `fail(offset)` at the first byte that starts no valid sequence. */
export function decodeUtf8Strict(bytes: Uint8Array, fail: (byte: number) => never): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return fail(invalidUtf8Offset(bytes));
  }
}

/** Offset of the first byte that starts no valid UTF-8 sequence (overlong, surrogate, > U+10FFFF or cut short), or −1. */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // Continuation bytes after the lead; the second byte's range excludes overlongs and surrogates.
    let n: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= n; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n + 1;
  }
  return -1;
}
