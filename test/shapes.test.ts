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
import { Runtime as RuntimeClass } from '../src/gpu/runtime.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { matmul, type MatmulForm, type MatmulStrategy } from '../src/ops/matmul.ts';
import { traceGather } from '../src/ops/trace.ts';
import { Gpt2Forward } from '../src/model/forward.ts';
import { bufferNeeds, checkShape, fitTrainingBatch, maxBatch, shapeMessage, type ShapeLimits } from '../src/train/plan.ts';
import { fixture } from './util/fixtures.ts';
import { gpt2Config } from './util/config.ts';
import { bits, freshSeed, randomArray, relError, runtime } from './util/gpu.ts';
import { gpt2Backward, gpt2Forward, mulberry32, randInts, randomGpt2Params } from './reference/ops.ts';

/** A second runtime that plans with lowered limits (the device keeps its own): the split paths at small sizes. */
let capped: Promise<Runtime> | null = null;
const CAPS = { maxStorageBufferBindingSize: 32 * 1024, maxComputeWorkgroupsPerDimension: 3 };
function cappedRuntime(): Promise<Runtime> {
  capped ??= RuntimeClass.open(nodePlatform, { capLimits: CAPS });
  return capped;
}

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
    const weights = GpuWeights.upload(rt, cfg, await hostParams({ config: cfg, weights: f.model }));
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

const LAVAPIPE: ShapeLimits = { maxStorageBufferBindingSize: 128 * 2 ** 20, maxBufferSize: 2 ** 32 - 1 };

