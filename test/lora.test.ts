// LoRA on one linear layer (src/ops/lora.ts: matmul + kernels/scale.wgsl) against float64 on odd
// sizes: the forward accumulated into a column range of a wider output row, the backward's dA, dB and
// dx, the scale kernel alone, and the float64 backward against central finite differences of the
// float64 forward. Outputs are poisoned (NaN) first where the op overwrites them.
import { describe, expect, it } from 'vitest';
import { loraBackward, loraForward } from '../src/ops/lora.ts';
import { scaleInPlace } from '../src/ops/scale.ts';
import { finiteDifference } from './reference/ops.ts';
import { expectRel, expectWritten, freshSeed, poison, randomArray, rng, runtime } from './util/gpu.ts';

interface Case { rows: number; inputs: number; outputs: number; r: number; ldy: number; off: number; scale: number }

/** y0 + s·(x·Aᵀ)·Bᵀ into columns [off, off+out) of rows of stride ldy (float64). */
function refForward(c: Case, x: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, y0: ArrayLike<number>): { y: Float64Array; u: Float64Array } {
  const { rows, inputs, outputs, r, ldy, off, scale } = c;
  const u = new Float64Array(rows * r);
  for (let m = 0; m < rows; m++) for (let j = 0; j < r; j++) {
    let s = 0;
    for (let k = 0; k < inputs; k++) s += x[m * inputs + k]! * A[j * inputs + k]!;
    u[m * r + j] = scale * s;
  }
  const y = Float64Array.from(y0);
  for (let m = 0; m < rows; m++) for (let n = 0; n < outputs; n++) {
    let s = 0;
    for (let j = 0; j < r; j++) s += u[m * r + j]! * B[n * r + j]!;
    y[m * ldy + off + n] = y[m * ldy + off + n]! + s;
  }
  return { y, u };
}

/** dA, dB, dx of L = Σ dy ⊙ y (float64). */
function refBackward(c: Case, x: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, dy: ArrayLike<number>) {
  const { rows, inputs, outputs, r, ldy, off, scale } = c;
  const { u } = refForward(c, x, A, B, new Float64Array(rows * ldy));
  const du = new Float64Array(rows * r);
  for (let m = 0; m < rows; m++) for (let j = 0; j < r; j++) {
    let s = 0;
    for (let n = 0; n < outputs; n++) s += dy[m * ldy + off + n]! * B[n * r + j]!;
    du[m * r + j] = scale * s;
  }
  const dB = new Float64Array(outputs * r);
  for (let n = 0; n < outputs; n++) for (let j = 0; j < r; j++) {
    let s = 0;
    for (let m = 0; m < rows; m++) s += dy[m * ldy + off + n]! * u[m * r + j]!;
    dB[n * r + j] = s;
  }
  const dA = new Float64Array(r * inputs);
  for (let j = 0; j < r; j++) for (let k = 0; k < inputs; k++) {
    let s = 0;
    for (let m = 0; m < rows; m++) s += du[m * r + j]! * x[m * inputs + k]!;
    dA[j * inputs + k] = s;
  }
  const dx = new Float64Array(rows * inputs);
  for (let m = 0; m < rows; m++) for (let k = 0; k < inputs; k++) {
    let s = 0;
    for (let j = 0; j < r; j++) s += du[m * r + j]! * A[j * inputs + k]!;
    dx[m * inputs + k] = s;
  }
  return { dA, dB, dx, u };
}

const CASES: Case[] = [
  { rows: 13, inputs: 11, outputs: 9, r: 3, ldy: 23, off: 5, scale: 2 / 3 },
  { rows: 34, inputs: 96, outputs: 144, r: 8, ldy: 240, off: 48, scale: 2 },
  { rows: 7, inputs: 5, outputs: 6, r: 1, ldy: 6, off: 0, scale: 16 },
];

describe('scale.wgsl', () => {
  it.each([1, 7, 257, 1031])('x[off..off+n) *= s, n = %i, the rest untouched', async (n) => {
    const rt = await runtime();
    const seed = freshSeed();
    const x = randomArray(n + 10, rng(seed));
    const buf = rt.memory.upload('t.scale', x);
    await rt.steps.run('scale-test', [await scaleInPlace(rt, { x: buf, n, s: -0.37, off: 3 })]);
    const got = await rt.memory.readFloat32(buf, 0, n + 10);
    for (let i = 0; i < n + 10; i++) {
      const want = i >= 3 && i < 3 + n ? Math.fround(x[i]! * Math.fround(-0.37)) : x[i]!;
      if (got[i] !== want) throw new Error(`seed ${seed}: x[${i}] = ${got[i]}, want ${want}`);
    }
    rt.memory.destroy(buf);
  });
});

