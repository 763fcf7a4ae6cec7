// `semfreeze plan` (issue 14, part 1): the plan handed to cluster tools. The core (names, boundary,
// cost, the LLaMA-Factory and PEFT renderings) on every family's fixture; the command (JSON on stdout
// and in --out, --freeze auto equal to `analyze`, one-line errors); and, where the repository's .venv
// has them, the plan used by the tools themselves: Hugging Face Trainer with scripts/semfreeze_plan.py
// (frozen weights bit-identical, trainable ones moved, nothing of the prefix kept for backward), PEFT's
// LoraConfig/get_peft_model, and LLaMA-Factory's freeze selection (scripts/check_llamafactory_yaml.py).
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { predictedSaving } from '../src/analysis/cost.ts';
import { buildPlan, llamaFactoryArgs, peftConfig, renderLlamaFactory, type FreezePlan } from '../src/analysis/plan.ts';
import { planCommand, type PlanOptions } from '../src/cli/plan.ts';
import { loraTargetNames } from '../src/model/lora.ts';
import { hfName, isTrainable, paramCount, paramSpecs } from '../src/model/params.ts';
import { UserError } from '../src/util/errors.ts';
import { mulberry32 } from './reference/ops.ts';
import { REPO, describeRun, removeDir, runCli, stdoutJson, tempDir, userErrorLine } from './util/cli.ts';
import { fixture } from './util/fixtures.ts';
import { findPython } from './util/python.ts';

const FAMILIES = ['gpt2-odd', 'gpt2-tiny', 'llama-gqa', 'qwen2-bias', 'gemma2-softcap'] as const;
const tmp = tempDir('plan');
afterAll(() => removeDir(tmp));

const plan = (name: string, freeze: number | null) => {
  const f = fixture(name);
  return buildPlan({ config: f.config, modelPath: f.dir, freeze, source: 'flag', batch: 4, seq: 16, generator: 'test' });
};

describe.each(FAMILIES)('the plan of %s', (name) => {
  const f = fixture(name);
  const N = f.config.nLayer;
  const stored = new Set(f.model.tensors.keys());

  it.each([null, ...Array.from({ length: N + 1 }, (_, k) => k)])('--freeze %s: every parameter once, trainable exactly as the trainer freezes, names as stored', (K) => {
    const p = plan(name, K);
    const specs = paramSpecs(f.config);
    const all = specs.map((s) => hfName(s.name, f.config));
    expect([...p.parameters.trainable, ...p.parameters.frozen].sort()).toEqual([...all].sort());
    expect(p.parameters.trainable).toEqual(specs.filter((s) => isTrainable(s, K)).map((s) => hfName(s.name, f.config)));
    expect(p.parameters.trainableCount + p.parameters.frozenCount).toBe(paramCount(f.config));
    // Every name is a tensor of the fixture's checkpoint (written by transformers' save_pretrained).
    for (const n of all) expect(stored.has(n), n).toBe(true);
    expect(p.boundary.freeze).toBe(K ?? 'none');
    expect(p.boundary.frozenBlocks).toEqual(K === null ? [] : Array.from({ length: K }, (_, i) => i));
    expect([...p.boundary.frozenBlocks, ...p.boundary.trainableBlocks]).toEqual(Array.from({ length: N }, (_, i) => i));
    // Block i's tensors are under the layer pattern; the embeddings train only in full fine-tuning.
    for (const i of p.boundary.trainableBlocks) expect(p.parameters.trainable.some((n) => n.startsWith(`${p.names.layerPattern.replace('{i}', String(i))}.`))).toBe(true);
    for (const e of p.names.embeddings) expect(p.parameters.trainable.includes(e)).toBe(K === null);
    for (const n of p.names.finalNorm) expect(p.parameters.trainable).toContain(n);
    expect(p.names.head === null).toBe(f.config.tiedHead);
    expect(p.boundary.notes.some((n) => n.includes('tied'))).toBe(f.config.tiedHead);
    if (p.names.head) expect(p.parameters.trainable).toContain(p.names.head);
    // The predicted saving is the cost model's.
    if (K === null) expect(p.cost.stepSaving).toBe(0);
    else expect(p.cost.stepSaving).toBeCloseTo(predictedSaving(f.config, 4, 16, K).stepSaving, 12);
  });

  it('LLaMA-Factory keys: the last N−K layers; the final norm by name only where no layer shares it', () => {
    const lf = llamaFactoryArgs(plan(name, 1));
    expect(lf.args).toMatchObject({ finetuning_type: 'freeze', freeze_trainable_layers: N - 1, freeze_trainable_modules: 'all' });
    const gpt2 = f.config.modelType === 'gpt2';
    const extras = [...(gpt2 ? ['ln_f'] : []), ...(f.config.tiedHead ? [] : ['lm_head'])];
    expect(lf.args.freeze_extra_modules).toBe(extras.length > 0 ? extras.join(',') : null);
    expect(lf.frozenHere).toEqual(gpt2 ? [] : ['model.norm.weight']);
    expect(renderLlamaFactory(plan(name, 1)).includes('# semfreeze-frozen-here: model.norm.weight')).toBe(!gpt2);
    expect(llamaFactoryArgs(plan(name, null)).args).toEqual({ finetuning_type: 'full' });
    if (!gpt2 && f.config.tiedHead) expect(() => llamaFactoryArgs(plan(name, N))).toThrow(/cannot select/);
    else expect(llamaFactoryArgs(plan(name, N)).args.freeze_trainable_layers).toBe(0);
  });

  it('PEFT config: LoRA on blocks K..N−1 only, finetune --lora\'s targets and alpha', () => {
    const c = peftConfig(plan(name, 1), f.config, { r: 4 });
    expect(c).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, target_modules: loraTargetNames(f.config), layers_to_transform: Array.from({ length: N - 1 }, (_, i) => i + 1), layers_pattern: f.config.modelType === 'gpt2' ? 'h' : 'layers' });
    expect(peftConfig(plan(name, 1), f.config, { targets: 'mlp', alpha: 3 })).toMatchObject({ r: 8, lora_alpha: 3, target_modules: loraTargetNames(f.config).filter((t) => t.startsWith('mlp.')) });
    expect(peftConfig(plan(name, null), f.config)).toMatchObject({ layers_to_transform: null, layers_pattern: null });
    expect(() => peftConfig(plan(name, N), f.config)).toThrow(UserError);
  });
});

