// Llama, Qwen2 and Gemma2 end to end against Hugging Face transformers (fixtures from
// test/fixtures/make_family_fixtures.py: random weights, GQA, head_dim ≠ width/heads, Llama 3 rope
// scaling, Qwen2's q/k/v biases and untied head, Gemma2's soft-capping, post-norms, embedding scale and
// sliding window shorter than the sequence): logits, every hidden state, the loss, the gradient of every
// trainable tensor at --freeze none, 0 and N/2, and AdamW steps with frozen weights bit-identical.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../src/io/safetensors.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { ModelForward } from '../src/model/forward.ts';
import { hfName, isTrainable } from '../src/model/params.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { fixture, type Fixture } from './util/fixtures.ts';
import { buildGraph, gradients, trainSteps } from './util/train.ts';
import { relError, runtime } from './util/gpu.ts';

const FAMILIES = ['llama-gqa', 'qwen2-bias', 'gemma2-softcap'] as const;

async function upload(rt: Runtime, f: Fixture): Promise<GpuWeights> {
  return GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
}

describe.each(FAMILIES)('%s against transformers', (name) => {
  const f = fixture(name);
  const N = f.config.nLayer;
  const C = f.config.nEmbd;

  it('config: the family\'s shape as transformers reads it', () => {
    const meta = f.ref.metadata;
    expect(f.config.modelType).toBe(meta.model_type);
    expect(f.config.tiedHead).toBe(meta.tied_head === 'true' || meta.tied_head === 'True');
    const layerTypes = JSON.parse(meta.layer_types ?? 'null') as string[] | null;
    if (layerTypes) expect(f.config.arch!.layerTypes).toEqual(layerTypes.map((t) => (t === 'sliding_attention' ? 'sliding' : 'full')));
    expect(f.config.arch!.attnScale).toBeCloseTo(Number(meta.attention_scale), 12);
  });

  it('bf16 weights (model.bf16.safetensors) load as torch cast them: each value the f32 one rounded to bf16', async () => {
    const bf16 = parseSafetensors(new Uint8Array(readFileSync(join(f.dir, 'model.bf16.safetensors'))), `${name}/model.bf16.safetensors`);
    const from16 = await hostParams({ config: f.config, weights: bf16 });
    const from32 = await hostParams({ config: f.config, weights: f.model });
    const toBf16 = (x: number) => {
      const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
      const r = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000; // round to nearest even
      return new Float32Array(new Uint32Array([r >>> 0]).buffer)[0]!;
    };
    for (const [n, v] of from32) {
      const got = from16.get(n)!;
      for (let i = 0; i < v.length; i++) if (got[i] !== toBf16(v[i]!)) throw new Error(`${n}[${i}]: ${got[i]} vs bf16(${v[i]}) = ${toBf16(v[i]!)}`);
    }
  });

  it('logits, every hidden state and the loss within 1e-4 of transformers', async () => {
    const rt = await runtime();
    const weights = await upload(rt, f);
    const fwd = await ModelForward.build(rt, weights, { B: f.B, T: f.T, saveFrom: N, trace: { kind: 'all' }, loss: true, keepLogits: true });
    fwd.setBatch(f.inputIds, f.targets);
    await fwd.run('family-forward');
    const rows = f.B * f.T;
    const logits = await rt.memory.readFloat32(fwd.logits, 0, rows * f.config.vocabSize);
    expect(relError(logits, f.ref.getFloat32('logits')), 'logits').toBeLessThan(1e-4);
    // Latent spaces 0..N−1 are the raw residual stream (HF's hidden_states.k); space N before the
    // final norm is residual.N; hidden_states.N is after it.
    for (let k = 0; k < N; k++) {
      const got = await rt.memory.readFloat32(fwd.trace!, k * fwd.traceSlotElems, rows * C);
      expect(relError(got, f.ref.getFloat32(`hidden_states.${k}`)), `hidden_states.${k}`).toBeLessThan(1e-4);
    }
    expect(relError(await rt.memory.readFloat32(fwd.trace!, N * fwd.traceSlotElems, rows * C), f.ref.getFloat32(`residual.${N}`)), `residual.${N}`).toBeLessThan(1e-4);
    expect(relError(await rt.memory.readFloat32(fwd.lnf, 0, rows * C), f.ref.getFloat32(`hidden_states.${N}`)), `hidden_states.${N}`).toBeLessThan(1e-4);
    const loss = await fwd.readLoss();
    expect(Math.abs(loss - f.ref.getFloat32('loss')[0]!) / f.ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    fwd.destroy();
    weights.destroy(rt);
  });

  it.each([null, 0, Math.floor(N / 2)])('gradients of every trainable tensor at --freeze %s within 1e-3 of torch autograd', async (freeze) => {
    const rt = await runtime();
    const { weights, graph } = await buildGraph(rt, f, freeze);
    const loss = await gradients(graph);
    expect(Math.abs(loss - f.ref.getFloat32('loss')[0]!) / f.ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    const trainable = weights.specs.filter((s) => isTrainable(s, freeze));
    expect(trainable.length).toBe(graph.grads.size);
    if (freeze !== null) {
      const listed = (JSON.parse(f.ref.metadata.trainable ?? '{}') as Record<string, string[]>)[String(freeze)];
      if (listed) expect(trainable.map((s) => hfName(s.name, f.config)).sort()).toEqual([...listed].sort());
    }
    for (const spec of trainable) {
      const got = await rt.memory.readFloat32(graph.grads.get(spec.name)!, 0, spec.numel);
      expect(relError(got, f.ref.getFloat32(`grad.${hfName(spec.name, f.config)}`)), `${spec.name} at freeze ${freeze}`).toBeLessThan(1e-3);
    }
    weights.destroy(rt);
  });

  it('10 AdamW steps give torch\'s losses (1e-3), full and frozen; frozen weights stay bit-identical', async () => {
    const rt = await runtime();
    const full = await buildGraph(rt, f, null);
    const losses = await trainSteps(full.graph, 10, 1e-3);
    const ref = f.ref.getFloat32('adamw.losses.none');
    for (let i = 0; i < 10; i++) expect(Math.abs(losses[i]! - ref[i]!) / ref[i]!, `step ${i}: ${losses[i]} vs ${ref[i]}`).toBeLessThan(1e-3);
    full.weights.destroy(rt);
    const K = Math.floor(N / 2);
    const frozen = await buildGraph(rt, f, K);
    const before = await frozen.weights.download(rt);
    const lossesK = await trainSteps(frozen.graph, 10, 1e-3);
    const refK = f.ref.getFloat32(`adamw.losses.freeze${K}`);
    for (let i = 0; i < 10; i++) expect(Math.abs(lossesK[i]! - refK[i]!) / refK[i]!, `freeze ${K} step ${i}`).toBeLessThan(1e-3);
    const after = await frozen.weights.download(rt);
    for (const spec of frozen.weights.specs) {
      const a = new Uint32Array(before.get(spec.name)!.buffer);
      const b = new Uint32Array(after.get(spec.name)!.buffer);
      const same = a.every((v, i) => v === b[i]);
      if (!isTrainable(spec, K)) expect(same, `frozen ${spec.name} changed`).toBe(true);
    }
    frozen.weights.destroy(rt);
  });
});
