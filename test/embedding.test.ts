import { describe, expect, it } from 'vitest';
import {
  buildTokenIndex, embeddingBackward, embeddingBackwardWte, embeddingForward, packTokenIndex, TokenIndexBuffer, tokenIndexWords,
} from '../src/ops/embedding.ts';
import type { BufferBinding } from '../src/gpu/kernels.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import {
  embeddingBackward as refBackward, embeddingForward as refForward, finiteDifference, mulberry32, randInts, randn,
} from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, poison, runtime } from './util/gpu.ts';


interface Case {
  B: number;
  T: number;
  C: number;
  V: number;
  /** wpe rows (≥ T). */
  maxT: number;
  /** Split wte/dwte into ranges of this many rows (the row stride must keep offsets 256-byte aligned). */
  partRows?: number;
  accumulateWpe?: boolean;
  /** Invocations per row / unique id (default: the adapter's). */
  wg?: number;
}

interface Data { ids: Int32Array; wte: Float32Array; wpe: Float32Array; dout: Float32Array; dwte0: Float32Array; dwpe0: Float32Array }

function data(seed: number, c: Case, ids?: Int32Array): Data {
  const r = mulberry32(seed);
  return {
    ids: ids ?? randInts(c.B * c.T, c.V, r),
    wte: f32(randn(c.V * c.C, r)),
    wpe: f32(randn(c.maxT * c.C, r)),
    dout: f32(randn(c.B * c.T * c.C, r)),
    dwte0: f32(randn(c.V * c.C, r)),
    dwpe0: f32(randn(c.maxT * c.C, r)),
  };
}

function ranges(buffer: GPUBuffer, V: number, C: number, partRows?: number): BufferBinding | BufferBinding[] {
  if (!partRows) return buffer;
  const out: BufferBinding[] = [];
  for (let r0 = 0; r0 < V; r0 += partRows) out.push({ buffer, offset: r0 * C * 4, size: Math.min(partRows, V - r0) * C * 4 });
  return out;
}

async function runGpu(rt: Runtime, c: Case, d: Data) {
  const { B, T, C, V, maxT } = c;
  const mem = rt.memory;
  const ids = mem.upload('t.ids', Uint32Array.from(d.ids));
  const wte = mem.upload('t.wte', d.wte);
  const wpe = mem.upload('t.wpe', d.wpe);
  const out = mem.upload('t.out', poison(B * T * C));
  const dout = mem.upload('t.dout', d.dout);
  const dwte = mem.upload('t.dwte', d.dwte0);
  // Rows ≥ T of dwpe are never touched: keep them finite; rows < T are NaN unless accumulating.
  const dwpeInit = d.dwpe0.slice();
  if (!c.accumulateWpe) dwpeInit.fill(Number.NaN, 0, T * C);
  const dwpe = mem.upload('t.dwpe', dwpeInit);
  const index = new TokenIndexBuffer(rt, B * T, 't.index');
  index.upload(d.ids, V);
  const fwd = await embeddingForward(rt, { B, T, C, ids, wte: ranges(wte, V, C, c.partRows), partRows: c.partRows, wpe, out, wg: c.wg });
  const bwd = await embeddingBackward(rt, { B, T, C, dout, dwpe, accumulate: c.accumulateWpe, index, dwte: ranges(dwte, V, C, c.partRows), partRows: c.partRows, wg: c.wg });
  await rt.steps.run('embedding-test', [...fwd, ...bwd]);
  const res = { out: await mem.readFloat32(out), dwte: await mem.readFloat32(dwte), dwpe: await mem.readFloat32(dwpe), nDispatch: fwd.length + bwd.length };
  for (const b of [ids, wte, wpe, out, dout, dwte, dwpe]) mem.destroy(b);
  index.destroy();
  void maxT;
  return res;
}

function reference(c: Case, d: Data) {
  const out = refForward(d.ids, f64(d.wte), f64(d.wpe), c.B, c.T, c.C);
  const g = refBackward(f64(d.dout), d.ids, c.B, c.T, c.C, c.V, c.maxT);
  const dwte = g.dwte.map((v, i) => v + d.dwte0[i]!);
  const dwpe = g.dwpe.map((v, i) => (c.accumulateWpe || i >= c.T * c.C ? v + d.dwpe0[i]! : v));
  return { out, dwte, dwpe };
}

async function checkCase(c: Case): Promise<void> {
  const rt = await runtime();
  const seed = freshSeed();
  const d = data(seed, c);
  const g = await runGpu(rt, c, d);
  const ref = reference(c, d);
  expectWritten(seed, 'out', g.out);
  expectWritten(seed, 'dwpe', g.dwpe);
  expectWritten(seed, 'dwte', g.dwte);
  expectRel(seed, 'embedding forward', g.out, ref.out, 1e-5);
  expectRel(seed, 'dwte', g.dwte, ref.dwte, 1e-4);
  expectRel(seed, 'dwpe', g.dwpe, ref.dwpe, 1e-4);
  // The untouched dwte rows (ids absent from the batch) keep their values exactly.
  const present = new Set(Array.from(d.ids));
  for (let v = 0; v < c.V; v++) {
    if (present.has(v)) continue;
    expect(bits(g.dwte.slice(v * c.C, (v + 1) * c.C)), `seed ${seed}: dwte row ${v} changed`).toEqual(bits(d.dwte0.slice(v * c.C, (v + 1) * c.C)));
  }
}