describe('the shape plan against the adapter limits (no GPU)', () => {
  const gpt2 = gpt2Config();
  it('GPT-2 small at --batch 16 --seq 1024: one line naming the limit, the need and the batch that fits', () => {
    const msg = shapeMessage(gpt2, { B: 16, T: 1024, kind: 'forward' }, LAVAPIPE)!;
    expect(msg).toBe("--batch 16 --seq 1024: the MLP activations [16384 × 3072] needs 192.0 MiB in one storage binding, over this adapter's maxStorageBufferBindingSize (128.0 MiB); use --batch ≤ 10 at --seq 1024 on this adapter");
    expect(msg).not.toContain('\n');
    expect(maxBatch(gpt2, { B: 16, T: 1024, kind: 'train' }, LAVAPIPE)).toBe(10);
    expect(shapeMessage(gpt2, { B: 10, T: 1024, kind: 'train', freeze: null }, LAVAPIPE)).toBeNull();
  });

  it('training splits a batch that does not fit into micro-batches of its largest fitting divisor', () => {
    expect(fitTrainingBatch(gpt2, { B: 16, T: 1024, accum: 3, freeze: 6 }, LAVAPIPE)).toMatchObject({ B: 8, accum: 6 });
    expect(fitTrainingBatch(gpt2, { B: 4, T: 1024, accum: 1, freeze: 6 }, LAVAPIPE)).toEqual({ B: 4, accum: 1, note: null });
    // 13 is prime: micro-batches of 1.
    expect(fitTrainingBatch(gpt2, { B: 13, T: 1024, accum: 1, freeze: null }, LAVAPIPE)).toMatchObject({ B: 1, accum: 13 });
  });

  it('a sequence too long for one row, a weight over one binding: what would fit, or that nothing does', () => {
    const wide = gpt2Config({ nEmbd: 8192, nHead: 64, nLayer: 1 });
    expect(() => checkShape(wide, { B: 1, T: 8, kind: 'forward' }, LAVAPIPE)).toThrow(/the MLP weight \[8192 × 32768\] needs 1024.0 MiB in one storage binding.*cannot run on this adapter/);
    const small: ShapeLimits = { maxStorageBufferBindingSize: 2 ** 19, maxBufferSize: 2 ** 30 };
    expect(shapeMessage(gpt2Config({ nEmbd: 64, nHead: 4, vocabSize: 1000 }), { B: 1, T: 1024, kind: 'forward' }, small)).toMatch(/^--batch 1 --seq 1024: the MLP activations \[1024 × 256\] needs 1.0 MiB .*; use --seq ≤ 512 at --batch 1 on this adapter$/);
  });

  it('a token embedding of 300000 × 768 (7 parts of one binding) plans and fits', () => {
    const big = gpt2Config({ vocabSize: 300000 });
    expect(shapeMessage(big, { B: 4, T: 1024, kind: 'train', freeze: null }, LAVAPIPE)).toBeNull();
    const wte = bufferNeeds(big, { B: 4, T: 1024, kind: 'train' }, LAVAPIPE).find((n) => n.what.startsWith('the token embedding'))!;
    expect(wte.bytes).toBe(300000 * 768 * 4);
    expect(wte.limit).toBe('maxBufferSize');
  });

  it('the plan holds the largest buffer a training step and a kept-logits forward allocate', async () => {
    const rt = await runtime();
    const f = fixture('gpt2-odd');
    const cfg = f.config;
    const weights = GpuWeights.upload(rt, cfg, await hostParams({ config: cfg, weights: f.model }));
    const limits: ShapeLimits = { maxStorageBufferBindingSize: rt.gpu.limits.maxStorageBufferBindingSize!, maxBufferSize: rt.gpu.limits.maxBufferSize! };
    const isParam = (name: string) => /^(param|grad|optim)\./.test(name);
    const largestAllocated = (mark: number) => Math.max(...rt.memory.buffers().slice(mark).filter((b) => !isParam(b.name)).map((b) => b.bytes));
    // Everything but the whole token embedding (a parameter) is allocated by the step.
    const largestPlanned = (req: Parameters<typeof bufferNeeds>[1]) => Math.max(...bufferNeeds(cfg, req, limits).filter((n) => !n.what.startsWith('the token embedding')).map((n) => n.bytes));
    for (const [B, T] of [[3, 17], [5, 64]] as const) {
      const mark = rt.memory.buffers().length;
      await TrainingGraph.build(rt, weights, { B, T, freeze: null, accum: 1 }, { kind: 'sgd' });
      expect(largestAllocated(mark), `train ${B}x${T}`).toBeLessThanOrEqual(largestPlanned({ B, T, kind: 'train', freeze: null }));
      const mark2 = rt.memory.buffers().length;
      await Gpt2Forward.build(rt, weights, { B, T, saveFrom: cfg.nLayer, trace: { kind: 'all' }, loss: true, keepLogits: true });
      expect(largestAllocated(mark2), `logits ${B}x${T}`).toBeLessThanOrEqual(largestPlanned({ B, T, kind: 'logits' }));
    }
  });
});

