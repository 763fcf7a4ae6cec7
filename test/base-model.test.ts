// The shipped base model (models/semfreeze-base) as Hugging Face sees it: the `tokenizers` library's
// ids for its tokenizer.json, transformers' logits and hidden states (recorded by
// test/fixtures/make_base_reference.py), and a held-out perplexity far below a unigram model's.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { Tokenizer } from '../src/tokenizer/bpe.ts';
import { REPO, describeRun, removeDir, runCli, stdoutJson, tempDir } from './util/cli.ts';

const MODEL = process.env.SEMFREEZE_BASE ?? join(REPO, 'models', 'semfreeze-base');
const REF = parseSafetensors(new Uint8Array(readFileSync(join(REPO, 'test', 'fixtures', 'base-reference.safetensors'))), 'base-reference.safetensors');
const tokenizer = Tokenizer.fromJSON(JSON.parse(readFileSync(join(MODEL, 'tokenizer.json'), 'utf8')));

function relErr(out: Float32Array, ref: Float32Array): number {
  expect(out.length).toBe(ref.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (out[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

let dir: string;
beforeAll(() => { dir = tempDir('base'); });
afterAll(() => removeDir(dir));

describe('the shipped base model', () => {
  it("tokenizes exactly as Hugging Face's tokenizers library and round-trips", () => {
    for (const kind of ['prose', 'code']) {
      const text = REF.metadata[kind]!;
      const ids = tokenizer.encode(text);
      expect(ids).toEqual(Array.from(REF.getInt32(`${kind}_ids`)));
      expect(tokenizer.decode(ids)).toBe(text);
    }
  });

  it("gives transformers' logits and hidden states (semfreeze trace)", async () => {
    const logitsRef = REF.getFloat32('logits');
    const T = logitsRef.length / tokenizer.vocabSize;
    const ids = Array.from(REF.getInt32('prose_ids').subarray(0, T));
    const out = join(dir, 'trace.safetensors');
    const r = await runCli(['trace', '--model', MODEL, '--tokens', ids.join(','), '--out', out]);
    expect(r.code, describeRun(r)).toBe(0);
    const tr = parseSafetensors(new Uint8Array(readFileSync(out)), out);
    expect(relErr(tr.getFloat32('logits'), logitsRef)).toBeLessThan(1e-4);
    for (let k = 0; REF.tensors.has(`hidden_states.${k}`); k++) {
      expect(relErr(tr.getFloat32(`hidden_states.${k}`), REF.getFloat32(`hidden_states.${k}`)), `hidden_states.${k}`).toBeLessThan(1e-4);
    }
  });

  it('beats a unigram model on held-out prose it never saw, by far', async () => {
    const built = await runCli(['data', 'build', 'prose', '--out', dir], { timeoutMs: 120_000 });
    expect(built.code, describeRun(built)).toBe(0);
    const held = join(dir, 'prose', 'heldout-sotu.txt');
    const ev = await runCli(['eval', '--model', MODEL, '--data', held, '--seq', '128', '--max-windows', '16', '--json']);
    expect(ev.code, describeRun(ev)).toBe(0);
    const { loss, tokens } = stdoutJson<{ loss: number; tokens: number }>(ev);
    // Add-one unigram over the training text, scored on the same held-out tokens.
    const counts = new Float64Array(tokenizer.vocabSize).fill(1);
    let total = tokenizer.vocabSize;
    for (const id of tokenizer.encode(readFileSync(join(dir, 'prose', 'train.txt'), 'utf8').slice(0, 4_000_000))) {
      counts[id]!++;
      total++;
    }
    const heldIds = tokenizer.encode(readFileSync(held, 'utf8')).slice(0, tokens + 16);
    const unigram = heldIds.reduce((s, id) => s - Math.log(counts[id]! / total), 0) / heldIds.length;
    expect(Math.exp(loss)).toBeLessThan(Math.exp(unigram) / 3);
  });
});
