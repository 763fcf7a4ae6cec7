// The float64 reference checks itself: every backward against central finite differences of its own
// forward, and (when the fixtures exist) the whole model against Hugging Face transformers.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/model/config.ts';
import {
  attentionBackward, attentionForward, crossEntropyBackward, crossEntropyForward, dot, embeddingBackward,
  embeddingForward, finiteDifference, geluBackward, geluForward, gpt2Backward, gpt2Forward, gpt2ParamShapes,
  layernormBackward, layernormForward, matmul, matmulBackward, matmulForward, mulberry32, randInts, randn,
  randomGpt2Params, relError, residualBackward, residualForward, transpose, type Params, type RefConfig,
} from './reference/ops.ts';

const H = 1e-5;
const TOL = 1e-6;

/** Finite-difference gradient of f w.r.t. every entry of x. */
function fdGrad(f: (x: Float64Array) => number, x: Float64Array): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) g[i] = finiteDifference(f, x, i, H);
  return g;
}

function expectClose(name: string, out: Float64Array, ref: Float64Array, tol = TOL): void {
  const e = relError(out, ref);
  expect(e, `${name}: relative error ${e.toExponential(3)}`).toBeLessThanOrEqual(tol);
}

describe('helpers', () => {
  it('mulberry32 is reproducible and randn is roughly standard normal', () => {
    const a = randn(20000, mulberry32(42));
    const b = randn(20000, mulberry32(42));
    expect(relError(a, b)).toBe(0);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const varc = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(varc - 1)).toBeLessThan(0.05);
  });

  it('finiteDifference restores x and is exact for quadratics', () => {
    const x = Float64Array.from([1, 2, 3]);
    const d = finiteDifference((v) => v[0] * v[1] + v[2] * v[2], x, 2, 1e-3);
    expect(d).toBeCloseTo(6, 9);
    expect([...x]).toEqual([1, 2, 3]);
  });
});

describe('matmul', () => {
  const rng = mulberry32(1);
  const M = 5, K = 7, N = 3;

  it('generic matmul: all four transposes agree with the explicit loop on transposed copies', () => {
    const A = randn(M * K, rng);
    const B = randn(K * N, rng);
    const C = new Float64Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) C[m * N + n] += A[m * K + k] * B[k * N + n];
    expectClose('A·B', matmul(A, B, M, K, N), C, 1e-15);
    const At = transpose(A, M, K); // [K, M]
    const Bt = transpose(B, K, N); // [N, K]
    expectClose('Aᵀ·B', matmul(At, B, M, K, N, { transA: true }), C, 1e-15);
    expectClose('A·Bᵀ', matmul(A, Bt, M, K, N, { transB: true }), C, 1e-15);
    expectClose('Aᵀ·Bᵀ', matmul(At, Bt, M, K, N, { transA: true, transB: true }), C, 1e-15);
  });

  it('hand-checked 2x2', () => {
    const A = Float64Array.from([1, 2, 3, 4]);
    const B = Float64Array.from([5, 6, 7, 8]);
    expect([...matmul(A, B, 2, 2, 2)]).toEqual([19, 22, 43, 50]);
    expect([...matmul(A, B, 2, 2, 2, { transB: true })]).toEqual([17, 23, 39, 53]);
    expect([...matmul(A, B, 2, 2, 2, { transA: true })]).toEqual([26, 30, 38, 44]);
  });

  for (const layout of ['KN', 'NK'] as const) {
    it(`matmulForward (${layout}) = x·W + b and its backward matches finite differences`, () => {
      const x = randn(M * K, rng);
      const w = randn(K * N, rng);
      const b = randn(N, rng);
      const dout = randn(M * N, rng);
      const Wkn = layout === 'KN' ? w : transpose(w, N, K);
      const y = matmulForward(x, w, b, M, K, N, layout);
      const ref = matmul(x, Wkn, M, K, N);
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) ref[m * N + n] += b[n];
      expectClose('forward', y, ref, 1e-15);

      const g = matmulBackward(dout, x, w, M, K, N, layout);
      expectClose('dx', g.dinp, fdGrad((v) => dot(dout, matmulForward(v, w, b, M, K, N, layout)), x));
      expectClose('dW', g.dweight, fdGrad((v) => dot(dout, matmulForward(x, v, b, M, K, N, layout)), w));
      expectClose('db', g.dbias, fdGrad((v) => dot(dout, matmulForward(x, w, v, M, K, N, layout)), b));
      // the closed forms the GPU kernels implement
      expectClose('dx = dy·Wᵀ', g.dinp, matmul(dout, Wkn, M, N, K, { transB: true }), 1e-14);
      const dWkn = matmul(x, dout, K, M, N, { transA: true });
      expectClose('dW = xᵀ·dy', layout === 'KN' ? g.dweight : transpose(g.dweight, N, K), dWkn, 1e-14);
      // null bias
      expectClose('no bias', matmulForward(x, w, null, M, K, N, layout), matmul(x, Wkn, M, K, N), 1e-15);
    });
  }
});

