import { describe, expect, it } from 'vitest';
import {
  computeGains,
  createG2,
  DEFAULT_GAIN_STRATEGY,
  fitPowerLaw,
  g0,
  g1,
  g2,
  gainStrategyNames,
  getGainStrategy,
  registerGainStrategy,
  type PowerLawFit,
} from '../src/analysis/gain.ts';
import { blockParamCount } from '../src/analysis/cost.ts';
import { gpt2Config } from './util/config.ts';
import { mulberry32 } from '../src/util/random.ts';


/** Seeded uniform numbers in [0, 1). */
const rng = mulberry32;

function curve(A: number, alpha: number, E: number, N: number, D0: number): number[] {
  return [D0, ...Array.from({ length: N }, (_, i) => A * (i + 1) ** -alpha + E)];
}

describe('g0', () => {
  it('G_k = D_{k−1} − D_k', () => {
    const r = g0.compute([1, 0.8, 0.5, 0.45]);
    expect(r.gains.map((g) => +g.toFixed(12))).toEqual([0.2, 0.3, 0.05]);
    expect(g0.compute([2, 2]).gains).toEqual([0]);
  });
  it('rejects N = 0 and non-finite deviations', () => {
    expect(() => g0.compute([1])).toThrow(/N ≥ 1/);
    expect(() => g0.compute([1, NaN, 0.5])).toThrow(/D_1 is not a finite number/);
    expect(() => g0.compute([1, Infinity])).toThrow(/D_1/);
  });
});

describe('g1: fit D̂_k = A·k^(−α) + E', () => {
  const cases: [number, number, number, number][] = [
    [2, 0.7, 0.5, 12],
    [1.5, 0.4, 0, 12],
    [0.8, 1.2, 0.3, 24],
    [3, 0.3, 0.9, 48],
  ];
  for (const [A, alpha, E, N] of cases) {
    it(`recovers A = ${A}, α = ${alpha}, E = ${E} (N = ${N}) exactly (relative 1e-8)`, () => {
      const D = curve(A, alpha, E, N, 5);
      const r = g1.compute(D);
      const fit = r.details.fit as PowerLawFit;
      expect(fit.method).toBe('fit');
      expect(Math.abs(fit.A - A) / A).toBeLessThan(1e-8);
      expect(Math.abs(fit.alpha - alpha) / alpha).toBeLessThan(1e-8);
      expect(Math.abs(fit.E - E)).toBeLessThan(1e-8);
      expect(fit.rmsLog).toBeLessThan(1e-10);
      // exact curve: every gain is 0 (G_k = e_{k−1} − e_k with residuals e ≡ 0)
      for (const g of r.gains) expect(Math.abs(g)).toBeLessThan(1e-9);
    });
    it(`recovers A = ${A}, α = ${alpha}, E = ${E} (N = ${N}) under ±0.1% multiplicative noise (A, α within 2%, E within 0.01)`, () => {
      const r0 = rng(7);
      const D = curve(A, alpha, E, N, 5).map((d) => d * (1 + 1e-3 * (2 * r0() - 1)));
      const fit = fitPowerLaw(Array.from({ length: N }, (_, i) => i + 1), D.slice(1));
      expect(Math.abs(fit.A - A) / A).toBeLessThan(0.02);
      expect(Math.abs(fit.alpha - alpha) / alpha).toBeLessThan(0.02);
      expect(Math.abs(fit.E - E)).toBeLessThan(0.01);
      expect(fit.E).toBeGreaterThanOrEqual(0);
    });
  }

  it('gains: a block that reduces more than its depth predicts gets a positive gain (observed − expected)', () => {
    const D = curve(2, 0.7, 0.5, 12, 3);
    // block 6 does extra work: D_6..D_12 all drop by 0.02 (the curve is otherwise unchanged)
    for (let k = 6; k <= 12; k++) D[k] -= 0.02;
    const r = g1.compute(D);
    const best = r.gains.indexOf(Math.max(...r.gains)) + 1;
    expect(best).toBe(6);
    expect(r.gains[5]).toBeGreaterThan(0.01);
    // G_1 = D̂_1 − D_1 (D̂_0 := D_0)
    const fitted = r.details.fitted as number[];
    expect(fitted[0]).toBe(D[0]);
    expect(r.gains[0]).toBeCloseTo(fitted[1] - D[1], 12);
    // the shortfall variant flips the sign
    const s = computeGains('g1-shortfall', D);
    s.gains.forEach((g, i) => expect(g).toBeCloseTo(-r.gains[i], 12));
  });

  it('degenerate input: N = 1 is an error, N = 2 fixes E = 0, constant deviations fit α = 0', () => {
    expect(() => g1.compute([1, 0.5])).toThrow(/needs N ≥ 2 blocks \(got N = 1\); use g0/);
    const two = g1.compute([1, 0.8, 0.6]);
    expect((two.details.fit as PowerLawFit).method).toBe('E=0');
    expect((two.details.fit as PowerLawFit).E).toBe(0);
    for (const g of two.gains) expect(Math.abs(g)).toBeLessThan(1e-12);
    const flat = g1.compute([1, 0.4, 0.4, 0.4, 0.4]);
    const fit = flat.details.fit as PowerLawFit;
    expect(fit).toMatchObject({ method: 'constant', alpha: 0, E: 0, A: 0.4 });
    expect(flat.gains.map((g) => Math.abs(g) < 1e-15)).toEqual([true, true, true, true]);
    expect(() => g1.compute([1, 0.5, 0, 0.2])).toThrow(/must be > 0 .* depth 2 is 0/);
    expect(() => g1.compute([1, 0.5, -Infinity, 0.2])).toThrow(/D_2 is not a finite number/);
  });

  it('is deterministic', () => {
    const r0 = rng(3);
    const D = curve(1, 0.5, 0.2, 16, 2).map((d) => d + 0.01 * r0());
    expect(JSON.stringify(g1.compute(D))).toBe(JSON.stringify(g1.compute([...D])));
  });
});

