import { describe, expect, it } from 'vitest';
import { Optimizer, zeroDispatches, type OptimizerOptions, type TrainableTensor } from '../src/train/optimizer.ts';
import { parseSafetensors, serializeSafetensors } from '../src/io/safetensors.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { freshSeed, poison, randomArray, relError, rng, runtime } from './util/gpu.ts';

// ---- float64 CPU references (torch semantics) -------------------------------------------------

interface CpuTensor {
  theta: Float64Array;
  m: Float64Array;
  v: Float64Array;
  decay: boolean;
}

interface AdamHyper { beta1: number; beta2: number; eps: number; lambda: number }

/** torch.optim.AdamW (single tensor): decoupled decay first, then the Adam update. */
function adamwCpu(x: CpuTensor, g: Float32Array, scale: number, t: number, lr: number, h: AdamHyper): void {
  const bc1 = 1 - h.beta1 ** t;
  const bc2 = 1 - h.beta2 ** t;
  const stepSize = lr / bc1;
  const bc2Sqrt = Math.sqrt(bc2);
  for (let i = 0; i < x.theta.length; i++) {
    const gi = g[i]! * scale;
    if (x.decay) x.theta[i]! *= 1 - lr * h.lambda;
    x.m[i] = h.beta1 * x.m[i]! + (1 - h.beta1) * gi;
    x.v[i] = h.beta2 * x.v[i]! + (1 - h.beta2) * gi * gi;
    x.theta[i]! -= (stepSize * x.m[i]!) / (Math.sqrt(x.v[i]!) / bc2Sqrt + h.eps);
  }
}

/** The same update emulated in f32 with the kernel's (torch's) rounding points, to count exact matches. */
function adamwF32(theta: Float32Array, m: Float32Array, v: Float32Array, decay: boolean, g: Float32Array, scale: number, t: number, lr: number, h: AdamHyper): void {
  const f = Math.fround;
  const fma = (a: number, b: number, c: number) => f(a * b + c); // a·b exact in f64 for f32 inputs
  const bc1 = 1 - h.beta1 ** t;
  const negStep = f(-(lr / bc1));
  const bc2Sqrt = f(Math.sqrt(1 - h.beta2 ** t));
  const decayMul = f(1 - lr * h.lambda);
  const omb1 = f(1 - h.beta1);
  const b2 = f(h.beta2);
  const omb2 = f(1 - h.beta2);
  const eps = f(h.eps);
  const s = f(scale);
  for (let i = 0; i < theta.length; i++) {
    const gi = f(g[i]! * s);
    let th = theta[i]!;
    if (decay) th = f(th * decayMul);
    const mi = fma(omb1, f(gi - m[i]!), m[i]!);
    let vi = f(v[i]! * b2);
    vi = f(vi + f(f(omb2 * gi) * gi));
    const d = f(f(f(Math.sqrt(vi)) / bc2Sqrt) + eps);
    th = f(th + f(f(negStep * mi) / d));
    m[i] = mi;
    v[i] = vi;
    theta[i] = th;
  }
}

function sumSquares(gs: Float32Array[]): number {
  let s = 0;
  for (const g of gs) for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!;
  return s;
}

/** torch.nn.utils.clip_grad_norm_ coefficient, with maxNorm 0 meaning no clipping. */
function clipCoef(norm: number, maxNorm: number): number {
  return maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}

// ---- GPU helpers ------------------------------------------------------------------------------

interface Setup {
  tensors: TrainableTensor[];
  params: Float32Array[];
  grads: Float32Array[];
  buffers: GPUBuffer[];
}

function setup(rt: Runtime, sizes: number[], decays: boolean[], next: () => number): Setup {
  const s: Setup = { tensors: [], params: [], grads: [], buffers: [] };
  sizes.forEach((n, i) => {
    const p = randomArray(n, next);
    const g = randomArray(n, next);
    const pb = rt.memory.upload(`t.param${i}`, p);
    const gb = rt.memory.upload(`t.grad${i}`, g);
    s.params.push(p);
    s.grads.push(g);
    s.buffers.push(pb, gb);
    s.tensors.push({ name: `w${i}`, param: pb, grad: gb, n, weightDecay: decays[i]! });
  });
  return s;
}

