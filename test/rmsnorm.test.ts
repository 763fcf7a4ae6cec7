// RMSNorm (kernels/rmsnorm.wgsl) against a float64 reference of Hugging Face's LlamaRMSNorm and
// Gemma2RMSNorm, defined here: out = x·r·g, r = 1/sqrt(mean(x²) + eps), g = w or 1 + w.
// Backward (derived by hand, checked below against central differences of the float64 forward):
//   dx = r·(g⊙dy − n·mean(g⊙dy⊙n)), n = x·r;   dw = Σ_rows dy⊙n.
// Measured ‖gpu−ref‖/‖ref‖ on lavapipe (bounds in brackets): out and rstd ≈ 6e-8, up to 8e-7 at
// C = 2304 with one invocation per row [1e-5]; dx ≈ 1e-7 [1e-5]; dweight ≈ 1e-7, up to 5e-7 over
// 70001 rows [1e-5]; GPU dx, dweight vs central differences ≈ 1e-7 [1e-5]; the analytic float64
// gradient vs central differences ≈ 2e-10 [1e-8].
import { describe, expect, it } from 'vitest';
import {
  rmsnormBackward, rmsnormBackwardParams, rmsnormForward, rmsnormParamChunks, rmsnormScratchElems,
} from '../src/ops/rmsnorm.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { finiteDifference, maxAbsDiff, mulberry32, randn } from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, poison, runtime } from './util/gpu.ts';

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

function refForward(x: Float64Array, w: Float64Array, rows: number, C: number, plusOne: boolean, eps = 1e-6): { out: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(rows * C);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[r * C + i]! * x[r * C + i]!;
    const rs = 1 / Math.sqrt(ss / C + eps);
    rstd[r] = rs;
    for (let i = 0; i < C; i++) out[r * C + i] = x[r * C + i]! * rs * (plusOne ? 1 + w[i]! : w[i]!);
  }
  return { out, rstd };
}

function refBackward(dy: Float64Array, x: Float64Array, rstd: Float64Array, w: Float64Array, rows: number, C: number, plusOne: boolean): { dx: Float64Array; dweight: Float64Array } {
  const dx = new Float64Array(rows * C);
  const dweight = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const rs = rstd[r]!;
    let m = 0;
    for (let i = 0; i < C; i++) {
      const g = plusOne ? 1 + w[i]! : w[i]!;
      m += g * dy[r * C + i]! * x[r * C + i]! * rs;
    }
    m /= C;
    for (let i = 0; i < C; i++) {
      const g = plusOne ? 1 + w[i]! : w[i]!;
      const n = x[r * C + i]! * rs;
      dx[r * C + i] = rs * (g * dy[r * C + i]! - n * m);
      dweight[i] += dy[r * C + i]! * n;
    }
  }
  return { dx, dweight };
}

// ---------------------------------------------------------------------------------------------
// GPU runs
// ---------------------------------------------------------------------------------------------

interface Inputs { x: Float32Array; weight: Float32Array; dout: Float32Array }

/** x with non-zero row means (RMSNorm does not centre); weight near 1 (Llama) or near 0 (Gemma). */
function inputs(seed: number, rows: number, C: number, plusOne: boolean): Inputs {
  const r = mulberry32(seed);
  const x = randn(rows * C, r, 2);
  for (let i = 0; i < x.length; i++) x[i] += 3 * Math.sin(i);
  const weight = randn(C, r, 0.5);
  if (!plusOne) for (let i = 0; i < C; i++) weight[i] += 1;
  return { x: f32(x), weight: f32(weight), dout: f32(randn(rows * C, r)) };
}

interface GpuResult { out: Float32Array; rstd: Float32Array; dx: Float32Array; dweight: Float32Array }

interface RunOpts {
  plusOne?: boolean;
  accumulate?: boolean;
  accumulateParams?: boolean;
  wg?: number | 'lane';
  eps?: number;
  init?: { dx: Float32Array; dweight: Float32Array };
}

