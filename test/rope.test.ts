// Rotary position embeddings (kernels/rope.wgsl) against a float64 reference of Hugging Face's
// apply_rotary_pos_emb (rotate-half layout), defined here, on a fused qkv buffer.
// Two references: `hf` takes θ = fround(pos·inv_freq) as HF's float32 freqs do and evaluates cos/sin
// and the rotation in float64 (what the kernel must match: HF's own float32 computation differs from
// it only by float32 rounding of cos, sin and the products); `exact` takes θ = pos·inv_freq in
// float64 from float64 inverse frequencies (the mathematical RoPE, which HF's float32 angles already
// miss by up to ½ ulp(θ) ≈ 2.4e-4 rad at θ ≈ 8191).
// Measured on lavapipe (positions 0..8191, headDim 128, θ up to 8191 rad):
//   vs hf:    ‖out−ref‖/‖ref‖ ≈ 5e-8, max |out−ref| ≈ 1e-6 for |x| ≲ 7   (bounds 1e-6 relative, 1e-5 max)
//   vs exact: ‖out−ref‖/‖ref‖ ≈ 3e-5, max |out−ref| ≈ 2.6e-3            (bound 1e-4 relative)
// where HF's float32 angles themselves, rotated exactly, are 3e-5 from exact: the kernel adds nothing
// visible to that. θ = 500000 / 1e6 / headDim 256 measure the same. Small shapes ≈ 5e-8 relative
// (bound 1e-6); the backward likewise.
import { describe, expect, it } from 'vitest';
import { ropeBackward, ropeForward, ropeInvFreq, type RopeConfig } from '../src/ops/rope.ts';
import type { Runtime } from '../src/gpu/runtime.ts';
import { finiteDifference, maxAbsDiff, mulberry32, randn } from './reference/ops.ts';
import { bits, expectRel, expectWritten, f32, f64, freshSeed, runtime } from './util/gpu.ts';

interface Shape { B: number; T: number; nHead: number; nKvHead: number; headDim: number }

const width = (s: Shape) => (s.nHead + 2 * s.nKvHead) * s.headDim;

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

/**
 * HF's rotation of the q and k heads of every row by ±θ (sign −1: the backward, R(θ)ᵀ = R(−θ));
 * v columns copied unchanged. angle(pos, i) gives θ.
 */
function refRope(x: Float64Array, s: Shape, angle: (pos: number, i: number) => number, sign: 1 | -1): Float64Array {
  const out = Float64Array.from(x);
  const W = width(s);
  const h = s.headDim / 2;
  for (let r = 0; r < s.B * s.T; r++) {
    const pos = r % s.T;
    for (let head = 0; head < s.nHead + s.nKvHead; head++) {
      const at = r * W + head * s.headDim;
      for (let i = 0; i < h; i++) {
        const th = angle(pos, i);
        const c = Math.cos(th);
        const sn = sign * Math.sin(th);
        const x1 = x[at + i]!;
        const x2 = x[at + i + h]!;
        // q·cos + rotate_half(q)·sin, rotate_half([x1, x2]) = [−x2, x1]
        out[at + i] = x1 * c - x2 * sn;
        out[at + i + h] = x2 * c + x1 * sn;
      }
    }
  }
  return out;
}

/** θ as HF computes it: float32 inv_freq times float32 position, rounded to float32. */
const hfAngle = (inv: Float32Array) => (pos: number, i: number) => Math.fround(pos * inv[i]!);
/** θ in float64 from float64 inverse frequencies (default RoPE, no scaling). */
const exactAngle = (headDim: number, theta: number) => (pos: number, i: number) => pos / Math.pow(theta, (2 * i) / headDim);

// ---------------------------------------------------------------------------------------------
// GPU runs
// ---------------------------------------------------------------------------------------------