function teardown(rt: Runtime, s: Setup, opt?: Optimizer): void {
  for (const b of s.buffers) rt.memory.destroy(b);
  opt?.destroy();
}

function newGrads(rt: Runtime, s: Setup, next: () => number, scale = 1): void {
  s.tensors.forEach((t, i) => {
    s.grads[i] = randomArray(t.n, next, scale);
    rt.memory.write(t.grad as GPUBuffer, s.grads[i]!);
  });
}

const H: AdamHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, lambda: 0.1 };
const lrAt = (t: number) => 1e-3 * (0.5 + 0.5 * Math.cos(t)); // changes every step

/** n steps of AdamW on GPU and CPU; returns the GPU tensors for further checks. */
async function runAdam(sizes: number[], decays: boolean[], opts: Partial<OptimizerOptions> & { steps?: number; clip?: boolean; gradScale?: number; seed?: number } = {}) {
  const rt = await runtime();
  const seed = opts.seed ?? freshSeed();
  const next = rng(seed);
  const s = setup(rt, sizes, decays, next);
  const opt = await Optimizer.create(rt, s.tensors, { kind: 'adamw', weightDecay: H.lambda, ...opts });
  const cpu: CpuTensor[] = s.params.map((p, i) => ({ theta: Float64Array.from(p), m: new Float64Array(p.length), v: new Float64Array(p.length), decay: decays[i]! }));
  const f32 = s.params.map((p) => ({ theta: Float32Array.from(p), m: new Float32Array(p.length), v: new Float32Array(p.length) }));
  const steps = opts.steps ?? 10;
  const norms: [number, number][] = [];
  for (let t = 1; t <= steps; t++) {
    newGrads(rt, s, next, opts.gradScale ?? 1);
    const lr = lrAt(t);
    opt.setStep(t, lr);
    await rt.steps.run('adamw-test', opts.clip ? [...opt.clipDispatches(), ...opt.dispatches()] : opt.dispatches());
    let scale = 1;
    let gpuScale = 1;
    if (opts.clip) {
      const norm = Math.sqrt(sumSquares(s.grads));
      const clip = await opt.readClip();
      norms.push([clip.norm, norm]);
      scale = clipCoef(norm, opts.maxGradNorm ?? 0);
      gpuScale = clip.gradScale;
    }
    cpu.forEach((x, i) => adamwCpu(x, s.grads[i]!, scale, t, lr, H));
    f32.forEach((x, i) => adamwF32(x.theta, x.m, x.v, decays[i]!, s.grads[i]!, gpuScale, t, lr, H));
  }
  const gpu = [];
  const st = await opt.stateTensors();
  for (let i = 0; i < sizes.length; i++) {
    gpu.push({
      theta: await rt.memory.readFloat32(s.tensors[i]!.param as GPUBuffer, 0, sizes[i]!),
      m: st.find((x) => x.name === `optim.m.w${i}`)!.data as Float32Array,
      v: st.find((x) => x.name === `optim.v.w${i}`)!.data as Float32Array,
    });
  }
  teardown(rt, s, opt);
  return { seed, gpu, cpu, f32, norms, initial: s.params };
}

function expectClose(label: string, seed: number, out: Float32Array, ref: Float64Array, tol = 1e-6): void {
  const nan = out.findIndex((x) => !Number.isFinite(x));
  expect(nan, `seed ${seed} ${label}: element ${nan} not finite`).toBe(-1);
  expect(relError(out, ref), `seed ${seed} ${label}`).toBeLessThanOrEqual(tol);
}

/**
 * The first moment m is an average of gradients of either sign, so it can cancel to far below the
 * gradients' size while its float32 rounding stays at that size: bound ‖m − ref‖ by tol relative to
 * ‖ref‖ + ‖√v_ref‖ (√v estimates the gradients' magnitude). A 1-element tensor whose m nearly cancelled
 * failed the plain relative bound by chance (seed 1346986006: 4.3e-6).
 */