describe('layernorm', () => {
  const rng = mulberry32(2);
  const rows = 5, C = 7, eps = 1e-5;

  it('normalizes with biased variance and eps inside the sqrt', () => {
    const x = randn(rows * C, rng, 3);
    const ones = new Float64Array(C).fill(1);
    const zeros = new Float64Array(C);
    const { out, mean, rstd } = layernormForward(x, ones, zeros, rows, C, eps);
    for (let r = 0; r < rows; r++) {
      const row = x.subarray(r * C, (r + 1) * C);
      const m = row.reduce((s, v) => s + v, 0) / C;
      const v = row.reduce((s, u) => s + (u - m) ** 2, 0) / C;
      expect(mean[r]).toBeCloseTo(m, 12);
      expect(rstd[r]).toBeCloseTo(1 / Math.sqrt(v + eps), 12);
      const o = out.subarray(r * C, (r + 1) * C);
      expect(o.reduce((s, u) => s + u, 0) / C).toBeCloseTo(0, 12);
      expect(o.reduce((s, u) => s + u * u, 0) / C).toBeCloseTo(v / (v + eps), 12);
    }
  });

  it('backward matches finite differences', () => {
    const x = randn(rows * C, rng, 2);
    const gamma = randn(C, rng);
    const beta = randn(C, rng);
    const dout = randn(rows * C, rng);
    const f = (xx: Float64Array, g: Float64Array, b: Float64Array) => dot(dout, layernormForward(xx, g, b, rows, C, eps).out);
    const { mean, rstd } = layernormForward(x, gamma, beta, rows, C, eps);
    const g = layernormBackward(dout, x, mean, rstd, gamma, rows, C);
    expectClose('dx', g.dx, fdGrad((v) => f(v, gamma, beta), x));
    expectClose('dgamma', g.dgamma, fdGrad((v) => f(x, v, beta), gamma));
    expectClose('dbeta', g.dbeta, fdGrad((v) => f(x, gamma, v), beta));
  });
});

describe('gelu', () => {
  it('matches known values of the tanh approximation', () => {
    const y = geluForward(Float64Array.from([0, 1, -1, 3]));
    expect(y[0]).toBe(0);
    expect(y[1]).toBeCloseTo(0.8411919906082768, 14);
    expect(y[2]).toBeCloseTo(-0.15880800939172324, 14);
    expect(y[3]).toBeCloseTo(2.99636261, 7);
  });

  it('backward matches finite differences', () => {
    const rng = mulberry32(3);
    const x = randn(35, rng, 2);
    const dout = randn(35, rng);
    expectClose('dx', geluBackward(dout, x), fdGrad((v) => dot(dout, geluForward(v)), x));
  });
});

