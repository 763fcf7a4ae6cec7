// Elementwise kernels: GELU (forward/backward) and residual adds / gradient accumulation.
import { describe, expect, it } from 'vitest';
import { geluBackward, geluForward } from '../src/ops/gelu.ts';
import { residualAccumulate, residualAdd } from '../src/ops/residual.ts';
import {
  finiteDifference, geluBackward as refGeluBackward, geluForward as refGeluForward, mulberry32, randn,
  residualBackward as refResidualBackward, residualForward as refResidualForward,
} from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, poison, runtime } from './util/gpu.ts';


/** Normals scaled by 3, with a few far tails (±8..±40) to exercise the saturated tanh. */
function geluInputs(seed: number, n: number): Float32Array {
  const r = mulberry32(seed);
  const x = randn(n, r, 3);
  for (let i = 0; i < n; i += 97) x[i] = (r() < 0.5 ? -1 : 1) * (8 + 32 * r());
  return f32(x);
}

async function runGelu(n: number, opts: { scalar?: boolean; seed?: number } = {}) {
  const rt = await runtime();
  const seed = opts.seed ?? freshSeed();
  const x = geluInputs(seed, n);
  const dout = f32(randn(n, mulberry32(seed + 1)));
  const mem = rt.memory;
  const bx = mem.upload('t.x', x);
  const bout = mem.upload('t.out', poison(n));
  const bdout = mem.upload('t.dout', dout);
  const bdinp = mem.upload('t.dinp', poison(n));
  const fwd = await geluForward(rt, { n, inp: bx, out: bout, scalar: opts.scalar });
  const bwd = await geluBackward(rt, { n, dout: bdout, inp: bx, dinp: bdinp, scalar: opts.scalar });
  await rt.steps.run('gelu-test', [fwd, bwd]);
  const out = await mem.readFloat32(bout);
  const dinp = await mem.readFloat32(bdinp);
  for (const b of [bx, bout, bdout, bdinp]) mem.destroy(b);
  return { seed, x, dout, out, dinp, fwd, bwd };
}

describe('gelu', () => {
  for (const n of [1, 37, 1000, 37 * 29, 37 * 96, 4099]) {
    for (const scalar of n % 4 === 0 ? [false, true] : [false]) {
      it(`forward and backward n=${n}${n % 4 === 0 ? (scalar ? ' (scalar)' : ' (vec4)') : ''} vs float64 reference`, async () => {
        const r = await runGelu(n, { scalar });
        expect(r.fwd.bound.kernel.entry).toBe(n % 4 === 0 && !scalar ? 'forward4' : 'forward');
        expectWritten(r.seed, 'out', r.out);
        expectWritten(r.seed, 'dinp', r.dinp);
        expectRel(r.seed, 'gelu forward', r.out, refGeluForward(f64(r.x)), 1e-5);
        expectRel(r.seed, 'gelu backward', r.dinp, refGeluBackward(f64(r.dout), f64(r.x)), 1e-4);
      });
    }
  }

  it('2-D grid: n over 65535 workgroups (scalar path)', async () => {
    const n = 65535 * 256 + 1000;
    const r = await runGelu(n, { scalar: true });
    expect(r.fwd.workgroups[1]).toBeGreaterThan(1);
    expectWritten(r.seed, 'out', r.out);
    expectWritten(r.seed, 'dinp', r.dinp);
    expectRel(r.seed, 'gelu forward (2-D grid)', r.out, refGeluForward(f64(r.x)), 1e-5);
    expectRel(r.seed, 'gelu backward (2-D grid)', r.dinp, refGeluBackward(f64(r.dout), f64(r.x)), 1e-4);
  });

  for (const n of [1003, 1000]) {
    it(`backward in place over dout, n=${n}`, async () => {
      const rt = await runtime();
      const seed = freshSeed();
      const x = geluInputs(seed, n);
      const dout = f32(randn(n, mulberry32(seed + 1)));
      const mem = rt.memory;
      const bx = mem.upload('t.x', x);
      const bd = mem.upload('t.dout', dout);
      const d = await geluBackward(rt, { n, dout: bd, inp: bx });
      expect(d.bound.kernel.entry).toBe(n % 4 === 0 ? 'backward_inplace4' : 'backward_inplace');
      await rt.steps.run('gelu-inplace', [d]);
      const g = await mem.readFloat32(bd);
      for (const b of [bx, bd]) mem.destroy(b);
      expectRel(seed, 'gelu backward in place', g, refGeluBackward(f64(dout), f64(x)), 1e-4);
      const sep = await runGelu(n, { seed });
      expect(bits(g), `seed ${seed}: in place vs separate`).toEqual(bits(sep.dinp));
    });
  }

  it('backward is bit-identical across runs', async () => {
    const seed = freshSeed();
    const a = await runGelu(1003, { seed });
    const b = await runGelu(1003, { seed });
    expect(bits(b.dinp), `seed ${seed}`).toEqual(bits(a.dinp));
  });

  it('backward vs central finite differences of the float64 forward', async () => {
    const n = 41;
    const r = await runGelu(n);
    // Keep the sampled inputs away from the clamped tails (there the derivative is ~0 anyway).
    const x = f64(r.x);
    const w = f64(r.dout);
    const loss = (v: Float64Array) => {
      const o = refGeluForward(v);
      let s = 0;
      for (let i = 0; i < n; i++) s += w[i] * o[i];
      return s;
    };
    const rng = mulberry32(r.seed);
    const gpu: number[] = [];
    const fd: number[] = [];
    for (let k = 0; k < 20; k++) {
      const i = Math.floor(rng() * n);
      gpu.push(r.dinp[i]!);
      fd.push(finiteDifference(loss, x, i));
    }
    expectRel(r.seed, 'gelu finite differences', gpu, fd, 1e-3);
  });
});