describe('token index (CPU)', () => {
  it('groups ids ascending with positions ascending', () => {
    const idx = buildTokenIndex([3, 1, 3, 0, 1, 3]);
    expect(idx.count).toBe(3);
    expect(Array.from(idx.unique)).toEqual([0, 1, 3]);
    expect(Array.from(idx.offsets)).toEqual([0, 1, 3, 6]);
    expect(Array.from(idx.positions)).toEqual([3, 1, 4, 0, 2, 5]);
    const packed = packTokenIndex(idx, 8);
    expect(packed.length).toBe(tokenIndexWords(8));
    expect(Array.from(packed.subarray(0, 4))).toEqual([3, 0, 1, 3]);
    expect(Array.from(packed.subarray(9, 13))).toEqual([0, 1, 3, 6]);
    expect(Array.from(packed.subarray(18, 24))).toEqual([3, 1, 4, 0, 2, 5]);
  });

  it('matches a naive grouping on random ids', () => {
    const seed = freshSeed();
    const ids = randInts(1000, 37, mulberry32(seed));
    const idx = buildTokenIndex(ids, 37);
    const uniq = [...new Set(Array.from(ids))].sort((a, b) => a - b);
    expect(Array.from(idx.unique), `seed ${seed}`).toEqual(uniq);
    for (let u = 0; u < idx.count; u++) {
      const want = [...ids.keys()].filter((i) => ids[i] === uniq[u]);
      expect(Array.from(idx.positions.subarray(idx.offsets[u], idx.offsets[u + 1])), `seed ${seed}`).toEqual(want);
    }
  });

  it('rejects ids outside the vocabulary and batches over capacity', async () => {
    expect(() => buildTokenIndex([0, 5], 5)).toThrow(/token id 5/);
    expect(() => buildTokenIndex([0, -1])).toThrow(/token id -1/);
    expect(() => buildTokenIndex([0.5])).toThrow(/token id/);
    const rt = await runtime();
    const index = new TokenIndexBuffer(rt, 4, 't.index');
    expect(() => index.upload([1, 2, 3, 4, 5])).toThrow(/capacity/);
    index.destroy();
  });
});

