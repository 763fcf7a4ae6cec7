// `semfreeze finetune --lora` end to end (in-process, as the CLI runs it) for the four families: the
// PEFT adapter directory it saves loads in peft.PeftModel.from_pretrained on the Hugging Face base with
// our logits (1e-4, where the repository's .venv has peft), `--merge` writes a Hugging Face model that
// transformers and semfreeze load with the same logits, a resumed LoRA run continues bit-identically,
// and the LoRA flags' errors.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FINETUNE_DEFAULTS, finetuneCommand, type FinetuneOptions } from '../src/cli/finetune.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { ModelForward } from '../src/model/forward.ts';
import { LoraAdapters, type LoraSettings } from '../src/model/lora.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { mulberry32 } from './reference/ops.ts';
import { fixture, type Fixture } from './util/fixtures.ts';
import { modelDirLogits, relError, runtime } from './util/gpu.ts';
import { findPython } from './util/python.ts';
import { describeRun, runCli } from './util/cli.ts';

const python = findPython('peft, transformers, torch');
const tmp = mkdtempSync(join(tmpdir(), 'semfreeze-lora-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function data(f: Fixture): string {
  const path = join(tmp, `${f.name}.json`);
  const rnd = mulberry32(f.name.length * 104729);
  writeFileSync(path, JSON.stringify(Array.from({ length: 24 * f.T + 1 }, () => Math.floor(rnd() * f.config.vocabSize))));
  return path;
}

const opts = (f: Fixture, extra: Partial<FinetuneOptions>): FinetuneOptions => ({ ...FINETUNE_DEFAULTS, model: f.dir, data: data(f), seq: f.T, batch: 2, steps: 3, lr: 1e-2, freeze: '1', out: join(tmp, `${f.name}-x`), ...extra });

/** Our logits [B·T, V] on the fixture's batch: the base model with the adapters saved in DIR. */
async function adapterLogits(f: Fixture, dir: string): Promise<Float32Array> {
  const rt = await runtime();
  const state = JSON.parse(readFileSync(join(dir, 'train-state.json'), 'utf8')) as { freeze: number | null; lora: LoraSettings };
  const st = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))), 'adapter');
  const values = new Map([...st.tensors.keys()].map((n) => [n, st.getFloat32(n)] as const));
  const weights = GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
  const lora = LoraAdapters.upload(rt, f.config, state.lora, state.freeze ?? 0, values);
  const fwd = await ModelForward.build(rt, weights, { B: f.B, T: f.T, saveFrom: f.config.nLayer, trace: { kind: 'none' }, loss: false, keepLogits: true, lora });
  fwd.setBatch(f.inputIds);
  await fwd.run();
  const out = await rt.memory.readFloat32(fwd.logits, 0, f.B * f.T * f.config.vocabSize);
  fwd.destroy();
  lora.destroy(rt);
  weights.destroy(rt);
  return out;
}

/**
 * Logits from Python (one process): `peft`, PeftModel.from_pretrained(base in baseDir, adapterDir);
 * `merged`, the model in mergedDir loaded by transformers alone.
 */
