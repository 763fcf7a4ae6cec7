// `semfreeze generate`: greedy (or sampled) continuation of a prompt.
import { Gpt2Forward } from '../model/forward.ts';
import { loadModel, promptIds } from './model.ts';
import { progress, UserError } from './common.ts';
import type { Tokenizer } from '../tokenizer/bpe.ts';
import { mulberry32 } from '../util/random.ts';

/** Greedy (temperature 0) or sampled next token; ids with `allowed[id] === 0` are never picked. */
export function pickToken(logits: Float32Array, temperature: number, rand: () => number, allowed?: Uint8Array): number {
  const ok = (i: number) => !allowed || allowed[i] === 1;
  let best = -1;
  for (let i = 0; i < logits.length; i++) if (ok(i) && (best < 0 || logits[i]! > logits[best]!)) best = i;
  if (temperature <= 0) return best;
  let z = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) if (ok(i)) z += p[i] = Math.exp((logits[i]! - logits[best]!) / temperature);
  let r = rand() * z;
  for (let i = 0; i < p.length; i++) if ((r -= p[i]!) <= 0) return i;
  return best;
}

/**
 * Which of the model's V ids the tokenizer can decode. Padded vocabularies (V rounded up to a multiple
 * of 64 or 128) are common: the extra rows have logits but no text.
 */
export function decodableIds(tok: Tokenizer, V: number): Uint8Array {
  const mask = new Uint8Array(V);
  for (let id = 0; id < Math.min(V, tok.vocabSize); id++) {
    try {
      tok.decode([id]);
      mask[id] = 1;
    } catch {
      // An id with no token (a gap in the vocabulary).
    }
  }
  return mask;
}

export async function generateCommand(o: { model: string; prompt?: string; tokens?: string; maxTokens: number; temperature: number; seed: number; json?: boolean }): Promise<number[]> {
  const { rt, files, weights } = await loadModel(o.model, { quiet: o.json });
  const cfg = files.config;
  const ids = promptIds({ text: o.prompt, tokens: o.tokens }, files);
  const T = Math.min(cfg.nPositions, ids.length + o.maxTokens);
  if (T <= ids.length) throw new UserError(`no room to generate: the prompt already fills the context (${cfg.nPositions})`);
  if (T < ids.length + o.maxTokens && !o.json) process.stderr.write(`generating ${T - ids.length} tokens, not ${o.maxTokens}: the context holds ${cfg.nPositions}\n`);
  // Built once for the longest sequence: causal attention makes padding after position t irrelevant to it.
  const fwd = await Gpt2Forward.build(rt, weights, { B: 1, T, saveFrom: cfg.nLayer, trace: { kind: 'none' }, loss: false, keepLogits: true });
  const rand = mulberry32(o.seed);
  const seq = [...ids];
  const padded = new Int32Array(T);
  const out: number[] = [];
  const tok = files.tokenizer;
  const allowed = tok ? decodableIds(tok, cfg.vocabSize) : undefined;
  const undecodable = allowed ? allowed.length - allowed.reduce((n, x) => n + x, 0) : 0;
  if (undecodable > 0) progress(`note: ${undecodable} of the model's ${cfg.vocabSize} token ids have no text in its tokenizer (vocabulary ${tok!.vocabSize}; padded?): they are never generated`);
  if (!o.json && tok) process.stdout.write(tok.decode(ids));
  // Print decoded text as it grows; hold back a trailing partial UTF-8 character (U+FFFD).
  let printed = 0;
  while (seq.length < T) {
    padded.fill(0);
    padded.set(seq);
    fwd.setBatch(padded);
    await fwd.run('generate');
    const t = seq.length - 1;
    const logits = await rt.memory.readFloat32(fwd.logits, t * cfg.vocabSize, cfg.vocabSize);
    const next = pickToken(logits, o.temperature, rand, allowed);
    seq.push(next);
    out.push(next);
    if (!o.json && !tok) process.stdout.write(`${next} `);
    if (!o.json && tok) {
      const text = tok.decode(out);
      const upto = text.endsWith('\uFFFD') ? text.length - 1 : text.length;
      if (upto > printed) process.stdout.write(text.slice(printed, upto));
      printed = Math.max(printed, upto);
    }
  }
  if (o.json) process.stdout.write(`${JSON.stringify({ prompt: ids, generated: out, text: tok ? tok.decode(out) : null })}\n`);
  else process.stdout.write('\n');
  return out;
}