/** Uploads x, runs forward or backward in place, reads it back. */
async function runGpu(rt: Runtime, s: Shape, inv: Float32Array, x: Float32Array, dir: 'forward' | 'backward' | 'both', wg?: number): Promise<Float32Array> {
  const mem = rt.memory;
  const buf = mem.upload('t.qkv', x);
  const invFreq = mem.upload('t.invFreq', inv);
  const items = [];
  if (dir !== 'backward') items.push(await ropeForward(rt, { qkv: buf, invFreq, ...s, wg }));
  if (dir !== 'forward') items.push(await ropeBackward(rt, { dqkv: buf, invFreq, ...s, wg }));
  await rt.steps.run('rope-test', items);
  const out = await mem.readFloat32(buf);
  mem.destroy(buf);
  mem.destroy(invFreq);
  return out;
}

/** Index of the first element whose bits differ, or -1 (toEqual on large arrays is slow). */
function firstBitDifference(a: Float32Array, b: Float32Array): number {
  const x = bits(a);
  const y = bits(b);
  if (x.length !== y.length) return Math.min(x.length, y.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

function inputs(seed: number, s: Shape): Float32Array {
  return f32(randn(s.B * s.T * width(s), mulberry32(seed), 1.5));
}

/** Elements of the v columns of every row, in order. */
function vColumns(a: Float32Array, s: Shape): Float32Array {
  const W = width(s);
  const v0 = (s.nHead + s.nKvHead) * s.headDim;
  const out = new Float32Array(s.B * s.T * (W - v0));
  let k = 0;
  for (let r = 0; r < s.B * s.T; r++) for (let j = v0; j < W; j++) out[k++] = a[r * W + j]!;
  return out;
}

const SHAPES: (Shape & { theta: number })[] = [
  { B: 1, T: 1, nHead: 1, nKvHead: 1, headDim: 2, theta: 10000 },
  { B: 2, T: 7, nHead: 3, nKvHead: 1, headDim: 16, theta: 10000 },
  { B: 3, T: 5, nHead: 5, nKvHead: 5, headDim: 24, theta: 10000 },
  { B: 2, T: 37, nHead: 4, nKvHead: 2, headDim: 64, theta: 1e6 },
  { B: 1, T: 29, nHead: 2, nKvHead: 1, headDim: 80, theta: 10000 },
  { B: 3, T: 11, nHead: 3, nKvHead: 1, headDim: 128, theta: 500000 },
  { B: 2, T: 13, nHead: 2, nKvHead: 1, headDim: 256, theta: 10000 },
];

describe('rope', () => {
  for (const s of SHAPES) {
    const name = `B${s.B} T${s.T} heads ${s.nHead}/${s.nKvHead} hd ${s.headDim}`;
    it(`forward and backward ${name} vs float64 reference, v untouched`, async () => {
      const rt = await runtime();
      const seed = freshSeed();
      const inv = ropeInvFreq({ headDim: s.headDim, ropeTheta: s.theta });
      const x = inputs(seed, s);
      const fwd = await runGpu(rt, s, inv, x, 'forward');
      const bwd = await runGpu(rt, s, inv, x, 'backward');
      expectWritten(seed, 'forward', fwd);
      expectWritten(seed, 'backward', bwd);
      expectRel(seed, `forward ${name}`, fwd, refRope(f64(x), s, hfAngle(inv), 1), 1e-6);
      expectRel(seed, `backward ${name}`, bwd, refRope(f64(x), s, hfAngle(inv), -1), 1e-6);
      expect(bits(vColumns(fwd, s)), `seed ${seed}: v columns after forward`).toEqual(bits(vColumns(x, s)));
      expect(bits(vColumns(bwd, s)), `seed ${seed}: v columns after backward`).toEqual(bits(vColumns(x, s)));
      // Position 0 is the identity: the first row of every sequence comes back bit for bit.
      const W = width(s);
      for (let b = 0; b < s.B; b++) {
        const row = (a: Float32Array) => bits(a.slice(b * s.T * W, b * s.T * W + W));
        expect(row(fwd), `seed ${seed}: row at position 0 (sequence ${b})`).toEqual(row(x));
      }
    });
  }

  it('a 2-dim head by hand: inv_freq = [1], so θ = position', async () => {
    // headDim 2: inv_freq[0] = 1/θ_base^0 = 1 and rotate_half([x1, x2]) = [−x2, x1], so a row at
    // position p maps [x1, x2] to [x1·cos p − x2·sin p, x2·cos p + x1·sin p]. One q head, one kv head,
    // T = 3, every row's q = [1, 0], k = [0, 1], v = [5, 7]:
    //   p = 0:  q [1, 0]                      k [0, 1]
    //   p = 1:  q [cos 1, sin 1]   = [ 0.5403023,  0.8414710]   k [−sin 1, cos 1] = [−0.8414710,  0.5403023]
    //   p = 2:  q [cos 2, sin 2]   = [−0.4161468,  0.9092974]   k [−sin 2, cos 2] = [−0.9092974, −0.4161468]
    // v stays [5, 7]. The backward rotates by −p: applied to the forward's output it gives back q, k.
    const rt = await runtime();
    const s: Shape = { B: 1, T: 3, nHead: 1, nKvHead: 1, headDim: 2 };
    const inv = ropeInvFreq({ headDim: 2, ropeTheta: 10000 });
    expect(Array.from(inv)).toEqual([1]);
    const x = new Float32Array([1, 0, 0, 1, 5, 7, 1, 0, 0, 1, 5, 7, 1, 0, 0, 1, 5, 7]);
    const out = await runGpu(rt, s, inv, x, 'forward');
    const expected = [
      1, 0, 0, 1, 5, 7,
      0.5403023, 0.8414710, -0.8414710, 0.5403023, 5, 7,
      -0.4161468, 0.9092974, -0.9092974, -0.4161468, 5, 7,
    ];
    expect(maxAbsDiff(out, expected), `got ${Array.from(out).join(', ')}`).toBeLessThan(1e-6);
    const back = await runGpu(rt, s, inv, out, 'backward');
    expect(maxAbsDiff(back, x), `got ${Array.from(back).join(', ')}`).toBeLessThan(1e-6);
  });

  it('positions up to 8191: error vs HF float32 angles and vs exact float64 angles', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const s: Shape = { B: 1, T: 8192, nHead: 1, nKvHead: 1, headDim: 128 };
    const theta = 10000;
    const inv = ropeInvFreq({ headDim: s.headDim, ropeTheta: theta });
    const x = inputs(seed, s);
    const out = await runGpu(rt, s, inv, x, 'forward');
    expectWritten(seed, 'forward T=8192', out);
    const hf = refRope(f64(x), s, hfAngle(inv), 1);
    const exact = refRope(f64(x), s, exactAngle(s.headDim, theta), 1);
    expectRel(seed, 'forward T=8192 vs HF float32 angles', out, hf, 1e-6);
    expectRel(seed, 'forward T=8192 vs exact float64 angles', out, exact, 1e-4);
    // The last rows alone (θ ≈ 8190 rad for i = 0): far outside [−π, π], where WGSL promises nothing
    // about cos/sin (lavapipe's are accurate there; the kernel reduces the angle itself anyway).
    const W = width(s);
    const from = (s.T - 64) * W;
    expectRel(seed, 'last 64 positions vs HF float32 angles', out.subarray(from), hf.subarray(from), 1e-6);
    expect(maxAbsDiff(out, hf), `seed ${seed}: max |out − hf|`).toBeLessThan(1e-5);
  });

  it('backward vs central finite differences and vs the analytic float64 gradient', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const s: Shape = { B: 2, T: 5, nHead: 3, nKvHead: 1, headDim: 6 };
    const inv = ropeInvFreq({ headDim: s.headDim, ropeTheta: 10000 });
    const r = mulberry32(seed ^ 0x5bd1e995);
    const x = f64(inputs(seed, s));
    const w = f32(randn(x.length, r)); // loss = Σ w ⊙ rope(x): dloss/dx = ropeᵀ(w)
    const loss = () => {
      const o = refRope(x, s, hfAngle(inv), 1);
      let sum = 0;
      for (let i = 0; i < o.length; i++) sum += w[i]! * o[i]!;
      return sum;
    };
    const fd: number[] = [];
    for (let i = 0; i < x.length; i++) fd.push(finiteDifference(() => loss(), x, i));
    const analytic = refRope(f64(w), s, hfAngle(inv), -1);
    expectRel(seed, 'analytic (rotation by −θ) vs finite differences', analytic, fd, 1e-8);
    const gpu = await runGpu(rt, s, inv, w, 'backward');
    expectRel(seed, 'GPU backward vs finite differences', gpu, fd, 1e-6);
    expectRel(seed, 'GPU backward vs analytic', gpu, analytic, 1e-6);
    // v: the loss depends on v linearly with coefficient 1, and the backward leaves dv = w.
    expect(bits(vColumns(gpu, s)), `seed ${seed}: dv`).toEqual(bits(vColumns(w, s)));
  });

  it('backward undoes forward; runs are bit-identical', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    const s: Shape = { B: 3, T: 101, nHead: 7, nKvHead: 3, headDim: 80 };
    const inv = ropeInvFreq({ headDim: s.headDim, ropeTheta: 10000 });
    const x = inputs(seed, s);
    const a = await runGpu(rt, s, inv, x, 'both');
    expectRel(seed, 'backward(forward(x)) vs x', a, x, 1e-6);
    const f1 = await runGpu(rt, s, inv, x, 'forward');
    const f2 = await runGpu(rt, s, inv, x, 'forward');
    expect(firstBitDifference(f1, f2), `seed ${seed}: first element that differs between runs`).toBe(-1);
  });

  it('invocations not a multiple of the workgroup, and a 2-D grid', async () => {
    const rt = await runtime();
    const seed = freshSeed();
    // 3·41·(24/2) = 1476 pairs: not a multiple of 64.
    const small: Shape = { B: 3, T: 41, nHead: 2, nKvHead: 1, headDim: 24 };
    const inv = ropeInvFreq({ headDim: 24, ropeTheta: 10000 });
    const x = inputs(seed, small);
    for (const wg of [1, 8, 256]) {
      const out = await runGpu(rt, small, inv, x, 'forward', wg);
      expectRel(seed, `forward 1476 pairs, wg ${wg}`, out, refRope(f64(x), small, hfAngle(inv), 1), 1e-6);
    }
    // 70001 pairs (headDim 2) one per workgroup (wg 1): over the 65535 workgroups a dimension allows.
    const big: Shape = { B: 1, T: 70001, nHead: 1, nKvHead: 1, headDim: 2 };
    const inv2 = ropeInvFreq({ headDim: 2, ropeTheta: 10000 });
    const xb = inputs(seed, big);
    const qkv = rt.memory.upload('t.qkv', xb);
    const invFreq = rt.memory.upload('t.invFreq', inv2);
    const d = await ropeForward(rt, { qkv, invFreq, ...big, wg: 1 });
    expect(d.workgroups[1]).toBeGreaterThan(1);
    await rt.steps.run('rope-2d', [d]);
    const out = await rt.memory.readFloat32(qkv);
    rt.memory.destroy(qkv);
    rt.memory.destroy(invFreq);
    expectWritten(seed, 'forward 2-D grid', out);
    expectRel(seed, 'forward 2-D grid', out, refRope(f64(xb), big, hfAngle(inv2), 1), 1e-6);
  });

  it('ropeInvFreq: default matches 1/θ^(2i/d), llama3 scaling by region', () => {
    for (const [headDim, ropeTheta] of [[64, 10000], [128, 500000], [128, 1e6], [256, 10000], [80, 10000]] as const) {
      const inv = ropeInvFreq({ headDim, ropeTheta });
      expect(inv.length).toBe(headDim / 2);
      const want = Array.from(inv, (_, i) => 1 / Math.pow(ropeTheta, (2 * i) / headDim));
      // A few float32 roundings (exponent, pow, reciprocal): relative ≲ 4 ulp.
      for (let i = 0; i < inv.length; i++) expect(Math.abs(inv[i]! / want[i]! - 1), `headDim ${headDim} θ ${ropeTheta} i ${i}`).toBeLessThan(5e-7);
      expect(inv[0]).toBe(1);
    }
    // Llama 3.1 8B: head_dim 128, rope_theta 500000, factor 8, low 1, high 4, original 8192.
    const cfg: RopeConfig = {
      headDim: 128, ropeTheta: 500000,
      ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    };
    const base = ropeInvFreq({ headDim: 128, ropeTheta: 500000 });
    const scaled = ropeInvFreq(cfg);
    let high = 0;
    let low = 0;
    let medium = 0;
    for (let i = 0; i < 64; i++) {
      const wavelen = (2 * Math.PI) / base[i]!;
      if (wavelen < 2048) {
        high++;
        expect(scaled[i], `i ${i}: high frequency kept`).toBe(base[i]);
      } else if (wavelen > 8192) {
        low++;
        expect(scaled[i], `i ${i}: low frequency / 8`).toBe(Math.fround(base[i]! / 8));
      } else {
        medium++;
        const sm = (8192 / wavelen - 1) / 3;
        const want = ((1 - sm) * base[i]!) / 8 + sm * base[i]!;
        expect(Math.abs(scaled[i]! / want - 1), `i ${i}: smoothed`).toBeLessThan(1e-6);
      }
    }
    expect([high, medium, low].every((n) => n > 0), `regions ${high}/${medium}/${low}`).toBe(true);
    // Golden float32 values from an independent transcription of the same torch float32 ops in numpy
    // (with a correctly rounded pow, as here; torch's own float32 pow may land one ulp away).
    // Llama 3.1 8B (above) and Llama 3.2 1B (head_dim 64, factor 32), all three regions.
    const golden31: [number, number][] = [
      [0, 1], [1, 0.8146172165870667], [20, 0.016560440883040428], [28, 0.0032114461064338684],
      [29, 0.0021665706299245358], [31, 0.0008567514596506953], [34, 0.0001785077911335975],
      [35, 9.556212171446532e-5], [40, 3.428102354519069e-5], [63, 3.068925877869333e-7],
    ];
    for (const [i, v] of golden31) expect(scaled[i], `Llama 3.1 inv_freq[${i}]`).toBe(v);
    const scaled32 = ropeInvFreq({ ...cfg, headDim: 64, ropeScaling: { ...cfg.ropeScaling!, factor: 32 } });
    const golden32: [number, number][] = [
      [0, 1], [1, 0.663601279258728], [14, 0.0032114461064338684], [15, 0.0012905480107292533],
      [16, 0.000429556705057621], [17, 9.708286233944818e-5], [18, 1.9461638657958247e-5], [31, 9.418306490260875e-8],
    ];
    for (const [i, v] of golden32) expect(scaled32[i], `Llama 3.2 inv_freq[${i}]`).toBe(v);
  });

  it('rejects bad shapes and buffers', async () => {
    const rt = await runtime();
    const s = { B: 1, T: 4, nHead: 1, nKvHead: 1 };
    await expect(ropeForward(rt, { qkv: rt.dummy, invFreq: rt.dummy, ...s, headDim: 3 })).rejects.toThrow(/even/);
    await expect(ropeForward(rt, { qkv: rt.dummy, invFreq: rt.dummy, ...s, headDim: 64 })).rejects.toThrow(/qkv holds/);
    await expect(ropeBackward(rt, { dqkv: rt.dummy, invFreq: rt.dummy, ...s, T: 0, headDim: 2 })).rejects.toThrow(/T must/);
    expect(() => ropeInvFreq({ headDim: 7, ropeTheta: 10000 })).toThrow(/even/);
    expect(() => ropeInvFreq({ headDim: 8, ropeTheta: 10000, ropeScaling: { rope_type: 'yarn' } as never })).toThrow(/not supported/);
  });
});