/** planCommand in this process, its stdout/stderr swallowed. */
async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    return await fn();
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

const gpt2 = fixture('gpt2-odd');
const lmData = join(tmp, 'ids.json');
{
  const rnd = mulberry32(1414);
  writeFileSync(lmData, JSON.stringify(Array.from({ length: 16 * 17 + 1 }, () => Math.floor(rnd() * gpt2.config.vocabSize))));
}

describe('semfreeze plan', () => {
  it('--freeze K --json: the plan on stdout is the file; no analysis, no GPU', async () => {
    const out = join(tmp, 'k.json');
    const r = await runCli(['plan', '--model', gpt2.dir, '--freeze', '2', '--out', out, '--json']);
    expect(r.code, describeRun(r)).toBe(0);
    const p = stdoutJson<FreezePlan>(r);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(p);
    expect(p).toMatchObject({ format: 'semfreeze.plan/1', analysis: null, data: null, boundary: { freeze: 2, source: 'flag' }, model: { family: 'gpt2', modelType: 'gpt2', architecture: 'GPT2LMHeadModel', nLayer: 3, tiedHead: true } });
    expect(p.names).toMatchObject({ layerPattern: 'transformer.h.{i}', embeddings: ['transformer.wte.weight', 'transformer.wpe.weight'], finalNorm: ['transformer.ln_f.weight', 'transformer.ln_f.bias'], head: null, headTiedTo: 'transformer.wte.weight' });
    expect(r.messages.some((l) => l.startsWith('wrote '))).toBe(true);
    expect(r.stderr).not.toMatch(/compiling kernels|analysis/);
  });

  it('--freeze auto: the analysis of `analyze` with the same flags, summarised in the plan', async () => {
    const flags = ['--data', lmData, '--seq', '16', '--batch', '2', '--max-windows', '8'];
    const out = join(tmp, 'auto.json');
    const [r, a] = [await runCli(['plan', '--model', gpt2.dir, ...flags, '--out', out, '--json']), await runCli(['analyze', '--model', gpt2.dir, ...flags, '--json'])];
    expect(r.code, describeRun(r)).toBe(0);
    expect(a.code, describeRun(a)).toBe(0);
    const p = stdoutJson<FreezePlan>(r);
    const report = stdoutJson<{ latentSpaces: { deviation: number }[]; blocks: { gain: number | null }[]; boundary: { freeze: number }; strategy: { name: string } }>(a);
    expect(p.boundary).toMatchObject({ freeze: report.boundary.freeze, source: 'analysis' });
    expect(p.analysis!.boundary).toEqual(report.boundary);
    expect(p.analysis!.latentSpaces.map((l) => l.deviation)).toEqual(report.latentSpaces.map((l) => l.deviation));
    expect(p.analysis!.blocks.map((b) => b.gain)).toEqual(report.blocks.map((b) => b.gain));
    expect(p.analysis).toMatchObject({ data: lmData, kind: 'lm', seq: 16, batch: 2, maxWindows: 8, strategy: { name: report.strategy.name } });
    expect(p.data).toBe(lmData);
    expect(p.parameters.trainable).toEqual(plan('gpt2-odd', report.boundary.freeze).parameters.trainable);
    expect(p.cost).toMatchObject({ batch: 2, seqLen: 16 });
  });

  it('writes each format; refuses bad input with one line naming the flag or file', async () => {
    const run = (o: Partial<PlanOptions>) => quietly(() => planCommand({ model: gpt2.dir, out: join(tmp, 'x.out'), freeze: '1', ...o }));
    expect((await run({ format: 'llamafactory' })).text).toMatch(/^finetuning_type: freeze$/m);
    expect(JSON.parse((await run({ format: 'peft', lora: 16 })).text)).toMatchObject({ r: 16, lora_alpha: 32, layers_to_transform: [1, 2] });
    const cases: [Partial<PlanOptions>, RegExp][] = [
      [{ format: 'xml' }, /--format must be one of json, llamafactory, peft, got 'xml'/],
      [{ freeze: '4' }, /--freeze 4: the model has only 3 blocks/],
      [{ freeze: '-1' }, /--freeze must be none, auto or a block count/],
      [{ freeze: 'auto' }, /--freeze auto needs --data/],
      [{ freeze: '1', deviation: 'lens' }, /--deviation is an analysis flag and applies to --freeze auto; with --freeze 1 no analysis runs/],
      [{ lora: 4 }, /--lora applies to --format peft, not --format json/],
      [{ format: 'peft', loraTargets: 'q_proj' }, /--lora-targets: 'q_proj' names no linear layer of a gpt2 block/],
      [{ data: join(tmp, 'missing.json') }, /missing\.json: no such file/],
      [{ out: gpt2.dir }, /--out .*gpt2-odd: is the directory of --model/],
      [{ out: join(gpt2.dir, 'config.json') }, /--out .*config\.json: is inside the model directory/],
      [{ freeze: '3', format: 'peft' }, /no block trains, so there is no block to put LoRA adapters on/],
      [{ model: join(tmp, 'nope') }, /nope.*config\.json/],
    ];
    for (const [o, re] of cases) await expect(run(o), JSON.stringify(o)).rejects.toThrow(re);
    const llama = fixture('llama-gqa');
    await expect(run({ model: llama.dir, freeze: '3', format: 'llamafactory' })).rejects.toThrow(/trains only model\.norm\.weight, which LLaMA-Factory's freeze tuning cannot select/);
    // Through the CLI: exit 1, one line, {"error"} on stdout with --json.
    const r = await runCli(['plan', '--model', gpt2.dir, '--freeze', '9', '--out', join(tmp, 'y.json'), '--json']);
    expect(userErrorLine(r)).toBe('semfreeze: --freeze 9: the model has only 3 blocks (0 ≤ K ≤ 3)');
  });
});

// --- With the tools themselves (the repository's .venv, built by npm run setup) ---------------------
const trainerPython = findPython('transformers, torch, accelerate');
const peftPython = findPython('peft, transformers, torch');

function py(python: string, args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(python, args, { cwd: REPO, input, encoding: 'utf8', timeout: 300_000, env: { ...process.env, OMP_NUM_THREADS: '1', TOKENIZERS_PARALLELISM: 'false' } });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** One Python process for several cases (each start imports torch and transformers: seconds). */
function pyCases<T>(python: string, script: string, cases: object[]): T[] {
  const r = py(python, [script], JSON.stringify(cases));
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.code !== 0 || !last.startsWith('[')) throw new Error(`python ${script}: exit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);
  return JSON.parse(last) as T[];
}

async function writePlan(name: string, freeze: string, format = 'json', o: Partial<PlanOptions> = {}): Promise<string> {
  const out = join(tmp, `${name}-${freeze}${o.loraTargets ? `-${o.loraTargets}` : ''}.${format === 'llamafactory' ? 'yaml' : `${format}.json`}`);
  await quietly(() => planCommand({ model: fixture(name).dir, freeze, out, format, ...o }));
  return out;
}

interface TrainerResult {
  frozenChanged: string[];
  trainableUnchanged: string[];
  frozenWithGrad: string[];
  trainableCount: number;
  optimizerParams: number;
  losses: number[];
  kept: { prefix: number; suffix: number };
  prefixOutputsInAutograd: string[];
  control: { kept: { prefix: number; suffix: number }; prefixOutputsInAutograd: string[] };
}

describe.skipIf(!trainerPython)('Hugging Face Trainer with the exported plan (scripts/semfreeze_plan.py)', () => {
  const CASES = [
    ['gpt2-odd', '1', false],
    ['llama-gqa', '2', true],
  ] as const;
  let results: TrainerResult[] = [];
  let refused: string | null = null;
  beforeAll(async () => {
    const cases: object[] = [];
    for (const [name, K, checkpointing] of CASES) cases.push({ plan: await writePlan(name, K), model: fixture(name).dir, checkpointing });
    cases.push({ plan: await writePlan('gpt2-odd', '1'), model: fixture('llama-gqa').dir, refusal: true });
    const all = pyCases<TrainerResult & { refused: string | null }>(trainerPython!, 'test/python/plan_trainer.py', cases);
    results = all.slice(0, CASES.length);
    refused = all[CASES.length]!.refused;
  });

  it.each(CASES.map((c, i) => [...c, i] as const))('%s --freeze %s (gradient checkpointing %s): frozen bit-identical, trainable moved, no prefix activation kept', (_name, _K, _ckpt, i) => {
    const r = results[i]!;
    expect(r.frozenChanged).toEqual([]);
    expect(r.frozenWithGrad).toEqual([]);
    expect(r.trainableUnchanged).toEqual([]);
    expect(r.optimizerParams).toBe(r.trainableCount);
    expect(r.losses).toHaveLength(3);
    for (const l of r.losses) expect(Number.isFinite(l)).toBe(true);
    // Nothing saved before block K outlives its forward; the trainable blocks do keep theirs.
    expect(r.kept.prefix).toBe(0);
    expect(r.kept.suffix).toBeGreaterThan(0);
    expect(r.prefixOutputsInAutograd).toEqual([]);
    // The recorders see the prefix where only requires_grad is set (what the hooks prevent).
    expect(r.control.kept.prefix).toBeGreaterThan(0);
    expect(r.control.prefixOutputsInAutograd.length).toBeGreaterThan(0);
  });

  it('apply_plan refuses a plan made for another model, naming the parameter', () => {
    expect(refused).toMatch(/^LlamaForCausalLM \(plan for GPT2LMHeadModel at .*gpt2-odd\): the model has no parameter 'transformer\.h\.1\.ln_1\.weight'/);
  });
});

interface LlamaFactoryCheck {
  ok: boolean;
  declaredFrozenHere: string[];
  onlyInYaml: string[];
  onlyInPlan: string[];
  refused?: string;
}

describe.skipIf(!trainerPython)("LLaMA-Factory's freeze selection (scripts/check_llamafactory_yaml.py) on the YAML", () => {
  const CASES = [
    ['gpt2-odd', '1'],
    ['llama-gqa', '1'],
    ['qwen2-bias', '2'],
    ['gemma2-softcap', '3'],
    ['gpt2-tiny', 'none'],
  ] as const;
  let results: LlamaFactoryCheck[] = [];
  let mutated: LlamaFactoryCheck[] = [];
  beforeAll(async () => {
    const cases = [];
    for (const [name, K] of CASES) cases.push({ plan: await writePlan(name, K), yaml: await writePlan(name, K, 'llamafactory'), model: fixture(name).dir });
    // Fragments that mean something else: the check must fail on them.
    const llama = { plan: await writePlan('llama-gqa', '1'), model: fixture('llama-gqa').dir };
    const yaml = readFileSync(await writePlan('llama-gqa', '1', 'llamafactory'), 'utf8');
    const edits: [string, string][] = [
      ['freeze_extra_modules: null', 'freeze_extra_modules: norm'],
      ['freeze_trainable_layers: 2', 'freeze_trainable_layers: 1'],
      ['freeze_extra_modules: null', 'freeze_extra_modules: ln_f'],
    ];
    edits.forEach(([from, to], i) => {
      const file = join(tmp, `mutated-${i}.yaml`);
      writeFileSync(file, yaml.replace(from, to));
      cases.push({ ...llama, yaml: file });
    });
    const all = pyCases<LlamaFactoryCheck>(trainerPython!, 'test/python/plan_llamafactory.py', cases);
    results = all.slice(0, CASES.length);
    mutated = all.slice(CASES.length);
  });

  it.each(CASES.map((c, i) => [...c, i] as const))('%s --freeze %s: trains the plan (the Llama family less its final norm, as declared)', (name, _K, i) => {
    const r = results[i]!;
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.onlyInYaml).toEqual([]);
    expect(r.onlyInPlan).toEqual(r.declaredFrozenHere);
    expect(r.declaredFrozenHere).toEqual(fixture(name).config.modelType === 'gpt2' ? [] : ['model.norm.weight']);
  });

  it('fails on a fragment that means something else (the check can fail)', () => {
    // 'norm' would also select the frozen block 0's norms, which is why the fragment does not use it.
    expect(mutated[0]).toMatchObject({ ok: false, onlyInYaml: ['model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight'] });
    expect(mutated[1]!.ok).toBe(false);
    expect(mutated[1]!.onlyInPlan).toContain('model.layers.1.self_attn.q_proj.weight');
    // LLaMA-Factory's own refusal: a module name its model does not have.
    expect(mutated[2]!.refused).toMatch(/Module ln_f is not found/);
  });
});

describe.skipIf(!peftPython)('PEFT with the exported LoRA config', () => {
  const CASES = [
    ['gpt2-odd', '1', 'all', ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj']],
    ['llama-gqa', '2', 'all', ['mlp.down_proj', 'mlp.gate_proj', 'mlp.up_proj', 'self_attn.k_proj', 'self_attn.o_proj', 'self_attn.q_proj', 'self_attn.v_proj']],
    ['qwen2-bias', '1', 'attn', ['self_attn.k_proj', 'self_attn.o_proj', 'self_attn.q_proj', 'self_attn.v_proj']],
  ] as const;
  let results: { adaptedLayers: number[]; adaptedModules: Record<string, string[]>; trainableNonLora: string[]; withGradNonLora: string[] }[] = [];
  beforeAll(async () => {
    const cases = [];
    for (const [name, K, targets] of CASES) cases.push({ config: await writePlan(name, K, 'peft', { loraTargets: targets }), model: fixture(name).dir });
    results = pyCases(peftPython!, 'test/python/plan_peft.py', cases);
  });

  it.each(CASES.map((c, i) => [...c, i] as const))('%s --freeze %s --lora-targets %s: LoraConfig(**cfg) + get_peft_model put adapters on blocks ≥ K only', (name, K, _targets, modules, i) => {
    const r = results[i]!;
    const N = fixture(name).config.nLayer;
    const expected = Array.from({ length: N - Number(K) }, (_, j) => j + Number(K));
    expect(r.adaptedLayers).toEqual(expected);
    for (const l of expected) expect(r.adaptedModules[String(l)]).toEqual([...modules]);
    expect(r.trainableNonLora).toEqual([]);
    expect(r.withGradNonLora).toEqual([]);
  });
});