/** Forward (saving rstd) then the whole backward; initial dx/dweight given (accumulate) or NaN. */
async function runGpu(rt: Runtime, rows: number, C: number, inp: Inputs, opts: RunOpts = {}): Promise<GpuResult> {
  const mem = rt.memory;
  const x = mem.upload('t.x', inp.x);
  const weight = mem.upload('t.weight', inp.weight);
  const dout = mem.upload('t.dout', inp.dout);
  const out = mem.upload('t.out', poison(rows * C));
  const rstd = mem.upload('t.rstd', poison(rows));
  const dx = mem.upload('t.dx', opts.init?.dx ?? poison(rows * C));
  const dweight = mem.upload('t.dweight', opts.init?.dweight ?? poison(C));
  const scratch = mem.upload('t.scratch', poison(rmsnormScratchElems(rows, C)));
  const { plusOne, wg } = opts;
  const fwd = await rmsnormForward(rt, { rows, C, inp: x, weight, out, rstd, plusOne, wg, eps: opts.eps });
  const bwd = await rmsnormBackward(rt, {
    rows, C, dout, inp: x, weight, rstd, dx, dweight, scratch, plusOne, wg,
    accumulate: opts.accumulate, accumulateParams: opts.accumulateParams,
  });
  expect(bwd.length).toBe(3);
  await rt.steps.run('rmsnorm-test', [fwd, ...bwd]);
  const res: GpuResult = {
    out: await mem.readFloat32(out), rstd: await mem.readFloat32(rstd),
    dx: await mem.readFloat32(dx), dweight: await mem.readFloat32(dweight),
  };
  for (const b of [x, weight, dout, out, rstd, dx, dweight, scratch]) mem.destroy(b);
  return res;
}

/** Runs the GPU forward+backward and checks everything against the float64 reference. */
async function checkAgainstReference(rt: Runtime, rows: number, C: number, plusOne: boolean, wg?: number | 'lane'): Promise<void> {
  const seed = freshSeed();
  const inp = inputs(seed, rows, C, plusOne);
  const g = await runGpu(rt, rows, C, inp, { plusOne, wg });
  const what = `${rows}x${C}${plusOne ? ' (1 + w)' : ''}${wg ? ` wg=${wg}` : ''}`;
  for (const [k, v] of Object.entries(g)) expectWritten(seed, `${k} ${what}`, v as Float32Array);
  const ref = refForward(f64(inp.x), f64(inp.weight), rows, C, plusOne);
  expectRel(seed, `out ${what}`, g.out, ref.out, 1e-5);
  expectRel(seed, `rstd ${what}`, g.rstd, ref.rstd, 1e-5);
  const rb = refBackward(f64(inp.dout), f64(inp.x), ref.rstd, f64(inp.weight), rows, C, plusOne);
  if (C > 1) expectRel(seed, `dx ${what}`, g.dx, rb.dx, 1e-5);
  else {
    // C = 1: dx = r·g·dy·(1 − n²) with n² = x²/(x² + eps) ≈ 1: pure cancellation, so bound the
    // error by the size of the terms that cancel (f32 rounding of n² is a few 1e-7 of them).
    const scale = Math.max(...g.out.map((_, r) => Math.abs(ref.rstd[r]! * (plusOne ? 1 + inp.weight[0]! : inp.weight[0]!) * inp.dout[r]!)));
    expect(maxAbsDiff(g.dx, rb.dx), `seed ${seed}: dx ${what}`).toBeLessThanOrEqual(1e-6 * scale);
  }
  expectRel(seed, `dweight ${what}`, g.dweight, rb.dweight, 1e-5);
}

const SHAPES: [number, number][] = [[1, 1], [1, 5], [37, 5], [37, 96], [5, 577], [3, 2304], [300, 64], [129, 130]];

