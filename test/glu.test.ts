// Gated MLP activation (kernels/glu.wgsl): SwiGLU (Llama, Qwen2) and GeGLU with the tanh GELU
// (Gemma2), forward and backward, separate gate/up buffers and the fused [rows, 2H] layout.
//
// Bounds, against float64 on the same float32 inputs:
// - ‖·−ref‖/‖ref‖ ≤ 1e-6 for out, dgate and dup when rows·H ≥ 100 (measured on lavapipe ≤ 9.2e-8);
// - every element: |got − ref| ≤ 3e-6·(|ref| + |x·f'(x)·m|) + 1e-30 for ref = f(x)·m (f = act for
//   out and dup, act' for dgate), i.e. 3e-6 relative widened by f's condition number (measured ≤ 6.2e-7).
//   Below 100 elements the norm-wise error is that of one or a few elements, which in the GELU's
//   negative tail is legitimately ~κ·ulp with κ up to ~240, so there only the elementwise bound holds.
// - central finite differences of the float64 forward: ≤ 1e-6 (the quotient itself is good to ~1e-9).
import { describe, expect, it } from 'vitest';
import { gluActivation, gluBackward, gluForward, type GluActivation, type GluPair } from '../src/ops/glu.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { finiteDifference, mulberry32, randn, relError } from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, freshSeed, poison, runtime } from './util/gpu.ts';

// ---------------------------------------------------------------------------------------------
// float64 reference
// ---------------------------------------------------------------------------------------------

const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** GPT-2's tanh GELU as written: 0.5·x·(1 + tanh(u)). */
function geluTextbook(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_K * (x + GELU_A * x * x * x)));
}

/**
 * act(x) and act'(x) in float64. The GELU uses 0.5·(1 + tanh u) = σ(2u) and 1 − tanh²u =
 * 4·σ(2u)·σ(−2u): in float64 the textbook 1 + tanh(u) loses its relative accuracy from x ≈ −6
 * and is exactly 0 from x ≈ −7.2 (tanh rounds to −1), for GELU values (~1e-16 and below) that the
 * float32 kernel still represents. The two forms are checked against each other where both are accurate.
 */
function act(a: GluActivation, x: number): number {
  if (a === 'silu') return x * sigmoid(x);
  return x * sigmoid(2 * GELU_K * (x + GELU_A * x * x * x));
}

function actGrad(a: GluActivation, x: number): number {
  if (a === 'silu') {
    const s = sigmoid(x);
    return s * (1 + x * (1 - s));
  }
  const u = GELU_K * (x + GELU_A * x * x * x);
  const du = GELU_K * (1 + 3 * GELU_A * x * x);
  const s = sigmoid(2 * u);
  return s + 2 * x * s * sigmoid(-2 * u) * du;
}

/** act''(x) by a central difference of act' (only used to size error bounds). */
function actGrad2(a: GluActivation, x: number): number {
  const h = 1e-5 * Math.max(1, Math.abs(x));
  return (actGrad(a, x + h) - actGrad(a, x - h)) / (2 * h);
}

/**
 * Elementwise check of got ≈ ref = f(x)·m: |got − ref| ≤ tol·(|ref| + |x·f'(x)·m|) + 1e-30, i.e.
 * tol relative, widened by f's condition number |x·f'/f| (a float32 kernel computes f from x
 * rounded to a few ulps; in the GELU's negative tail |x·gelu'/gelu| reaches ~240 before it
 * underflows, and near a zero of f the bound becomes absolute).
 */
function expectElementwise(seed: number, name: string, got: Float32Array, ref: Float64Array, x: Float32Array, fprime: (x: number) => number, m: (i: number) => number, tol: number): void {
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < ref.length; i++) {
    const scale = Math.abs(ref[i]!) + Math.abs(x[i]! * fprime(x[i]!) * m(i));
    const err = Math.abs(got[i]! - ref[i]!);
    if (!(err <= tol * scale + 1e-30)) {
      worst = i;
      break;
    }
    if (scale > 1e-30) worstRatio = Math.max(worstRatio, err / scale);
  }
  if (process.env.MEASURE) console.log(`MEASURE-ELT ${name} ${worstRatio.toExponential(2)}`);
  expect(worst, `seed ${seed}: ${name}[${worst}] = ${got[worst]} vs ${ref[worst]} (x = ${x[worst]})`).toBe(-1);
}