describe.each(CASES)('LoRA on a linear layer: rows $rows, in $inputs, out $outputs, r $r, ld $ldy, off $off', (c) => {
  it('forward and backward within 1e-5 of float64; backward within 1e-6 of finite differences', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const { rows, inputs, outputs, r, ldy } = c;
    const x = randomArray(rows * inputs, next);
    const A = randomArray(r * inputs, next, 0.5);
    const B = randomArray(outputs * r, next, 0.5);
    const y0 = randomArray(rows * ldy, next);
    const dy = randomArray(rows * ldy, next);
    const dA0 = randomArray(r * inputs, next);
    const dB0 = randomArray(outputs * r, next);
    const dx0 = randomArray(rows * inputs, next);
    const mem = rt.memory;
    const bx = mem.upload('t.x', x);
    const bA = mem.upload('t.A', A);
    const bB = mem.upload('t.B', B);
    const by = mem.upload('t.y', y0);
    const bu = mem.upload('t.u', poison(rows * r));
    const bdy = mem.upload('t.dy', dy);
    const bdu = mem.upload('t.du', poison(rows * r));
    const bdA = mem.upload('t.dA', dA0);
    const bdB = mem.upload('t.dB', dB0);
    const bdx = mem.upload('t.dx', dx0);
    const shape = { rows, inputs, outputs, r, scale: c.scale };
    await rt.steps.run('lora-test', [
      ...await loraForward(rt, { ...shape, x: bx, A: bA, B: bB, u: bu, y: by, ldy, yOff: c.off }),
      ...await loraBackward(rt, { ...shape, x: bx, A: bA, B: bB, u: bu, dy: bdy, ldy, dyOff: c.off, du: bdu, dA: bdA, dB: bdB, dx: bdx }),
    ]);
    const ref = refForward(c, x, A, B, y0);
    const y = await mem.readFloat32(by, 0, rows * ldy);
    expectWritten(seed, 'y', y);
    expectRel(seed, 'y', y, ref.y, 1e-5);
    // Columns outside [off, off + out) are the caller's: untouched, bit for bit.
    for (let m = 0; m < rows; m++) for (let n = 0; n < ldy; n++) {
      if (n >= c.off && n < c.off + outputs) continue;
      expect(y[m * ldy + n], `seed ${seed}: y[${m}, ${n}] outside the layer's columns changed`).toBe(y0[m * ldy + n]);
    }
    const g = refBackward(c, x, A, B, dy);
    expectRel(seed, 'u', await mem.readFloat32(bu, 0, rows * r), g.u, 1e-5);
    const plus = (a: Float32Array, b: Float64Array) => Float64Array.from(b, (v, i) => v + a[i]!);
    expectRel(seed, 'dA', await mem.readFloat32(bdA, 0, r * inputs), plus(dA0, g.dA), 1e-5);
    expectRel(seed, 'dB', await mem.readFloat32(bdB, 0, outputs * r), plus(dB0, g.dB), 1e-5);
    expectRel(seed, 'dx', await mem.readFloat32(bdx, 0, rows * inputs), plus(dx0, g.dx), 1e-5);
    // The increments alone (not hidden by the accumulated base).
    const dAinc = Float64Array.from(await mem.readFloat32(bdA, 0, r * inputs), (v, i) => v - dA0[i]!);
    expectRel(seed, 'dA increment', dAinc, g.dA, 1e-4);

    // The float64 backward is the gradient of L = Σ dy ⊙ y.
    const loss = (xv: ArrayLike<number>, Av: ArrayLike<number>, Bv: ArrayLike<number>) => {
      const { y: yy } = refForward(c, xv, Av, Bv, new Float64Array(rows * ldy));
      let s = 0;
      for (let i = 0; i < yy.length; i++) s += yy[i]! * dy[i]!;
      return s;
    };
    const x64 = Float64Array.from(x);
    const A64 = Float64Array.from(A);
    const B64 = Float64Array.from(B);
    const pick = (n: number) => [0, n - 1, Math.floor(n / 2), Math.floor(n / 3)];
    for (const i of pick(A64.length)) expect(Math.abs(finiteDifference((v) => loss(x64, v, B64), A64, i) - g.dA[i]!)).toBeLessThan(1e-6 * (1 + Math.abs(g.dA[i]!)));
    for (const i of pick(B64.length)) expect(Math.abs(finiteDifference((v) => loss(x64, A64, v), B64, i) - g.dB[i]!)).toBeLessThan(1e-6 * (1 + Math.abs(g.dB[i]!)));
    for (const i of pick(x64.length)) expect(Math.abs(finiteDifference((v) => loss(v, A64, B64), x64, i) - g.dx[i]!)).toBeLessThan(1e-6 * (1 + Math.abs(g.dx[i]!)));
    for (const b of [bx, bA, bB, by, bu, bdy, bdu, bdA, bdB, bdx]) mem.destroy(b);
  });
});