describe('attention', () => {
  const B = 2, T = 5, nHead = 3, C = 9; // head size 3

  it('is causal, rows of probs sum to 1, and T=1 returns v', () => {
    const rng = mulberry32(4);
    const qkv = randn(B * T * 3 * C, rng);
    const { probs } = attentionForward(qkv, B, T, C, nHead);
    for (let bh = 0; bh < B * nHead; bh++) {
      for (let t = 0; t < T; t++) {
        let s = 0;
        for (let t2 = 0; t2 < T; t2++) {
          const p = probs[bh * T * T + t * T + t2];
          if (t2 > t) expect(p).toBe(0);
          s += p;
        }
        expect(s).toBeCloseTo(1, 14);
      }
    }
    const one = randn(3 * C, rng);
    const { out } = attentionForward(one, 1, 1, C, nHead);
    expect([...out]).toEqual([...one.subarray(2 * C, 3 * C)]);
  });

  it('matches an independent per-head formulation (softmax(QKᵀ/√hs + mask)·V)', () => {
    const rng = mulberry32(5);
    const qkv = randn(B * T * 3 * C, rng);
    const { out } = attentionForward(qkv, B, T, C, nHead);
    const hs = C / nHead;
    const ref = new Float64Array(B * T * C);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < nHead; h++) {
        // gather Q, K, V [T, hs] for this head
        const Q = new Float64Array(T * hs), K = new Float64Array(T * hs), Vv = new Float64Array(T * hs);
        for (let t = 0; t < T; t++) {
          for (let i = 0; i < hs; i++) {
            const base = (b * T + t) * 3 * C + h * hs + i;
            Q[t * hs + i] = qkv[base];
            K[t * hs + i] = qkv[base + C];
            Vv[t * hs + i] = qkv[base + 2 * C];
          }
        }
        const S = matmul(Q, K, T, hs, T, { transB: true });
        for (let t = 0; t < T; t++) for (let t2 = 0; t2 < T; t2++) S[t * T + t2] = t2 > t ? -Infinity : S[t * T + t2] / Math.sqrt(hs);
        const P = new Float64Array(T * T);
        for (let t = 0; t < T; t++) {
          let z = 0;
          for (let t2 = 0; t2 < T; t2++) z += Math.exp(S[t * T + t2]);
          for (let t2 = 0; t2 < T; t2++) P[t * T + t2] = Math.exp(S[t * T + t2]) / z;
        }
        const O = matmul(P, Vv, T, T, hs);
        for (let t = 0; t < T; t++) for (let i = 0; i < hs; i++) ref[(b * T + t) * C + h * hs + i] = O[t * hs + i];
      }
    }
    expectClose('out', out, ref, 1e-14);
  });

  it('backward matches finite differences', () => {
    const rng = mulberry32(6);
    const qkv = randn(B * T * 3 * C, rng);
    const dout = randn(B * T * C, rng);
    const { probs } = attentionForward(qkv, B, T, C, nHead);
    const dqkv = attentionBackward(dout, qkv, probs, B, T, C, nHead);
    expectClose('dqkv', dqkv, fdGrad((v) => dot(dout, attentionForward(v, B, T, C, nHead).out), qkv));
  });
});