function expectMomentClose(label: string, seed: number, out: Float32Array, ref: Float64Array, refV: Float64Array, tol = 1e-6): void {
  const nan = out.findIndex((x) => !Number.isFinite(x));
  expect(nan, `seed ${seed} ${label}: element ${nan} not finite`).toBe(-1);
  let err = 0;
  let scale = 0;
  let gradScale = 0;
  for (let i = 0; i < out.length; i++) {
    err += (out[i]! - ref[i]!) ** 2;
    scale += ref[i]! ** 2;
    gradScale += refV[i]!;
  }
  expect(Math.sqrt(err) / (Math.sqrt(scale) + Math.sqrt(gradScale)), `seed ${seed} ${label}`).toBeLessThanOrEqual(tol);
}

/**
 * Fraction of elements bit-identical to the f32 emulation of torch, and the largest difference in
 * units of 2^-23 (one ulp at magnitude 1: the parameters are in about [-1, 1], and where an update
 * cancels most of a parameter the ulp of the result says nothing about the arithmetic).
 */
function bitAgreement(a: Float32Array, b: Float32Array): { same: number; maxUlp1: number } {
  let same = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    if (Object.is(a[i], b[i])) same++;
    else maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
  }
  return { same: same / a.length, maxUlp1: maxDiff / 2 ** -23 };
}

