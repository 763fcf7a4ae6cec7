// The truncated backward and the optimizer loop against Hugging Face transformers + torch autograd
// (fixtures from test/fixtures/make_fixtures.py), and against the untruncated backward.
import { describe, expect, it } from 'vitest';
import type { Runtime } from '../src/gpu/runtime.ts';
import { GpuWeights } from '../src/model/weights.ts';
import { hfName, isTrainable } from '../src/model/params.ts';
import { TrainingGraph } from '../src/train/graph.ts';
import { fixture } from './util/fixtures.ts';
import { buildGraph, gradients, trainSteps } from './util/train.ts';
import { freshSeed, relError, runtime } from './util/gpu.ts';
import { gpt2Backward, gpt2Forward, mulberry32, randInts, randomGpt2Params } from './reference/ops.ts';
import type { ModelConfig } from '../src/model/config.ts';

function destroy(rt: Runtime, ...bufs: { destroy(rt: Runtime): void }[]) {
  for (const b of bufs) b.destroy(rt);
}

describe.each(['gpt2-tiny', 'gpt2-odd', 'gpt2-deep'])('training %s against transformers', (name) => {
  const f = fixture(name);
  const N = f.config.nLayer;
  const freezes: (number | null)[] = [null, 0, Math.floor(N / 2), N - 1];

  it.each(freezes)('gradients of every trainable tensor at --freeze %s match torch autograd (1e-3)', async (freeze) => {
    const rt = await runtime();
    // Full fine-tuning also runs the head in 64-row vocabulary chunks (GPT-2's path: dlnf and the
    // tied head's gradient accumulate over chunks, the last one partial).
    const { weights, graph } = await buildGraph(rt, f, freeze, undefined, freeze === null ? 64 : undefined);
    const loss = await gradients(graph);
    expect(Math.abs(loss - f.ref.getFloat32('loss')[0]!) / f.ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    const trainable = weights.specs.filter((s) => isTrainable(s, freeze));
    expect(trainable.length).toBe(graph.grads.size);
    for (const spec of trainable) {
      const got = await rt.memory.readFloat32(graph.grads.get(spec.name)!, 0, spec.numel);
      const ref = f.ref.getFloat32(`grad.${hfName(spec.name)}`);
      expect(relError(got, ref), `${spec.name} at freeze ${freeze}`).toBeLessThan(1e-3);
    }
    // Nothing frozen has a gradient buffer or optimizer state.
    for (const spec of weights.specs.filter((s) => !isTrainable(s, freeze))) expect(graph.grads.has(spec.name), spec.name).toBe(false);
    destroy(rt, weights);
  });

  it('the truncated backward gives the same gradients as the full one (1e-6) and skips the boundary input gradient', async () => {
    const rt = await runtime();
    const K = Math.floor(N / 2);
    const full = await buildGraph(rt, f, null);
    await gradients(full.graph);
    const cut = await buildGraph(rt, f, K);
    await gradients(cut.graph);
    for (const [nameG, buf] of cut.graph.grads) {
      const spec = cut.weights.specs.find((s) => s.name === nameG)!;
      const a = await rt.memory.readFloat32(buf, 0, spec.numel);
      const b = await rt.memory.readFloat32(full.graph.grads.get(nameG)!, 0, spec.numel);
      expect(relError(a, b), nameG).toBeLessThanOrEqual(1e-6);
    }
    // Activations are kept only for the trainable blocks.
    expect(cut.graph.forward.acts.length).toBe(N - K);
    expect(full.graph.forward.acts.length).toBe(N);
    destroy(rt, full.weights, cut.weights);
  });

  it('10 AdamW steps give the losses of torch.optim.AdamW (1e-3), full and frozen; frozen weights stay bit-identical', async () => {
    const rt = await runtime();
    const { weights, graph } = await buildGraph(rt, f, null);
    const losses = await trainSteps(graph, 10, 1e-3);
    const ref = f.ref.getFloat32('adamw.losses.none');
    for (let i = 0; i < 10; i++) expect(Math.abs(losses[i]! - ref[i]!) / ref[i]!, `step ${i}: ${losses[i]} vs ${ref[i]}`).toBeLessThan(1e-3);
    destroy(rt, weights);

    const K = Number(f.ref.metadata.freeze_k ?? Math.floor(N / 2));
    const frozen = await buildGraph(rt, f, K);
    const before = await frozen.weights.download(rt);
    const lossesK = await trainSteps(frozen.graph, 10, 1e-3);
    const refK = f.ref.getFloat32(`adamw.losses.freeze${K}`);
    for (let i = 0; i < 10; i++) expect(Math.abs(lossesK[i]! - refK[i]!) / refK[i]!, `freeze ${K} step ${i}`).toBeLessThan(1e-3);
    const after = await frozen.weights.download(rt);
    let changed = 0;
    for (const spec of frozen.weights.specs) {
      const same = Buffer.compare(Buffer.from(before.get(spec.name)!.buffer.slice(0)), Buffer.from(after.get(spec.name)!.buffer.slice(0))) === 0;
      if (isTrainable(spec, K)) changed += same ? 0 : 1;
      else expect(same, `frozen ${spec.name} changed`).toBe(true);
    }
    expect(changed).toBeGreaterThan(0);
    destroy(rt, frozen.weights);
  });

  it('clipped AdamW and SGD follow torch too', async () => {
    const rt = await runtime();
    const clip = await buildGraph(rt, f, null, { kind: 'adamw', weightDecay: 0.1, maxGradNorm: 1 });
    const lossesC = await trainSteps(clip.graph, 10, 3e-3, 1);
    const refC = f.ref.getFloat32('adamw.losses.clip');
    for (let i = 0; i < 10; i++) expect(Math.abs(lossesC[i]! - refC[i]!) / refC[i]!, `clip step ${i}`).toBeLessThan(1e-3);
    destroy(rt, clip.weights);
    const sgd = await buildGraph(rt, f, null, { kind: 'sgd' });
    const lossesS = await trainSteps(sgd.graph, 10, 0.1);
    const refS = f.ref.getFloat32('sgd.losses.none');
    for (let i = 0; i < 10; i++) expect(Math.abs(lossesS[i]! - refS[i]!) / refS[i]!, `sgd step ${i}`).toBeLessThan(1e-3);
    destroy(rt, sgd.weights);
  });
});

describe('odd vocabulary (V % 4 ≠ 0: padded logits rows) against the float64 reference', () => {
  it('loss and every gradient of full fine-tuning, head in chunks', async () => {
    const rt = await runtime();
    const cfg: ModelConfig = { modelType: 'gpt2', nLayer: 2, nEmbd: 24, nHead: 3, nInner: 96, vocabSize: 137, nPositions: 16, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true };
    const seed = freshSeed();
    const rng = mulberry32(seed);
    const params = randomGpt2Params(cfg, rng, 0.3);
    const B = 2;
    const T = 7;
    const ids = randInts(B * T, cfg.vocabSize, rng);
    const targets = randInts(B * T, cfg.vocabSize, rng);
    const host = new Map([...params].map(([k, v]) => [k, Float32Array.from(v)]));
    const weights = GpuWeights.upload(rt, cfg, host);
    const graph = await TrainingGraph.build(rt, weights, { B, T, freeze: null, accum: 1, headChunkBytes: 64 * cfg.nEmbd * 4 }, { kind: 'adamw' });
    expect(graph.forward.ldLogits).toBe(140);
    expect(graph.forward.headRows).toBe(64);
    graph.setBatch(ids, targets);
    const loss = await gradients(graph);
    const ref = gpt2Forward(params, cfg, ids, targets, B, T);
    expect(Math.abs(loss - ref.loss!) / ref.loss!, `seed ${seed}`).toBeLessThan(1e-5);
    const grads = gpt2Backward(params, cfg, ids, targets, B, T, { forward: ref });
    for (const spec of weights.specs) {
      const got = await rt.memory.readFloat32(graph.grads.get(spec.name)!, 0, spec.numel);
      expect(relError(got, grads.get(spec.name)!), `seed ${seed}: ${spec.name}`).toBeLessThan(1e-4);
    }
    weights.destroy(rt);
  });
});
