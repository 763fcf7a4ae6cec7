// LoRA on the trainable suffix against Hugging Face PEFT (fixtures from
// test/fixtures/make_lora_fixtures.py: the family fixtures' models and batches, adapters on blocks
// K..N−1 only with fixed nonzero A and B): the loss and logits with the adapters, the gradient of
// every adapter tensor after one backward that stops at block K, and 5 AdamW steps over the adapters
// alone, for GPT-2 (Conv1D, fused c_attn), Llama (GQA), Qwen2 (a subset of targets, K = 0, biases)
// and Gemma2 (post-norms, soft-caps), plus target subsets that leave parts of block K's dX chain out.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { ModelForward } from '../src/model/forward.ts';
import { LoraAdapters, loraModules, type LoraSettings } from '../src/model/lora.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { TrainingGraph } from '../src/train/graph.ts';
import { FIXTURES, fixture } from './util/fixtures.ts';
import { gradients, trainSteps } from './util/train.ts';
import { relError, runtime } from './util/gpu.ts';

// The '.'-suffixed cases adapt subsets for which block K needs only part of its dX chain (down only:
// none of it; o + up: no attention backward; gate only: no attention half).
const NAMES = ['gpt2-odd', 'llama-gqa', 'qwen2-bias', 'gemma2-softcap', 'gpt2-odd.down', 'llama-gqa.o-up', 'gemma2-softcap.gate'] as const;

function loraFixture(name: string) {
  const ref = parseSafetensors(new Uint8Array(readFileSync(join(FIXTURES, 'lora', `${name}.safetensors`))), `lora/${name}.safetensors`);
  const m = ref.metadata;
  const f = fixture(m.model!);
  const settings: LoraSettings = { r: Number(m.r), alpha: Number(m.alpha), targets: JSON.parse(m.targets!) as string[] };
  const K = Number(m.freeze);
  const values = new Map<string, Float32Array>();
  for (const mod of loraModules(f.config, settings, K)) for (const n of [mod.aName, mod.bName]) values.set(n, ref.getFloat32(n));
  return { f, ref, settings, K, values };
}

