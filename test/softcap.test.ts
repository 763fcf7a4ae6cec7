// Logit soft-capping (kernels/softcap.wgsl): Gemma2's y = c·tanh(x/c) in place over the first V
// columns of [rows, ld] logits, its derivative saved for the backward, and the backward in place
// over dlogits (from the saved derivative, or from y), alone and around the in-place cross-entropy.
//
// Bounds, against float64 on the same float32 inputs (worst measured on lavapipe over 5 runs in
// parentheses; MEASURE=1 prints them):
// - y: every element |y − ref| ≤ 2e-6·|ref| + 1e-30 (tanh's condition number is ≤ 1) (3.5e-7·|ref|);
// - deriv = sech²(x/c) and dx = dy·deriv: every element within 1e-6·(1 + 2|x/c|)·|ref| + 1e-30
//   (sech²'s condition number is 2|u·tanh u|) (0.17 of that);
// - dx from y, dy·(1 − (y/c)²): every element within 1e-6·|ref| + 1e-6·|dy| (y's rounding allows an
//   absolute error ≲ 2⁻²²·|dy|, see the kernel: 3.4e-6 relative at |x/c| = 2, more beyond) (0.29 of that);
// - ‖·−ref‖/‖ref‖ ≤ 1e-6 for y, deriv and dx either way when rows·V ≥ 100 (1.4e-7); below that the
//   norm is one or a few elements and only the elementwise bounds hold;
// - central finite differences of the float64 forward ≤ 1e-6 (9.6e-8); the softcap + in-place
//   cross-entropy chain ≤ 1e-6 against the float64 gradient (5.5e-8) and finite differences (8.4e-8).
import { describe, expect, it } from 'vitest';
import { softcapBackward, softcapDerivBytes, softcapForward } from '../src/ops/softcap.ts';
import { crossEntropyFused } from '../src/ops/crossentropy.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { crossEntropyBackward, crossEntropyForward, finiteDifference, mulberry32, randn, relError } from './reference/ops.ts';
import { bits, expectRel, expectWritten, freshSeed, poison, runtime } from './util/gpu.ts';

// ---------------------------------------------------------------------------------------------
// float64 reference
// ---------------------------------------------------------------------------------------------

const cap = (x: number, c: number) => c * Math.tanh(x / c);
/** d/dx c·tanh(x/c) = sech²(x/c), written without cancellation: 1/cosh² (cosh overflows to ∞ → 0). */
const capGrad = (x: number, c: number) => 1 / Math.cosh(x / c) ** 2;

// ---------------------------------------------------------------------------------------------
// GPU harness
// ---------------------------------------------------------------------------------------------

interface Case { rows: number; V: number; ld: number; c: number }

/** Padding columns get distinct finite values and NaNs, so that any write to them shows in the bits. */
function padded(c: Case, dense: ArrayLike<number>, seed: number): Float32Array {
  const out = new Float32Array(c.rows * c.ld);
  for (let r = 0; r < c.rows; r++) {
    for (let j = 0; j < c.ld; j++) out[r * c.ld + j] = j < c.V ? dense[r * c.V + j]! : (j - c.V) % 2 ? Number.NaN : 1000 + seed % 997 + r + j;
  }
  return out;
}

function denseOf(c: Case, a: Float32Array): Float32Array {
  const out = new Float32Array(c.rows * c.V);
  for (let r = 0; r < c.rows; r++) out.set(a.subarray(r * c.ld, r * c.ld + c.V), r * c.V);
  return out;
}

function paddingBits(c: Case, a: Float32Array): number[] {
  const b = bits(a);
  const out: number[] = [];
  for (let r = 0; r < c.rows; r++) for (let j = c.V; j < c.ld; j++) out.push(b[r * c.ld + j]!);
  return out;
}

/**
 * x ~ c·1.5·N(0,1): both tanh branches (|x/c| < 0.4 and above) and saturation; every 7th element
 * small (~1e-3·c: the series branch at its most relative), tails ±(2..40)·c and ±1e4 spread from 3.
 */
function logitsFor(c: Case, seed: number): Float32Array {
  const r = mulberry32(seed);
  const n = c.rows * c.V;
  const x = randn(n, r, 1.5 * c.c);
  for (let i = 0; i < n; i += 7) x[i]! *= 1e-3;
  for (let i = 3; i < n; i += 41) x[i] = (r() < 0.5 ? -1 : 1) * (r() < 0.2 ? 1e4 : (2 + 38 * r()) * c.c);
  return Float32Array.from(x);
}