describe('residual and embeddings', () => {
  it('residual forward/backward', () => {
    const rng = mulberry32(7);
    const a = randn(35, rng), b = randn(35, rng), dout = randn(35, rng);
    const g = residualBackward(dout);
    expectClose('da', g.da, fdGrad((v) => dot(dout, residualForward(v, b)), a));
    expectClose('db', g.db, fdGrad((v) => dot(dout, residualForward(a, v)), b));
  });

  it('embedding forward/backward', () => {
    const rng = mulberry32(8);
    const B = 2, T = 5, C = 7, V = 11, maxT = 8;
    const ids = randInts(B * T, V, rng);
    ids[0] = ids[3] = 4; // a repeated token accumulates
    const wte = randn(V * C, rng), wpe = randn(maxT * C, rng), dout = randn(B * T * C, rng);
    const out = embeddingForward(ids, wte, wpe, B, T, C);
    expect(out[(1 * T + 2) * C + 3]).toBe(wte[ids[T + 2] * C + 3] + wpe[2 * C + 3]);
    const g = embeddingBackward(dout, ids, B, T, C, V, maxT);
    expectClose('dwte', g.dwte, fdGrad((v) => dot(dout, embeddingForward(ids, v, wpe, B, T, C)), wte));
    expectClose('dwpe', g.dwpe, fdGrad((v) => dot(dout, embeddingForward(ids, wte, v, B, T, C)), wpe));
    expect(() => embeddingForward([V], wte, wpe, 1, 1, C)).toThrow(/outside/);
  });
});

describe('cross-entropy', () => {
  const rows = 5, V = 11;

  it('uniform logits give log V; large logits stay finite', () => {
    const { loss } = crossEntropyForward(new Float64Array(rows * V).fill(3), randInts(rows, V, mulberry32(9)), rows, V);
    expect(loss).toBeCloseTo(Math.log(V), 14);
    const big = new Float64Array(V).fill(0);
    big[2] = 1000;
    expect(crossEntropyForward(big, [2], 1, V).loss).toBeCloseTo(0, 12);
    expect(crossEntropyForward(big, [3], 1, V).loss).toBeCloseTo(1000, 9);
  });

  it('backward of the mean loss is (softmax − onehot)/rows and matches finite differences', () => {
    const rng = mulberry32(10);
    const logits = randn(rows * V, rng, 3);
    const targets = randInts(rows, V, rng);
    const dl = crossEntropyBackward(logits, targets, rows, V);
    expectClose('dlogits (mean)', dl, fdGrad((v) => crossEntropyForward(v, targets, rows, V).loss, logits));
    const dlosses = randn(rows, rng);
    const dl2 = crossEntropyBackward(logits, targets, rows, V, dlosses);
    expectClose('dlogits (weighted)', dl2, fdGrad((v) => dot(dlosses, crossEntropyForward(v, targets, rows, V).losses), logits));
  });

  it('negative targets are ignored (torch ignore_index)', () => {
    const rng = mulberry32(11);
    const logits = randn(rows * V, rng);
    const targets = Int32Array.from([1, -100, 3, 4, -100]);
    const keep = [0, 2, 3];
    const sub = new Float64Array(keep.length * V);
    keep.forEach((r, i) => sub.set(logits.subarray(r * V, (r + 1) * V), i * V));
    expect(crossEntropyForward(logits, targets, rows, V).loss).toBeCloseTo(crossEntropyForward(sub, [1, 3, 4], 3, V).loss, 14);
    expectClose('dlogits', crossEntropyBackward(logits, targets, rows, V), fdGrad((v) => crossEntropyForward(v, targets, rows, V).loss, logits));
  });
});

