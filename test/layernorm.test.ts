import { describe, expect, it } from 'vitest';
import {
  layernormBackward, layernormForward, layernormParamChunks, layernormScratchElems,
} from '../src/ops/layernorm.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import {
  finiteDifference, layernormBackward as refBackward, layernormForward as refForward, mulberry32, randn,
} from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, poison, runtime } from './util/gpu.ts';

/** Round float64 data to float32 (what the GPU sees); the CPU reference then uses the same values. */

interface Inputs { x: Float32Array; gamma: Float32Array; beta: Float32Array; dout: Float32Array }

function inputs(seed: number, rows: number, C: number): Inputs {
  const r = mulberry32(seed);
  const x = randn(rows * C, r, 2);
  for (let i = 0; i < x.length; i++) x[i] += 3 * Math.sin(i); // non-zero row means
  return { x: f32(x), gamma: f32(randn(C, r)), beta: f32(randn(C, r)), dout: f32(randn(rows * C, r)) };
}

interface GpuResult { out: Float32Array; mean: Float32Array; rstd: Float32Array; dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array }

/** Forward (saving stats) then backward on the GPU; initial dx/dgamma/dbeta given (accumulate) or NaN. */
async function runGpu(rt: Runtime, rows: number, C: number, inp: Inputs, opts: { accumulate?: boolean; accumulateParams?: boolean; wg?: number | 'lane'; init?: { dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array } } = {}): Promise<GpuResult> {
  const mem = rt.memory;
  const x = mem.upload('t.x', inp.x);
  const gamma = mem.upload('t.gamma', inp.gamma);
  const beta = mem.upload('t.beta', inp.beta);
  const dout = mem.upload('t.dout', inp.dout);
  const out = mem.upload('t.out', poison(rows * C));
  const mean = mem.upload('t.mean', poison(rows));
  const rstd = mem.upload('t.rstd', poison(rows));
  const dx = mem.upload('t.dx', opts.init?.dx ?? poison(rows * C));
  const dgamma = mem.upload('t.dgamma', opts.init?.dgamma ?? poison(C));
  const dbeta = mem.upload('t.dbeta', opts.init?.dbeta ?? poison(C));
  const scratch = mem.upload('t.scratch', poison(layernormScratchElems(rows, C)));
  const fwd = await layernormForward(rt, { rows, C, inp: x, gamma, beta, out, mean, rstd, wg: opts.wg });
  const bwd = await layernormBackward(rt, { rows, C, dout, inp: x, gamma, mean, rstd, dx, dgamma, dbeta, scratch, accumulate: opts.accumulate, accumulateParams: opts.accumulateParams, wg: opts.wg });
  await rt.steps.run('layernorm-test', [fwd, ...bwd]);
  const res: GpuResult = {
    out: await mem.readFloat32(out), mean: await mem.readFloat32(mean), rstd: await mem.readFloat32(rstd),
    dx: await mem.readFloat32(dx), dgamma: await mem.readFloat32(dgamma), dbeta: await mem.readFloat32(dbeta),
  };
  for (const b of [x, gamma, beta, dout, out, mean, rstd, dx, dgamma, dbeta, scratch]) mem.destroy(b);
  return res;
}



const SHAPES: [number, number][] = [[1, 1], [37, 29], [37, 96], [5, 768], [300, 64], [129, 130]];

