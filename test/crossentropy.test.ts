import { describe, expect, it } from 'vitest';
import { CE_IGNORE, crossEntropyForward, crossEntropyFused, crossEntropyLossSum, validateTargets } from '../src/ops/crossentropy.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import {
  crossEntropyBackward as refBackward, crossEntropyForward as refForward, finiteDifference, mulberry32, randn,
} from './reference/ops.ts';
import { bits, expectRel, expectWritten, freshSeed, poison, runtime } from './util/gpu.ts';


interface Case { rows: number; V: number; ld?: number; ignore?: number[] }
interface Data { logits: Float32Array; targets: Uint32Array; refTargets: Int32Array }

/** Logits ~ 3·N(0,1) plus a large per-row offset (tests the max subtraction), padded columns NaN. */
function data(seed: number, c: Case): Data {
  const r = mulberry32(seed);
  const ld = c.ld ?? c.V;
  const logits = new Float32Array(c.rows * ld).fill(Number.NaN);
  const z = randn(c.rows * c.V, r, 3);
  for (let row = 0; row < c.rows; row++) {
    const off = 80 * (r() - 0.5);
    for (let j = 0; j < c.V; j++) logits[row * ld + j] = z[row * c.V + j] + off;
  }
  const targets = new Uint32Array(c.rows);
  const refTargets = new Int32Array(c.rows);
  for (let row = 0; row < c.rows; row++) {
    const t = Math.floor(r() * c.V);
    const ign = c.ignore?.includes(row);
    targets[row] = ign ? CE_IGNORE : t;
    refTargets[row] = ign ? -1 : t;
  }
  return { logits, targets, refTargets };
}

/** The dense [rows, V] logits (without padding) for the reference. */
function dense(c: Case, logits: Float32Array): Float64Array {
  const ld = c.ld ?? c.V;
  const out = new Float64Array(c.rows * c.V);
  for (let r = 0; r < c.rows; r++) for (let j = 0; j < c.V; j++) out[r * c.V + j] = logits[r * ld + j]!;
  return out;
}

async function runFused(rt: Runtime, c: Case, d: Data, scale: number, inplace = true) {
  const ld = c.ld ?? c.V;
  const mem = rt.memory;
  const logits = mem.upload('t.logits', d.logits);
  const dl = inplace ? undefined : mem.upload('t.dlogits', poison(c.rows * ld));
  const targets = mem.upload('t.targets', d.targets);
  const losses = mem.upload('t.losses', poison(c.rows));
  const total = mem.upload('t.total', poison(1));
  const fused = await crossEntropyFused(rt, { rows: c.rows, V: c.V, ld: c.ld, logits, targets, losses, scale, dlogits: dl });
  const sum = await crossEntropyLossSum(rt, { losses, n: c.rows, total, scale });
  await rt.steps.run('ce-fused', [fused, sum]);
  const res = {
    logitsAfter: await mem.readFloat32(logits),
    dlogits: await mem.readFloat32(dl ?? logits),
    losses: await mem.readFloat32(losses),
    total: (await mem.readFloat32(total))[0]!,
  };
  for (const b of [logits, dl, targets, losses, total]) if (b) mem.destroy(b);
  return res;
}

/** Reference gradient with the GPU's convention: dloss = scale for every non-ignored row. */
function refGrad(c: Case, d: Data, scale: number): Float64Array {
  const g = refBackward(dense(c, d.logits), d.refTargets, c.rows, c.V, new Float64Array(c.rows).fill(scale));
  const ld = c.ld ?? c.V;
  if (ld === c.V) return g;
  const out = new Float64Array(c.rows * ld);
  for (let r = 0; r < c.rows; r++) for (let j = 0; j < c.V; j++) out[r * ld + j] = g[r * c.V + j];
  return out;
}

/**
 * Losses against the reference, row by row: 1e-5 relative, plus the float32 rounding of the row's
 * logits (a loss near 0 from logits near ±40 carries ~4 ulp(40) ≈ 2e-5 absolute error, however right).
 */
function expectLosses(seed: number, name: string, out: ArrayLike<number>, ref: ArrayLike<number>, logits: Float32Array, c: Case): void {
  const ld = c.ld ?? c.V;
  for (let r = 0; r < c.rows; r++) {
    let maxAbs = 0;
    for (let j = 0; j < c.V; j++) maxAbs = Math.max(maxAbs, Math.abs(logits[r * ld + j]!));
    const tol = 1e-5 * Math.abs(ref[r]!) + 4 * 2 ** -23 * maxAbs;
    expect(Math.abs(out[r]! - ref[r]!), `seed ${seed}: ${name} row ${r}: ${out[r]} vs ${ref[r]} (tolerance ${tol.toExponential(2)})`).toBeLessThanOrEqual(tol);
  }
}