async function runAdd(n: number, opts: { scalar?: boolean; accumulate?: boolean; seed?: number } = {}) {
  const rt = await runtime();
  const seed = opts.seed ?? freshSeed();
  const rng = mulberry32(seed);
  const a = f32(randn(n, rng));
  const b = f32(randn(n, rng));
  const c0 = f32(randn(n, rng));
  const mem = rt.memory;
  const ba = mem.upload('t.a', a);
  const bb = mem.upload('t.b', b);
  const bout = mem.upload('t.out', opts.accumulate ? c0 : poison(n));
  const bacc = mem.upload('t.acc', c0);
  const d1 = await residualAdd(rt, { n, a: ba, b: bb, out: bout, accumulate: opts.accumulate, scalar: opts.scalar });
  const d2 = await residualAccumulate(rt, { n, acc: bacc, b: bb, scalar: opts.scalar });
  await rt.steps.run('residual-test', [d1, d2]);
  const out = await mem.readFloat32(bout);
  const acc = await mem.readFloat32(bacc);
  for (const x of [ba, bb, bout, bacc]) mem.destroy(x);
  return { seed, a, b, c0, out, acc, d1, d2 };
}

describe('residual', () => {
  for (const n of [1, 37, 37 * 29, 37 * 96, 4099]) {
    for (const scalar of n % 4 === 0 ? [false, true] : [false]) {
      for (const accumulate of [false, true]) {
        it(`add${accumulate ? ' (accumulate)' : ''} and accumulate-in-place n=${n}${scalar ? ' scalar' : ''}`, async () => {
          const r = await runAdd(n, { scalar, accumulate });
          expect(r.d1.bound.kernel.entry).toBe(n % 4 === 0 && !scalar ? 'add4' : 'add');
          expectWritten(r.seed, 'out', r.out);
          const ref = refResidualForward(f64(r.a), f64(r.b));
          if (accumulate) for (let i = 0; i < n; i++) ref[i] += r.c0[i]!;
          expectRel(r.seed, 'residual add', r.out, ref, 1e-6);
          expectRel(r.seed, 'acc += b', r.acc, refResidualForward(f64(r.c0), f64(r.b)), 1e-6);
        });
      }
    }
  }

  it('2-D grid: n over 65535 workgroups', async () => {
    const n = 65535 * 256 + 77;
    const r = await runAdd(n, { accumulate: true });
    expect(r.d1.workgroups[1]).toBeGreaterThan(1);
    expectWritten(r.seed, 'out', r.out);
    const ref = new Float64Array(n);
    for (let i = 0; i < n; i++) ref[i] = r.a[i]! + r.b[i]! + r.c0[i]!;
    expectRel(r.seed, 'residual add (2-D grid)', r.out, ref, 1e-6);
  });

  it('backward (gradient accumulation) vs finite differences, and bit-identical reruns', async () => {
    // out = a + b; L = Σ w⊙out. The backward routes dL/dout = w into each branch's accumulator
    // (initially zero) with acc += dout.
    const rt = await runtime();
    const seed = freshSeed();
    const n = 29;
    const rng = mulberry32(seed);
    const a = f64(f32(randn(n, rng)));
    const b = f64(f32(randn(n, rng)));
    const w = f32(randn(n, rng));
    const mem = rt.memory;
    const dout = mem.upload('t.dout', w);
    const da = mem.upload('t.da', new Float32Array(n));
    const db = mem.upload('t.db', new Float32Array(n));
    const d1 = await residualAccumulate(rt, { n, acc: da, b: dout });
    const d2 = await residualAccumulate(rt, { n, acc: db, b: dout });
    await rt.steps.run('residual-bwd', [d1, d2]);
    const ga = await mem.readFloat32(da);
    const gb = await mem.readFloat32(db);
    for (const x of [dout, da, db]) mem.destroy(x);
    const ref = refResidualBackward(f64(w));
    expectRel(seed, 'da', ga, ref.da, 1e-6);
    expectRel(seed, 'db', gb, ref.db, 1e-6);
    const loss = () => {
      const o = refResidualForward(a, b);
      let s = 0;
      for (let i = 0; i < n; i++) s += w[i]! * o[i];
      return s;
    };
    const gpu: number[] = [];
    const fd: number[] = [];
    for (let k = 0; k < 10; k++) {
      const i = Math.floor(rng() * n);
      gpu.push(ga[i]!, gb[i]!);
      fd.push(finiteDifference(loss, a, i), finiteDifference(loss, b, i));
    }
    expectRel(seed, 'residual finite differences', gpu, fd, 1e-3);
    const again = await runAdd(1003, { seed, accumulate: true });
    const again2 = await runAdd(1003, { seed, accumulate: true });
    expect(bits(again2.out)).toEqual(bits(again.out));
    expect(bits(again2.acc)).toEqual(bits(again.acc));
  });
});
