import { describe, expect, it } from 'vitest';
import { attentionBackward, attentionBufferBytes, attentionDims, attentionForward, attentionLanes, attentionStoresProbabilities, ATTENTION_MAX_HEAD, ATTENTION_STORE_LIMIT_BYTES, type AttentionShape } from '../src/ops/attention.ts';
import { attentionBackward as refBackward, attentionForward as refForward, finiteDifference, toF64 } from './reference/ops.ts';
import { freshSeed, poison, randomArray, relError, rng, runtime } from './util/gpu.ts';

type Shape = [B: number, T: number, C: number, nHead: number];

const SHAPES: Shape[] = [[1, 1, 4, 1], [2, 5, 9, 3], [2, 37, 96, 6], [1, 64, 128, 2], [2, 23, 48, 3]];

interface GpuResult {
  out: Float32Array;
  /** The forward-only variant's output (with `forwardOnly`). */
  outNoSave?: Float32Array;
  stats: Float32Array;
  dqkv?: Float32Array;
}

/**
 * Forward (saving stats; with `forwardOnly` also the forward-only variant) and, given dout, the
 * backward on the GPU; every output NaN-poisoned first. Each head size compiles its own pipelines
 * (seconds each on lavapipe with a cold shader cache), so tests build only what they check.
 */
async function runGpu(shape: AttentionShape, qkv: Float32Array, dout: Float32Array | null, opts: { backwardWithoutOut?: boolean; forwardOnly?: boolean; recompute?: boolean; lanes?: number } = {}): Promise<GpuResult> {
  const rt = await runtime();
  const mem = rt.memory;
  const { B, T } = shape;
  const { qkvWidth, outWidth } = attentionDims(shape);
  // Every test shape is small enough for the stored squares by default; `recompute` takes the other path.
  expect(attentionStoresProbabilities(shape)).toBe(true);
  const storeProbabilities = !opts.recompute;
  const sizes = attentionBufferBytes(shape, { storeProbabilities });
  const bQkv = mem.upload('t.qkv', qkv);
  const bOut = mem.upload('t.out', poison(B * T * outWidth));
  const bOut2 = mem.upload('t.out2', poison(B * T * outWidth));
  const bStats = mem.upload('t.stats', poison(sizes.statsBytes / 4));
  const bufs = [bQkv, bOut, bOut2, bStats];
  const lanes = opts.lanes;
  const items = await attentionForward(rt, { ...shape, qkv: bQkv, out: bOut, stats: bStats, save: true, lanes });
  if (opts.forwardOnly) items.push(...(await attentionForward(rt, { ...shape, qkv: bQkv, out: bOut2, save: false })));
  let bDqkv: GPUBuffer | undefined;
  if (dout) {
    const bDout = mem.upload('t.dout', dout);
    bDqkv = mem.upload('t.dqkv', poison(B * T * qkvWidth));
    const bScratch = mem.upload('t.scratch', poison(sizes.scratchBytes / 4));
    bufs.push(bDout, bDqkv, bScratch);
    items.push(...(await attentionBackward(rt, { ...shape, dout: bDout, qkv: bQkv, stats: bStats, out: opts.backwardWithoutOut ? undefined : bOut, dqkv: bDqkv, scratch: bScratch, storeProbabilities, lanes })));
  }
  await rt.steps.run('attention-test', items);
  const res: GpuResult = {
    out: await mem.readFloat32(bOut, 0, B * T * outWidth),
    outNoSave: opts.forwardOnly ? await mem.readFloat32(bOut2, 0, B * T * outWidth) : undefined,
    stats: await mem.readFloat32(bStats, 0, sizes.statsBytes / 4),
    dqkv: bDqkv ? await mem.readFloat32(bDqkv, 0, B * T * qkvWidth) : undefined,
  };
  for (const b of bufs) mem.destroy(b);
  return res;
}

function shapeOf([B, T, C, nHead]: Shape): AttentionShape {
  return { B, T, C, nHead };
}

function expectFinite(x: Float32Array, what: string, seed: number): void {
  const bad = x.findIndex((v) => !Number.isFinite(v));
  expect(bad, `seed ${seed}: ${what} element ${bad} not written / not finite`).toBe(-1);
}