describe('AdamW', () => {
  it('10 steps, odd sizes, decay on and off, lr changing every step: matches float64 torch semantics', async () => {
    // A fresh seed, and one whose 1-element first moment nearly cancelled.
    for (const seed of [undefined, 1346986006]) {
      const q = await runAdam([1037, 333, 1], [true, false, true], { seed });
      q.gpu.forEach((g, i) => {
        expectClose(`w${i} param`, q.seed, g.theta, q.cpu[i]!.theta);
        expectMomentClose(`w${i} m`, q.seed, g.m, q.cpu[i]!.m, q.cpu[i]!.v);
        expectClose(`w${i} v`, q.seed, g.v, q.cpu[i]!.v);
      });
    }
    const r = await runAdam([1037, 333, 1], [true, false, true]);
    // The parameters really moved, and decay made a difference where it applies.
    expect(relError(r.gpu[0]!.theta, r.initial[0]!)).toBeGreaterThan(1e-3);
    // Against an f32 emulation of torch's op order (true FMAs): (nearly) bit-identical. lavapipe
    // evaluates WGSL fma() unfused, so ~0.5% of elements land an ulp away.
    const agree = bitAgreement(r.gpu[0]!.theta, r.f32[0]!.theta);
    console.log(`AdamW vs f32 torch emulation: ${(agree.same * 100).toFixed(2)}% bit-identical, largest difference ${agree.maxUlp1.toFixed(2)}·2^-23`);
    expect(agree.same, `seed ${r.seed}`).toBeGreaterThan(0.9);
    expect(agree.maxUlp1, `seed ${r.seed}`).toBeLessThanOrEqual(4);
  });

  it('the vec4 kernels are the scalar ones element by element: bit-identical θ, m, v after 5 steps', async () => {
    const seed = freshSeed();
    const sizes = [1037, 4096, 3];
    const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
    // Unclipped: the sums of squares add in different orders (per-lane vec4 sums), so with clipping
    // the scale, and then every update, could differ by an ulp. The norms are compared on their own.
    const runs = [];
    for (const vec4 of [true, false]) runs.push(await runAdam(sizes, [true, false, true], { seed, steps: 5, vec4 }));
    for (let i = 0; i < sizes.length; i++) {
      for (const k of ['theta', 'm', 'v'] as const) expect(bits(runs[0]!.gpu[i]![k]), `seed ${seed} w${i} ${k}`).toEqual(bits(runs[1]!.gpu[i]![k]));
    }
    const clipped = [];
    for (const vec4 of [true, false]) clipped.push(await runAdam(sizes, [true, false, true], { seed, steps: 2, clip: true, maxGradNorm: 0.5, vec4 }));
    for (let t = 0; t < 2; t++) expect(Math.abs(clipped[0]!.norms[t]![0] - clipped[1]!.norms[t]![0]) / clipped[1]!.norms[t]![0]).toBeLessThanOrEqual(1e-6);
  });

  it('weight decay 0 leaves decaying and non-decaying tensors identical', async () => {
    const rt = await runtime();
    const next = rng(freshSeed());
    const p = randomArray(517, next);
    const g = randomArray(517, next);
    const bufs = [p, g, p, g].map((x, i) => rt.memory.upload(`t.wd0.${i}`, x));
    const opt = await Optimizer.create(rt, [
      { name: 'a', param: bufs[0]!, grad: bufs[1]!, n: 517, weightDecay: true },
      { name: 'b', param: bufs[2]!, grad: bufs[3]!, n: 517, weightDecay: false },
    ], { kind: 'adamw', weightDecay: 0 });
    for (let t = 1; t <= 3; t++) {
      opt.setStep(t, 1e-2);
      await rt.steps.run('adamw-wd0', opt.dispatches());
    }
    const a = await rt.memory.readFloat32(bufs[0]!, 0, 517);
    const b = await rt.memory.readFloat32(bufs[2]!, 0, 517);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(relError(a, p)).toBeGreaterThan(1e-3);
    for (const x of bufs) rt.memory.destroy(x);
    opt.destroy();
  });

  // Scalar kernels with 64-invocation workgroups: 65,552 workgroups; vec4 kernels (4 vec4 per
  // invocation) with 1-invocation workgroups: 262,205 (updates) and 1,048,820 (sum of squares). With
  // one invocation the final sum adds its 1,048,820 partials one by one in f32 (~1e-5 relative), so
  // that case does not clip (maxGradNorm above the norm) and bounds the norm at 1e-4: an indexing
  // error would be O(1).
  for (const [vec4, workgroupSize, maxGradNorm, normBound] of [[false, 64, 500, 1e-6], [true, 1, 1e9, 1e-4]] as const) {
    it(`2-D grid: n = 65535·64 + 1037, ${vec4 ? 'vec4' : 'scalar'} kernels with ${workgroupSize}-invocation workgroups (updates and sum of squares)`, async () => {
      const n = 65535 * 64 + 1037;
      const r = await runAdam([n], [true], { steps: 3, workgroupSize, sumElementsPerThread: 1, clip: true, maxGradNorm, vec4 });
      expectClose('param', r.seed, r.gpu[0]!.theta, r.cpu[0]!.theta);
      expectClose('m', r.seed, r.gpu[0]!.m, r.cpu[0]!.m);
      expectClose('v', r.seed, r.gpu[0]!.v, r.cpu[0]!.v);
      for (const [gpu, cpu] of r.norms) expect(Math.abs(gpu - cpu) / cpu, `seed ${r.seed}`).toBeLessThanOrEqual(normBound);
    });
  }

  it('tensors bound as several ranges (maxBindingElements), param at a 256-byte offset', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const n = 1037;
    const p = randomArray(n, next);
    const big = rt.memory.storage('t.big', 256 + n * 4 + 100);
    rt.memory.write(big, p, 256);
    const gb = rt.memory.upload('t.g', new Float32Array(n));
    const opt = await Optimizer.create(rt, [{ name: 'x', param: { buffer: big, offset: 256, size: n * 4 }, grad: gb, n, weightDecay: true }], { kind: 'adamw', weightDecay: H.lambda, maxBindingElements: 256, maxGradNorm: 3 });
    const cpu: CpuTensor = { theta: Float64Array.from(p), m: new Float64Array(n), v: new Float64Array(n), decay: true };
    for (let t = 1; t <= 4; t++) {
      const g = randomArray(n, next);
      rt.memory.write(gb, g);
      opt.setStep(t, lrAt(t));
      await rt.steps.run('adamw-ranges', [...opt.clipDispatches(), ...opt.dispatches()]);
      const norm = Math.sqrt(sumSquares([g]));
      expect(Math.abs((await opt.readGradNorm()) - norm) / norm).toBeLessThanOrEqual(1e-6);
      adamwCpu(cpu, g, clipCoef(norm, 3), t, lrAt(t), H);
    }
    const all = await rt.memory.readFloat32(big, 0, 64 + n + 25);
    expectClose('param', seed, all.subarray(64, 64 + n), cpu.theta);
    expect(all.subarray(0, 64).every((x) => x === 0), 'bytes before the range untouched').toBe(true);
    expect(all.subarray(64 + n).every((x) => x === 0), 'bytes after the range untouched').toBe(true);
    rt.memory.destroy(big);
    rt.memory.destroy(gb);
    opt.destroy();
  });

  it('with global-norm clipping every step (norm > maxNorm), torch clip_grad_norm_ then step', async () => {
    const r = await runAdam([1037, 99], [true, false], { steps: 5, clip: true, maxGradNorm: 1 });
    r.gpu.forEach((g, i) => expectClose(`w${i} param`, r.seed, g.theta, r.cpu[i]!.theta));
    for (const [gpu, cpu] of r.norms) {
      expect(cpu).toBeGreaterThan(1);
      expect(Math.abs(gpu - cpu) / cpu).toBeLessThanOrEqual(1e-6);
    }
  });

  it('rejects bad arguments with named errors', async () => {
    const rt = await runtime();
    const b = rt.memory.storage('t.bad', 64);
    const T = (n: number): TrainableTensor => ({ name: 'x', param: b, grad: b, n, weightDecay: false });
    await expect(Optimizer.create(rt, [], { kind: 'adamw' })).rejects.toThrow(/no trainable tensors/);
    await expect(Optimizer.create(rt, [T(17)], { kind: 'adamw' })).rejects.toThrow(/holds 64 bytes, needs 68/);
    await expect(Optimizer.create(rt, [T(4), T(4)], { kind: 'sgd' })).rejects.toThrow(/listed twice/);
    await expect(Optimizer.create(rt, [T(4)], { kind: 'adamw', beta2: 1 })).rejects.toThrow(/beta2/);
    await expect(Optimizer.create(rt, [T(4)], { kind: 'adamw', workgroupSize: 48 })).rejects.toThrow(/power of two/);
    const opt = await Optimizer.create(rt, [T(4)], { kind: 'sgd' });
    expect(() => opt.setStep(0, 1e-3)).toThrow(/step must be an integer ≥ 1/);
    expect(() => opt.setStep(1, Number.NaN)).toThrow(/learning rate/);
    opt.destroy();
    rt.memory.destroy(b);
  });
});