/** The same floor for a mean of losses (scale = 1/rows): at most the largest row's rounding. */
function lossFloor(logits: Float32Array): number {
  let maxAbs = 0;
  for (const v of logits) if (Number.isFinite(v)) maxAbs = Math.max(maxAbs, Math.abs(v));
  return 4 * 2 ** -23 * maxAbs;
}

async function checkCase(c: Case): Promise<void> {
  const rt = await runtime();
  const seed = freshSeed();
  const d = data(seed, c);
  const scale = 1 / c.rows;
  const ref = refForward(dense(c, d.logits), d.refTargets, c.rows, c.V);
  // forward only
  const mem = rt.memory;
  const logits = mem.upload('t.logits', d.logits);
  const targets = mem.upload('t.targets', d.targets);
  const losses = mem.upload('t.losses', poison(c.rows));
  const fwd = await crossEntropyForward(rt, { rows: c.rows, V: c.V, ld: c.ld, logits, targets, losses });
  await rt.steps.run('ce-forward', [fwd]);
  const l1 = await mem.readFloat32(losses);
  const after = await mem.readFloat32(logits);
  for (const b of [logits, targets, losses]) mem.destroy(b);
  expectWritten(seed, 'losses (forward)', l1);
  expectLosses(seed, 'losses (forward)', l1, ref.losses, d.logits, c);
  expect(bits(after), `seed ${seed}: forward changed the logits`).toEqual(bits(d.logits));
  // fused, in place and into a separate buffer
  const grad = refGrad(c, d, scale);
  let refSum = 0;
  for (let r = 0; r < c.rows; r++) refSum += ref.losses[r];
  for (const inplace of [true, false]) {
    const g = await runFused(rt, c, d, scale, inplace);
    const what = inplace ? 'in place' : 'separate';
    expectWritten(seed, `losses (fused ${what})`, g.losses);
    expectWritten(seed, `dlogits (fused ${what})`, g.dlogits);
    expectLosses(seed, `losses (fused ${what})`, g.losses, ref.losses, d.logits, c);
    expectRel(seed, `dlogits (fused ${what})`, g.dlogits, grad, 1e-4);
    expect(Math.abs(g.total - refSum * scale), `seed ${seed}: mean loss ${g.total} vs ${refSum * scale}`).toBeLessThanOrEqual(1e-5 * Math.abs(refSum * scale) + lossFloor(d.logits));
    if (!inplace) expect(bits(g.logitsAfter), `seed ${seed}: separate dlogits changed the logits`).toEqual(bits(d.logits));
  }
  for (const r of c.ignore ?? []) expect(ref.losses[r]).toBe(0);
}