describe('rmsnorm', () => {
  for (const [rows, C] of SHAPES) {
    it(`forward and backward ${rows}x${C} vs float64 reference (w and 1 + w)`, async () => {
      const rt = await runtime();
      await checkAgainstReference(rt, rows, C, false);
      await checkAgainstReference(rt, rows, C, true);
    });
  }

  for (const wg of [1, 8, 64, 256]) {
    it(`row kernels with ${wg} invocations per row (37x5, 3x2304)`, async () => {
      const rt = await runtime();
      await checkAgainstReference(rt, 37, 5, false, wg);
      await checkAgainstReference(rt, 3, 2304, true, wg);
    });
  }

  // One row per invocation (software adapters' default): scalar at C = 5, vec4 at 2304 and 36.
  it('lane kernels, one row per invocation (37x5, 3x2304, 19x36)', async () => {
    const rt = await runtime();
    await checkAgainstReference(rt, 37, 5, false, 'lane');
    await checkAgainstReference(rt, 3, 2304, true, 'lane');
    await checkAgainstReference(rt, 19, 36, false, 'lane');
  });

  it('more than 65535 rows (2-D grid), rows not a multiple of the dweight row chunk', async () => {
    const rt = await runtime();
    const rows = 70001;
    const C = 5;
    const plan = rmsnormParamChunks(rows, C);
    expect(rows % plan.rowChunk).not.toBe(0);
    await checkAgainstReference(rt, rows, C, false, 8);
    // The lane kernels take 8 rows per workgroup: past 65535·8 rows their grid is 2-D too.
    await checkAgainstReference(rt, 600_001, 4, false, 'lane');
  });

  it('the (1 + w) variant differs from w: Gemma with w = 0 is plain normalization', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 7;
    const C = 33;
    const inp = inputs(seed, rows, C, true);
    inp.weight.fill(0);
    const g = await runGpu(rt, rows, C, inp, { plusOne: true });
    const ref = refForward(f64(inp.x), new Float64Array(C).fill(1), rows, C, false);
    expectRel(seed, 'out (1 + 0)', g.out, ref.out, 1e-5);
    const rb = refBackward(f64(inp.dout), f64(inp.x), ref.rstd, new Float64Array(C).fill(1), rows, C, false);
    expectRel(seed, 'dx (1 + 0)', g.dx, rb.dx, 1e-5);
    expectRel(seed, 'dweight (1 + 0)', g.dweight, rb.dweight, 1e-5);
  });

  it('forward without saved rstd matches forward bit for bit', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 37;
    const C = 96;
    for (const plusOne of [false, true]) {
      const inp = inputs(seed, rows, C, plusOne);
      const mem = rt.memory;
      const x = mem.upload('t.x', inp.x);
      const weight = mem.upload('t.weight', inp.weight);
      const out = mem.upload('t.out', poison(rows * C));
      const out2 = mem.upload('t.out2', poison(rows * C));
      const rstd = mem.upload('t.rstd', poison(rows));
      const d1 = await rmsnormForward(rt, { rows, C, inp: x, weight, out, rstd, plusOne });
      const d2 = await rmsnormForward(rt, { rows, C, inp: x, weight, out: out2, plusOne });
      expect(d2.bound.kernel.entry).toMatch(/^forward(_lane4?)?_nostats$/);
      await rt.steps.run('rmsnorm-nostats', [d1, d2]);
      const a = await mem.readFloat32(out);
      const b = await mem.readFloat32(out2);
      for (const buf of [x, weight, out, out2, rstd]) mem.destroy(buf);
      expectWritten(seed, 'out2', b);
      expect(bits(b), `seed ${seed}`).toEqual(bits(a));
    }
  });

  it('eps comes from the uniform', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 3;
    const C = 33;
    const inp = inputs(seed, rows, C, false);
    for (let i = 0; i < inp.x.length; i++) inp.x[i] = inp.x[i]! * 1e-2; // mean(x²) comparable to eps
    const g = await runGpu(rt, rows, C, inp, { eps: 1e-3 });
    const ref = refForward(f64(inp.x), f64(inp.weight), rows, C, false, 1e-3);
    expectRel(seed, 'out (eps 1e-3)', g.out, ref.out, 1e-5);
    expectRel(seed, 'rstd (eps 1e-3)', g.rstd, ref.rstd, 1e-5);
    const rb = refBackward(f64(inp.dout), f64(inp.x), ref.rstd, f64(inp.weight), rows, C, false);
    expectRel(seed, 'dx (eps 1e-3)', g.dx, rb.dx, 1e-5);
    // The default is HF's 1e-6, not the eps above.
    const g2 = await runGpu(rt, rows, C, inp);
    expectRel(seed, 'rstd (default eps 1e-6)', g2.rstd, refForward(f64(inp.x), f64(inp.weight), rows, C, false, 1e-6).rstd, 1e-5);
  });

  it('accumulate: dx += …, dweight += …', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 45;
    const C = 29;
    const r = mulberry32(seed ^ 0x9e3779b9);
    const init = { dx: f32(randn(rows * C, r)), dweight: f32(randn(C, r)) };
    const add = (a: Float64Array, b: Float32Array) => a.map((v, i) => v + b[i]!);
    for (const plusOne of [false, true]) {
      const inp = inputs(seed, rows, C, plusOne);
      const ref = refForward(f64(inp.x), f64(inp.weight), rows, C, plusOne);
      const rb = refBackward(f64(inp.dout), f64(inp.x), ref.rstd, f64(inp.weight), rows, C, plusOne);
      const g = await runGpu(rt, rows, C, inp, { plusOne, accumulate: true, accumulateParams: true, init });
      expectRel(seed, 'dx accumulated', g.dx, add(rb.dx, init.dx), 1e-5);
      expectRel(seed, 'dweight accumulated', g.dweight, add(rb.dweight, init.dweight), 1e-5);
      // Only dx accumulating, dweight overwritten.
      const g2 = await runGpu(rt, rows, C, inp, { plusOne, accumulate: true, init: { dx: init.dx, dweight: poison(C) } });
      expectRel(seed, 'dx accumulated (dweight =)', g2.dx, add(rb.dx, init.dx), 1e-5);
      expectRel(seed, 'dweight (=)', g2.dweight, rb.dweight, 1e-5);
      // Only dweight accumulating, dx overwritten.
      const g3 = await runGpu(rt, rows, C, inp, { plusOne, accumulateParams: true, init: { dx: poison(rows * C), dweight: init.dweight } });
      expectRel(seed, 'dx (=)', g3.dx, rb.dx, 1e-5);
      expectRel(seed, 'dweight accumulated (dx =)', g3.dweight, add(rb.dweight, init.dweight), 1e-5);
    }
  });

  it('params-only backward: the same dweight bit for bit, with and without accumulate', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 300;
    const C = 96;
    expect(rmsnormParamChunks(rows, C).nChunks).toBeGreaterThan(1);
    const inp = inputs(seed, rows, C, true);
    const full = await runGpu(rt, rows, C, inp, { plusOne: true });
    const mem = rt.memory;
    const x = mem.upload('t.x', inp.x);
    const weight = mem.upload('t.weight', inp.weight);
    const dout = mem.upload('t.dout', inp.dout);
    const out = mem.upload('t.out', poison(rows * C));
    const rstd = mem.upload('t.rstd', poison(rows));
    const dweight = mem.upload('t.dweight', poison(C));
    const dweight2 = mem.upload('t.dweight2', new Float32Array(C).fill(0.25));
    const scratch = mem.upload('t.scratch', poison(rmsnormScratchElems(rows, C)));
    const fwd = await rmsnormForward(rt, { rows, C, inp: x, weight, out, rstd, plusOne: true });
    const p1 = await rmsnormBackwardParams(rt, { rows, C, dout, inp: x, rstd, dweight, scratch });
    const p2 = await rmsnormBackwardParams(rt, { rows, C, dout, inp: x, rstd, dweight: dweight2, scratch, accumulate: true });
    expect(p1.length).toBe(2);
    await rt.steps.run('rmsnorm-params', [fwd, ...p1, ...p2]);
    const dw = await mem.readFloat32(dweight);
    const dw2 = await mem.readFloat32(dweight2);
    for (const b of [x, weight, dout, out, rstd, dweight, dweight2, scratch]) mem.destroy(b);
    expect(bits(dw), `seed ${seed}: params-only dweight`).toEqual(bits(full.dweight));
    expectRel(seed, 'params-only dweight accumulated', dw2, f64(full.dweight).map((v) => v + 0.25), 1e-6);
  });

  it('backward is bit-identical across runs', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const rows = 300;
    const C = 96;
    const inp = inputs(seed, rows, C, false);
    const a = await runGpu(rt, rows, C, inp);
    const b = await runGpu(rt, rows, C, inp);
    expect(bits(b.out), `seed ${seed}: out`).toEqual(bits(a.out));
    expect(bits(b.dx), `seed ${seed}: dx`).toEqual(bits(a.dx));
    expect(bits(b.dweight), `seed ${seed}: dweight`).toEqual(bits(a.dweight));
  });

  for (const plusOne of [false, true]) {
    it(`backward${plusOne ? ' (1 + w)' : ''} vs central finite differences of the float64 forward`, async () => {
      const rt = await runtime();
      const seed = freshSeed();
      const rows = 4;
      const C = 7;
      const inp = inputs(seed, rows, C, plusOne);
      const g = await runGpu(rt, rows, C, inp, { plusOne });
      const x = f64(inp.x);
      const w = f64(inp.weight);
      const dy = f64(inp.dout);
      const loss = () => {
        const o = refForward(x, w, rows, C, plusOne).out;
        let s = 0;
        for (let i = 0; i < o.length; i++) s += dy[i]! * o[i]!;
        return s;
      };
      const rb = refBackward(dy, x, refForward(x, w, rows, C, plusOne).rstd, w, rows, C, plusOne);
      const fdx: number[] = [];
      for (let i = 0; i < x.length; i++) fdx.push(finiteDifference(() => loss(), x, i));
      const fdw: number[] = [];
      for (let i = 0; i < w.length; i++) fdw.push(finiteDifference(() => loss(), w, i));
      // The analytic float64 gradient is the derivative of the float64 forward ...
      expectRel(seed, 'analytic dx vs finite differences', rb.dx, fdx, 1e-8);
      expectRel(seed, 'analytic dweight vs finite differences', rb.dweight, fdw, 1e-8);
      // ... and the GPU's is the same derivative.
      expectRel(seed, 'GPU dx vs finite differences', g.dx, fdx, 1e-5);
      expectRel(seed, 'GPU dweight vs finite differences', g.dweight, fdw, 1e-5);
    });
  }

  it('rejects a scratch buffer that is too small, and a bad wg', async () => {
    const rt = await runtime();
    const mem = rt.memory;
    const s = mem.storage('t.small', 16);
    const x = rt.dummy;
    await expect(rmsnormBackward(rt, { rows: 100, C: 64, dout: x, inp: x, weight: x, rstd: x, dx: x, dweight: x, scratch: s })).rejects.toThrow(/scratch/);
    await expect(rmsnormBackwardParams(rt, { rows: 100, C: 64, dout: x, inp: x, rstd: x, dweight: x, scratch: s })).rejects.toThrow(/scratch/);
    await expect(rmsnormForward(rt, { rows: 1, C: 4, inp: x, weight: x, out: x, wg: 12 })).rejects.toThrow(/wg/);
    await expect(rmsnormForward(rt, { rows: 0, C: 4, inp: x, weight: x, out: x })).rejects.toThrow(/rows/);
    mem.destroy(s);
  });
});