describe('gpt2 (float64, tiny)', () => {
  const cfg: RefConfig = { nLayer: 2, nEmbd: 12, nHead: 3, vocabSize: 17, nPositions: 8, layerNormEpsilon: 1e-5 };
  const B = 2, T = 5;

  it('forward: shapes and hidden-state conventions', () => {
    const rng = mulberry32(12);
    const params = randomGpt2Params(cfg, rng);
    const ids = randInts(B * T, cfg.vocabSize, rng);
    const fwd = gpt2Forward(params, cfg, ids, null, B, T);
    expect(fwd.loss).toBeNull();
    expect(fwd.logits.length).toBe(B * T * cfg.vocabSize);
    expect(fwd.hiddenStates.length).toBe(cfg.nLayer + 1);
    expect([...fwd.hiddenStates[0]]).toEqual([...embeddingForward(ids, params.get('wte.weight')!, params.get('wpe.weight')!, B, T, cfg.nEmbd)]);
    expect(fwd.hiddenStates[1]).toBe(fwd.blocks[0].resOut);
    expect(fwd.residual).toBe(fwd.blocks[cfg.nLayer - 1].resOut);
    const lnf = layernormForward(fwd.residual, params.get('ln_f.weight')!, params.get('ln_f.bias')!, B * T, cfg.nEmbd, cfg.layerNormEpsilon);
    expect([...fwd.hiddenStates[cfg.nLayer]]).toEqual([...lnf.out]);
    // causal: changing the last token changes only the last position's logits
    const ids2 = ids.slice();
    ids2[T - 1] = (ids2[T - 1] + 1) % cfg.vocabSize;
    const fwd2 = gpt2Forward(params, cfg, ids2, null, B, T);
    const V = cfg.vocabSize;
    expect([...fwd2.logits.subarray(0, (T - 1) * V)]).toEqual([...fwd.logits.subarray(0, (T - 1) * V)]);
    expect([...fwd2.logits.subarray(T * V)]).toEqual([...fwd.logits.subarray(T * V)]);
  });

  it('backward matches finite differences for sampled entries of every tensor', () => {
    const seed = 13;
    const rng = mulberry32(seed);
    const params = randomGpt2Params(cfg, rng);
    const ids = randInts(B * T, cfg.vocabSize, rng);
    const targets = randInts(B * T, cfg.vocabSize, rng);
    const grads = gpt2Backward(params, cfg, ids, targets, B, T);
    const shapes = gpt2ParamShapes(cfg);
    expect([...grads.keys()]).toEqual([...shapes.keys()]);
    const lossOf = () => gpt2Forward(params, cfg, ids, targets, B, T).loss!;
    const perTensor = 8;
    for (const [name, shape] of shapes) {
      const p = params.get(name)!;
      const g = grads.get(name)!;
      expect(g.length, name).toBe(p.length);
      // wpe rows ≥ T get no gradient: sample the used rows, and check the rest are exactly 0
      const n = name === 'wpe.weight' ? T * shape[1] : p.length;
      if (name === 'wpe.weight') expect(g.subarray(n).every((v) => v === 0)).toBe(true);
      const idx = Array.from({ length: Math.min(perTensor, n) }, () => Math.floor(rng() * n));
      const got = Float64Array.from(idx, (i) => g[i]);
      const fd = Float64Array.from(idx, (i) => finiteDifference(lossOf, p, i, H));
      const e = relError(got, fd);
      expect(e, `${name} [seed ${seed}] idx ${idx}: relative error ${e.toExponential(3)}`).toBeLessThanOrEqual(TOL);
    }
  });

  it('backward with explicit dlogits matches finite differences of Σ dlogits⊙logits', () => {
    const rng = mulberry32(14);
    const params = randomGpt2Params(cfg, rng);
    const ids = randInts(B * T, cfg.vocabSize, rng);
    const dlogits = randn(B * T * cfg.vocabSize, rng);
    const grads = gpt2Backward(params, cfg, ids, null, B, T, { dlogits });
    for (const name of ['h.0.attn.c_attn.weight', 'h.1.mlp.c_fc.bias', 'wte.weight']) {
      const p = params.get(name)!;
      const idx = Array.from({ length: 6 }, () => Math.floor(rng() * p.length));
      const fd = Float64Array.from(idx, (i) => finiteDifference(() => dot(dlogits, gpt2Forward(params, cfg, ids, null, B, T).logits), p, i, H));
      expectClose(name, Float64Array.from(idx, (i) => grads.get(name)![i]), fd);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Against Hugging Face transformers (fixtures produced elsewhere; skipped until they exist)
// ---------------------------------------------------------------------------------------------

interface StTensor { dtype: string; shape: number[]; data: Float64Array }

/** Minimal safetensors reader: 8-byte LE header length, JSON header, raw little-endian data. */
function readSafetensors(file: string): Map<string, StTensor> {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  const base = 8 + headerLen;
  const out = new Map<string, StTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [begin, end] } = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const bytes = buf.subarray(base + begin, base + end);
    const copy = new Uint8Array(bytes); // aligned copy
    let data: Float64Array;
    switch (dtype) {
      case 'F32': data = Float64Array.from(new Float32Array(copy.buffer)); break;
      case 'I32': data = Float64Array.from(new Int32Array(copy.buffer)); break;
      case 'F64': data = new Float64Array(copy.buffer); break;
      case 'I64': data = Float64Array.from(new BigInt64Array(copy.buffer), (v) => Number(v)); break;
      default: throw new Error(`${file}: tensor '${name}' has unsupported dtype ${dtype}`);
    }
    out.set(name, { dtype, shape, data });
  }
  return out;
}

const stripPrefix = (n: string) => (n.startsWith('transformer.') ? n.slice('transformer.'.length) : n);

const FIXTURE = join(import.meta.dirname, 'fixtures', 'gpt2-tiny');
const haveFixture = existsSync(join(FIXTURE, 'reference.safetensors')) && existsSync(join(FIXTURE, 'model.safetensors'));

describe('gpt2 vs Hugging Face transformers', () => {
  it.skipIf(!haveFixture)('forward and gradients match test/fixtures/gpt2-tiny', () => {
    const cfg = parseConfig(readFileSync(join(FIXTURE, 'config.json'), 'utf8'), join(FIXTURE, 'config.json'));
    const params: Params = new Map();
    const shapes = gpt2ParamShapes(cfg);
    for (const [name, t] of readSafetensors(join(FIXTURE, 'model.safetensors'))) {
      const n = stripPrefix(name);
      if (!shapes.has(n)) continue; // lm_head.weight (tied), attn.bias masks, ...
      expect(t.shape.reduce((a, b) => a * b, 1), n).toBe(shapes.get(n)!.reduce((a, b) => a * b, 1));
      params.set(n, t.data);
    }
    for (const n of shapes.keys()) expect(params.has(n), `model.safetensors lacks ${n}`).toBe(true);

    const ref = readSafetensors(join(FIXTURE, 'reference.safetensors'));
    const get = (n: string) => {
      const t = ref.get(n);
      if (!t) throw new Error(`reference.safetensors lacks '${n}'`);
      return t;
    };
    const idsT = get('input_ids');
    const [B, T] = idsT.shape;
    const ids = idsT.data;
    const targets = ref.has('targets') ? get('targets').data : null;

    const fwd = gpt2Forward(params, cfg, ids, targets, B, T);
    expectClose('logits', fwd.logits, get('logits').data, 1e-5);
    for (let k = 0; k <= cfg.nLayer; k++) expectClose(`hidden_states.${k}`, fwd.hiddenStates[k], get(`hidden_states.${k}`).data, 1e-5);
    if (ref.has(`residual.${cfg.nLayer}`)) expectClose(`residual.${cfg.nLayer}`, fwd.residual, get(`residual.${cfg.nLayer}`).data, 1e-5);
    if (!targets) return;
    if (ref.has('loss')) expectClose('loss', Float64Array.of(fwd.loss!), get('loss').data, 1e-5);

    const grads = gpt2Backward(params, cfg, ids, targets, B, T, { forward: fwd });
    let checked = 0;
    for (const [name, t] of ref) {
      if (!name.startsWith('grad.')) continue;
      let n = stripPrefix(name.slice('grad.'.length));
      if (n === 'lm_head.weight') n = 'wte.weight'; // tied: same tensor
      const g = grads.get(n);
      if (!g) throw new Error(`reference has ${name} but the reference model has no parameter '${n}'`);
      expectClose(name, g, t.data, 1e-4);
      checked++;
    }
    expect(checked, 'reference.safetensors has no grad.* tensors').toBeGreaterThan(0);
  });
});