async function runSoftcap(c: Case, opts: { seed?: number; x?: Float32Array } = {}) {
  const rt = await runtime();
  const seed = opts.seed ?? freshSeed();
  const x = opts.x ?? logitsFor(c, seed);
  const dy = Float32Array.from(randn(c.rows * c.V, mulberry32(seed + 1)));
  const xPad = padded(c, x, seed);
  const dyPad = padded(c, dy, seed + 5);
  const mem = rt.memory;
  const bA = mem.upload('t.logitsA', xPad); // forward without deriv, then the y of backward_from_y
  const bB = mem.upload('t.logitsB', xPad); // forward with deriv
  const bDeriv = mem.upload('t.deriv', poison(c.rows * c.V));
  const bD1 = mem.upload('t.dlogits1', dyPad);
  const bD2 = mem.upload('t.dlogits2', dyPad);
  const shape = { rows: c.rows, V: c.V, ld: c.ld, cap: c.c };
  const items = [
    ...(await softcapForward(rt, { ...shape, logits: bA })),
    ...(await softcapForward(rt, { ...shape, logits: bB, deriv: bDeriv })),
    ...(await softcapBackward(rt, { ...shape, dlogits: bD1, deriv: bDeriv })),
    ...(await softcapBackward(rt, { ...shape, dlogits: bD2, y: bA })),
  ];
  expect(items.map((d) => d.bound.kernel.entry)).toEqual(['forward', 'forward_deriv', 'backward', 'backward_from_y']);
  await rt.steps.run('softcap-test', items);
  const res = {
    seed, x, dy, xPad, dyPad,
    yA: await mem.readFloat32(bA),
    yB: await mem.readFloat32(bB),
    deriv: await mem.readFloat32(bDeriv),
    dx: await mem.readFloat32(bD1),
    dxY: await mem.readFloat32(bD2),
  };
  for (const b of [bA, bB, bDeriv, bD1, bD2]) mem.destroy(b);
  return res;
}

type Run = Awaited<ReturnType<typeof runSoftcap>>;

function expectEach(seed: number, name: string, got: ArrayLike<number>, ref: ArrayLike<number>, bound: (i: number) => number): number {
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i]! - ref[i]!);
    const b = bound(i);
    if (!(err <= b)) expect.fail(`seed ${seed}: ${name}[${i}] = ${got[i]} vs ${ref[i]} (bound ${b})`);
    if (b > 1e-30) worst = Math.max(worst, err / b);
  }
  return worst;
}

function check(c: Case, r: Run, label: string): void {
  const s = r.seed;
  const yA = denseOf(c, r.yA);
  const dx = denseOf(c, r.dx);
  const dxY = denseOf(c, r.dxY);
  for (const [k, a] of Object.entries({ yA, deriv: r.deriv, dx, dxY })) expectWritten(s, `${label} ${k}`, a);
  // The two forward variants agree bit for bit; padding columns keep their bits everywhere.
  expect(bits(r.yB), `seed ${s}: forward_deriv vs forward`).toEqual(bits(r.yA));
  const pad = paddingBits(c, r.xPad);
  expect(paddingBits(c, r.yA), `seed ${s}: logits padding`).toEqual(pad);
  const dpad = paddingBits(c, r.dyPad);
  expect(paddingBits(c, r.dx), `seed ${s}: dlogits padding (deriv)`).toEqual(dpad);
  expect(paddingBits(c, r.dxY), `seed ${s}: dlogits padding (from y)`).toEqual(dpad);

  const refY = Float64Array.from(r.x, (v) => cap(v, c.c));
  const refD = Float64Array.from(r.x, (v) => capGrad(v, c.c));
  const refDx = Float64Array.from(refD, (d, i) => r.dy[i]! * d);
  const widen = (i: number) => 1 + 2 * Math.abs(r.x[i]! / c.c);
  const w = [
    expectEach(s, `${label} y`, yA, refY, (i) => 2e-6 * Math.abs(refY[i]!) + 1e-30),
    expectEach(s, `${label} deriv`, r.deriv, refD, (i) => 1e-6 * widen(i) * refD[i]! + 1e-30),
    expectEach(s, `${label} dx`, dx, refDx, (i) => 1e-6 * widen(i) * Math.abs(refDx[i]!) + 1e-30),
    expectEach(s, `${label} dx from y`, dxY, refDx, (i) => 1e-6 * Math.abs(refDx[i]!) + 1e-6 * Math.abs(r.dy[i]!)),
  ];
  const n = [relError(yA, refY), relError(r.deriv, refD), relError(dx, refDx), relError(dxY, refDx)];
  if (process.env.MEASURE) console.log(`MEASURE ${label} elt ${w.map((v) => v.toExponential(2)).join(' ')} norm ${n.map((v) => v.toExponential(2)).join(' ')}`);
  if (refY.length >= 100) {
    expectRel(s, `${label} y`, yA, refY, 1e-6);
    expectRel(s, `${label} deriv`, r.deriv, refD, 1e-6);
    expectRel(s, `${label} dx`, dx, refDx, 1e-6);
    expectRel(s, `${label} dx from y`, dxY, refDx, 1e-6);
  }
}