function refForward(a: GluActivation, gate: Float64Array, up: Float64Array): Float64Array {
  return gate.map((g, i) => act(a, g) * up[i]!);
}

function refBackward(a: GluActivation, dout: Float64Array, gate: Float64Array, up: Float64Array) {
  return {
    dgate: gate.map((g, i) => dout[i]! * up[i]! * actGrad(a, g)),
    dup: gate.map((g, i) => dout[i]! * act(a, g)),
  };
}

// ---------------------------------------------------------------------------------------------
// GPU harness
// ---------------------------------------------------------------------------------------------

interface Inputs { gate: Float32Array; up: Float32Array; dout: Float32Array }

/**
 * gate ~ 3·N(0,1) with far tails ±(8..40) every 97th element from 48 (saturated σ; the smallest
 * sizes stay ordinary); up, dout ~ N(0,1).
 */
function inputs(seed: number, n: number): Inputs {
  const r = mulberry32(seed);
  const gate = randn(n, r, 3);
  for (let i = 48; i < n; i += 97) gate[i] = (r() < 0.5 ? -1 : 1) * (8 + 32 * r());
  return { gate: f32(gate), up: f32(randn(n, r)), dout: f32(randn(n, r)) };
}

/** [rows, H] a and b interleaved as the column halves of [rows, 2H]. */
function fuse(a: Float32Array, b: Float32Array, rows: number, H: number): Float32Array {
  const out = new Float32Array(rows * 2 * H);
  for (let r = 0; r < rows; r++) {
    out.set(a.subarray(r * H, (r + 1) * H), r * 2 * H);
    out.set(b.subarray(r * H, (r + 1) * H), r * 2 * H + H);
  }
  return out;
}

function split(f: Float32Array, rows: number, H: number): [Float32Array, Float32Array] {
  const a = new Float32Array(rows * H);
  const b = new Float32Array(rows * H);
  for (let r = 0; r < rows; r++) {
    a.set(f.subarray(r * 2 * H, r * 2 * H + H), r * H);
    b.set(f.subarray(r * 2 * H + H, (r + 1) * 2 * H), r * H);
  }
  return [a, b];
}

interface RunOpts { act: GluActivation; rows: number; H: number; fusedIn?: boolean; fusedOut?: boolean; seed?: number; data?: Inputs }

async function runGlu(o: RunOpts) {
  const rt = await runtime();
  const { rows, H } = o;
  const n = rows * H;
  const seed = o.seed ?? freshSeed();
  const d = o.data ?? inputs(seed, n);
  const mem = rt.memory;
  const made: GPUBuffer[] = [];
  const up = (name: string, a: Float32Array) => {
    const b = mem.upload(name, a);
    made.push(b);
    return b;
  };
  const inp: GluPair = o.fusedIn ? { fused: up('t.gu', fuse(d.gate, d.up, rows, H)) } : { gate: up('t.gate', d.gate), up: up('t.up', d.up) };
  const out = up('t.out', poison(n));
  const dout = up('t.dout', d.dout);
  const grad: GluPair = o.fusedOut ? { fused: up('t.dgu', poison(2 * n)) } : { gate: up('t.dgate', poison(n)), up: up('t.dup', poison(n)) };
  const fwd = await gluForward(rt, { act: o.act, rows, H, inp, out });
  const bwd = await gluBackward(rt, { act: o.act, rows, H, inp, dout, grad });
  await rt.steps.run('glu-test', [...fwd, ...bwd]);
  const outH = await mem.readFloat32(out);
  let dgate: Float32Array;
  let dup: Float32Array;
  if ('fused' in grad) [dgate, dup] = split(await mem.readFloat32(grad.fused as GPUBuffer), rows, H);
  else [dgate, dup] = [await mem.readFloat32(grad.gate as GPUBuffer), await mem.readFloat32(grad.up as GPUBuffer)];
  for (const b of made) mem.destroy(b);
  return { seed, d, out: outH, dgate, dup, fwd, bwd };
}