describe.each(NAMES)('%s: LoRA against PEFT', (name) => {
  const { f, ref, settings, K, values } = loraFixture(name);
  const N = f.config.nLayer;
  const V = f.config.vocabSize;

  const setup = async () => {
    const rt = await runtime();
    const weights = GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
    const lora = LoraAdapters.upload(rt, f.config, settings, K, values);
    return { rt, weights, lora };
  };

  it('every adapter tensor of the fixture is one semfreeze lays out, and no other', () => {
    const names = [...ref.tensors.keys()].filter((n) => n.startsWith('base_model.'));
    expect(names.sort()).toEqual([...values.keys()].sort());
  });

  it('logits and loss with the adapters within 1e-4 of PEFT', async () => {
    const { rt, weights, lora } = await setup();
    const fwd = await ModelForward.build(rt, weights, { B: f.B, T: f.T, saveFrom: N, trace: { kind: 'none' }, loss: true, keepLogits: true, lora });
    fwd.setBatch(f.inputIds, f.targets);
    await fwd.run('lora-forward');
    const logits = await rt.memory.readFloat32(fwd.logits, 0, f.B * f.T * V);
    const rowsAt = (t: number) => Float32Array.from({ length: f.B * V }, (_, i) => logits[(Math.floor(i / V) * f.T + t) * V + (i % V)]!);
    const e0 = relError(rowsAt(0), ref.getFloat32('logits.first'));
    const e1 = relError(rowsAt(f.T - 1), ref.getFloat32('logits.last'));
    if (process.env.MEASURE) console.log(`MEASURE ${name} logits rel ${e0.toExponential(2)} ${e1.toExponential(2)}`);
    expect(e0, 'logits at position 0').toBeLessThan(1e-4);
    expect(e1, 'logits at position T-1').toBeLessThan(1e-4);
    const loss = await fwd.readLoss();
    expect(Math.abs(loss - ref.getFloat32('loss')[0]!) / ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    // The adapters change the model (B ≠ 0): not the base model's loss.
    expect(Math.abs(loss - f.ref.getFloat32('loss')[0]!)).toBeGreaterThan(1e-4);
    fwd.destroy();
    lora.destroy(rt);
    weights.destroy(rt);
  });

  it(`gradients of every adapter tensor (blocks ${K}..${N - 1}) within 1e-3 of PEFT; only the adapters get gradients`, async () => {
    const { rt, weights, lora } = await setup();
    const graph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze: K, accum: 1, lora }, { kind: 'adamw', weightDecay: 0 });
    graph.setBatch(f.inputIds, f.targets);
    const loss = await gradients(graph);
    expect(Math.abs(loss - ref.getFloat32('loss')[0]!) / ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    expect([...graph.grads.keys()].sort()).toEqual([...values.keys()].sort());
    expect(graph.trainable).toHaveLength(0);
    const worst: Record<string, number> = {};
    for (const [n, buf] of graph.grads) {
      const want = ref.getFloat32(`grad.${n}`);
      const e = relError(await rt.memory.readFloat32(buf, 0, want.length), want);
      worst[n] = e;
      expect(e, n).toBeLessThan(1e-3);
    }
    if (process.env.MEASURE) console.log(`MEASURE ${name} worst grad rel ${Math.max(...Object.values(worst)).toExponential(2)}`);
    lora.destroy(rt);
    weights.destroy(rt);
  });

  it('block K runs only the dX chain its adapters need: its attention backward only for q/k/v adapters', async () => {
    const { rt, weights, lora } = await setup();
    const attnBackward = (g: TrainingGraph) => g.microItems[0]!.filter((it) => 'bound' in it && it.bound.kernel.file === 'attention' && it.bound.kernel.entry.startsWith('backward')).length;
    const graph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze: K, accum: 1, lora }, { kind: 'adamw', weightDecay: 0 });
    // Training the weights of blocks K..N−1 runs the attention backward in each of them.
    const weightsGraph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze: K, accum: 1 }, { kind: 'adamw', weightDecay: 0 });
    const perBlock = attnBackward(weightsGraph) / (N - K);
    expect(perBlock).toBeGreaterThanOrEqual(2);
    const qkvAtK = settings.targets.some((t) => /(^|\.)(c_attn|q_proj|k_proj|v_proj)$/.test(t));
    expect(attnBackward(graph)).toBe(perBlock * (N - K - (qkvAtK ? 0 : 1)));
    lora.destroy(rt);
    weights.destroy(rt);
  });

  it('two accumulated micro-batches of the same batch give the same adapter gradients (1e-3 of PEFT)', async () => {
    const { rt, weights, lora } = await setup();
    const graph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze: K, accum: 2, lora }, { kind: 'adamw', weightDecay: 0 });
    graph.setBatch(f.inputIds, f.targets);
    await rt.steps.run('grad-accum', [...graph.zeroItems, ...graph.microItems[0]!, ...graph.microItems[1]!]);
    for (const [n, buf] of graph.grads) {
      const want = ref.getFloat32(`grad.${n}`);
      expect(relError(await rt.memory.readFloat32(buf, 0, want.length), want), n).toBeLessThan(1e-3);
    }
    lora.destroy(rt);
    weights.destroy(rt);
  });

  it('5 AdamW steps over the adapters give PEFT\'s losses (1e-3); base weights bit-identical', async () => {
    const { rt, weights, lora } = await setup();
    const before = await weights.download(rt);
    const graph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze: K, accum: 1, lora }, { kind: 'adamw', weightDecay: 0 });
    graph.setBatch(f.inputIds, f.targets);
    const losses = await trainSteps(graph, 5, 1e-2);
    const want = ref.getFloat32('adamw.losses');
    for (let i = 0; i < 5; i++) expect(Math.abs(losses[i]! - want[i]!) / want[i]!, `step ${i}: ${losses[i]} vs ${want[i]}`).toBeLessThan(1e-3);
    const after = await weights.download(rt);
    for (const [n, x] of before) expect(new Uint32Array(after.get(n)!.buffer).every((v, i) => v === new Uint32Array(x.buffer)[i]), `${n} changed`).toBe(true);
    lora.destroy(rt);
    weights.destroy(rt);
  });
});
