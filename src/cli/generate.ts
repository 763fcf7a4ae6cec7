// `semfreeze generate`: greedy (or sampled) continuation of a prompt.
import { Gpt2Forward } from '../model/forward.ts';
import { loadModel, promptIds } from './model.ts';
import { UserError } from './common.ts';
import { mulberry32 } from '../util/random.ts';

export function pickToken(logits: Float32Array, temperature: number, rand: () => number): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  let z = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) z += p[i] = Math.exp((logits[i]! - logits[best]!) / temperature);
  let r = rand() * z;
  for (let i = 0; i < p.length; i++) if ((r -= p[i]!) <= 0) return i;
  return best;
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
    const next = pickToken(logits, o.temperature, rand);
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