describe('SGD', () => {
  it('10 steps, decay on one tensor, clipped gradients: θ −= lr·(g·scale + λθ)', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const sizes = [1037, 333];
    const decays = [true, false];
    const lambda = 0.05;
    const s = setup(rt, sizes, decays, next);
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'sgd', weightDecay: lambda, maxGradNorm: 10 });
    expect(opt.stateBytes).toBe(0);
    const cpu = s.params.map((p) => Float64Array.from(p));
    for (let t = 1; t <= 10; t++) {
      newGrads(rt, s, next);
      const lr = 0.1 * lrAt(t) * 1e3;
      opt.setStep(t, lr);
      await rt.steps.run('sgd-test', [...opt.clipDispatches(), ...opt.dispatches()]);
      const scale = clipCoef(Math.sqrt(sumSquares(s.grads)), 10);
      expect(scale).toBeLessThan(1);
      cpu.forEach((th, i) => {
        for (let k = 0; k < th.length; k++) th[k] = th[k]! - lr * (s.grads[i]![k]! * scale + (decays[i] ? lambda * th[k]! : 0));
      });
    }
    for (let i = 0; i < sizes.length; i++) expectClose(`w${i}`, seed, await rt.memory.readFloat32(s.tensors[i]!.param as GPUBuffer, 0, sizes[i]!), cpu[i]!);
    teardown(rt, s, opt);
  });

  it('without clip dispatches uses gradScale = 1/accumulation', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const s = setup(rt, [301], [false], next);
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'sgd' });
    opt.setStep(1, 0.5, { accumulation: 4 });
    await rt.steps.run('sgd-accum', opt.dispatches());
    const ref = Float64Array.from(s.params[0]!, (p, k) => p - 0.5 * (s.grads[0]![k]! / 4));
    expectClose('param', seed, await rt.memory.readFloat32(s.buffers[0]!, 0, 301), ref);
    teardown(rt, s, opt);
  });
});

