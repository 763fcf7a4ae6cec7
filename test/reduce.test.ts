import { describe, expect, it } from 'vitest';
import {
  columnSum, columnSumPlan, columnSumScratchElems, sumSlots, sumSquaresPartial, sumsqSlots, SUMSQ_BLOCK,
} from '../src/ops/reduce.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { finiteDifference, matmulBackward, matmulForward, mulberry32, randn } from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, poison, runtime } from './util/gpu.ts';


interface ColCase { rows: number; N: number; ld?: number; off?: number; accumulate?: boolean }

async function runColumnSum(rt: Runtime, c: ColCase, inp: Float32Array, out0: Float32Array): Promise<{ out: Float32Array; dispatches: number }> {
  const mem = rt.memory;
  const bin = mem.upload('t.inp', inp);
  const bout = mem.upload('t.out', out0);
  const elems = columnSumScratchElems(c.rows, c.N);
  const scratch = elems > 0 ? mem.upload('t.scratch', poison(elems)) : undefined;
  const ds = await columnSum(rt, { rows: c.rows, N: c.N, ld: c.ld, off: c.off, inp: bin, out: bout, scratch, accumulate: c.accumulate });
  await rt.steps.run('colsum-test', ds);
  const out = await mem.readFloat32(bout);
  for (const b of [bin, bout, scratch]) if (b) mem.destroy(b);
  return { out, dispatches: ds.length };
}

async function checkColumnSum(c: ColCase): Promise<number> {
  const rt = await runtime();
  const seed = freshSeed();
  const r = mulberry32(seed);
  const ld = c.ld ?? c.N;
  const off = c.off ?? 0;
  const inp = f32(randn(off + c.rows * ld, r));
  const out0 = c.accumulate ? f32(randn(c.N, r)) : poison(c.N);
  const g = await runColumnSum(rt, c, inp, out0);
  const ref = new Float64Array(c.N);
  for (let row = 0; row < c.rows; row++) for (let n = 0; n < c.N; n++) ref[n] += inp[off + row * ld + n]!;
  if (c.accumulate) for (let n = 0; n < c.N; n++) ref[n] += out0[n]!;
  expectWritten(seed, 'column sum', g.out);
  expectRel(seed, `column sum ${c.rows}x${c.N}`, g.out, ref, 1e-5);
  return g.dispatches;
}

describe('column sum', () => {
  const shapes: [number, number][] = [[1, 5], [37, 29], [37, 96], [300, 768], [8192, 768], [257, 3072], [300, 50257]];
  for (const [rows, N] of shapes) {
    const { nChunks } = columnSumPlan(rows, N);
    it(`${rows}x${N} (${nChunks} chunk${nChunks > 1 ? 's' : ''}) vs float64`, async () => {
      expect(await checkColumnSum({ rows, N })).toBe(nChunks > 1 ? 2 : 1);
    });
  }
  it('accumulate, single-chunk and two-pass paths', async () => {
    expect(columnSumPlan(37, 50257).nChunks).toBe(1);
    expect(columnSumPlan(8192, 768).nChunks).toBeGreaterThan(1);
    await checkColumnSum({ rows: 37, N: 50257, accumulate: true });
    await checkColumnSum({ rows: 8192, N: 768, accumulate: true });
    await checkColumnSum({ rows: 37, N: 29, accumulate: true });
  });
  it('strided rows (ld > N) from an element offset', async () => {
    await checkColumnSum({ rows: 37, N: 29, ld: 40, off: 8 });
    await checkColumnSum({ rows: 1000, N: 29, ld: 33, off: 3, accumulate: true });
  });
  it('bit-identical across runs (two-pass)', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c = { rows: 2000, N: 96 };
    expect(columnSumPlan(c.rows, c.N).nChunks).toBeGreaterThan(1);
    const inp = f32(randn(c.rows * c.N, mulberry32(seed)));
    const a = await runColumnSum(rt, c, inp, poison(c.N));
    const b = await runColumnSum(rt, c, inp, poison(c.N));
    expect(bits(b.out), `seed ${seed}`).toEqual(bits(a.out));
  });
  it('as dbias: vs the reference matmul backward and finite differences of the forward', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const r = mulberry32(seed);
    const M = 40, K = 6, N = 7;
    const x = f64(f32(randn(M * K, r)));
    const w = f64(f32(randn(K * N, r)));
    const bias = f64(f32(randn(N, r)));
    const dy = f32(randn(M * N, r));
    const g = await runColumnSum(rt, { rows: M, N }, dy, poison(N));
    const ref = matmulBackward(f64(dy), x, w, M, K, N).dbias;
    expectRel(seed, 'dbias vs reference', g.out, ref, 1e-4);
    const loss = (b: Float64Array) => {
      const y = matmulForward(x, w, b, M, K, N);
      let s = 0;
      for (let i = 0; i < y.length; i++) s += dy[i]! * y[i];
      return s;
    };
    const gpu: number[] = [];
    const fd: number[] = [];
    for (let k = 0; k < 20; k++) {
      const i = k % N;
      gpu.push(g.out[i]!);
      fd.push(finiteDifference(loss, bias, i));
    }
    expectRel(seed, 'dbias finite differences', gpu, fd, 1e-3);
  });
  it('rejects a missing or small scratch buffer', async () => {
    const rt = await runtime();
    expect(columnSumScratchElems(8192, 768)).toBeGreaterThan(0);
    await expect(columnSum(rt, { rows: 8192, N: 768, inp: rt.dummy, out: rt.dummy })).rejects.toThrow(/scratch/);
    await expect(columnSum(rt, { rows: 8192, N: 768, inp: rt.dummy, out: rt.dummy, scratch: rt.dummy })).rejects.toThrow(/scratch/);
  });
});