/** Reference logsumexp per row, recovered from the probabilities: L_i = s_i0 − ln p_i0 (key 0 is always visible). */
function refStats(qkv: Float64Array, probs: Float64Array, s: AttentionShape): Float64Array {
  const { B, T, C, nHead } = s;
  const hs = C / nHead;
  const L = new Float64Array(B * nHead * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let t = 0; t < T; t++) {
        let dot = 0;
        for (let d = 0; d < hs; d++) dot += qkv[(b * T + t) * 3 * C + h * hs + d]! * qkv[(b * T) * 3 * C + C + h * hs + d]!;
        L[(b * nHead + h) * T + t] = dot / Math.sqrt(hs) - Math.log(probs[(b * nHead + h) * T * T + t * T]!);
      }
    }
  }
  return L;
}

describe('attention forward', () => {
  for (const sh of SHAPES) {
    it(`B,T,C,nHead = ${sh.join(',')}: out and stats vs float64; forward-only equals saving`, async () => {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
      const g = await runGpu(s, qkv, null, { forwardOnly: true });
      expectFinite(g.out, 'out', seed);
      expectFinite(g.stats, 'stats', seed);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      expect(relError(g.out, ref.out), `seed ${seed}`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.stats, refStats(toF64(qkv), ref.probs, s)), `seed ${seed} stats`).toBeLessThanOrEqual(1e-5);
      expect(Buffer.from(g.outNoSave!.buffer).equals(Buffer.from(g.out.buffer)), `seed ${seed}: forward-only output differs`).toBe(true);
    });
  }

  it('head sizes 4, 5 and 128, T spanning several tiles (1,130,8,2), (1,70,10,2), (1,41,256,2)', async () => {
    for (const sh of [[1, 130, 8, 2], [1, 70, 10, 2], [1, 41, 256, 2]] as Shape[]) {
      const seed = freshSeed();
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, rng(seed));
      const g = await runGpu(s, qkv, null);
      expectFinite(g.out, 'out', seed);
      expect(relError(g.out, refForward(toF64(qkv), s.B, s.T, s.C, s.nHead).out), `seed ${seed} ${sh}`).toBeLessThanOrEqual(1e-5);
    }
  });

  it('stable for scores far beyond exp range (running max)', async () => {
    const seed = freshSeed();
    const s = shapeOf([2, 37, 96, 6]); // a shape compiled above (each new shape recompiles on lavapipe)
    const qkv = randomArray(s.B * s.T * 3 * s.C, rng(seed), 40); // scores up to ~±1000
    const g = await runGpu(s, qkv, new Float32Array(s.B * s.T * s.C).fill(1));
    expectFinite(g.out, 'out', seed);
    expectFinite(g.dqkv!, 'dqkv', seed);
    expect(relError(g.out, refForward(toF64(qkv), s.B, s.T, s.C, s.nHead).out), `seed ${seed}`).toBeLessThanOrEqual(1e-4);
  });
});