describe('past the workgroup and binding limits (a runtime planning with 32 KiB bindings and 3 workgroups per dimension)', () => {
  const SHAPE: [number, number, number] = [130, 257, 29];
  it.each([
    ['nn', 'auto'], ['nt', 'auto'], ['tn', 'auto'], ['nn', 'direct'], ['tn', 'generic'],
  ] as [MatmulForm, MatmulStrategy][])('%s (%s) runs in blocks of rows and columns, bit-identical to one dispatch', async (form, strategy) => {
    const [M, N, K] = SHAPE;
    const seed = freshSeed();
    const next = mulberry32(seed);
    const A = randomArray(M * K, next);
    const Bm = randomArray(K * N, next);
    const bias = randomArray(N, next);
    const C0 = randomArray(M * N, next);
    const run = async (rt: Runtime) => {
      const mem = rt.memory;
      const [a, b, c, bb] = [mem.upload('t.a', A), mem.upload('t.b', Bm), mem.upload('t.c', C0), mem.upload('t.bias', bias)];
      const d = await matmul(rt, { form, M, N, K, a, b, c, bias: bb, accumulate: true, strategy });
      await rt.steps.run('matmul-blocks', d);
      const out = await mem.readFloat32(c, 0, M * N);
      for (const x of [a, b, c, bb]) mem.destroy(x);
      return { out, dispatches: d.length };
    };
    const one = await run(await runtime());
    const blocks = await run(await cappedRuntime());
    expect(blocks.dispatches).toBeGreaterThan(one.dispatches);
    expect(bits(blocks.out), `seed ${seed}`).toEqual(bits(one.out));
  });

  it('trace capture of 70000 positions (past 65535 workgroups per dimension)', async () => {
    const rt = await runtime();
    const P = 70000;
    const C = 3;
    const seed = freshSeed();
    const x = randomArray(P * C, mulberry32(seed));
    const order = Uint32Array.from({ length: P }, (_, i) => (i * 7919) % P);
    const mem = rt.memory;
    const xb = mem.upload('t.x', x);
    const rows = mem.upload('t.rows', Uint32Array.from([P, ...order]));
    const trace = mem.upload('t.trace', new Float32Array(P * C).fill(Number.NaN));
    await rt.steps.run('trace-gather', [await traceGather(rt, { x: xb, rows, trace, C, slotOffset: 0, capacity: P })]);
    const got = await mem.readFloat32(trace);
    const want = new Float32Array(P * C);
    order.forEach((r, i) => want.set(x.subarray(r * C, (r + 1) * C), i * C));
    expect(bits(got)).toEqual(bits(want));
    for (const b of [xb, rows, trace]) mem.destroy(b);
  });

  it('training with wte in 8 parts, the head in 8 vocabulary chunks and 4-row logits chunks matches float64', async () => {
    const rt = await cappedRuntime();
    const cfg: ModelConfig = { modelType: 'gpt2', nLayer: 2, nEmbd: 32, nHead: 2, nInner: 128, vocabSize: 2000, nPositions: 16, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true };
    const B = 2;
    const T = 8;
    const limits = { maxStorageBufferBindingSize: CAPS.maxStorageBufferBindingSize, maxBufferSize: 2 ** 30 };
    expect(shapeMessage(cfg, { B, T, kind: 'train', freeze: null }, limits)).toBeNull();
    expect(maxBatch(cfg, { B: 64, T, kind: 'train', freeze: null }, limits)).toBe(8);
    const seed = freshSeed();
    const rng = mulberry32(seed);
    const params = randomGpt2Params(cfg, rng, 0.3);
    const ids = randInts(B * T, cfg.vocabSize, rng);
    const targets = randInts(B * T, cfg.vocabSize, rng);
    const weights = GpuWeights.upload(rt, cfg, new Map([...params].map(([k, v]) => [k, Float32Array.from(v)])));
    const graph = await TrainingGraph.build(rt, weights, { B, T, freeze: null, accum: 1 }, { kind: 'adamw' });
    expect(graph.forward.wteParts().wte.length).toBe(8);
    expect(graph.forward.headRows).toBe(256);
    expect(graph.forward.rowChunk).toBe(4);
    const got = await stepGradients(rt, weights, { B, T, freeze: null, accum: 1 }, ids, targets);
    const ref = gpt2Forward(params, cfg, ids, targets, B, T);
    expect(Math.abs(got.loss - ref.loss!) / ref.loss!, `seed ${seed}`).toBeLessThan(1e-5);
    const grads = gpt2Backward(params, cfg, ids, targets, B, T, { forward: ref });
    for (const [name, g] of got.grads) expect(relError(g, grads.get(name)!), `seed ${seed}: ${name}`).toBeLessThan(1e-4);
    // Every buffer bound whole fits the planned binding (nothing but parameters, gradients and optimizer state is larger).
    for (const b of rt.memory.buffers()) if (!/^(param|grad|optim)\./.test(b.name)) expect(b.bytes, b.name).toBeLessThanOrEqual(CAPS.maxStorageBufferBindingSize);
    weights.destroy(rt);
  });
});
