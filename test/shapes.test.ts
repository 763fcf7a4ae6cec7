// Training at shapes past every scratch and workspace threshold. Each two-pass column reduction
// splits its rows into up to ~512 chunks; the chunk count depends on the width, so one scratch
// shared by several widths must hold the largest need, which is a narrow sum's at large B·T
// (gpt2-tiny at --batch 64 --seq 64 used to die with "columnSum: scratch holds … bytes").
import { describe, expect, it } from 'vitest';
import type { Runtime } from '../src/gpu/runtime.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { columnSumPlan } from '../src/ops/reduce.ts';
import { layernormParamChunks } from '../src/ops/layernorm.ts';
import { TrainingGraph, type TrainingShape } from '../src/train/graph.ts';
import { fixture } from './util/fixtures.ts';
import { freshSeed, relError, runtime } from './util/gpu.ts';
import { gpt2Backward, gpt2Forward, mulberry32, randInts, randomGpt2Params } from './reference/ops.ts';

/** Gradients of one forward + backward over ids/targets (B·T·accum each), read back by name. */
async function stepGradients(rt: Runtime, weights: GpuWeights, shape: TrainingShape, ids: Int32Array, targets: Int32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const graph = await TrainingGraph.build(rt, weights, shape, { kind: 'adamw' });
  const rows = shape.B * shape.T;
  for (let m = 0; m < shape.accum; m++) {
    graph.setBatch(ids.subarray(m * rows, (m + 1) * rows), targets.subarray(m * rows, (m + 1) * rows));
    await rt.steps.run(`shapes B${shape.B} micro ${m}`, m === 0 ? [...graph.zeroItems, ...graph.microItems[m]!] : graph.microItems[m]!);
  }
  const losses = await rt.memory.readFloat32(graph.stepLosses, 0, shape.accum);
  const loss = losses.reduce((a, b) => a + b, 0) / shape.accum;
  const grads = new Map<string, Float32Array>();
  for (const s of graph.trainable) grads.set(s.name, await rt.memory.readFloat32(graph.grads.get(s.name)!, 0, s.numel));
  return { loss, grads };
}

describe('training past every scratch threshold', () => {
  it('gpt2-tiny at --batch 64 --seq 64 (c_attn bias sum needs more scratch than c_fc): gradients equal 2 accumulated micro-batches of 32', async () => {
    const rt = await runtime();
    const f = fixture('gpt2-tiny');
    const cfg = f.config;
    const B = 64;
    const T = 64;
    const rows = B * T;
    // The shape is past the threshold this test is about.
    const need = (N: number) => columnSumPlan(rows, N).nChunks * N;
    expect(need(3 * cfg.nEmbd)).toBeGreaterThan(need(cfg.nInner));
    const seed = freshSeed();
    const rng = mulberry32(seed);
    const ids = randInts(rows, cfg.vocabSize, rng);
    const targets = randInts(rows, cfg.vocabSize, rng);
    const weights = GpuWeights.upload(rt, cfg, hostParams({ config: cfg, weights: f.model }));
    const big = await stepGradients(rt, weights, { B, T, freeze: null, accum: 1 }, ids, targets);
    const small = await stepGradients(rt, weights, { B: 32, T, freeze: null, accum: 2 }, ids, targets);
    expect(Number.isFinite(big.loss)).toBe(true);
    expect(Math.abs(big.loss - small.loss) / small.loss, `seed ${seed}`).toBeLessThan(1e-5);
    for (const [name, g] of small.grads) expect(relError(big.grads.get(name)!, g), `seed ${seed}: ${name}`).toBeLessThan(1e-5);
    weights.destroy(rt);
  });

  it('B·T = 8192, the largest chunk count of every column reduction, V % 4 ≠ 0: loss and every gradient match float64', async () => {
    const rt = await runtime();
    // Narrow widths keep the float64 reference cheap; every reduction is one column group, so its
    // partial pass splits the 8192 rows into the most chunks it ever uses (512).
    const cfg: ModelConfig = { modelType: 'gpt2', nLayer: 1, nEmbd: 16, nHead: 2, nInner: 40, vocabSize: 37, nPositions: 64, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true };
    const B = 128;
    const T = 64;
    const rows = B * T;
    expect(columnSumPlan(rows, cfg.nInner).nChunks).toBe(512);
    expect(layernormParamChunks(rows, cfg.nEmbd).nChunks).toBe(512);
    expect(columnSumPlan(rows, 3 * cfg.nEmbd).nChunks).toBe(512);
    const seed = freshSeed();
    const rng = mulberry32(seed);
    const params = randomGpt2Params(cfg, rng, 0.3);
    const ids = randInts(rows, cfg.vocabSize, rng);
    const targets = randInts(rows, cfg.vocabSize, rng);
    const weights = GpuWeights.upload(rt, cfg, new Map([...params].map(([k, v]) => [k, Float32Array.from(v)])));
    const got = await stepGradients(rt, weights, { B, T, freeze: null, accum: 1 }, ids, targets);
    const ref = gpt2Forward(params, cfg, ids, targets, B, T);
    expect(Math.abs(got.loss - ref.loss!) / ref.loss!, `seed ${seed}`).toBeLessThan(1e-5);
    const grads = gpt2Backward(params, cfg, ids, targets, B, T, { forward: ref });
    for (const [name, g] of got.grads) expect(relError(g, grads.get(name)!), `seed ${seed}: ${name}`).toBeLessThan(1e-4);
    weights.destroy(rt);
  });
});
