import { describe, expect, it } from 'vitest';
import { attentionBackward, attentionBufferBytes, attentionForward, type AttentionShape } from '../src/ops/attention.ts';
import { attentionBackward as refBackward, attentionForward as refForward, finiteDifference, toF64 } from './reference/ops.ts';
import { freshSeed, poison, randomArray, relError, rng, runtime } from './util/gpu.ts';

type Shape = [B: number, T: number, C: number, nHead: number];

const SHAPES: Shape[] = [[1, 1, 4, 1], [2, 5, 9, 3], [2, 37, 96, 6], [1, 64, 128, 2], [2, 23, 48, 3]];

interface GpuResult {
  out: Float32Array;
  /** The forward-only variant's output (with `forwardOnly`). */
  outNoSave?: Float32Array;
  stats: Float32Array;
  dqkv?: Float32Array;
}

/**
 * Forward (saving stats; with `forwardOnly` also the forward-only variant) and, given dout, the
 * backward on the GPU; every output NaN-poisoned first. Each head size compiles its own pipelines
 * (seconds each on lavapipe with a cold shader cache), so tests build only what they check.
 */
async function runGpu(shape: AttentionShape, qkv: Float32Array, dout: Float32Array | null, opts: { backwardWithoutOut?: boolean; forwardOnly?: boolean } = {}): Promise<GpuResult> {
  const rt = await runtime();
  const mem = rt.memory;
  const { B, T, C } = shape;
  const sizes = attentionBufferBytes(shape);
  const bQkv = mem.upload('t.qkv', qkv);
  const bOut = mem.upload('t.out', poison(B * T * C));
  const bOut2 = mem.upload('t.out2', poison(B * T * C));
  const bStats = mem.upload('t.stats', poison(sizes.statsBytes / 4));
  const bufs = [bQkv, bOut, bOut2, bStats];
  const items = await attentionForward(rt, { ...shape, qkv: bQkv, out: bOut, stats: bStats, save: true });
  if (opts.forwardOnly) items.push(...(await attentionForward(rt, { ...shape, qkv: bQkv, out: bOut2, save: false })));
  let bDqkv: GPUBuffer | undefined;
  if (dout) {
    const bDout = mem.upload('t.dout', dout);
    bDqkv = mem.upload('t.dqkv', poison(B * T * 3 * C));
    const bScratch = mem.upload('t.scratch', poison(sizes.scratchBytes / 4));
    bufs.push(bDout, bDqkv, bScratch);
    items.push(...(await attentionBackward(rt, { ...shape, dout: bDout, qkv: bQkv, stats: bStats, out: opts.backwardWithoutOut ? undefined : bOut, dqkv: bDqkv, scratch: bScratch })));
  }
  // hintMs 0: no sleeping wait. A first run compiles its pipelines (seconds with a cold shader cache)
  // and would teach the waiter to oversleep on every later run.
  await rt.steps.run('attention-test', items, { hintMs: 0 });
  const res: GpuResult = {
    out: await mem.readFloat32(bOut, 0, B * T * C),
    outNoSave: opts.forwardOnly ? await mem.readFloat32(bOut2, 0, B * T * C) : undefined,
    stats: await mem.readFloat32(bStats, 0, sizes.statsBytes / 4),
    dqkv: bDqkv ? await mem.readFloat32(bDqkv, 0, B * T * 3 * C) : undefined,
  };
  for (const b of bufs) mem.destroy(b);
  return res;
}

function shapeOf([B, T, C, nHead]: Shape): AttentionShape {
  return { B, T, C, nHead };
}

function expectFinite(x: Float32Array, what: string, seed: number): void {
  const bad = x.findIndex((v) => !Number.isFinite(v));
  expect(bad, `seed ${seed}: ${what} element ${bad} not written / not finite`).toBe(-1);
}

/** Reference logsumexp per row, recovered from the probabilities: L_i = s_i0 − ln p_i0 (key 0 is always visible). */
function refStats(qkv: Float64Array, probs: Float64Array, s: AttentionShape): Float64Array {
  const { B, T, C, nHead } = s;
  const hs = C / nHead;
  const L = new Float64Array(B * nHead * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let t = 0; t < T; t++) {
        let dot = 0;
        for (let d = 0; d < hs; d++) dot += qkv[(b * T + t) * 3 * C + h * hs + d]! * qkv[(b * T) * 3 * C + C + h * hs + d]!;
        L[(b * nHead + h) * T + t] = dot / Math.sqrt(hs) - Math.log(probs[(b * nHead + h) * T * T + t * T]!);
      }
    }
  }
  return L;
}

