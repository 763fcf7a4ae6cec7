import { describe, expect, it } from 'vitest';
import { matmul, matmulEntry, matmulPlan, type MatmulForm, type MatmulStrategy } from '../src/ops/matmul.ts';
import { freshSeed, poison, randomArray, relError, rng, runtime } from './util/gpu.ts';

/** float64 reference for the three forms. */
function reference(form: MatmulForm, A: Float32Array, B: Float32Array, M: number, N: number, K: number, bias?: Float32Array, C0?: Float32Array): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const a = form === 'tn' ? A[k * M + m]! : A[m * K + k]!;
        const b = form === 'nt' ? B[n * K + k]! : B[k * N + n]!;
        s += a * b;
      }
      out[m * N + n] = s + (bias ? bias[n]! : 0) + (C0 ? C0[m * N + n]! : 0);
    }
  }
  return out;
}

/**
 * With `padded`, every operand sits at an element offset (3, 5, 7) inside a larger buffer with
 * leading dimensions 2 past the dense ones: how the model addresses logits chunks and head blocks.
 */
async function runCase(form: MatmulForm, M: number, N: number, K: number, opts: { bias?: boolean; accumulate?: boolean; strategy?: MatmulStrategy; padded?: boolean } = {}) {
  const rt = await runtime();
  const seed = freshSeed();
  const next = rng(seed);
  const A = randomArray(M * K, next);
  const B = randomArray(K * N, next);
  const bias = opts.bias ? randomArray(N, next) : undefined;
  const C0 = opts.accumulate ? randomArray(M * N, next) : poison(M * N);
  const mem = rt.memory;
  // Stored shapes (rows × columns) of A, B, C: tn keeps A as [K, M], nt keeps B as [N, K].
  const [ar, ac] = form === 'tn' ? [K, M] : [M, K];
  const [br, bc] = form === 'nt' ? [N, K] : [K, N];
  const pad = opts.padded ? 2 : 0;
  const [aOff, bOff, cOff] = opts.padded ? [3, 5, 7] : [0, 0, 0];
  const spread = (x: Float32Array, rows: number, cols: number, off: number) => {
    if (!opts.padded) return x;
    const out = poison(off + rows * (cols + pad));
    for (let r = 0; r < rows; r++) out.set(x.subarray(r * cols, (r + 1) * cols), off + r * (cols + pad));
    return out;
  };
  const a = mem.upload('t.a', spread(A, ar, ac, aOff));
  const b = mem.upload('t.b', spread(B, br, bc, bOff));
  const c = mem.upload('t.c', spread(C0, M, N, cOff));
  const bb = bias ? mem.upload('t.bias', bias) : undefined;
  const lds = opts.padded ? { lda: ac + pad, ldb: bc + pad, ldc: N + pad, aOff, bOff, cOff } : {};
  const d = await matmul(rt, { form, M, N, K, a, b, c, bias: bb, accumulate: opts.accumulate, strategy: opts.strategy, ...lds });
  await rt.steps.run('matmul-test', d);
  const stored = await mem.readFloat32(c, 0, cOff + M * (N + pad));
  const out = opts.padded ? new Float32Array(M * N).map((_, i) => stored[cOff + Math.floor(i / N) * (N + pad) + (i % N)]!) : stored;
  for (const buf of [a, b, c, bb]) if (buf) mem.destroy(buf);
  const ref = reference(form, A, B, M, N, K, bias, opts.accumulate ? C0 : undefined);
  const nan = out.findIndex((x) => !Number.isFinite(x));
  expect(nan, `seed ${seed}: element ${nan} not written`).toBe(-1);
  const err = relError(out, ref);
  expect(err, `seed ${seed} ${form} ${M}x${N}x${K} strategy ${opts.strategy ?? 'auto'}`).toBeLessThanOrEqual(1e-5);
}

const SHAPES: [number, number, number][] = [[1, 1, 1], [37, 53, 29], [130, 257, 65], [5, 8, 4], [64, 64, 64], [33, 100, 96], [7, 1000, 96]];

describe('matmul', () => {
  for (const form of ['nn', 'nt', 'tn'] as const) {
    for (const [M, N, K] of SHAPES) {
      it(`${form} ${M}x${N}x${K}`, () => runCase(form, M, N, K));
      it(`${form} ${M}x${N}x${K} direct kernel`, () => runCase(form, M, N, K, { strategy: 'direct' }));
    }
    it(`${form} generic path on aligned shape 36x44x40`, () => runCase(form, 36, 44, 40, { strategy: 'generic' }));
    // The hardware-GPU kernel (64×64 tiles, k-steps of 16): sizes on and off the tiles.
    it(`${form} tiled kernel: 1x1x1, 37x53x29, 130x257x65, 64x64x64, 7x1000x96`, async () => {
      for (const [M, N, K] of [[1, 1, 1], [37, 53, 29], [130, 257, 65], [64, 64, 64], [7, 1000, 96]] as const) await runCase(form, M, N, K, { strategy: 'tiled' });
    });
    it(`${form} tiled kernel with bias and accumulate, offsets and leading dimensions, 37x53x29`, async () => {
      await runCase(form, 37, 53, 29, { strategy: 'tiled', bias: true, accumulate: true });
      await runCase(form, 37, 53, 29, { strategy: 'tiled', bias: true, padded: true });
      await runCase(form, 36, 52, 28, { padded: true });
    });
    it(`${form} with bias, 37x53x29 and 36x52x28`, async () => {
      await runCase(form, 37, 53, 29, { bias: true });
      await runCase(form, 36, 52, 28, { bias: true });
    });
    it(`${form} accumulate, 19x23x17 and 20x24x16`, async () => {
      await runCase(form, 19, 23, 17, { accumulate: true });
      await runCase(form, 20, 24, 16, { accumulate: true });
    });
  }
  it('picks vec4 entry points only when aligned', () => {
    const x = {} as GPUBuffer;
    expect(matmulEntry({ form: 'nn', M: 3, N: 8, K: 8, a: x, b: x, c: x })).toBe('nn');
    expect(matmulEntry({ form: 'nn', M: 3, N: 7, K: 8, a: x, b: x, c: x })).toBe('generic');
    expect(matmulEntry({ form: 'nt', M: 3, N: 7, K: 8, a: x, b: x, c: x })).toBe('nt');
    expect(matmulEntry({ form: 'tn', M: 4, N: 8, K: 7, a: x, b: x, c: x })).toBe('tn');
    expect(matmulEntry({ form: 'tn', M: 5, N: 8, K: 7, a: x, b: x, c: x })).toBe('generic');
    // nn and nt go through transposes into tn unless B's rows are unaligned (nn) or a path is forced.
    expect(matmulPlan({ form: 'nn', M: 3, N: 8, K: 7, a: x, b: x, c: x })).toEqual({ transposeA: true, transposeB: false });
    expect(matmulPlan({ form: 'nn', M: 3, N: 7, K: 8, a: x, b: x, c: x })).toBeNull();
    expect(matmulPlan({ form: 'nt', M: 3, N: 7, K: 5, a: x, b: x, c: x })).toEqual({ transposeA: true, transposeB: true });
    expect(matmulPlan({ form: 'tn', M: 4, N: 8, K: 7, a: x, b: x, c: x })).toBeNull();
    expect(matmulPlan({ form: 'nt', M: 4, N: 8, K: 8, a: x, b: x, c: x, strategy: 'direct' })).toBeNull();
  });
});