function pythonLogits(f: Fixture, baseDir: string, adapterDir: string, mergedDir: string): { peft: Float32Array; merged: Float32Array } {
  const file = join(tmp, `${f.name}-py-logits.safetensors`);
  const script = `
import sys, torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import PeftModel
load = lambda d: AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
ids = torch.tensor([[int(x) for x in row.split(",")] for row in sys.argv[3].split(";")])
pm = PeftModel.from_pretrained(load(sys.argv[1]), sys.argv[2]).eval()
with torch.no_grad():
    out = {"peft": pm(input_ids=ids).logits, "merged": load(sys.argv[4])(input_ids=ids).logits}
save_file({k: v.float().contiguous() for k, v in out.items()}, sys.argv[5])
`;
  const rows = Array.from({ length: f.B }, (_, b) => Array.from(f.inputIds.subarray(b * f.T, (b + 1) * f.T)).join(',')).join(';');
  const r = spawnSync(python!, ['-c', script, baseDir, adapterDir, rows, mergedDir, file], { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  expect(r.status, r.stderr).toBe(0);
  const st = parseSafetensors(new Uint8Array(readFileSync(file)), 'py');
  return { peft: st.getFloat32('peft'), merged: st.getFloat32('merged') };
}

// GPT-2 (Conv1D, fan_in_fan_out) and Llama (Linear, GQA) in `npm test`; Qwen2 and Gemma 2 compile
// family-specific LoRA graphs (~80 s with a cold shader cache), so they run in `npm run test:heavy`
// (their adapters' gradients and logits are checked against PEFT in npm test by lora-peft.test.ts).
const HEAVY = process.env.SEMFREEZE_HEAVY === '1';
const CASES = [
  { name: 'gpt2-odd', freeze: '1', targets: undefined },
  { name: 'llama-gqa', freeze: '1', targets: undefined },
  ...(HEAVY ? ([
    { name: 'qwen2-bias', freeze: 'none', targets: 'q_proj,v_proj,mlp' },
    { name: 'gemma2-softcap', freeze: '2', targets: 'attn' },
  ] as const) : []),
] as const;

describe.each(CASES)('finetune --lora on $name (--freeze $freeze, targets $targets)', ({ name, freeze, targets }) => {
  const f = fixture(name);

  it('saves a PEFT adapter directory that PEFT loads with our logits; --merge a model transformers loads with them', async () => {
    const out = join(tmp, `${name}-lora`);
    const ft = await finetuneCommand(opts(f, { freeze, out, lora: 4, loraTargets: targets }));
    expect(ft.log).toHaveLength(3);
    for (const e of ft.log) expect(Number.isFinite(e.loss!)).toBe(true);
    for (const n of ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'train-state.json']) expect(existsSync(join(out, n)), n).toBe(true);
    expect(existsSync(join(out, 'model.safetensors'))).toBe(false);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, fan_in_fan_out: name === 'gpt2-odd' });
    const K = freeze === 'none' ? 0 : Number(freeze);
    const mods = cfg.target_modules as string[];
    expect(mods.length).toBeGreaterThan(0);
    for (const m of mods) expect(Number(/\.(\d+)\./.exec(m)![1])).toBeGreaterThanOrEqual(K);
    const ad = parseSafetensors(new Uint8Array(readFileSync(join(out, 'adapter_model.safetensors'))), 'adapter');
    expect(ad.tensors.size).toBe(2 * mods.length);
    // Trained: every B moved away from its zero start.
    for (const [n] of ad.tensors) if (n.endsWith('lora_B.weight')) expect(ad.getFloat32(n).some((v) => v !== 0), n).toBe(true);

    const ours = await adapterLogits(f, out);
    const base = await modelDirLogits(f.dir, f);
    expect(relError(ours, base), 'the adapters change the logits').toBeGreaterThan(1e-4);

    const merged = join(tmp, `${name}-merged`);
    await finetuneCommand(opts(f, { freeze, out: merged, lora: 4, loraTargets: targets, merge: true }));
    expect(existsSync(join(merged, 'adapter_config.json'))).toBe(false);
    const mergedOurs = await modelDirLogits(merged, f);
    const em = relError(mergedOurs, ours);
    if (process.env.MEASURE) console.log(`MEASURE ${name} merged (semfreeze) vs adapters ${em.toExponential(2)}`);
    expect(em).toBeLessThan(1e-4);
    if (python) {
      const py = pythonLogits(f, f.dir, out, merged);
      const ep = relError(ours, py.peft);
      const et = relError(py.merged, ours);
      if (process.env.MEASURE) console.log(`MEASURE ${name} adapter logits vs PEFT ${ep.toExponential(2)}; merged (transformers) vs ours ${et.toExponential(2)}`);
      expect(ep, 'PeftModel.from_pretrained on the base').toBeLessThan(1e-4);
      expect(et, 'the merged model in transformers').toBeLessThan(1e-4);
    }
  });
});