describe('softcap', () => {
  for (const rows of [1, 7, 37]) {
    for (const V of [1, 5, 513, 1000]) {
      const ld = (rows + V) % 2 ? V : V + 3; // padded and unpadded cases
      for (const c of [30, 50]) {
        it(`rows=${rows} V=${V} ld=${ld} cap=${c}: forward (±deriv) and both backwards vs float64, padding untouched`, async () => {
          const k: Case = { rows, V, ld, c };
          check(k, await runSoftcap(k), `${rows}x${V}/${ld} c=${c}`);
        });
      }
    }
  }

  it('ld > V with odd padding, cap 1 (most logits saturated)', async () => {
    const k: Case = { rows: 7, V: 513, ld: 520, c: 1 };
    check(k, await runSoftcap(k), 'cap 1');
  });

  it('extreme inputs (±100, ±1e4, ±1e30, ±3e38, 0, ±1e-30, the branch point |x/c| = 0.4) stay finite and match float64', async () => {
    for (const c of [30, 50, 1, 0.5]) {
      const big = c >= 1 ? 3e38 : 1.5e38; // x/c stays finite
      const specials = [100, -100, 1e4, -1e4, 1e30, -1e30, big, -big, 0, -0, 1e-30, -1e-30, 0.4 * c, -0.4 * c, 0.3999 * c, 0.4001 * c, c, -c, 9 * c, 30 * c, 31 * c, 1e-3, -1e-3];
      const k: Case = { rows: 1, V: specials.length, ld: specials.length + 2, c };
      const r = await runSoftcap(k, { x: Float32Array.from(specials) });
      check(k, r, `extreme c=${c}`);
      const y = denseOf(k, r.yA);
      for (let i = 0; i < specials.length; i++) {
        expect(Math.abs(y[i]!), `c=${c} x=${specials[i]}`).toBeLessThanOrEqual(c);
        expect(r.deriv[i]!, `c=${c} x=${specials[i]}`).toBeGreaterThanOrEqual(0);
        expect(r.deriv[i]!, `c=${c} x=${specials[i]}`).toBeLessThanOrEqual(1);
      }
    }
  });

  it('backward (both ways) vs central finite differences of the float64 forward', async () => {
    const k: Case = { rows: 7, V: 37, ld: 40, c: 30 };
    const seed = freshSeed();
    // Moderate logits (|x/c| ≲ 3) so that the derivative is not ~0 everywhere sampled.
    const x = Float32Array.from(randn(k.rows * k.V, mulberry32(seed), 30));
    const r = await runSoftcap(k, { seed, x });
    const xs = Float64Array.from(x);
    const loss = (v: Float64Array) => {
      let s = 0;
      for (let i = 0; i < v.length; i++) s += r.dy[i]! * cap(v[i]!, k.c);
      return s;
    };
    const dx = denseOf(k, r.dx);
    const dxY = denseOf(k, r.dxY);
    const rng = mulberry32(seed + 9);
    const fd: number[] = [];
    const g1: number[] = [];
    const g2: number[] = [];
    for (let t = 0; t < 30; t++) {
      const i = Math.floor(rng() * xs.length);
      fd.push(finiteDifference(loss, xs, i));
      g1.push(dx[i]!);
      g2.push(dxY[i]!);
    }
    if (process.env.MEASURE) console.log(`FD ${relError(g1, fd).toExponential(2)} ${relError(g2, fd).toExponential(2)}`);
    expectRel(seed, 'dx (deriv) vs finite differences', g1, fd, 1e-6);
    expectRel(seed, 'dx (from y) vs finite differences', g2, fd, 1e-6);
  });

  it('with the in-place cross-entropy: softcap(deriv) → fused CE over the capped logits → softcap backward', async () => {
    // The training chain of a Gemma2 LM head chunk: the CE overwrites y with dloss/dy, so the
    // softcap backward runs from the saved derivative. Checked against float64 d mean CE(cap(x))/dx.
    const rt = await runtime();
    const k: Case = { rows: 37, V: 1000, ld: 1003, c: 30 };
    const seed = freshSeed();
    const rng = mulberry32(seed);
    // Logits ~ 8·N(0,1) (a spread softmax), every 13th saturated at ±(2..5)·c.
    const x = Float32Array.from(randn(k.rows * k.V, rng, 8));
    for (let i = 5; i < x.length; i += 13) x[i] = (rng() < 0.5 ? -1 : 1) * (2 + 3 * rng()) * k.c;
    const targets = Uint32Array.from({ length: k.rows }, () => Math.floor(rng() * k.V));
    const mem = rt.memory;
    const bl = mem.upload('t.logits', padded(k, x, seed));
    const bd = mem.upload('t.deriv', poison(k.rows * k.V));
    const bt = mem.upload('t.targets', targets);
    const bloss = mem.upload('t.losses', poison(k.rows));
    const shape = { rows: k.rows, V: k.V, ld: k.ld, cap: k.c };
    expect(bd.size).toBe(softcapDerivBytes(k.rows, k.V));
    const items = [
      ...(await softcapForward(rt, { ...shape, logits: bl, deriv: bd })),
      await crossEntropyFused(rt, { rows: k.rows, V: k.V, ld: k.ld, logits: bl, targets: bt, losses: bloss, scale: 1 / k.rows }),
      ...(await softcapBackward(rt, { ...shape, dlogits: bl, deriv: bd })),
    ];
    await rt.steps.run('softcap-ce', items);
    const g = await mem.readFloat32(bl);
    const losses = await mem.readFloat32(bloss);
    for (const b of [bl, bd, bt, bloss]) mem.destroy(b);
    const xs = Float64Array.from(x);
    const tg = Int32Array.from(targets);
    const meanLoss = (v: Float64Array) => crossEntropyForward(v.map((e) => cap(e, k.c)), tg, k.rows, k.V).loss;
    const y = xs.map((e) => cap(e, k.c));
    const ref = crossEntropyBackward(y, tg, k.rows, k.V).map((d, i) => d * capGrad(xs[i]!, k.c));
    expectRel(seed, 'losses of the capped logits', losses, crossEntropyForward(y, tg, k.rows, k.V).losses, 1e-5);
    const dense = denseOf(k, g);
    expectRel(seed, 'd mean CE(softcap(x)) / dx', dense, ref, 1e-6);
    for (let r = 0; r < k.rows; r++) for (let j = k.V; j < k.ld; j++) expect(g[r * k.ld + j], `padding [${r}, ${j}]`).toBe(0); // the CE zeroes it
    // Finite differences where the gradient is resolvable: each sampled row's target and a few of
    // its columns (most columns' gradients are far below the difference quotient's ~1e-12 noise).
    const fd: number[] = [];
    const got: number[] = [];
    for (let t = 0; t < 16; t++) {
      const row = Math.floor(rng() * k.rows);
      const i = row * k.V + (t % 2 ? targets[row]! : Math.floor(rng() * k.V));
      fd.push(finiteDifference(meanLoss, xs, i, 1e-3));
      got.push(dense[i]!);
    }
    if (process.env.MEASURE) console.log(`CHAIN ${relError(dense, ref).toExponential(2)} ${relError(got, fd).toExponential(2)}`);
    expectRel(seed, 'chain vs finite differences', got, fd, 1e-6);
  });

  it('2-D grid: rows·V over 65535 workgroups (sampled windows)', async () => {
    // 16.8M elements: only three windows of 3000 logits are filled and read back (the rest stay 0).
    const rt = await runtime();
    const k: Case = { rows: 3, V: 5_600_001, ld: 5_600_004, c: 30 };
    const seed = freshSeed();
    const mem = rt.memory;
    const bl = mem.storage('t.logits', k.rows * k.ld * 4);
    const bd = mem.storage('t.deriv', k.rows * k.V * 4);
    const items = await softcapForward(rt, { rows: k.rows, V: k.V, ld: k.ld, cap: k.c, logits: bl, deriv: bd });
    const [nx, ny] = items[0]!.workgroups;
    expect(ny).toBeGreaterThan(1);
    // Windows (dense index d0, inside one row): the start, across the first element of workgroup
    // row y = 1, and the end of the last row (followed by its padding).
    const len = 3000;
    const windows = [0, nx * 256 - len / 2, k.rows * k.V - len];
    const rng = mulberry32(seed);
    const addr = (d: number) => Math.floor(d / k.V) * k.ld + (d % k.V);
    const xs = windows.map(() => Float32Array.from(randn(len, rng, 40)));
    windows.forEach((d0, w) => {
      expect(addr(d0 + len - 1) - addr(d0)).toBe(len - 1);
      mem.write(bl, xs[w]!, addr(d0) * 4);
      mem.write(bd, poison(len), d0 * 4);
    });
    const padAt = (k.rows - 1) * k.ld + k.V;
    mem.write(bl, Float32Array.of(7, Number.NaN, 9), padAt * 4);
    await rt.steps.run('softcap-2d', items);
    for (let w = 0; w < windows.length; w++) {
      const d0 = windows[w]!;
      const x = xs[w]!;
      const y = await mem.readFloat32(bl, addr(d0), len);
      const deriv = await mem.readFloat32(bd, d0, len);
      expectWritten(seed, `deriv window ${d0}`, deriv);
      expectRel(seed, `y window ${d0}`, y, Float64Array.from(x, (v) => cap(v, k.c)), 1e-6);
      expectRel(seed, `deriv window ${d0}`, deriv, Float64Array.from(x, (v) => capGrad(v, k.c)), 1e-6);
    }
    expect(bits(await mem.readFloat32(bl, padAt, 3))).toEqual(bits(Float32Array.of(7, Number.NaN, 9)));
    for (const b of [bl, bd]) mem.destroy(b);
  });

  it('checks shapes, sizes, the cap and aliasing', async () => {
    const rt: Runtime = await runtime();
    const mem = rt.memory;
    const a = mem.storage('t.a', 7 * 10 * 4);
    const b = mem.storage('t.b', 7 * 10 * 4);
    const s = { rows: 7, V: 9, ld: 10, cap: 30 };
    await expect(softcapForward(rt, { ...s, logits: a })).resolves.toHaveLength(1);
    await expect(softcapForward(rt, { ...s, ld: 8, logits: a })).rejects.toThrow(/ld 8 < V 9/);
    await expect(softcapForward(rt, { ...s, cap: 0, logits: a })).rejects.toThrow(/cap must be a positive finite/);
    await expect(softcapForward(rt, { ...s, cap: Number.NaN, logits: a })).rejects.toThrow(/cap must be/);
    await expect(softcapForward(rt, { ...s, rows: 8, logits: a })).rejects.toThrow(/logits binding has 280 bytes, needs 316/);
    await expect(softcapForward(rt, { ...s, logits: a, deriv: a })).rejects.toThrow(/deriv must be distinct/);
    await expect(softcapForward(rt, { ...s, logits: a, deriv: { buffer: b, size: 4 * 62 } })).rejects.toThrow(/deriv binding has 248 bytes, needs 252/);
    await expect(softcapBackward(rt, { ...s, dlogits: a })).rejects.toThrow(/exactly one of deriv/);
    await expect(softcapBackward(rt, { ...s, dlogits: a, deriv: b, y: b })).rejects.toThrow(/exactly one of deriv/);
    await expect(softcapBackward(rt, { ...s, dlogits: a, y: a })).rejects.toThrow(/y must be distinct from dlogits/);
    await expect(softcapBackward(rt, { ...s, dlogits: a, deriv: b })).resolves.toHaveLength(1);
    await expect(softcapBackward(rt, { ...s, dlogits: a, y: b })).resolves.toHaveLength(1);
    for (const x of [a, b]) mem.destroy(x);
    await rt.device.queue.onSubmittedWorkDone();
    expect(rt.gpu.errors).toEqual([]);
  });
});