describe('attention backward', () => {
  // Default: p and dS stored by the first pass. On one shape (head size 3: cheap to compile; each
  // variant compiles its own pipelines) also without the forward output (D from an extra sweep),
  // stored and recomputing; the recomputing path with GQA, window and softcap is tested below.
  const WITHOUT_OUT = new Set(['2,5,9,3']);
  for (const sh of SHAPES) {
    const variants: { withoutOut: boolean; recompute: boolean }[] = WITHOUT_OUT.has(sh.join(','))
      ? [{ withoutOut: false, recompute: false }, { withoutOut: true, recompute: false }, { withoutOut: true, recompute: true }]
      : [{ withoutOut: false, recompute: false }];
    it(`B,T,C,nHead = ${sh.join(',')}: dqkv vs float64 backward${variants.length > 1 ? ' (stored squares, with and without the forward output; recomputing)' : ''}`, async () => {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
      const dout = randomArray(s.B * s.T * s.C, next);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      const dref = refBackward(toF64(dout), toF64(qkv), ref.probs, s.B, s.T, s.C, s.nHead);
      for (const v of variants) {
        const g = await runGpu(s, qkv, dout, { backwardWithoutOut: v.withoutOut, recompute: v.recompute });
        expectFinite(g.dqkv!, 'dqkv', seed);
        expect(relError(g.dqkv!, dref), `seed ${seed} without out: ${v.withoutOut}, recompute: ${v.recompute}`).toBeLessThanOrEqual(1e-4);
      }
    });
  }

  it('head sizes 4 and 128 over several tiles (1,130,8,2), (1,41,256,2)', async () => {
    for (const sh of [[1, 130, 8, 2], [1, 41, 256, 2]] as Shape[]) {
      const seed = freshSeed();
      const next = rng(seed);
      const s = shapeOf(sh);
      const qkv = randomArray(s.B * s.T * 3 * s.C, next);
      const dout = randomArray(s.B * s.T * s.C, next);
      const ref = refForward(toF64(qkv), s.B, s.T, s.C, s.nHead);
      const g = await runGpu(s, qkv, dout);
      expectFinite(g.dqkv!, 'dqkv', seed);
      expect(relError(g.dqkv!, refBackward(toF64(dout), toF64(qkv), ref.probs, s.B, s.T, s.C, s.nHead)), `seed ${seed} ${sh}`).toBeLessThanOrEqual(1e-4);
    }
  });

  it('matches central finite differences of the float64 forward on (1,4,6,2)', async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s = shapeOf([1, 4, 6, 2]);
    const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
    const dout = randomArray(s.B * s.T * s.C, next);
    const g = await runGpu(s, qkv, dout);
    const x = toF64(qkv);
    const dO = toF64(dout);
    const f = (q: Float64Array) => {
      const o = refForward(q, s.B, s.T, s.C, s.nHead).out;
      let sum = 0;
      for (let i = 0; i < o.length; i++) sum += o[i]! * dO[i]!;
      return sum;
    };
    const idx = Array.from({ length: 20 }, () => Math.floor(next() * x.length));
    const fd = idx.map((i) => finiteDifference(f, x, i));
    const gpu = idx.map((i) => g.dqkv![i]!);
    expect(relError(gpu, fd), `seed ${seed} at ${idx}`).toBeLessThanOrEqual(1e-3);
  });

  it('is deterministic: two runs are bit-identical', async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s = shapeOf([2, 37, 96, 6]);
    const qkv = randomArray(s.B * s.T * 3 * s.C, next, 2);
    const dout = randomArray(s.B * s.T * s.C, next);
    const a = await runGpu(s, qkv, dout);
    const b = await runGpu(s, qkv, dout);
    expect(Buffer.from(a.out.buffer).equals(Buffer.from(b.out.buffer)), `seed ${seed}: out`).toBe(true);
    expect(Buffer.from(a.stats.buffer).equals(Buffer.from(b.stats.buffer)), `seed ${seed}: stats`).toBe(true);
    expect(Buffer.from(a.dqkv!.buffer).equals(Buffer.from(b.dqkv!.buffer)), `seed ${seed}: dqkv`).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Llama / Qwen2 / Gemma2 generalisations: grouped-query attention, a head size independent of C,
// sliding window, logit soft-capping, the caller's scale. Float64 reference below (independent of
// test/reference/ops.ts, which is GPT-2's; the two agree on GPT-2 shapes, checked below).
// ---------------------------------------------------------------------------------------------

interface Cfg { B: number; T: number; nHead: number; nKv: number; hd: number; window: number; softcap: number; scale: number }

function cfgOf(s: AttentionShape): Cfg {
  const hd = s.headDim ?? s.C / s.nHead;
  return { B: s.B, T: s.T, nHead: s.nHead, nKv: s.nKvHead ?? s.nHead, hd, window: s.window ?? 0, softcap: s.softcap ?? 0, scale: s.scale ?? 1 / Math.sqrt(hd) };
}

/** Offsets into qkv [B, T, (nHead + 2 nKv)·hd] = [q heads | k heads | v heads] and out [B, T, nHead·hd]. */
function layout(c: Cfg) {
  const W = (c.nHead + 2 * c.nKv) * c.hd;
  const Cq = c.nHead * c.hd;
  const kvOf = (h: number) => Math.floor(h / (c.nHead / c.nKv)); // HF repeat_kv
  return {
    W, Cq, kvOf,
    q: (b: number, t: number, h: number) => (b * c.T + t) * W + h * c.hd,
    k: (b: number, t: number, kh: number) => (b * c.T + t) * W + (c.nHead + kh) * c.hd,
    v: (b: number, t: number, kh: number) => (b * c.T + t) * W + (c.nHead + c.nKv + kh) * c.hd,
    o: (b: number, t: number, h: number) => (b * c.T + t) * Cq + h * c.hd,
  };
}

/** Keys row i sees (HF: kv_idx ≤ q_idx and kv_idx > q_idx − sliding_window). */
function keyRange(c: Cfg, i: number): [number, number] {
  return [c.window > 0 ? Math.max(0, i - c.window + 1) : 0, i];
}

/** Raw scores scale·q_i·k_j (j over keyRange), and the capped ones. */
function scores(qkv: Float64Array, c: Cfg, L: ReturnType<typeof layout>, b: number, h: number, i: number) {
  const [j0, j1] = keyRange(c, i);
  const raw: number[] = [];
  for (let j = j0; j <= j1; j++) {
    let d = 0;
    const qa = L.q(b, i, h), ka = L.k(b, j, L.kvOf(h));
    for (let x = 0; x < c.hd; x++) d += qkv[qa + x]! * qkv[ka + x]!;
    raw.push(c.scale * d);
  }
  const s = raw.map((r) => (c.softcap > 0 ? c.softcap * Math.tanh(r / c.softcap) : r));
  return { j0, raw, s };
}

function refGqaForward(qkv: Float64Array, c: Cfg): { out: Float64Array; L: Float64Array } {
  const Ly = layout(c);
  const out = new Float64Array(c.B * c.T * Ly.Cq);
  const L = new Float64Array(c.B * c.nHead * c.T);
  for (let b = 0; b < c.B; b++) {
    for (let h = 0; h < c.nHead; h++) {
      for (let i = 0; i < c.T; i++) {
        const { j0, s } = scores(qkv, c, Ly, b, h, i);
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, x) => a + x, 0);
        L[(b * c.nHead + h) * c.T + i] = m + Math.log(sum);
        const oa = Ly.o(b, i, h);
        e.forEach((w, n) => {
          const va = Ly.v(b, j0 + n, Ly.kvOf(h));
          for (let x = 0; x < c.hd; x++) out[oa + x] += (w / sum) * qkv[va + x]!;
        });
      }
    }
  }
  return { out, L };
}

