// Large shapes (test/heavy: minutes on 2 cores): a token embedding of
// 300000 × 768 (921.6 MB, 7 parts of lavapipe's 128 MiB binding) loads, runs forward and trains.
// The model has no blocks, so a float64 reference of embedding → ln_f → tied head → cross-entropy
// stays cheap; the blocks are covered at small sizes elsewhere.
import { describe, expect, it } from 'vitest';
import type { ModelConfig } from '../../src/model/config.ts';
import { paramSpecs } from '../../src/model/params.ts';
import { GpuWeights } from '../../src/model/weights.ts';
import { TrainingGraph } from '../../src/train/graph.ts';
import { checkShape } from '../../src/train/plan.ts';
import { freshSeed, randomArray, relError, runtime } from '../util/gpu.ts';
import { mulberry32, randInts } from '../reference/ops.ts';

/** float64: mean cross-entropy of LN(wte[id] + wpe[t])·wteᵀ and its gradient with respect to wte. */
function reference(wte: Float32Array, wpe: Float32Array, g: Float32Array, b: Float32Array, ids: Int32Array, targets: Int32Array, T: number, V: number, C: number) {
  const rows = ids.length;
  const dwte = new Float64Array(V * C);
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const x = new Float64Array(C);
    for (let c = 0; c < C; c++) x[c] = wte[ids[r]! * C + c]! + wpe[(r % T) * C + c]!;
    const mean = x.reduce((s, v) => s + v, 0) / C;
    const rstd = 1 / Math.sqrt(x.reduce((s, v) => s + (v - mean) ** 2, 0) / C + 1e-5);
    const xhat = x.map((v) => (v - mean) * rstd);
    const y = xhat.map((v, c) => v * g[c]! + b[c]!);
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += y[c]! * wte[v * C + c]!;
      logits[v] = s;
    }
    const m = logits.reduce((a, v) => Math.max(a, v), -Infinity);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[v]! - m);
    loss += (Math.log(z) + m - logits[targets[r]!]!) / rows;
    // dlogits = (softmax − onehot)/rows; head part of dwte += dlogitsᵀ·y; embedding part through LN.
    const dy = new Float64Array(C);
    for (let v = 0; v < V; v++) {
      const d = (Math.exp(logits[v]! - m) / z - (v === targets[r] ? 1 : 0)) / rows;
      for (let c = 0; c < C; c++) {
        dwte[v * C + c] += d * y[c]!;
        dy[c] += d * wte[v * C + c]!;
      }
    }
    const dxhat = dy.map((v, c) => v * g[c]!);
    const mdx = dxhat.reduce((s, v) => s + v, 0) / C;
    const mdxx = dxhat.reduce((s, v, c) => s + v * xhat[c]!, 0) / C;
    for (let c = 0; c < C; c++) dwte[ids[r]! * C + c] += rstd * (dxhat[c]! - mdx - xhat[c]! * mdxx);
  }
  return { loss, dwte };
}

describe('a token embedding of 300000 × 768', () => {
  it('loads in 7 binding parts, and one training step (loss and the whole wte gradient) matches float64', async () => {
    const rt = await runtime();
    const cfg: ModelConfig = { modelType: 'gpt2', nLayer: 0, nEmbd: 768, nHead: 12, nInner: 3072, vocabSize: 300000, nPositions: 16, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true };
    const B = 1;
    const T = 4;
    const limits = { maxStorageBufferBindingSize: rt.gpu.limits.maxStorageBufferBindingSize!, maxBufferSize: rt.gpu.limits.maxBufferSize! };
    checkShape(cfg, { B, T, kind: 'train', freeze: null }, limits);
    const seed = freshSeed();
    const next = mulberry32(seed);
    const host = new Map<string, Float32Array>();
    for (const s of paramSpecs(cfg)) host.set(s.name, s.name === 'ln_f.weight' ? new Float32Array(s.numel).fill(1) : randomArray(s.numel, next, s.name === 'ln_f.bias' ? 0.1 : 0.05));
    const ids = randInts(B * T, cfg.vocabSize, next);
    ids[3] = ids[0]!; // a repeated id: its two rows' gradients add up in one wte row
    const targets = randInts(B * T, cfg.vocabSize, next);
    const weights = GpuWeights.upload(rt, cfg, host);
    const graph = await TrainingGraph.build(rt, weights, { B, T, freeze: null, accum: 1 }, { kind: 'sgd' });
    expect(graph.forward.wteParts().wte.length).toBe(Math.ceil(cfg.vocabSize / graph.forward.vocabChunk));
    expect(graph.forward.wteParts().wte.length).toBeGreaterThan(4);
    graph.setBatch(ids, targets);
    await rt.steps.run('heavy wte', [...graph.zeroItems, ...graph.microItems[0]!]);
    const loss = (await rt.memory.readFloat32(graph.stepLosses, 0, 1))[0]!;
    const dwte = await rt.memory.readFloat32(graph.grads.get('wte.weight')!, 0, cfg.vocabSize * cfg.nEmbd);
    const ref = reference(host.get('wte.weight')!, host.get('wpe.weight')!, host.get('ln_f.weight')!, host.get('ln_f.bias')!, ids, targets, T, cfg.vocabSize, cfg.nEmbd);
    expect(Math.abs(loss - ref.loss) / ref.loss, `seed ${seed}`).toBeLessThan(1e-5);
    expect(relError(dwte, ref.dwte), `seed ${seed}: dwte`).toBeLessThan(1e-4);
    // The embedding rows of the batch (the gather's parts) specifically.
    for (const id of ids) expect(relError(dwte.subarray(id * 768, (id + 1) * 768), ref.dwte.subarray(id * 768, (id + 1) * 768)), `seed ${seed}: dwte[${id}]`).toBeLessThan(1e-4);
    weights.destroy(rt);
  });
});