describe('clip scale', () => {
  it('norm and scale vs the CPU formula: clipping, no clipping, maxNorm 0, accumulation', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const s = setup(rt, [1037, 4097, 1, 70001], [true, false, false, true], next);
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'sgd', maxGradNorm: 1 });
    const norm = Math.sqrt(sumSquares(s.grads));
    const cases: [number, number][] = [[1, 1], [norm * 2, 1], [0, 1], [1, 4], [norm, 4], [0, 3]];
    for (const [maxNorm, accum] of cases) {
      opt.setStep(1, 0, { maxGradNorm: maxNorm, accumulation: accum });
      await rt.steps.run('clip-test', opt.clipDispatches());
      const c = await opt.readClip();
      const n = norm / accum;
      const coef = clipCoef(n, maxNorm);
      const label = `seed ${seed} maxNorm ${maxNorm} accum ${accum}`;
      expect(Math.abs(c.sumsq - norm * norm) / (norm * norm), label).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(c.norm - n) / n, label).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(c.clipCoef - coef) / coef, label).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(c.gradScale - coef / accum) / (coef / accum), label).toBeLessThanOrEqual(1e-6);
      if (maxNorm === 0 || maxNorm >= 2 * n) expect(c.clipCoef, label).toBe(1);
    }
    // Gradients were only read: the parameters did not move (lr 0 and no update dispatches).
    expect(Array.from(await rt.memory.readFloat32(s.buffers[0]!, 0, 1037))).toEqual(Array.from(s.params[0]!));
    teardown(rt, s, opt);
  });

  it('is deterministic: the same gradients give bit-identical norms', async () => {
    const rt = await runtime();
    const s = setup(rt, [123457, 33], [true, true], rng(freshSeed()));
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'adamw', maxGradNorm: 1 });
    opt.setStep(1, 0);
    const seen = new Set<number>();
    for (let k = 0; k < 3; k++) {
      await rt.steps.run('clip-det', opt.clipDispatches());
      seen.add((await opt.readClip()).sumsq);
    }
    expect(seen.size).toBe(1);
    teardown(rt, s, opt);
  });
});

describe('zero', () => {
  it('zeroes exactly a range (odd offset and length) and every trainable gradient', async () => {
    const rt = await runtime();
    const n = 70001;
    const buf = rt.memory.upload('t.zero', poison(n + 10));
    // Unaligned (scalar kernel only), aligned with a tail (vec4 + scalar), aligned without one (vec4 only).
    for (const [off, len] of [[3, n], [4, n], [8, n - 1]] as const) {
      rt.memory.write(buf, poison(n + 10));
      await rt.steps.run('zero-test', await zeroDispatches(rt, buf, len, { off }));
      const out = await rt.memory.readFloat32(buf, 0, n + 10);
      expect(out.subarray(off, off + len).every((x) => x === 0), `off ${off} n ${len}`).toBe(true);
      expect([...out.subarray(0, off), ...out.subarray(off + len)].every((x) => Number.isNaN(x)), `off ${off} n ${len}`).toBe(true);
    }
    rt.memory.destroy(buf);

    const s = setup(rt, [1037, 65], [true, false], rng(freshSeed()));
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'adamw', maxBindingElements: 512 });
    await rt.steps.run('zero-grads', opt.zeroGradDispatches());
    for (let i = 0; i < 2; i++) {
      expect((await rt.memory.readFloat32(s.tensors[i]!.grad as GPUBuffer, 0, s.tensors[i]!.n)).every((x) => x === 0)).toBe(true);
      expect(Array.from(await rt.memory.readFloat32(s.tensors[i]!.param as GPUBuffer, 0, s.tensors[i]!.n))).toEqual(Array.from(s.params[i]!));
    }
    teardown(rt, s, opt);
  });
});