/** Analytic float64 gradient of Σ out·dout with respect to qkv (dk, dv summed over each group). */
function refGqaBackward(dout: Float64Array, qkv: Float64Array, c: Cfg): Float64Array {
  const Ly = layout(c);
  const dqkv = new Float64Array(qkv.length);
  for (let b = 0; b < c.B; b++) {
    for (let h = 0; h < c.nHead; h++) {
      const kh = Ly.kvOf(h);
      for (let i = 0; i < c.T; i++) {
        const { j0, raw, s } = scores(qkv, c, Ly, b, h, i);
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, x) => a + x, 0);
        const p = e.map((x) => x / sum);
        const oa = Ly.o(b, i, h), qa = Ly.q(b, i, h);
        const dP = p.map((_, n) => {
          let d = 0;
          const va = Ly.v(b, j0 + n, kh);
          for (let x = 0; x < c.hd; x++) d += dout[oa + x]! * qkv[va + x]!;
          return d;
        });
        const D = p.reduce((a, w, n) => a + w * dP[n]!, 0);
        p.forEach((w, n) => {
          const j = j0 + n;
          const ka = Ly.k(b, j, kh), va = Ly.v(b, j, kh);
          const t = c.softcap > 0 ? Math.tanh(raw[n]! / c.softcap) : 0;
          const dRaw = w * (dP[n]! - D) * (c.softcap > 0 ? 1 - t * t : 1); // through s = c·tanh(raw/c)
          for (let x = 0; x < c.hd; x++) {
            dqkv[qa + x] += c.scale * dRaw * qkv[ka + x]!;
            dqkv[ka + x] += c.scale * dRaw * qkv[qa + x]!;
            dqkv[va + x] += w * dout[oa + x]!;
          }
        });
      }
    }
  }
  return dqkv;
}

