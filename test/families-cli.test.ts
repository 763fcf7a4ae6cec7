// Llama, Qwen2 and Gemma2 through every command (in-process, as the CLI runs them): analyze --json,
// finetune --freeze auto (the saved checkpoint keeps the frozen tensors bit-identical and loads in
// transformers with our logits, where a Python venv with transformers exists), eval, trace, generate.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeCommand, autoFreeze } from '../src/cli/analyze.ts';
import { evalCommand } from '../src/cli/eval.ts';
import { FINETUNE_DEFAULTS, finetuneCommand } from '../src/cli/finetune.ts';
import { generateCommand } from '../src/cli/generate.ts';
import { traceCommand } from '../src/cli/trace.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { hfName, isTrainable, paramSpecs } from '../src/model/params.ts';
import { fixture } from './util/fixtures.ts';
import { mulberry32 } from './reference/ops.ts';
import { findPython } from './util/python.ts';

const python = findPython('transformers, torch');

const tmp = mkdtempSync(join(tmpdir(), 'semfreeze-families-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.each(['llama-gqa', 'qwen2-bias', 'gemma2-softcap'] as const)('%s through the CLI', (name) => {
  const f = fixture(name);
  const N = f.config.nLayer;
  const T = f.T;
  const V = f.config.vocabSize;
  const data = join(tmp, `${name}.json`);
  const rnd = mulberry32(name.length * 7919);
  writeFileSync(data, JSON.stringify(Array.from({ length: 40 * T + 1 }, () => Math.floor(rnd() * V))));
  const out = join(tmp, `${name}-ft`);

  it('analyze, finetune --freeze auto, eval, trace, generate', async () => {
    const a = await analyzeCommand({ model: f.dir, data, seq: T, batch: 2, maxWindows: 8, json: true });
    expect(a.report.latentSpaces).toHaveLength(N + 1);
    for (const l of a.report.latentSpaces) expect(Number.isFinite(l.deviation)).toBe(true);
    const K = a.report.boundary.freeze;
    expect(K).toBeGreaterThanOrEqual(0);
    expect(K).toBeLessThanOrEqual(N);

    const ft = await finetuneCommand({ ...FINETUNE_DEFAULTS, model: f.dir, data, seq: T, batch: 2, steps: 3, lr: 1e-3, freeze: 'auto', out, autoFreeze });
    expect(ft.log).toHaveLength(3);
    for (const e of ft.log) expect(Number.isFinite(e.loss!)).toBe(true);
    // The checkpoint: HF names, frozen tensors bit-identical to the input model, trainable ones moved.
    const saved = parseSafetensors(new Uint8Array(readFileSync(join(out, 'model.safetensors'))), 'saved');
    let moved = 0;
    for (const spec of paramSpecs(f.config)) {
      const n = hfName(spec.name, f.config);
      const x0 = f.model.getFloat32(n);
      const x1 = saved.getFloat32(n);
      const a0 = new Uint32Array(x0.buffer, x0.byteOffset, x0.length);
      const a1 = new Uint32Array(x1.buffer, x1.byteOffset, x1.length);
      const same = a0.length === a1.length && a0.every((v, i) => v === a1[i]);
      if (!isTrainable(spec, ft.freeze)) expect(same, `frozen ${n} changed`).toBe(true);
      else moved += same ? 0 : 1;
    }
    expect(moved).toBeGreaterThan(0);
    const cfgOut = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfgOut.model_type).toBe(f.config.modelType);

    const ev = await evalCommand({ model: out, data, seq: T, batch: 2, json: true, maxWindows: 4 });
    expect(Number.isFinite(ev.loss)).toBe(true);

    const traceFile = join(tmp, `${name}-trace.safetensors`);
    const prompt = Array.from(f.inputIds.subarray(0, T)).join(',');
    await traceCommand({ model: out, tokens: prompt, out: traceFile });
    const tr = parseSafetensors(new Uint8Array(readFileSync(traceFile)), 'trace');
    for (let k = 0; k <= N; k++) expect(tr.tensors.get(`hidden_states.${k}`)?.shape).toEqual([T, f.config.nEmbd]);

    const gen = await generateCommand({ model: out, tokens: '1,2,3', maxTokens: 4, temperature: 0, seed: 1, json: true });
    expect(gen.length).toBeGreaterThanOrEqual(3);

    // The saved model in transformers gives our logits (where a venv with transformers exists).
    if (python) {
      const script = `
import json, sys, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation="eager", torch_dtype=torch.float32).eval()
ids = torch.tensor([[int(x) for x in sys.argv[2].split(",")]])
with torch.no_grad():
    logits = m(ids).logits[0]
ours = load_file(sys.argv[3])["logits"]
err = ((logits - ours).norm() / logits.norm()).item()
print(json.dumps({"rel": err}))
`;
      const r = spawnSync(python, ['-c', script, out, prompt, traceFile], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const { rel } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rel: number };
      expect(rel).toBeLessThan(1e-4);
    }
  });
});