describe('g2: B_k = D_k − (A·((N−k)·p)^(−α)·D_f^(−β) + E)', () => {
  it('simple case by hand', () => {
    // A = 1, α = 0.5, β = 0, E = 0, p = 1, N = 3: B_1 = 0.9 − 2^−0.5, B_2 = 0.6 − 1, B_3 := 0
    const r = g2.compute([1, 0.9, 0.6, 0.5], { dataSize: 1000, params: { A: 1, alpha: 0.5, beta: 0, E: 0, p: 1 } });
    expect(r.gains[0]).toBeCloseTo(0.9 - Math.SQRT1_2, 12);
    expect(r.gains[1]).toBeCloseTo(-0.4, 12);
    expect(r.gains[2]).toBe(0);
    expect((r.details.predictedDeviation as (number | null)[])[2]).toBeNull();
  });
  it('D_f and E enter as documented; defaults and p from the config', () => {
    const r = g2.compute([1, 0.9, 0.6], { dataSize: 16, params: { A: 2, alpha: 1, beta: 0.5, E: 0.1, p: 4 } });
    // B_1 = 0.9 − (2·(1·4)^−1·16^−0.5 + 0.1) = 0.9 − (0.125 + 0.1)
    expect(r.gains[0]).toBeCloseTo(0.675, 12);
    const cfg = gpt2Config({ nLayer: 2 });
    const d = g2.compute([1, 0.9, 0.6], { dataSize: 1e6, config: cfg });
    expect(d.details.p).toBe(blockParamCount(cfg));
    expect(d.details.params).toEqual({ A: 1, alpha: 0.1, beta: 0.1, E: 0 });
    expect(d.gains[0]).toBeCloseTo(0.9 - (blockParamCount(cfg) ** -0.1) * 1e6 ** -0.1, 12);
    const custom = createG2({ A: 0 });
    expect(custom.compute([1, 0.9, 0.6], { dataSize: 1, params: { p: 1 } }).gains).toEqual([0.9, 0]);
  });
  it('needs D_f and p; config must match N', () => {
    expect(() => g2.compute([1, 0.9, 0.6], { params: { p: 1 } })).toThrow(/data size D_f/);
    expect(() => g2.compute([1, 0.9, 0.6], { dataSize: 10 })).toThrow(/parameters per block p/);
    expect(() => g2.compute([1, 0.9, 0.6], { dataSize: 10, config: gpt2Config() })).toThrow(/N = 2 blocks but the config has nLayer 12/);
  });
});

describe('registry', () => {
  it('by name, default g0 (chosen by the experiments), unknown names listed', () => {
    expect(gainStrategyNames()).toEqual(expect.arrayContaining(['g0', 'g1', 'g2']));
    expect(DEFAULT_GAIN_STRATEGY).toBe('g0');
    expect(getGainStrategy('g0')).toBe(g0);
    expect(() => getGainStrategy('g9')).toThrow(/unknown gain strategy 'g9' \(known: g0, g1, g2/);
    expect(computeGains('g0', [3, 2, 0]).gains).toEqual([1, 2]);
  });
  it('custom strategies are validated', () => {
    registerGainStrategy({ name: 'test-bad', description: '', compute: () => ({ strategy: 'test-bad', gains: [1], details: {} }) });
    expect(() => registerGainStrategy(g0)).toThrow(/already registered/);
    expect(() => computeGains('test-bad', [1, 2, 3])).toThrow(/returned 1 gains for N = 2/);
  });
});