describe('attention forward', () => {
  for (const sh of SHAPES) {
    it(`B,T,C,nHead = ${sh.join(',')}: out and stats vs float64; forward-only equals saving`, async () => {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
      const g = await runGpu(s, qkv, null, { forwardOnly: true });
      expectFinite(g.out, 'out', seed);
      expectFinite(g.stats, 'stats', seed);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      expect(relError(g.out, ref.out), `seed ${seed}`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.stats, refStats(toF64(qkv), ref.probs, s)), `seed ${seed} stats`).toBeLessThanOrEqual(1e-5);
      expect(Buffer.from(g.outNoSave!.buffer).equals(Buffer.from(g.out.buffer)), `seed ${seed}: forward-only output differs`).toBe(true);
    });
  }

  it('head sizes 4, 5 and 128, T spanning several tiles (1,130,8,2), (1,70,10,2), (1,41,256,2)', async () => {
    for (const sh of [[1, 130, 8, 2], [1, 70, 10, 2], [1, 41, 256, 2]] as Shape[]) {
      const seed = freshSeed();
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, rng(seed));
      const g = await runGpu(s, qkv, null);
      expectFinite(g.out, 'out', seed);
      expect(relError(g.out, refForward(toF64(qkv), s.B, s.T, s.C, s.nHead).out), `seed ${seed} ${sh}`).toBeLessThanOrEqual(1e-5);
    }
  });

  it('stable for scores far beyond exp range (running max)', async () => {
    const seed = freshSeed();
    const s = shapeOf([2, 37, 96, 6]); // a shape compiled above (each new shape recompiles on lavapipe)
    const qkv = randomArray(s.B * s.T * 3 * s.C, rng(seed), 40); // scores up to ~±1000
    const g = await runGpu(s, qkv, new Float32Array(s.B * s.T * s.C).fill(1));
    expectFinite(g.out, 'out', seed);
    expectFinite(g.dqkv!, 'dqkv', seed);
    expect(relError(g.out, refForward(toF64(qkv), s.B, s.T, s.C, s.nHead).out), `seed ${seed}`).toBeLessThanOrEqual(1e-4);
  });
});

describe('attention backward', () => {
  // The variant without the forward output (D from an extra sweep) on two shapes: each head size
  // compiles its own pipelines.
  const WITHOUT_OUT = new Set(['2,5,9,3', '2,37,96,6']);
  for (const sh of SHAPES) {
    const variants = WITHOUT_OUT.has(sh.join(',')) ? [false, true] : [false];
    it(`B,T,C,nHead = ${sh.join(',')}: dqkv vs float64 backward${variants.length > 1 ? ' (with and without the forward output)' : ''}`, async () => {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
      const dout = randomArray(s.B * s.T * s.C, next);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      const dref = refBackward(toF64(dout), toF64(qkv), ref.probs, s.B, s.T, s.C, s.nHead);
      for (const backwardWithoutOut of variants) {
        const g = await runGpu(s, qkv, dout, { backwardWithoutOut });
        expectFinite(g.dqkv!, 'dqkv', seed);
        expect(relError(g.dqkv!, dref), `seed ${seed} without out: ${backwardWithoutOut}`).toBeLessThanOrEqual(1e-4);
      }
    });
  }

  it('head sizes 4 and 128 over several tiles (1,130,8,2), (1,41,256,2)', async () => {
    for (const sh of [[1, 130, 8, 2], [1, 41, 256, 2]] as Shape[]) {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next);
      const dout = randomArray(s.B * s.T * s.C, next);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      const g = await runGpu(s, qkv, dout);
      expectFinite(g.dqkv!, 'dqkv', seed);
      expect(relError(g.dqkv!, refBackward(toF64(dout), toF64(qkv), ref.probs, s.B, s.T, s.C, s.nHead)), `seed ${seed} ${sh}`).toBeLessThanOrEqual(1e-4);
    }
  });

  it('matches central finite differences of the float64 forward on (1,4,6,2)', async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s = shapeOf([1, 4, 6, 2]);
    const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
    const dout = randomArray(s.B * s.T * s.C, next);
    const g = await runGpu(s, qkv, dout);
    const x = toF64(qkv);
    const dO = toF64(dout);
    const f = (q: Float64Array) => {
      const o = refForward(q, s.B, s.T, s.C, s.nHead).out;
      let sum = 0;
      for (let i = 0; i < o.length; i++) sum += o[i]! * dO[i]!;
      return sum;
    };
    const idx = Array.from({ length: 20 }, () => Math.floor(next() * x.length));
    const fd = idx.map((i) => finiteDifference(f, x, i));
    const gpu = idx.map((i) => g.dqkv![i]!);
    expect(relError(gpu, fd), `seed ${seed} at ${idx}`).toBeLessThanOrEqual(1e-3);
  });

  it('is deterministic: two runs are bit-identical', async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s = shapeOf([2, 37, 96, 6]);
    const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
    const dout = randomArray(s.B * s.T * s.C, next);
    const a = await runGpu(s, qkv, dout);
    const b = await runGpu(s, qkv, dout);
    expect(Buffer.from(a.out.buffer).equals(Buffer.from(b.out.buffer)), `seed ${seed}: out`).toBe(true);
    expect(Buffer.from(a.stats.buffer).equals(Buffer.from(b.stats.buffer)), `seed ${seed}: stats`).toBe(true);
    expect(Buffer.from(a.dqkv!.buffer).equals(Buffer.from(b.dqkv!.buffer)), `seed ${seed}: dqkv`).toBe(true);
  });
});

describe('attention host module', () => {
  it('reports stats/scratch sizes and rejects bad shapes', async () => {
    expect(attentionBufferBytes({ B: 4, T: 256, C: 768, nHead: 12 })).toEqual({ statsBytes: 4 * 4 * 12 * 256, scratchBytes: 4 * 4 * 12 * 256 });
    expect(() => attentionBufferBytes({ B: 1, T: 4, C: 10, nHead: 3 })).toThrow(/divisible/);
    const rt = await runtime();
    const x = rt.memory.storage('t.x', 4 * 3 * 8);
    await expect(attentionForward(rt, { B: 1, T: 2, C: 4, nHead: 1, qkv: x, out: x, save: true })).rejects.toThrow(/stats/);
    await expect(attentionForward(rt, { B: 1, T: 4, C: 4, nHead: 1, qkv: x, out: x, save: false })).rejects.toThrow(/qkv/);
    rt.memory.destroy(x);
  });
});