function dotWith(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Cold-cache compiles of a head size of its own cost ~30 s each: these run with `npm run test:heavy`. */
interface GqaCase { name: string; s: AttentionShape; amp: number; heavy?: boolean }
const HEAVY = process.env.SEMFREEZE_HEAVY === '1';

// Kernels compile per (head size, GQA, window, softcap on/off): five new variants, reused across
// cases (tens of seconds each with a cold Mesa shader cache on 2 cores).
const GQA_CASES: GqaCase[] = [
  // hd 24 (C = 96 but 6 heads of 24), plain causal: GQA ratios 3 and 6 (MQA); T 1, 7, 37, 70; MHA (ratio 1)
  { name: 'GQA 6/2, hd 24, T 37', s: { B: 2, T: 37, C: 96, nHead: 6, nKvHead: 2, headDim: 24 }, amp: 2 },
  { name: 'MQA 6/1, hd 24, T 70, scale 0.35', s: { B: 1, T: 70, C: 96, nHead: 6, nKvHead: 1, headDim: 24, scale: 0.35 }, amp: 2 },
  { name: 'MHA 6/6, hd 16 given with C 40, T 7', s: { B: 2, T: 7, C: 40, nHead: 6, nKvHead: 6, headDim: 16 }, amp: 2 }, // GPT-2's (2,37,96,6) pipelines
  { name: 'GQA 6/2, hd 24, T 1', s: { B: 2, T: 1, C: 96, nHead: 6, nKvHead: 2, headDim: 24 }, amp: 2 },
  // hd 24 with window and softcap 5 (inputs large enough that the cap bites)
  { name: 'GQA 6/2, hd 24, T 37, window 3, softcap 5, scale 0.3', s: { B: 2, T: 37, C: 96, nHead: 6, nKvHead: 2, headDim: 24, window: 3, softcap: 5, scale: 0.3 }, amp: 3 },
  { name: 'MQA 6/1, hd 24, T 70, window 16, softcap 5', s: { B: 1, T: 70, C: 96, nHead: 6, nKvHead: 1, headDim: 24, window: 16, softcap: 5 }, amp: 3 },
  // hd 80, window only; hd 40, softcap only
  { name: 'GQA 6/2, hd 80, T 70, window 16', s: { B: 1, T: 70, C: 96, nHead: 6, nKvHead: 2, headDim: 80, window: 16 }, amp: 1, heavy: true },
  { name: 'GQA 6/3, hd 40, T 37, softcap 5, scale 1/8', s: { B: 2, T: 37, C: 96, nHead: 6, nKvHead: 3, headDim: 40, softcap: 5, scale: 0.125 }, amp: 3, heavy: true },
  // Gemma2's head size (C 2304, hd 256 ≠ C/nHead), sliding window and softcap
  { name: 'Gemma2-like 2/1, hd 256, T 37, window 16, softcap 5, scale 1/16', s: { B: 1, T: 37, C: 2304, nHead: 2, nKvHead: 1, headDim: 256, window: 16, softcap: 5, scale: 1 / 16 }, amp: 3 },
];

describe('attention: GQA, head size ≠ C/nHead, sliding window, softcap, scale', () => {
  it('float64 reference: matches the GPT-2 reference; pinned to transformers 5.18 Gemma2 eager attention', () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s: AttentionShape = { B: 2, T: 9, C: 12, nHead: 3 };
    const qkv = toF64(randomArray(2 * 9 * 36, next, 2));
    const dout = toF64(randomArray(2 * 9 * 12, next));
    const ref = refForward(qkv, 2, 9, 12, 3);
    expect(relError(refGqaForward(qkv, cfgOf(s)).out, ref.out), `seed ${seed}`).toBeLessThanOrEqual(1e-12);
    expect(relError(refGqaBackward(dout, qkv, cfgOf(s)), refBackward(dout, qkv, ref.probs, 2, 9, 12, 3)), `seed ${seed}`).toBeLessThanOrEqual(1e-12);
    // Gemma2Config(num_attention_heads=2, num_key_value_heads=1, head_dim=4, sliding_window=3,
    // attn_logit_softcapping=5, query_pre_attn_scalar=7): create_sliding_window_causal_mask and
    // gemma2's eager_attention_forward in float64 (rows t see keys t−2..t) on
    // qkv[t][c] = 2 sin(0.7 (16 t + c) + 0.3). (Its softmax runs in float32: agreement ~5e-8.)
    const hf = [1.325938460164, 0.049550850907, -1.250141297786, -1.961872460133, 1.325938460164, 0.049550850907, -1.250141297786, -1.961872460133, 1.532026962605, 1.015306937931, 0.02107219574, -0.98307312937, 1.416530321774, 0.474075027059, -0.691345160508, -1.531614916523, 0.482071523268, 1.305017014899, 1.514192612969, 1.011219765248, 1.320733520672, 0.087649995257, -1.186656692496, -1.902860195746, -1.134913303316, -0.227525013899, 0.786871844731, 1.431190579573, 1.583981634943, 1.862774730887, 1.265475764236, 0.073003772061, -0.920932433748, -1.502016532111, -1.376678785766, -0.603867495276, -0.645657001804, 0.691215999363, 1.702999315482, 1.913835443432, 0.605632613079, -0.441556638488, -1.281074903461, -1.518083623989, -1.86695662709, -1.611405135629, -0.597984629982, 0.696677390913];
    const x = Float64Array.from({ length: 6 * 16 }, (_, n) => 2 * Math.sin(0.7 * n + 0.3));
    const gemma: Cfg = { B: 1, T: 6, nHead: 2, nKv: 1, hd: 4, window: 3, softcap: 5, scale: 7 ** -0.5 };
    expect(relError(refGqaForward(x, gemma).out, hf)).toBeLessThanOrEqual(1e-6);
    // The window and the cap both change this output (the fixture would catch an off-by-one window).
    expect(relError(refGqaForward(x, { ...gemma, window: 4 }).out, hf)).toBeGreaterThan(1e-2);
    expect(relError(refGqaForward(x, { ...gemma, softcap: 0 }).out, hf)).toBeGreaterThan(1e-2);
  });

  for (const tc of GQA_CASES) {
    (tc.heavy && !HEAVY ? it.skip : it)(`${tc.name}: out, stats and dqkv vs float64`, async () => {
      const seed = freshSeed();
      const next = rng(seed);
      const s = tc.s;
      const c = cfgOf(s);
      const { qkvWidth, outWidth } = attentionDims(s);
      const qkv = randomArray(s.B * s.T * qkvWidth, next, tc.amp);
      const dout = randomArray(s.B * s.T * outWidth, next);
      const x = toF64(qkv);
      const ref = refGqaForward(x, c);
      // The features under test change the result (a window longer than T does not).
      if (c.window > 0 && c.T > c.window) expect(relError(refGqaForward(x, { ...c, window: 0 }).out, ref.out), `seed ${seed}: window has no effect`).toBeGreaterThan(1e-2);
      if (c.softcap > 0) expect(relError(refGqaForward(x, { ...c, softcap: 0 }).out, ref.out), `seed ${seed}: softcap does not bite`).toBeGreaterThan(1e-2);
      const dref = refGqaBackward(toF64(dout), x, c);
      const g = await runGpu(s, qkv, dout);
      expectFinite(g.out, 'out', seed);
      expectFinite(g.stats, 'stats', seed);
      expectFinite(g.dqkv!, 'dqkv', seed);
      expect(relError(g.out, ref.out), `seed ${seed}: out`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.stats, ref.L), `seed ${seed}: stats`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.dqkv!, dref), `seed ${seed}: dqkv`).toBeLessThanOrEqual(1e-4);
    });
  }

  it('backward matches central finite differences (GQA 6/2, hd 24, T 7, window 3, softcap 5, scale 0.3) and is deterministic', async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const s: AttentionShape = { B: 1, T: 7, C: 96, nHead: 6, nKvHead: 2, headDim: 24, window: 3, softcap: 5, scale: 0.3 }; // compiled above
    const c = cfgOf(s);
    const { qkvWidth, outWidth } = attentionDims(s);
    const qkv = randomArray(s.T * qkvWidth, next, 3);
    const dout = randomArray(s.T * outWidth, next);
    const g = await runGpu(s, qkv, dout);
    const x = toF64(qkv);
    const dO = toF64(dout);
    const f = (q: Float64Array) => dotWith(refGqaForward(q, c).out, dO);
    // 10 elements in each of the q, k and v column blocks, over all rows
    const idx: number[] = [];
    const blocks = [[0, 6 * 24], [6 * 24, 8 * 24], [8 * 24, 10 * 24]] as const;
    for (const [lo, hi] of blocks) for (let n = 0; n < 10; n++) idx.push(Math.floor(next() * s.T) * qkvWidth + lo + Math.floor(next() * (hi - lo)));
    const fd = idx.map((i) => finiteDifference(f, x, i));
    const analytic = refGqaBackward(dO, x, c);
    expect(relError(idx.map((i) => analytic[i]!), fd), `seed ${seed}: float64 analytic vs finite differences`).toBeLessThanOrEqual(1e-6);
    expect(relError(idx.map((i) => g.dqkv![i]!), fd), `seed ${seed} at ${idx}`).toBeLessThanOrEqual(1e-3);
    const again = await runGpu(s, qkv, dout);
    expect(Buffer.from(again.out.buffer).equals(Buffer.from(g.out.buffer)), `seed ${seed}: out`).toBe(true);
    expect(Buffer.from(again.dqkv!.buffer).equals(Buffer.from(g.dqkv!.buffer)), `seed ${seed}: dqkv`).toBe(true);
  });
});