const F64 = (a: Float32Array) => Float64Array.from(a);

function check(r: Awaited<ReturnType<typeof runGlu>>, a: GluActivation, label: string) {
  expectWritten(r.seed, `${label} out`, r.out);
  expectWritten(r.seed, `${label} dgate`, r.dgate);
  expectWritten(r.seed, `${label} dup`, r.dup);
  const g = F64(r.d.gate);
  const u = F64(r.d.up);
  const ref = refForward(a, g, u);
  const refB = refBackward(a, F64(r.d.dout), g, u);
  if (process.env.MEASURE) {
    console.log(`MEASURE ${label} ${a} n=${r.out.length} fwd ${relError(r.out, ref).toExponential(2)} dg ${relError(r.dgate, refB.dgate).toExponential(2)} du ${relError(r.dup, refB.dup).toExponential(2)}`);
  }
  if (r.out.length >= 100) {
    expectRel(r.seed, `${label} forward`, r.out, ref, 1e-6);
    expectRel(r.seed, `${label} dgate`, r.dgate, refB.dgate, 1e-6);
    expectRel(r.seed, `${label} dup`, r.dup, refB.dup, 1e-6);
  }
  const x = r.d.gate;
  const dA = (v: number) => actGrad(a, v);
  expectElementwise(r.seed, `${label} out`, r.out, ref, x, dA, (i) => r.d.up[i]!, ELT_TOL);
  expectElementwise(r.seed, `${label} dup`, r.dup, refB.dup, x, dA, (i) => r.d.dout[i]!, ELT_TOL);
  expectElementwise(r.seed, `${label} dgate`, r.dgate, refB.dgate, x, (v) => actGrad2(a, v), (i) => r.d.dout[i]! * r.d.up[i]!, ELT_TOL);
}

const ELT_TOL = 3e-6;
const ACTS: GluActivation[] = ['silu', 'gelu_tanh'];