describe('finetune --lora: resume and errors (gpt2-odd)', () => {
  const f = fixture('gpt2-odd');

  it('2 steps, then --resume to 4, gives the adapters and optimizer state of 4 steps straight; so does --cache-boundary', async () => {
    const straight = join(tmp, 'resume-straight');
    const split = join(tmp, 'resume-split');
    await finetuneCommand(opts(f, { out: straight, steps: 4, lora: 3, loraAlpha: 5, schedule: 'constant' }));
    await finetuneCommand(opts(f, { out: split, steps: 2, lora: 3, loraAlpha: 5, schedule: 'constant' }));
    await finetuneCommand(opts(f, { out: split, steps: 4, lora: 3, loraAlpha: 5, schedule: 'constant', resume: split }));
    for (const file of ['adapter_model.safetensors', 'optimizer.safetensors']) {
      expect(Buffer.compare(readFileSync(join(straight, file)), readFileSync(join(split, file))), file).toBe(0);
    }
    // The boundary cache (f32) trains the same adapters bit for bit.
    const cached = join(tmp, 'resume-cached');
    await finetuneCommand(opts(f, { out: cached, steps: 4, lora: 3, loraAlpha: 5, schedule: 'constant', cacheBoundary: 'memory' }));
    expect(Buffer.compare(readFileSync(join(straight, 'adapter_model.safetensors')), readFileSync(join(cached, 'adapter_model.safetensors'))), '--cache-boundary memory').toBe(0);
    // Resuming a LoRA run without --lora takes the saved run's settings (as --batch and the rest).
    await finetuneCommand(opts(f, { out: split, steps: 5, schedule: 'constant', resume: split }));
    expect(JSON.parse(readFileSync(join(split, 'train-state.json'), 'utf8')).lora).toMatchObject({ r: 3, alpha: 5 });
  });

  it('refuses: an unknown target, --lora-alpha without --lora, a whole-model freeze, resuming a weights run with --lora', async () => {
    await expect(finetuneCommand(opts(f, { out: join(tmp, 'e1'), lora: 2, loraTargets: 'c_attn,q_proj' }))).rejects.toThrow(/--lora-targets: 'q_proj' names no linear layer of a gpt2 block; the layers are attn\.c_attn, attn\.c_proj, mlp\.c_fc, mlp\.c_proj/);
    await expect(finetuneCommand(opts(f, { out: join(tmp, 'e2'), loraAlpha: 4 }))).rejects.toThrow(/--lora-alpha needs --lora R/);
    await expect(finetuneCommand(opts(f, { out: join(tmp, 'e3'), merge: true }))).rejects.toThrow(/--merge needs --lora R/);
    await expect(finetuneCommand(opts(f, { out: join(tmp, 'e4'), lora: 2, freeze: String(f.config.nLayer) }))).rejects.toThrow(/every block is frozen, there is no layer to adapt/);
    const full = join(tmp, 'e5');
    await finetuneCommand(opts(f, { out: full, steps: 1 }));
    await expect(finetuneCommand(opts(f, { out: full, steps: 2, lora: 2, resume: full }))).rejects.toThrow(/the saved run trained the weights \(no --lora\); --lora cannot continue it/);
  });

  it('the command line: --lora 0 is refused before anything loads', async () => {
    const r = await runCli(['finetune', '--model', f.dir, '--data', data(f), '--freeze', '1', '--steps', '1', '--seq', '8', '--out', join(tmp, 'e6'), '--lora', '0']);
    expect(r.code, describeRun(r)).toBe(1);
    expect(r.messages.join('\n')).toMatch(/--lora/);
  });
});