describe('sum of squares into slots', () => {
  for (const wg of [undefined, 1, 8, 256]) it(`several tensors into their own slots, then one fixed-order sum (and √), wg ${wg ?? 'default'}`, async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const r = mulberry32(seed);
    const sizes = [1, 29, SUMSQ_BLOCK - 1, SUMSQ_BLOCK, SUMSQ_BLOCK + 1, 37 * 96, 100_003];
    const tensors = sizes.map((n) => f32(randn(n, r)));
    const mem = rt.memory;
    let slots = 0;
    const offsets = sizes.map((n) => {
      const o = slots;
      slots += sumsqSlots(n);
      return o;
    });
    const partials = mem.upload('t.partials', poison(slots));
    const total = mem.upload('t.total', poison(2));
    const bufs = tensors.map((t, i) => mem.upload(`t.x${i}`, t));
    const ds = await Promise.all(bufs.map((x, i) => sumSquaresPartial(rt, { x, n: sizes[i]!, partials, slotOff: offsets[i]!, wg })));
    ds.push(await sumSlots(rt, { partials, count: slots, total, outIdx: 0, wg }));
    ds.push(await sumSlots(rt, { partials, count: slots, total, outIdx: 1, sqrt: true }));
    await rt.steps.run('sumsq-test', ds);
    const p = await mem.readFloat32(partials);
    const t = await mem.readFloat32(total);
    for (const b of [partials, total, ...bufs]) mem.destroy(b);
    expectWritten(seed, 'partials', p);
    // Per-slot values against float64.
    const refSlots = new Float64Array(slots);
    let refTotal = 0;
    tensors.forEach((x, ti) => {
      for (let i = 0; i < x.length; i++) {
        refSlots[offsets[ti]! + Math.floor(i / SUMSQ_BLOCK)] += x[i]! * x[i]!;
        refTotal += x[i]! * x[i]!;
      }
    });
    expectRel(seed, 'slots', p, refSlots, 1e-5);
    expect(Math.abs(t[0]! - refTotal) / refTotal, `seed ${seed}: total ${t[0]} vs ${refTotal}`).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(t[1]! - Math.sqrt(refTotal)) / Math.sqrt(refTotal), `seed ${seed}: norm`).toBeLessThanOrEqual(1e-5);
  });

  it('element offset, slot offset, partial sum of slots; bit-identical reruns', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const r = mulberry32(seed);
    const n = 3 * SUMSQ_BLOCK + 17;
    const off = 5;
    const data = f32(randn(off + n, r));
    const mem = rt.memory;
    const run = async () => {
      const x = mem.upload('t.x', data);
      const partials = mem.upload('t.partials', new Float32Array(10).fill(1000));
      const total = mem.upload('t.total', poison(1));
      const d1 = await sumSquaresPartial(rt, { x, n, off, partials, slotOff: 3 });
      const d2 = await sumSlots(rt, { partials, count: sumsqSlots(n), off: 3, total });
      await rt.steps.run('sumsq-off', [d1, d2]);
      const p = await mem.readFloat32(partials);
      const t = await mem.readFloat32(total);
      for (const b of [x, partials, total]) mem.destroy(b);
      return { p, t };
    };
    const a = await run();
    let ref = 0;
    for (let i = 0; i < n; i++) ref += data[off + i]! * data[off + i]!;
    expect(Array.from(a.p.slice(0, 3))).toEqual([1000, 1000, 1000]);
    expect(Array.from(a.p.slice(3 + sumsqSlots(n)))).toEqual([1000, 1000, 1000]);
    expect(Math.abs(a.t[0]! - ref) / ref, `seed ${seed}`).toBeLessThanOrEqual(1e-5);
    const b = await run();
    expect(bits(b.p)).toEqual(bits(a.p));
    expect(bits(b.t)).toEqual(bits(a.t));
  });
});