describe('cross-entropy', () => {
  it('rows=37 V=1000 vs float64 reference', () => checkCase({ rows: 37, V: 1000 }));
  it('rows=37 V=1000 with ignored rows', () => checkCase({ rows: 37, V: 1000, ignore: [0, 5, 36] }));
  it('rows=5 V=50257 (GPT-2 vocabulary) vs float64 reference', () => checkCase({ rows: 5, V: 50257, ignore: [3] }));
  it('rows=37 V=29 padded to ld=32 (padded columns get 0 gradient)', () => checkCase({ rows: 37, V: 29, ld: 32 }));
  it('tiny shapes: rows=3 V=1, rows=1 V=7, rows=2 V=513', async () => {
    await checkCase({ rows: 3, V: 1 });
    await checkCase({ rows: 1, V: 7 });
    await checkCase({ rows: 2, V: 513 });
  });

  it('row chunks with rowOff, then one mean over all rows; loss_sum accumulate', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { rows: 37, V: 301, ignore: [4, 30] };
    const d = data(seed, c);
    const mem = rt.memory;
    const split = 20;
    const chunkA = mem.upload('t.chunkA', d.logits.slice(0, split * c.V));
    const chunkB = mem.upload('t.chunkB', d.logits.slice(split * c.V));
    const targets = mem.upload('t.targets', d.targets);
    const losses = mem.upload('t.losses', poison(c.rows));
    const total = mem.upload('t.total', new Float32Array([0, 0.5]));
    const scale = 1 / 35; // mean over the non-ignored rows
    const dA = await crossEntropyFused(rt, { rows: split, V: c.V, logits: chunkA, targets, losses, scale });
    const dB = await crossEntropyFused(rt, { rows: c.rows - split, V: c.V, rowOff: split, logits: chunkB, targets, losses, scale });
    const sum = await crossEntropyLossSum(rt, { losses, n: c.rows, total, outIdx: 0, scale });
    const sumAcc = await crossEntropyLossSum(rt, { losses, n: c.rows - split, off: split, total, outIdx: 1, scale, accumulate: true });
    await rt.steps.run('ce-chunks', [dA, dB, sum, sumAcc]);
    const gA = await mem.readFloat32(chunkA);
    const gB = await mem.readFloat32(chunkB);
    const l = await mem.readFloat32(losses);
    const tot = await mem.readFloat32(total);
    for (const b of [chunkA, chunkB, targets, losses, total]) mem.destroy(b);
    const ref = refForward(dense(c, d.logits), d.refTargets, c.rows, c.V);
    expectLosses(seed, 'losses (chunks)', l, ref.losses, d.logits, c);
    const grad = refGrad(c, d, scale);
    const got = new Float32Array(c.rows * c.V);
    got.set(gA);
    got.set(gB, split * c.V);
    expectRel(seed, 'dlogits (chunks)', got, grad, 1e-4);
    expect(Math.abs(tot[0]! - ref.loss) / ref.loss, `seed ${seed}: mean ${tot[0]} vs ${ref.loss}`).toBeLessThanOrEqual(1e-5);
    let tail = 0;
    for (let r = split; r < c.rows; r++) tail += ref.losses[r];
    expect(Math.abs(tot[1]! - (0.5 + tail * scale)), `seed ${seed}: accumulated sum`).toBeLessThanOrEqual(1e-5);
  });

  it('fused backward is bit-identical across runs', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { rows: 37, V: 1000, ignore: [2] };
    const d = data(seed, c);
    const a = await runFused(rt, c, d, 1 / 37);
    const b = await runFused(rt, c, d, 1 / 37);
    expect(bits(b.dlogits), `seed ${seed}: dlogits`).toEqual(bits(a.dlogits));
    expect(bits(b.losses), `seed ${seed}: losses`).toEqual(bits(a.losses));
    expect(b.total, `seed ${seed}: total`).toBe(a.total);
  });

  it('fused backward vs central finite differences of the float64 forward', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { rows: 4, V: 7, ignore: [1] };
    const d = data(seed, c);
    const scale = 1 / 3;
    const g = await runFused(rt, c, d, scale);
    const x = dense(c, d.logits);
    const loss = (v: Float64Array) => {
      const l = refForward(v, d.refTargets, c.rows, c.V).losses;
      let s = 0;
      for (let r = 0; r < c.rows; r++) s += scale * l[r];
      return s;
    };
    const r = mulberry32(seed);
    const gpu: number[] = [];
    const fd: number[] = [];
    for (let k = 0; k < 20; k++) {
      const i = Math.floor(r() * x.length);
      gpu.push(g.dlogits[i]!);
      fd.push(finiteDifference(loss, x, i));
    }
    expectRel(seed, 'cross-entropy finite differences', gpu, fd, 1e-3);
  });

  it('scale can be changed between steps with setUniforms', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const c: Case = { rows: 6, V: 100 };
    const d = data(seed, c);
    const mem = rt.memory;
    const logits = mem.upload('t.logits', d.logits);
    const targets = mem.upload('t.targets', d.targets);
    const losses = mem.upload('t.losses', poison(c.rows));
    const fused = await crossEntropyFused(rt, { rows: c.rows, V: c.V, logits, targets, losses, scale: 1 });
    fused.bound.setUniforms({ scale: 0.25 });
    await rt.steps.run('ce-scale', [fused]);
    const g = await mem.readFloat32(logits);
    for (const b of [logits, targets, losses]) mem.destroy(b);
    expectRel(seed, 'dlogits (scale 0.25)', g, refGrad(c, d, 0.25), 1e-4);
  });

  it('validateTargets accepts ids < V and 0xFFFFFFFF only', () => {
    expect(() => validateTargets([0, 4, CE_IGNORE], 5)).not.toThrow();
    expect(() => validateTargets([5], 5)).toThrow(/target 5/);
    expect(() => validateTargets([-1], 5)).toThrow(/target -1/);
  });
});
