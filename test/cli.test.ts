// The CLI end to end, as a child process: doctor --json, trace against the transformers reference,
// eval on every data format (and against the mean cross-entropy of the trace logits), greedy
// generation against the trace's argmax, and --help of every command.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors, type SafetensorsFile } from '../src/io/safetensors.ts';
import { writeLlmcTokenFile } from '../src/data/tokens.ts';
import { Tokenizer } from '../src/tokenizer/bpe.ts';
import { describeRun, removeDir, runCli, stdoutJson, tempDir, type CliResult } from './util/cli.ts';
import { FIXTURES, fixture } from './util/fixtures.ts';
import { relError } from './util/gpu.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
let tmp: string;
beforeAll(() => { tmp = tempDir('cli'); });
afterAll(() => removeDir(tmp));

function ok(r: CliResult): CliResult {
  expect(r.code, describeRun(r)).toBe(0);
  expect(r.stderr, describeRun(r)).not.toMatch(/^\s+at /m);
  return r;
}

async function trace(model: string, ids: ArrayLike<number>, name: string): Promise<SafetensorsFile> {
  const out = join(tmp, `${name}.safetensors`);
  ok(await runCli(['trace', '--model', model, '--tokens', Array.from(ids).join(','), '--out', out]));
  return parseSafetensors(new Uint8Array(readFileSync(out)), out);
}

/** Row t of a [T, V] logits array. */
const row = (logits: Float32Array, t: number, V: number) => logits.subarray(t * V, (t + 1) * V);
const argmax = (x: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
};
/** Cross-entropy of one logits row against a target, in float64. */
function crossEntropy(logits: ArrayLike<number>, target: number): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) m = Math.max(m, logits[i]!);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - m);
  return Math.log(z) + m - logits[target]!;
}

