import { describe, expect, it } from 'vitest';
import { cholesky, gramCpu, tokenBases } from '../src/analysis/cholesky.ts';
import { computeDeviationsCpu, CpuDeviationReducer, deviationsPerPosition, finalNormCpu, splitSpaces } from '../src/analysis/deviation.ts';
import type { TokenBases } from '../src/analysis/types.ts';

// d = 2, bases s_0 = (1, 0), s_1 = (0, 1), s_2 = (−1, 0): every cosine below is checkable by hand.
const bases: TokenBases = { d: 2, tokens: Int32Array.from([0, 1, 2]), data: Float64Array.from([1, 0, 0, 1, -1, 0]) };
// Two latent spaces (N = 1), two positions.
const hidden = [
  Float32Array.from([1, 0, /* p1 */ 1, 1]),
  Float32Array.from([0, 2, /* p1 */ 0, -3]),
];
const targets = Int32Array.from([0, 1]);
const S = Math.SQRT1_2;

describe('deviations (CPU reference)', () => {
  it('cosine: D = mean(1 − cos(h, s_y))', () => {
    // space 0: p0 cos((1,0),(1,0)) = 1 → 0; p1 cos((1,1),(0,1)) = 1/√2 → 1 − 1/√2
    // space 1: p0 cos((0,2),(1,0)) = 0 → 1; p1 cos((0,−3),(0,1)) = −1 → 2
    const r = computeDeviationsCpu(hidden, { metric: 'cosine', targets, bases });
    expect(r.metric).toBe('cosine');
    expect(r.positions).toBe(2);
    expect(r.deviations[0]).toBeCloseTo((0 + (1 - S)) / 2, 12);
    expect(r.deviations[1]).toBeCloseTo(1.5, 12);
    // stderr = sample std / √P: space 1 values {1, 2} → std 1/√2, / √2 = 0.5
    expect(r.stderr![1]).toBeCloseTo(0.5, 12);
  });

  it('contrastive: D = mean(max_{j∈C} cos(h, s_j) − cos(h, s_y)), y ∈ C, max over all of C', () => {
    const labels = Int32Array.from([1, 0]);
    // space 0: p0 max(1, 0) − 1 = 0; p1 max(1/√2, 1/√2) − 1/√2 = 0
    // space 1: p0 max(0, 1) − 0 = 1; p1 max(0, −1) − (−1) = 1
    const per = deviationsPerPosition(hidden, { metric: 'contrastive', targets, bases, labels });
    expect(Array.from(per[0])).toEqual([0, 0]);
    expect(per[1][0]).toBeCloseTo(1, 12);
    expect(per[1][1]).toBeCloseTo(1, 12);
    // With s_2 = (−1, 0) among the labels: space 1 p0 cos((0,2), s_2) = 0: unchanged; space 0 p1 cos((1,1), s_2) = −1/√2: unchanged.
    const r = computeDeviationsCpu(hidden, { metric: 'contrastive', targets, bases, labels: Int32Array.from([0, 1, 2]) });
    expect(r.deviations[0]).toBeCloseTo(0, 12);
    expect(r.deviations[1]).toBeCloseTo(1, 12);
    // A label closer than the target: h = (−1, 0), y = 0 → max is s_2 (cos 1), target cos −1 → 2
    const r2 = computeDeviationsCpu([Float64Array.from([-1, 0]), Float64Array.from([-1, 0])], { metric: 'contrastive', targets: Int32Array.from([0]), bases, labels: Int32Array.from([0, 2]) });
    expect(r2.deviations).toEqual([2, 2]);
  });

  it('contrastive: a target outside C is an error; so are missing labels or bases', () => {
    expect(() => computeDeviationsCpu(hidden, { metric: 'contrastive', targets, bases, labels: Int32Array.from([0, 2]) })).toThrow(/target 1 at position 1 is not among the label tokens/);
    expect(() => computeDeviationsCpu(hidden, { metric: 'contrastive', targets, bases })).toThrow(/needs the label tokens/);
    expect(() => computeDeviationsCpu(hidden, { metric: 'cosine', targets })).toThrow(/needs the bases/);
    expect(() => computeDeviationsCpu(hidden, { metric: 'cosine', targets: Int32Array.from([0, 5]), bases })).toThrow(/target token 5 at position 1 has no basis/);
  });

  it('lens: mean cross-entropy of softmax(W·h) against y', () => {
    // W rows: e_0, e_1, 0 (V = 3). h = (ln 2, 0): logits (ln 2, 0, 0), logsumexp = ln 4, CE(y=0) = ln 2.
    // h = (0, 0): logits 0, CE = ln 3 for any y.
    const W = Float32Array.from([1, 0, 0, 1, 0, 0]);
    const h0 = Float64Array.from([Math.LN2, 0, 0, 0]);
    const h1 = Float64Array.from([0, 0, Math.LN2, 0]);
    const r = computeDeviationsCpu([h0, h1], { metric: 'lens', targets: Int32Array.from([0, 2]) }, { W, vocab: 3 });
    expect(r.deviations[0]).toBeCloseTo((Math.LN2 + Math.log(3)) / 2, 12);
    // space 1: p0 h = 0 → ln 3; p1 h = (ln2, 0), y = 2 → ln 4 − 0
    expect(r.deviations[1]).toBeCloseTo((Math.log(3) + Math.log(4)) / 2, 12);
    expect(() => computeDeviationsCpu([h0, h1], { metric: 'lens', targets: Int32Array.from([0, 3]) }, { W, vocab: 3 })).toThrow(/target 3 at position 1 is outside the vocabulary/);
    expect(() => computeDeviationsCpu([h0, h1], { metric: 'lens', targets })).toThrow(/needs the LM head/);
  });

  it('a zero vector has cosine 0 (documented), and non-finite hidden values are an error naming the space', () => {
    const r = computeDeviationsCpu([Float32Array.from([0, 0]), Float32Array.from([3, 0])], { metric: 'cosine', targets: Int32Array.from([0]), bases });
    expect(r.deviations).toEqual([1, 0]);
    expect(() => computeDeviationsCpu([Float32Array.from([0, 0]), Float32Array.from([NaN, 0])], { metric: 'cosine', targets: Int32Array.from([0]), bases })).toThrow(
      /latent space 1, position 0, component 0 is not finite/,
    );
  });

  it('shape errors are explicit', () => {
    expect(() => computeDeviationsCpu([hidden[0]], { metric: 'cosine', targets, bases })).toThrow(/N ≥ 1/);
    expect(() => computeDeviationsCpu([hidden[0], Float32Array.from([1, 2, 3])], { metric: 'cosine', targets, bases })).toThrow(/latent space 1 has 3 values, expected positions 2 × d 2 = 4/);
    expect(() => computeDeviationsCpu(hidden, { metric: 'cosine', targets: new Int32Array(0), bases })).toThrow(/no positions/);
  });

  it('splitSpaces and the reducer interface', async () => {
    const flat = Float32Array.from([1, 0, 1, 1, 0, 2, 0, -3]);
    const spaces = splitSpaces(flat, 2, 2, 2);
    const red = new CpuDeviationReducer(spaces);
    const r = await red.reduce({ metric: 'cosine', targets, bases });
    expect(r.deviations[1]).toBeCloseTo(1.5, 12);
    expect(() => splitSpaces(flat, 3, 2, 2)).toThrow(/expected 3×2×2 = 12 values, got 8/);
  });

  it('bases from a real Cholesky: h = s_y gives cosine deviation 0', () => {
    const V = 12;
    const d = 4;
    const W = Float32Array.from({ length: V * d }, (_, i) => Math.sin(i * 1.7) + (i % d === Math.floor(i / d) % d ? 2 : 0));
    const f = cholesky(gramCpu(W, V, d), d);
    const b = tokenBases(f, W, V, [3, 8]);
    const h = Float64Array.from([...b.data.subarray(0, d), ...b.data.subarray(d, 2 * d)]);
    const r = computeDeviationsCpu([h, h], { metric: 'cosine', targets: Int32Array.from([3, 8]), bases: b });
    expect(r.deviations[0]).toBeCloseTo(0, 12);
  });

  it('finalNormCpu: zero mean, unit variance rows, then affine', () => {
    const y = finalNormCpu([1, 2, 3, 4, -1, -1, -1, -1], 2, 4, [1, 1, 1, 1], [0, 0, 0, 0], 0);
    const mean = (y[0] + y[1] + y[2] + y[3]) / 4;
    const v = (y[0] ** 2 + y[1] ** 2 + y[2] ** 2 + y[3] ** 2) / 4;
    expect(mean).toBeCloseTo(0, 12);
    expect(v).toBeCloseTo(1, 12);
    // constant row: x − μ = 0, so the output is β
    const z = finalNormCpu([5, 5], 1, 2, [2, 2], [0.5, 0.5], 1e-5);
    expect(Array.from(z)).toEqual([0.5, 0.5]);
  });
});