describe('glu', () => {
  for (const a of ACTS) {
    for (const rows of [1, 7, 37]) {
      for (const H of [1, 5, 513, 1000]) {
        it(`${a} rows=${rows} H=${H}: separate buffers and fused [rows, 2H], vs float64; layouts bit-identical`, async () => {
          const seed = freshSeed();
          const sep = await runGlu({ act: a, rows, H, seed });
          check(sep, a, 'separate');
          const fused = await runGlu({ act: a, rows, H, seed, fusedIn: true, fusedOut: true });
          check(fused, a, 'fused');
          expect(bits(fused.out), `seed ${seed}: fused out`).toEqual(bits(sep.out));
          expect(bits(fused.dgate), `seed ${seed}: fused dgate`).toEqual(bits(sep.dgate));
          expect(bits(fused.dup), `seed ${seed}: fused dup`).toEqual(bits(sep.dup));
        });
      }
    }
  }

  for (const a of ACTS) {
    it(`${a}: mixed layouts (fused in / separate grads, separate in / fused grads)`, async () => {
      const seed = freshSeed();
      const base = await runGlu({ act: a, rows: 7, H: 513, seed });
      for (const [fusedIn, fusedOut] of [[true, false], [false, true]]) {
        const r = await runGlu({ act: a, rows: 7, H: 513, seed, fusedIn, fusedOut });
        check(r, a, `fusedIn=${fusedIn} fusedOut=${fusedOut}`);
        expect(bits(r.dgate), `seed ${seed}`).toEqual(bits(base.dgate));
        expect(bits(r.dup), `seed ${seed}`).toEqual(bits(base.dup));
      }
    });

    it(`${a}: backward vs central finite differences of the float64 forward`, async () => {
      const rows = 7;
      const H = 37;
      const n = rows * H;
      const r = await runGlu({ act: a, rows, H, fusedIn: true, fusedOut: true });
      const g = F64(r.d.gate);
      const u = F64(r.d.up);
      const w = F64(r.d.dout);
      const loss = (gg: Float64Array, uu: Float64Array) => {
        const o = refForward(a, gg, uu);
        let s = 0;
        for (let i = 0; i < n; i++) s += w[i]! * o[i]!;
        return s;
      };
      const rng = mulberry32(r.seed + 7);
      const gpu: number[] = [];
      const fd: number[] = [];
      for (let k = 0; k < 30; k++) {
        const i = Math.floor(rng() * n);
        gpu.push(r.dgate[i]!, r.dup[i]!);
        fd.push(finiteDifference((x) => loss(x, u), g, i), finiteDifference((x) => loss(g, x), u, i));
      }
      if (process.env.MEASURE) console.log(`MEASURE-FD ${a} ${relError(gpu, fd).toExponential(2)}`);
      expectRel(r.seed, `${a} finite differences`, gpu, fd, 1e-6);
    });

    it(`${a}: extreme inputs (±100, ±1e4, 0, tiny) give finite results matching float64`, async () => {
      const specials = [100, -100, 1e4, -1e4, 0, -0, 1e-30, -1e-30, 20, -20, 30, -30, 88, -88, 90, -90, 5, -5, 1e-4, -1e-4];
      const ups = [1, -1, 100, -100, 1e4, -1e4, 0.5];
      const gate: number[] = [];
      const upv: number[] = [];
      for (const s of specials) for (const v of ups) { gate.push(s); upv.push(v); }
      const rows = specials.length;
      const H = ups.length;
      const seed = freshSeed();
      const data: Inputs = { gate: Float32Array.from(gate), up: Float32Array.from(upv), dout: f32(randn(rows * H, mulberry32(seed))) };
      for (const [fusedIn, fusedOut] of [[false, false], [true, true]]) {
        const r = await runGlu({ act: a, rows, H, seed, data, fusedIn, fusedOut });
        check(r, a, `extreme fused=${fusedIn}`);
      }
    });
  }

  it('float64 reference: the σ(2u) GELU equals the textbook 0.5·x·(1 + tanh u) where float64 resolves the latter', () => {
    for (let x = -4; x <= 20; x += 0.01) {
      const t = geluTextbook(x);
      expect(Math.abs(act('gelu_tanh', x) - t), `x=${x}`).toBeLessThanOrEqual(1e-9 * Math.abs(t) + 1e-300);
      const h = 1e-6;
      expect(Math.abs(actGrad('gelu_tanh', x) - (geluTextbook(x + h) - geluTextbook(x - h)) / (2 * h)), `x=${x}`).toBeLessThanOrEqual(1e-7);
    }
  });

  it('backward is bit-identical across runs', async () => {
    const seed = freshSeed();
    for (const a of ACTS) {
      const x = await runGlu({ act: a, rows: 37, H: 513, seed });
      const y = await runGlu({ act: a, rows: 37, H: 513, seed });
      expect(bits(y.dgate), `seed ${seed}`).toEqual(bits(x.dgate));
      expect(bits(y.dup), `seed ${seed}`).toEqual(bits(x.dup));
    }
  });

  it('2-D grid: rows·H over 65535 workgroups (sampled check)', async () => {
    // 16.8M elements, kept cheap: one random row repeated, gate = up = dout bound to one buffer
    // (read-only aliasing), the float64 reference on a sample (every element is checked written).
    const rt = await runtime();
    const rows = 257;
    const H = 65535 + 3;
    const n = rows * H;
    const seed = freshSeed();
    const r = mulberry32(seed);
    const row = f32(randn(H, r, 3));
    const x = new Float32Array(n);
    for (let i = 0; i < rows; i++) x.set(row, i * H);
    const mem = rt.memory;
    const bufs = [mem.upload('t.x', x), mem.upload('t.out', poison(n)), mem.upload('t.dgate', poison(n)), mem.upload('t.dup', poison(n))];
    const [bx, bo, bdg, bdu] = bufs as [GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer];
    const fwd = await gluForward(rt, { act: 'gelu_tanh', rows, H, inp: { gate: bx, up: bx }, out: bo });
    const bwd = await gluBackward(rt, { act: 'gelu_tanh', rows, H, inp: { gate: bx, up: bx }, dout: bx, grad: { gate: bdg, up: bdu } });
    expect(fwd[0]!.workgroups[1]).toBeGreaterThan(1);
    await rt.steps.run('glu-2d', [...fwd, ...bwd]);
    const got = { out: await mem.readFloat32(bo), dgate: await mem.readFloat32(bdg), dup: await mem.readFloat32(bdu) };
    for (const b of bufs) mem.destroy(b);
    const idx = Array.from({ length: 4000 }, (_, k) => (k < 2000 ? Math.floor(r() * n) : n - 1 - (k - 2000)));
    const g = Float64Array.from(idx, (i) => x[i]!);
    const ref = refForward('gelu_tanh', g, g);
    const refB = refBackward('gelu_tanh', g, g, g);
    const pick = (a: Float32Array) => Float64Array.from(idx, (i) => a[i]!);
    for (const [k, a] of Object.entries(got)) expectWritten(seed, k, a);
    expectRel(seed, '2-D grid forward', pick(got.out), ref, 1e-6);
    expectRel(seed, '2-D grid dgate', pick(got.dgate), refB.dgate, 1e-6);
    expectRel(seed, '2-D grid dup', pick(got.dup), refB.dup, 1e-6);
  });

  it('checks shapes, buffer sizes and aliasing; maps HF activation names', async () => {
    const rt: Runtime = await runtime();
    const mem = rt.memory;
    const rows = 3;
    const H = 5;
    const a = mem.storage('t.a', rows * H * 4);
    const b = mem.storage('t.b', rows * H * 4);
    const c = mem.storage('t.c', rows * H * 4);
    const fusedSmall = mem.storage('t.f', rows * H * 4); // half of [rows, 2H]
    const d = mem.storage('t.d', rows * H * 4);
    const e = mem.storage('t.e', rows * H * 4);
    await expect(gluForward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, out: c })).resolves.toHaveLength(1);
    await expect(gluForward(rt, { act: 'silu', rows, H: 0, inp: { gate: a, up: b }, out: c })).rejects.toThrow(/H must be a positive integer/);
    await expect(gluForward(rt, { act: 'silu', rows, H: 2.5, inp: { gate: a, up: b }, out: c })).rejects.toThrow(/H must be/);
    await expect(gluForward(rt, { act: 'silu', rows: rows + 1, H, inp: { gate: a, up: b }, out: c })).rejects.toThrow(/gate binding has 60 bytes, needs 80/);
    await expect(gluForward(rt, { act: 'silu', rows, H, inp: { fused: fusedSmall }, out: c })).rejects.toThrow(/gate binding has 60 bytes, needs 100.*fused/);
    await expect(gluForward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, out: { buffer: c, offset: 0, size: 56 } })).rejects.toThrow(/out binding has 56 bytes/);
    await expect(gluForward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, out: a })).rejects.toThrow(/out must be distinct/);
    await expect(gluForward(rt, { act: 'relu' as GluActivation, rows, H, inp: { gate: a, up: b }, out: c })).rejects.toThrow(/unknown activation/);
    await expect(gluBackward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, dout: c, grad: { gate: d, up: d } })).rejects.toThrow(/distinct buffers/);
    await expect(gluBackward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, dout: c, grad: { gate: d, up: a } })).rejects.toThrow(/dup must be distinct/);
    await expect(gluBackward(rt, { act: 'silu', rows, H, inp: { gate: a, up: b }, dout: c, grad: { fused: d } })).rejects.toThrow(/dgate binding has 60 bytes, needs 100/);
    await expect(gluBackward(rt, { act: 'gelu_tanh', rows, H, inp: { gate: a, up: b }, dout: c, grad: { gate: d, up: e } })).resolves.toHaveLength(1);
    for (const x of [a, b, c, fusedSmall, d, e]) mem.destroy(x);
    expect(gluActivation('silu')).toBe('silu');
    expect(gluActivation('swish')).toBe('silu');
    expect(gluActivation('gelu_pytorch_tanh')).toBe('gelu_tanh');
    expect(() => gluActivation('gelu')).toThrow(/unsupported activation 'gelu'/);
    await rt.device.queue.onSubmittedWorkDone();
    expect(rt.gpu.errors).toEqual([]);
  });
});