describe('attention: the recomputing backward with GQA, window and softcap; 32 lanes per workgroup (hardware GPUs\' default; tiles of 128 and 256 rows)', () => {
  // Head size 4 (fast to compile); T spans several tiles of either size.
  const CASES: { name: string; s: AttentionShape; recompute?: boolean; withoutOut?: boolean; lanes?: number }[] = [
    { name: 'GQA 6/2, hd 4, T 150, window 40, softcap 5, recomputing', s: { B: 1, T: 150, C: 24, nHead: 6, nKvHead: 2, headDim: 4, window: 40, softcap: 5 }, recompute: true },
    { name: '32 lanes: MHA (2,300,8,2), stored squares', s: { B: 2, T: 300, C: 8, nHead: 2 }, lanes: 32 },
    { name: '32 lanes: GQA 6/2, hd 4, T 150, window 40, softcap 5, recomputing without the forward output', s: { B: 1, T: 150, C: 24, nHead: 6, nKvHead: 2, headDim: 4, window: 40, softcap: 5 }, recompute: true, withoutOut: true, lanes: 32 },
  ];
  for (const tc of CASES) {
    it(`${tc.name}: out, stats and dqkv vs float64`, async () => {
      const rt = await runtime();
      expect(attentionLanes(rt)).toBe(8); // lavapipe; 32 is forced where a case says so
      const seed = freshSeed();
      const next = rng(seed);
      const s = tc.s;
      const c = cfgOf(s);
      const { qkvWidth, outWidth } = attentionDims(s);
      const qkv = randomArray(s.B * s.T * qkvWidth, next, 3);
      const dout = randomArray(s.B * s.T * outWidth, next);
      const x = toF64(qkv);
      const ref = refGqaForward(x, c);
      const g = await runGpu(s, qkv, dout, { lanes: tc.lanes, recompute: tc.recompute, backwardWithoutOut: tc.withoutOut });
      expectFinite(g.dqkv!, 'dqkv', seed);
      expect(relError(g.out, ref.out), `seed ${seed}: out`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.stats, ref.L), `seed ${seed}: stats`).toBeLessThanOrEqual(1e-5);
      expect(relError(g.dqkv!, refGqaBackward(toF64(dout), x, c)), `seed ${seed}: dqkv`).toBeLessThanOrEqual(1e-4);
    });
  }
});