describe('layernorm', () => {
  for (const [rows, C] of SHAPES) {
    it(`forward and backward ${rows}x${C} vs float64 reference`, async () => {
      const rt = await runtime();
      const seed = freshSeed();
      const inp = inputs(seed, rows, C);
      const g = await runGpu(rt, rows, C, inp);
      const ref = refForward(f64(inp.x), f64(inp.gamma), f64(inp.beta), rows, C);
      for (const [k, v] of Object.entries(g)) expectWritten(seed, k, v as Float32Array);
      expectRel(seed, 'out', g.out, ref.out, 1e-5);
      expectRel(seed, 'mean', g.mean, ref.mean, 1e-5);
      expectRel(seed, 'rstd', g.rstd, ref.rstd, 1e-5);
      const rb = refBackward(f64(inp.dout), f64(inp.x), ref.mean, ref.rstd, f64(inp.gamma), rows, C);
      if (C > 1) expectRel(seed, 'dx', g.dx, rb.dx, 1e-4);
      else expect(Math.max(...g.dx.map(Math.abs)), `seed ${seed}: dx for C=1`).toBeLessThan(1e-6);
      expectRel(seed, 'dgamma', g.dgamma, rb.dgamma, 1e-4);
      expectRel(seed, 'dbeta', g.dbeta, rb.dbeta, 1e-4);
    });
  }

  // 'lane': one row per invocation (the software adapters' default), scalar at C = 29, vec4 at 768 and 36.
  for (const wg of [1, 8, 64, 256, 'lane'] as const) {
    it(`row kernels with ${wg === 'lane' ? 'one row per invocation' : `${wg} invocations per row`} (37x29, 5x768${wg === 'lane' ? ', 19x36' : ''})`, async () => {
      const rt = await runtime();
      for (const [rows, C] of wg === 'lane' ? [[37, 29], [5, 768], [19, 36]] as const : [[37, 29], [5, 768]] as const) {
        const seed = freshSeed();
        const inp = inputs(seed, rows, C);
        const g = await runGpu(rt, rows, C, inp, { wg });
        const ref = refForward(f64(inp.x), f64(inp.gamma), f64(inp.beta), rows, C);
        const rb = refBackward(f64(inp.dout), f64(inp.x), ref.mean, ref.rstd, f64(inp.gamma), rows, C);
        expectWritten(seed, 'out', g.out);
        expectWritten(seed, 'dx', g.dx);
        expectRel(seed, `out wg=${wg}`, g.out, ref.out, 1e-5);
        expectRel(seed, `rstd wg=${wg}`, g.rstd, ref.rstd, 1e-5);
        expectRel(seed, `dx wg=${wg}`, g.dx, rb.dx, 1e-4);
      }
    });
  }

  it('lane kernels past 65535 workgroups (2-D grid): 600001x4', async () => {
    const rt = await runtime();
    const [rows, C] = [600_001, 4];
    const seed = freshSeed();
    const inp = inputs(seed, rows, C);
    const g = await runGpu(rt, rows, C, inp, { wg: 'lane' });
    const ref = refForward(f64(inp.x), f64(inp.gamma), f64(inp.beta), rows, C);
    const rb = refBackward(f64(inp.dout), f64(inp.x), ref.mean, ref.rstd, f64(inp.gamma), rows, C);
    expectWritten(seed, 'out', g.out);
    expectWritten(seed, 'dx', g.dx);
    expectRel(seed, 'out lane 2-D', g.out, ref.out, 1e-5);
    expectRel(seed, 'dx lane 2-D', g.dx, rb.dx, 1e-4);
  });

  it('forward without saved statistics matches forward', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 37;
    const C = 96;
    const inp = inputs(seed, rows, C);
    const mem = rt.memory;
    const x = mem.upload('t.x', inp.x);
    const gamma = mem.upload('t.gamma', inp.gamma);
    const beta = mem.upload('t.beta', inp.beta);
    const out = mem.upload('t.out', poison(rows * C));
    const out2 = mem.upload('t.out2', poison(rows * C));
    const mean = mem.upload('t.mean', poison(rows));
    const rstd = mem.upload('t.rstd', poison(rows));
    const d1 = await layernormForward(rt, { rows, C, inp: x, gamma, beta, out, mean, rstd, eps: 1e-5 });
    const d2 = await layernormForward(rt, { rows, C, inp: x, gamma, beta, out: out2 });
    await rt.steps.run('ln-nostats', [d1, d2]);
    const a = await mem.readFloat32(out);
    const b = await mem.readFloat32(out2);
    for (const buf of [x, gamma, beta, out, out2, mean, rstd]) mem.destroy(buf);
    expectWritten(seed, 'out2', b);
    expect(bits(b), `seed ${seed}`).toEqual(bits(a));
  });

  it('eps comes from the uniform', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 3;
    const C = 33;
    const inp = inputs(seed, rows, C);
    for (let i = 0; i < inp.x.length; i++) inp.x[i] = inp.x[i]! * 1e-2; // variance comparable to eps
    const mem = rt.memory;
    const x = mem.upload('t.x', inp.x);
    const gamma = mem.upload('t.gamma', inp.gamma);
    const beta = mem.upload('t.beta', inp.beta);
    const out = mem.upload('t.out', poison(rows * C));
    const d = await layernormForward(rt, { rows, C, inp: x, gamma, beta, out, eps: 1e-3 });
    await rt.steps.run('ln-eps', [d]);
    const o = await mem.readFloat32(out);
    for (const buf of [x, gamma, beta, out]) mem.destroy(buf);
    const ref = refForward(f64(inp.x), f64(inp.gamma), f64(inp.beta), rows, C, 1e-3);
    expectRel(seed, 'out (eps 1e-3)', o, ref.out, 1e-5);
  });

  it('accumulate: dx += …, dgamma/dbeta += …', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 45;
    const C = 29;
    const inp = inputs(seed, rows, C);
    const r = mulberry32(seed ^ 0x9e3779b9);
    const init = { dx: f32(randn(rows * C, r)), dgamma: f32(randn(C, r)), dbeta: f32(randn(C, r)) };
    const g = await runGpu(rt, rows, C, inp, { accumulate: true, accumulateParams: true, init });
    const ref = refForward(f64(inp.x), f64(inp.gamma), f64(inp.beta), rows, C);
    const rb = refBackward(f64(inp.dout), f64(inp.x), ref.mean, ref.rstd, f64(inp.gamma), rows, C);
    const add = (a: Float64Array, b: Float32Array) => a.map((v, i) => v + b[i]!);
    expectRel(seed, 'dx accumulated', g.dx, add(rb.dx, init.dx), 1e-4);
    expectRel(seed, 'dgamma accumulated', g.dgamma, add(rb.dgamma, init.dgamma), 1e-4);
    expectRel(seed, 'dbeta accumulated', g.dbeta, add(rb.dbeta, init.dbeta), 1e-4);
    // Only dx accumulating, params overwritten.
    const g2 = await runGpu(rt, rows, C, inp, { accumulate: true, init: { dx: init.dx, dgamma: poison(C), dbeta: poison(C) } });
    expectRel(seed, 'dx accumulated (params =)', g2.dx, add(rb.dx, init.dx), 1e-4);
    expectRel(seed, 'dgamma (=)', g2.dgamma, rb.dgamma, 1e-4);
  });

  it('backward is bit-identical across runs', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 300;
    const C = 96;
    expect(layernormParamChunks(rows, C).nChunks).toBeGreaterThan(1);
    const inp = inputs(seed, rows, C);
    const a = await runGpu(rt, rows, C, inp);
    const b = await runGpu(rt, rows, C, inp);
    expect(bits(b.dx), `seed ${seed}: dx`).toEqual(bits(a.dx));
    expect(bits(b.dgamma), `seed ${seed}: dgamma`).toEqual(bits(a.dgamma));
    expect(bits(b.dbeta), `seed ${seed}: dbeta`).toEqual(bits(a.dbeta));
  });

  it('backward vs central finite differences of the float64 forward', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 4;
    const C = 7;
    const inp = inputs(seed, rows, C);
    const g = await runGpu(rt, rows, C, inp);
    const x = f64(inp.x);
    const gamma = f64(inp.gamma);
    const beta = f64(inp.beta);
    const w = f64(inp.dout);
    const loss = () => {
      const o = refForward(x, gamma, beta, rows, C).out;
      let s = 0;
      for (let i = 0; i < o.length; i++) s += w[i] * o[i];
      return s;
    };
    const r = mulberry32(seed);
    const gpu: number[] = [];
    const fd: number[] = [];
    const sample = (param: Float64Array, grad: Float32Array, count: number) => {
      for (let k = 0; k < count; k++) {
        const i = Math.floor(r() * param.length);
        fd.push(finiteDifference(() => loss(), param, i));
        gpu.push(grad[i]!);
      }
    };
    sample(x, g.dx, 12);
    sample(gamma, g.dgamma, 4);
    sample(beta, g.dbeta, 4);
    expectRel(seed, 'finite differences (dx, dgamma, dbeta)', gpu, fd, 1e-3);
  });

  it('rejects a scratch buffer that is too small', async () => {
    const rt = await runtime();
    const mem = rt.memory;
    const s = mem.storage('t.small', 16);
    const x = rt.dummy;
    await expect(layernormBackward(rt, { rows: 100, C: 64, dout: x, inp: x, gamma: x, mean: x, rstd: x, dx: x, dgamma: x, dbeta: x, scratch: s })).rejects.toThrow(/scratch/);
    mem.destroy(s);
  });
});