describe('optimizer state', () => {
  it('save after 3 steps, restore into a fresh optimizer (through safetensors): steps 4..6 bit-identical', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const next = rng(seed);
    const sizes = [1037, 5];
    const s = setup(rt, sizes, [true, false], next);
    const opt = await Optimizer.create(rt, s.tensors, { kind: 'adamw', weightDecay: 0.1, maxGradNorm: 1 });
    expect(opt.stateBytes).toBe(8 * (1037 + 5));
    expect(rt.memory.breakdown().optim).toBeGreaterThanOrEqual(8 * (1037 + 5));
    const grads: Float32Array[][] = [];
    for (let t = 1; t <= 6; t++) grads.push(sizes.map((n) => randomArray(n, next)));
    const step = async (o: Optimizer, tensors: TrainableTensor[], t: number) => {
      tensors.forEach((x, i) => rt.memory.write(x.grad as GPUBuffer, grads[t - 1]![i]!));
      o.setStep(t, lrAt(t));
      await rt.steps.run('state-test', [...o.clipDispatches(), ...o.dispatches()]);
    };
    for (let t = 1; t <= 3; t++) await step(opt, s.tensors, t);
    const saved = await opt.stateTensors();
    expect(saved.map((x) => x.name).sort()).toEqual(['optim.m.w0', 'optim.m.w1', 'optim.step', 'optim.v.w0', 'optim.v.w1']);
    const file = parseSafetensors(concat(serializeSafetensors(saved, { kind: 'adamw' })), 'optim.safetensors');
    const params3: Float32Array[] = [];
    for (const x of s.tensors) params3.push(await rt.memory.readFloat32(x.param as GPUBuffer, 0, x.n)); // one staging buffer: read in turn

    // A second optimizer over copies of the step-3 parameters, state loaded from the file.
    const s2 = setup(rt, sizes, [true, false], next);
    s2.tensors.forEach((x, i) => rt.memory.write(x.param as GPUBuffer, params3[i]!));
    const opt2 = await Optimizer.create(rt, s2.tensors, { kind: 'adamw', weightDecay: 0.1, maxGradNorm: 1 });
    opt2.loadStateTensors([...file.tensors.keys()].map((name) => ({ name, data: name === 'optim.step' ? file.getInt32(name) : file.getFloat32(name) })));
    expect(opt2.step).toBe(3);
    for (let t = opt2.step + 1; t <= 6; t++) {
      await step(opt, s.tensors, t);
      await step(opt2, s2.tensors, t);
    }
    for (let i = 0; i < sizes.length; i++) {
      const a = await rt.memory.readFloat32(s.tensors[i]!.param as GPUBuffer, 0, sizes[i]!);
      const b = await rt.memory.readFloat32(s2.tensors[i]!.param as GPUBuffer, 0, sizes[i]!);
      expect(Array.from(b), `seed ${seed} w${i}`).toEqual(Array.from(a));
    }
    const a6 = await opt.stateTensors();
    const b6 = await opt2.stateTensors();
    for (const x of a6) expect(Array.from(b6.find((y) => y.name === x.name)!.data)).toEqual(Array.from(x.data));

    expect(() => opt2.loadStateTensors(saved.filter((x) => x.name !== 'optim.v.w1'))).toThrow(/missing tensor 'optim.v.w1'/);
    expect(() => opt2.loadStateTensors(saved.map((x) => (x.name === 'optim.m.w0' ? { ...x, data: new Float32Array(3) } : x)))).toThrow(/has 3 values, expected 1037/);
    teardown(rt, s, opt);
    teardown(rt, s2, opt2);
  });
});

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