describe('attention host module', () => {
  it('reports stats/scratch sizes and rejects bad shapes', async () => {
    // p and dS stored up to ATTENTION_STORE_LIMIT_BYTES (B=4, T=256, 12 heads: 24 MiB), recomputed past it
    const sq = 2 * 4 * 4 * 12 * 256 * 256;
    expect(sq).toBeLessThanOrEqual(ATTENTION_STORE_LIMIT_BYTES);
    expect(attentionBufferBytes({ B: 4, T: 256, C: 768, nHead: 12 })).toEqual({ statsBytes: 4 * 4 * 12 * 256, scratchBytes: 4 * 4 * 12 * 256 + sq });
    expect(attentionBufferBytes({ B: 4, T: 256, C: 768, nHead: 12 }, { storeProbabilities: false })).toEqual({ statsBytes: 4 * 4 * 12 * 256, scratchBytes: 4 * 4 * 12 * 256 });
    expect(attentionStoresProbabilities({ B: 4, T: 512, C: 768, nHead: 12 })).toBe(false);
    expect(attentionBufferBytes({ B: 4, T: 512, C: 768, nHead: 12 })).toEqual({ statsBytes: 4 * 4 * 12 * 512, scratchBytes: 4 * 4 * 12 * 512 });
    expect(() => attentionBufferBytes({ B: 1, T: 4, C: 10, nHead: 3 })).toThrow(/divisible/);
    // GPT-2 defaults: today's layout
    expect(attentionDims({ B: 1, T: 4, C: 768, nHead: 12 })).toEqual({ hd: 64, nKvHead: 12, qkvWidth: 3 * 768, outWidth: 768, window: 0, softcap: 0, scale: 1 / 8 });
    // Gemma2 2B: 8 heads of 256 with 4 kv heads on C 2304; a window ≥ T masks nothing
    expect(attentionDims({ B: 1, T: 64, C: 2304, nHead: 8, nKvHead: 4, headDim: 256, window: 4096, softcap: 50, scale: 256 ** -0.5 }))
      .toEqual({ hd: 256, nKvHead: 4, qkvWidth: 16 * 256, outWidth: 8 * 256, window: 0, softcap: 50, scale: 1 / 16 });
    expect(attentionDims({ B: 1, T: 64, C: 10, nHead: 3, headDim: 7, window: 5 }).window).toBe(5);
    expect(attentionBufferBytes({ B: 2, T: 5, C: 64, nHead: 8, nKvHead: 2 })).toEqual({ statsBytes: 4 * 2 * 8 * 5, scratchBytes: 4 * 2 * 8 * 5 * (1 + 2 * 5) });
    expect(() => attentionDims({ B: 1, T: 4, C: 96, nHead: 6, nKvHead: 4 })).toThrow(/multiple of nKvHead/);
    expect(() => attentionDims({ B: 1, T: 4, C: 96, nHead: 6, headDim: ATTENTION_MAX_HEAD + 1 })).toThrow(/head size 257 over the supported 256/);
    expect(() => attentionDims({ B: 1, T: 4, C: 96, nHead: 6, window: -1 })).toThrow(/window/);
    expect(() => attentionDims({ B: 1, T: 4, C: 96, nHead: 6, softcap: -5 })).toThrow(/softcap/);
    expect(() => attentionDims({ B: 1, T: 4, C: 96, nHead: 6, scale: 0 })).toThrow(/scale/);
    const rt = await runtime();
    const x = rt.memory.storage('t.x', 4 * 3 * 8);
    await expect(attentionForward(rt, { B: 1, T: 2, C: 4, nHead: 1, qkv: x, out: x, save: true })).rejects.toThrow(/stats/);
    await expect(attentionForward(rt, { B: 1, T: 4, C: 4, nHead: 1, qkv: x, out: x, save: false })).rejects.toThrow(/qkv/);
    // GQA row width (1 + 2·1)·4 = 12 per token: 8 rows need 96 floats, x has 24
    await expect(attentionForward(rt, { B: 1, T: 8, C: 8, nHead: 1, nKvHead: 1, headDim: 4, qkv: x, out: x, save: false })).rejects.toThrow(/qkv/);
    rt.memory.destroy(x);
  });
});