describe('embedding', () => {
  it('forward/backward B=3 T=37 C=29 V=50 (many repeated ids) vs float64 reference', () => checkCase({ B: 3, T: 37, C: 29, V: 50, maxT: 40 }));
  it('forward/backward B=2 T=19 C=96 V=1000 vs float64 reference', () => checkCase({ B: 2, T: 19, C: 96, V: 1000, maxT: 19 }));
  it('forward/backward with very few distinct ids (B=4 T=33 C=13 V=3)', () => checkCase({ B: 4, T: 33, C: 13, V: 3, maxT: 33 }));
  it('dwpe accumulate (B=3 T=37 C=29 V=50)', () => checkCase({ B: 3, T: 37, C: 29, V: 50, maxT: 41, accumulateWpe: true }));
  it('wte and dwte bound as 3 ranges (V=150, 64 rows each)', () => checkCase({ B: 3, T: 37, C: 29, V: 150, maxT: 37, partRows: 64 }));
  it('wte and dwte bound as 4 ranges (V=250, 64 rows each, C=96)', () => checkCase({ B: 2, T: 50, C: 96, V: 250, maxT: 50, partRows: 64 }));
  it('wte and dwte bound as 10 ranges (V=600, 64 rows each: 3 forward dispatches, the last with 2 parts)', () => checkCase({ B: 3, T: 45, C: 29, V: 600, maxT: 45, partRows: 64 }));

  it('row kernels with 1 and 64 invocations (hardware default)', async () => {
    await checkCase({ B: 3, T: 37, C: 29, V: 150, maxT: 37, partRows: 64, wg: 64 });
    await checkCase({ B: 2, T: 19, C: 96, V: 1000, maxT: 19, wg: 64 });
    await checkCase({ B: 2, T: 19, C: 29, V: 50, maxT: 19, wg: 1 });
  });

  it('every position has the same id (one unique id, 222 positions)', async () => {
    const c: Case = { B: 6, T: 37, C: 29, V: 10, maxT: 37 };
    const rt = await runtime();
    const seed = freshSeed();
    const d = data(seed, c, new Int32Array(c.B * c.T).fill(7));
    const g = await runGpu(rt, c, d);
    const ref = reference(c, d);
    expectRel(seed, 'dwte (one id)', g.dwte, ref.dwte, 1e-4);
    expectRel(seed, 'dwpe (one id)', g.dwpe, ref.dwpe, 1e-4);
  });

  it('reuses the index buffer across batches (and a batch smaller than the capacity)', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const r = mulberry32(seed);
    const B = 3, T = 21, C = 29, V = 40, cap = 4 * T;
    const mem = rt.memory;
    const index = new TokenIndexBuffer(rt, cap, 't.index');
    const dout = mem.upload('t.dout', f32(randn(B * T * C, r)));
    const dwte = mem.upload('t.dwte', new Float32Array(V * C));
    const dwpe = mem.upload('t.dwpe', poison(T * C));
    const bwd = await embeddingBackward(rt, { B, T, C, dout, dwpe, index, dwte });
    const douts = f64(await mem.readFloat32(dout));
    const expected = new Float64Array(V * C);
    for (let batch = 0; batch < 3; batch++) {
      const ids = randInts(B * T, V, r);
      const before = index.buffer;
      index.upload(ids, V);
      expect(index.buffer).toBe(before);
      await rt.steps.run('embedding-batches', bwd);
      const g = refBackward(douts, ids, B, T, C, V, T);
      for (let i = 0; i < expected.length; i++) expected[i] += g.dwte[i];
      const got = await mem.readFloat32(dwte);
      expectRel(seed, `dwte after batch ${batch}`, got, expected, 1e-4);
    }
    for (const b of [dout, dwte, dwpe]) mem.destroy(b);
    index.destroy();
  });

  it('rotary models: no position table and a scaled token embedding (Gemma: √hidden), forward and dwte', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { B: 2, T: 21, C: 37, V: 90, maxT: 21, partRows: 64 };
    const d = data(seed, c);
    const scale = Math.fround(Math.sqrt(37));
    const mem = rt.memory;
    const ids = mem.upload('t.ids', Uint32Array.from(d.ids));
    const wte = mem.upload('t.wte', d.wte);
    const out = mem.upload('t.out', poison(c.B * c.T * c.C));
    const dout = mem.upload('t.dout', d.dout);
    const dwte = mem.upload('t.dwte', d.dwte0);
    const index = new TokenIndexBuffer(rt, c.B * c.T, 't.index');
    index.upload(d.ids, c.V);
    const fwd = await embeddingForward(rt, { B: c.B, T: c.T, C: c.C, ids, wte: ranges(wte, c.V, c.C, c.partRows), partRows: c.partRows, scale, out });
    const bwd = await embeddingBackwardWte(rt, { C: c.C, index, dout, dwte: ranges(dwte, c.V, c.C, c.partRows), partRows: c.partRows, scale });
    await rt.steps.run('embedding-scaled', [...fwd, ...bwd]);
    const got = await mem.readFloat32(out);
    const gotD = await mem.readFloat32(dwte);
    for (const b of [ids, wte, out, dout, dwte]) mem.destroy(b);
    index.destroy();
    const zeros = new Float64Array(c.maxT * c.C);
    const ref = refForward(d.ids, f64(d.wte).map((v) => v * scale), zeros, c.B, c.T, c.C);
    const g = refBackward(f64(d.dout), d.ids, c.B, c.T, c.C, c.V, c.maxT);
    expectRel(seed, 'scaled embedding forward', got, ref, 1e-6);
    expectRel(seed, 'scaled dwte', gotD, g.dwte.map((v, i) => scale * v + d.dwte0[i]!), 1e-5);
  });

  it('backward is bit-identical across runs', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { B: 4, T: 37, C: 96, V: 60, maxT: 37 };
    const d = data(seed, c);
    const a = await runGpu(rt, c, d);
    const b = await runGpu(rt, c, d);
    expect(bits(b.dwte), `seed ${seed}: dwte`).toEqual(bits(a.dwte));
    expect(bits(b.dwpe), `seed ${seed}: dwpe`).toEqual(bits(a.dwpe));
  });

  it('backward vs central finite differences of the float64 forward', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { B: 2, T: 3, C: 5, V: 4, maxT: 3 };
    const d = data(seed, c);
    d.dwte0.fill(0);
    const g = await runGpu(rt, c, d);
    const wte = f64(d.wte);
    const wpe = f64(d.wpe);
    const w = f64(d.dout);
    const loss = () => {
      const o = refForward(d.ids, wte, wpe, c.B, c.T, c.C);
      let s = 0;
      for (let i = 0; i < o.length; i++) s += w[i] * o[i];
      return s;
    };
    const r = mulberry32(seed);
    const gpu: number[] = [];
    const fd: number[] = [];
    for (let k = 0; k < 14; k++) {
      const i = Math.floor(r() * wte.length);
      gpu.push(g.dwte[i]!);
      fd.push(finiteDifference(loss, wte, i));
    }
    for (let k = 0; k < 6; k++) {
      const i = Math.floor(r() * wpe.length);
      gpu.push(g.dwpe[i]!);
      fd.push(finiteDifference(loss, wpe, i));
    }
    expectRel(seed, 'embedding finite differences', gpu, fd, 1e-3);
  });
});