describe('semfreeze CLI', () => {
  it('doctor --json: adapter and a positive GFLOP/s', async () => {
    const r = ok(await runCli(['doctor', '--json', '--size', '64']));
    const j = stdoutJson<{ adapter: { vendor: string; backend: string }; features: string[]; limits: Record<string, number>; matmul: { shape: string; gflops: number; path: string } }>(r);
    expect(typeof j.adapter.vendor).toBe('string');
    expect(j.adapter.backend.length).toBeGreaterThan(0);
    expect(Array.isArray(j.features)).toBe(true);
    expect(j.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    expect(j.matmul.shape).toBe('64x64x64');
    expect(j.matmul.gflops).toBeGreaterThan(0);
    expect(Number.isFinite(j.matmul.gflops)).toBe(true);
    expect(j.matmul.path).toBe('transpose'); // lavapipe: software adapters take the transposes into tn
  });

  it('trace --out matches the transformers reference (gpt2-odd, row 0: every hidden state, logits)', async () => {
    const f = fixture('gpt2-odd');
    const { T } = f;
    const C = f.config.nEmbd;
    const V = f.config.vocabSize;
    const N = f.config.nLayer;
    const ids = f.inputIds.subarray(0, T);
    const st = await trace(f.dir, ids, 'odd-row0');
    expect(Array.from(st.getInt32('input_ids'))).toEqual(Array.from(ids));
    for (let k = 0; k <= N; k++) {
      const name = `hidden_states.${k}`;
      expect(st.tensors.get(name)?.shape, name).toEqual([T, C]);
      expect(relError(st.getFloat32(name), f.ref.getFloat32(name).subarray(0, T * C)), name).toBeLessThan(1e-4);
    }
    expect(st.tensors.has(`hidden_states.${N + 1}`)).toBe(false);
    expect(relError(st.getFloat32('residual.final'), f.ref.getFloat32(`residual.${N}`).subarray(0, T * C)), 'residual.final').toBeLessThan(1e-4);
    expect(st.tensors.get('logits')?.shape).toEqual([T, V]);
    expect(relError(st.getFloat32('logits'), f.ref.getFloat32('logits').subarray(0, T * V)), 'logits').toBeLessThan(1e-4);
  });

  it('eval --json gives the same loss for the same tokens as .txt, .json and llm.c .bin', async () => {
    const tok = Tokenizer.fromJSON(JSON.parse(readFileSync(join(TINY, 'tokenizer.json'), 'utf8')));
    const full = readFileSync(join(TINY, 'train.txt'), 'utf8');
    const text = full.slice(0, full.indexOf('\n', 3000));
    const ids = tok.encode(text);
    const txt = join(tmp, 'data.txt');
    const json = join(tmp, 'data.json');
    const bin = join(tmp, 'data.bin');
    writeFileSync(txt, text);
    writeFileSync(json, JSON.stringify(ids));
    writeFileSync(bin, writeLlmcTokenFile(ids));
    const seq = 16;
    const results = await Promise.all([txt, json, bin].map(async (data) => stdoutJson<{ loss: number; windows: number; tokens: number; seq: number }>(ok(await runCli(['eval', '--model', TINY, '--data', data, '--seq', String(seq), '--batch', '4', '--json'])))));
    const windows = Math.floor(ids.length / (seq + 1));
    for (const r of results) {
      expect(r.windows).toBe(windows);
      expect(r.tokens).toBe(windows * seq);
      expect(r.seq).toBe(seq);
      expect(Number.isFinite(r.loss)).toBe(true);
    }
    // Same tokens, same batches, same kernels: the same float, bit for bit.
    expect(results[1]!.loss).toBe(results[0]!.loss);
    expect(results[2]!.loss).toBe(results[0]!.loss);
    // A random 512-token model is near ln(512) ≈ 6.24 on real text.
    expect(results[0]!.loss).toBeGreaterThan(5);
    expect(results[0]!.loss).toBeLessThan(8);
  });

  it("eval's loss on one window equals the mean cross-entropy of the trace logits", async () => {
    const f = fixture('gpt2-odd');
    const V = f.config.vocabSize;
    const seq = 20;
    // One window of seq+1 tokens (a partial second window is dropped, so add a few extra tokens).
    const ids = Array.from(f.inputIds.subarray(0, seq + 1));
    const data = join(tmp, 'one-window.json');
    writeFileSync(data, JSON.stringify([...ids, 5, 6, 7]));
    const ev = stdoutJson<{ loss: number; windows: number; tokens: number }>(ok(await runCli(['eval', '--model', f.dir, '--data', data, '--seq', String(seq), '--json'])));
    expect(ev.windows).toBe(1);
    expect(ev.tokens).toBe(seq);
    const st = await trace(f.dir, ids.slice(0, seq), 'one-window');
    const logits = st.getFloat32('logits');
    let sum = 0;
    for (let t = 0; t < seq; t++) sum += crossEntropy(row(logits, t, V), ids[t + 1]!);
    const ce = sum / seq;
    expect(Math.abs(ev.loss - ce) / ce, `eval ${ev.loss} vs trace CE ${ce}`).toBeLessThan(1e-5);
  });

  it('generate --json is deterministic and greedy (the argmax of the trace logits)', async () => {
    const f = fixture('gpt2-tiny');
    const V = f.config.vocabSize;
    const prompt = Array.from(f.inputIds.subarray(0, 6));
    const args = ['generate', '--model', f.dir, '--tokens', prompt.join(','), '--max-tokens', '5', '--json'];
    const [a, b] = await Promise.all([runCli(args), runCli(args)]);
    const ga = stdoutJson<{ prompt: number[]; generated: number[]; text: string | null }>(ok(a));
    const gb = stdoutJson<{ generated: number[] }>(ok(b));
    expect(ga.prompt).toEqual(prompt);
    expect(ga.generated).toHaveLength(5);
    expect(gb.generated).toEqual(ga.generated);
    expect(typeof ga.text).toBe('string');
    // One trace of prompt + the first 4 generated tokens: position P-1+i predicts generated[i].
    const seq = [...prompt, ...ga.generated.slice(0, 4)];
    const logits = (await trace(f.dir, seq, 'generated')).getFloat32('logits');
    const greedy = ga.generated.map((_, i) => argmax(row(logits, prompt.length - 1 + i, V)));
    expect(ga.generated).toEqual(greedy);
  });

  it('generate with --temperature is reproducible for a seed', async () => {
    const args = (seed: number) => ['generate', '--model', TINY, '--tokens', '3,4,5', '--max-tokens', '8', '--temperature', '1.5', '--seed', String(seed), '--json'];
    const [a, b, c] = await Promise.all([runCli(args(7)), runCli(args(7)), runCli(args(8))]);
    const [ga, gb, gc] = [a, b, c].map((r) => stdoutJson<{ generated: number[] }>(ok(r)).generated);
    expect(gb).toEqual(ga);
    // Another seed at a high temperature on a random model: a different sequence (8 draws from ~512 tokens).
    expect(gc).not.toEqual(ga);
  });

  it.each(['doctor', 'trace', 'eval', 'generate', 'finetune'])('%s --help exits 0 and describes the command', async (cmd) => {
    const r = ok(await runCli([cmd, '--help']));
    expect(r.stdout).toContain(`Usage: semfreeze ${cmd}`);
    expect(r.stdout).toContain('--help');
  });

  it('--help and an unknown command', async () => {
    const [help, bad] = await Promise.all([runCli(['--help']), runCli(['frobnicate'])]);
    ok(help);
    for (const cmd of ['doctor', 'trace', 'eval', 'generate', 'finetune']) expect(help.stdout).toContain(cmd);
    expect(bad.code, describeRun(bad)).not.toBe(0);
    expect(bad.stderr).toMatch(/unknown command/);
  });
});
