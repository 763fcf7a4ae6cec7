// Gain per block (method.md section 4): a strategy interface, the three strategies g0, g1, g2, a registry.
//
// Indexing: deviations D has N+1 entries (latent spaces 0..N). Gains are per block k = 1..N (paper
// numbering) and are returned as an array of length N with gains[k − 1] = G_k.
//
// Input checks common to every strategy: N ≥ 1 (at least 2 deviations) and every D_k finite, else an
// AnalysisError. Strategy-specific degenerate cases are documented on each strategy.

import type { ModelConfig } from '../model/config.ts';
import { blockParamCount } from './cost.ts';
import { AnalysisError } from './types.ts';

export interface GainContext {
  /** Model shape (g2: parameters per block p, unless params.p is given). */
  config?: ModelConfig;
  /** Fine-tuning data size D_f (g2; e.g. training tokens). */
  dataSize?: number;
  /** Strategy-specific numeric overrides (g1: none; g2: A, alpha, beta, E, p). */
  params?: Record<string, number>;
}

export interface GainResult {
  strategy: string;
  /** Length N: gains[k − 1] = G_k for block k = 1..N. */
  gains: number[];
  /** JSON-serialisable strategy details (fit parameters, predictions). */
  details: Record<string, unknown>;
}

export interface GainStrategy {
  readonly name: string;
  readonly description: string;
  compute(deviations: readonly number[], ctx?: GainContext): GainResult;
}

/** Validate D_0..D_N; returns N. */
export function checkDeviations(D: readonly number[], who: string): number {
  if (!Array.isArray(D) && !(ArrayBuffer.isView(D))) throw new AnalysisError(`${who}: deviations must be an array`);
  if (D.length < 2) throw new AnalysisError(`${who}: need deviations D_0..D_N with N ≥ 1 (got ${D.length} value(s))`);
  for (let k = 0; k < D.length; k++) {
    if (typeof D[k] !== 'number' || !Number.isFinite(D[k])) throw new AnalysisError(`${who}: deviation D_${k} is not a finite number (${D[k]})`);
  }
  return D.length - 1;
}

/** Observed reduction per block: r[k − 1] = D_{k−1} − D_k. */
export function observedReductions(D: readonly number[]): number[] {
  const r: number[] = [];
  for (let k = 1; k < D.length; k++) r.push(D[k - 1] - D[k]);
  return r;
}

// ---------------------------------------------------------------------------------------------- g0

/** g0 (empirical): G_k = D_{k−1} − D_k. Defined for every N ≥ 1; all-equal deviations give all-zero gains. */
export const g0: GainStrategy = {
  name: 'g0',
  description: 'empirical: G_k = D_{k-1} - D_k (the reduction block k performs)',
  compute(D) {
    checkDeviations(D, 'g0');
    return { strategy: 'g0', gains: observedReductions(D), details: {} };
  },
};

// ---------------------------------------------------------------------------------------------- g1

export interface PowerLawFit {
  A: number;
  alpha: number;
  E: number;
  /** Root-mean-square residual of the log-space fit: log(D_k − E) vs log A − α·log k. */
  rmsLog: number;
  /** Root-mean-square of D_k − D̂_k over the fitted points. */
  rmsLinear: number;
  points: number;
  /**
   * 'fit': E searched in [0, min D); 'E=0': 2 points only (E not identifiable; fixed at 0, exact fit);
   * 'constant': all fitted D equal (α = 0, E = 0, A = D).
   */
  method: 'fit' | 'E=0' | 'constant';
}

function logLinear(xs: readonly number[], ys: readonly number[]): { a: number; b: number; sse: number } {
  const n = xs.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i];
    my += ys[i];
  }
  mx /= n;
  my /= n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i] - mx) * (xs[i] - mx);
    sxy += (xs[i] - mx) * (ys[i] - my);
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  const a = my - b * mx;
  let sse = 0;
  for (let i = 0; i < n; i++) {
    const r = ys[i] - a - b * xs[i];
    sse += r * r;
  }
  return { a, b, sse };
}

/**
 * Fit D̂(k) = A·k^(−α) + E to points (k_i, D_i), k_i ≥ 1, E ≥ 0, by least squares in log space on D − E:
 * for a given E the best (log A, −α) is the closed-form linear regression of log(D − E) on log k; E is
 * found by a grid over [0, min D) (denser towards min D) refined by golden-section search around the
 * best grid point. Deterministic. Requires every D_i > 0 (log space) and ≥ 2 points.
 */
export function fitPowerLaw(ks: readonly number[], D: readonly number[]): PowerLawFit {
  const n = ks.length;
  if (n !== D.length) throw new AnalysisError(`fitPowerLaw: ${n} depths but ${D.length} deviations`);
  if (n < 2) throw new AnalysisError(`fitPowerLaw: need at least 2 points (got ${n}); use g0 for a single block`);
  let minD = Infinity;
  let maxD = -Infinity;
  let argMin = 0;
  for (let i = 0; i < n; i++) {
    if (!(ks[i] >= 1) || !Number.isFinite(ks[i])) throw new AnalysisError(`fitPowerLaw: depth ${ks[i]} must be ≥ 1`);
    if (!Number.isFinite(D[i])) throw new AnalysisError(`fitPowerLaw: deviation at depth ${ks[i]} is not finite (${D[i]})`);
    if (D[i] < minD) {
      minD = D[i];
      argMin = i;
    }
    maxD = Math.max(maxD, D[i]);
  }
  if (!(minD > 0)) {
    throw new AnalysisError(`fitPowerLaw: deviations must be > 0 for the log-space fit; D at depth ${ks[argMin]} is ${minD}`);
  }
  const xs = ks.map((k) => Math.log(k));
  const finish = (A: number, alpha: number, E: number, sseLog: number, method: PowerLawFit['method']): PowerLawFit => {
    let sl = 0;
    for (let i = 0; i < n; i++) {
      const r = D[i] - (A * Math.pow(ks[i], -alpha) + E);
      sl += r * r;
    }
    return { A, alpha, E, rmsLog: Math.sqrt(sseLog / n), rmsLinear: Math.sqrt(sl / n), points: n, method };
  };
  if (maxD - minD <= 1e-12 * maxD) {
    // Flat: log(D − E) is constant for every E; pick E = 0, α = 0.
    return finish(maxD, 0, 0, 0, 'constant');
  }
  const evalE = (E: number) => logLinear(xs, D.map((d) => Math.log(d - E)));
  if (n === 2) {
    const r = evalE(0);
    return finish(Math.exp(r.a), -r.b, 0, r.sse, 'E=0');
  }
  // Grid of u = E / minD in [0, 1): 100 linear steps, then 1 − 10^(−2 − j/4) up to 1 − 1e-8.
  const us: number[] = [];
  for (let i = 0; i < 100; i++) us.push(i / 100);
  for (let j = 0; j <= 24; j++) us.push(1 - Math.pow(10, -2 - j / 4));
  const sse = us.map((u) => evalE(u * minD).sse);
  let best = 0;
  for (let i = 1; i < us.length; i++) if (sse[i] < sse[best]) best = i;
  // Golden-section on [u_{best−1}, u_{best+1}].
  let lo = us[Math.max(0, best - 1)];
  let hi = us[Math.min(us.length - 1, best + 1)];
  const g = (Math.sqrt(5) - 1) / 2;
  let c = hi - g * (hi - lo);
  let d = lo + g * (hi - lo);
  let fc = evalE(c * minD).sse;
  let fd = evalE(d * minD).sse;
  for (let it = 0; it < 200 && hi - lo > 1e-15; it++) {
    if (fc <= fd) {
      hi = d;
      d = c;
      fd = fc;
      c = hi - g * (hi - lo);
      fc = evalE(c * minD).sse;
    } else {
      lo = c;
      c = d;
      fc = fd;
      d = lo + g * (hi - lo);
      fd = evalE(d * minD).sse;
    }
  }
  let uBest = fc <= fd ? c : d;
  let sseBest = Math.min(fc, fd);
  if (sse[best] < sseBest) {
    uBest = us[best];
    sseBest = sse[best];
  }
  const E = uBest * minD;
  const r = evalE(E);
  return finish(Math.exp(r.a), -r.b, E, r.sse, 'fit');
}

/**
 * g1 (depth scaling law): fit D̂_k = A·k^(−α) + E to D_1..D_N (fitPowerLaw), D̂_0 := D_0, expected
 * reduction ĝ_k = D̂_{k−1} − D̂_k, gain G_k = (D_{k−1} − D_k) − ĝ_k (so G_1 = D̂_1 − D_1).
 * Equivalently, with the fit residual e_k = D_k − D̂_k (e_0 = 0): G_k = e_{k−1} − e_k.
 * Degenerate input: N = 1 → AnalysisError (no curve through one point; use g0: the boundary is trivial);
 * N = 2 → E fixed at 0, the fit is exact and every gain is 0 (as for N = 3 whenever the 3-parameter curve
 * interpolates): g1 carries information only for N ≥ 4; all of D_1..D_N equal → α = 0, E = 0 (method
 * 'constant'), gains 0; any D_k ≤ 0 for k ≥ 1 → AnalysisError (the fit is in log space).
 */
export const g1: GainStrategy = createG1();

/**
 * g1 with a sign choice. method.md's prose ("where a block does less than its depth predicts, fine-tuning
 * it has the most to gain") and its formula G_k = observed − expected reduction disagree in sign: a block
 * that does less than predicted gets a NEGATIVE g1 gain. 'g1' follows the formula; 'g1-shortfall'
 * (sign −1: G_k = expected − observed) follows the prose. Which one works is for section 7 to decide.
 */
export function createG1(opts: { name?: string; sign?: 1 | -1 } = {}): GainStrategy {
  const name = opts.name ?? 'g1';
  const sign = opts.sign ?? 1;
  return {
    name,
    description:
      sign === 1
        ? 'depth scaling law: G_k = (D_{k-1} - D_k) - (Dhat_{k-1} - Dhat_k), Dhat_k = A k^-alpha + E fitted to D_1..D_N'
        : 'depth scaling law, shortfall: G_k = (Dhat_{k-1} - Dhat_k) - (D_{k-1} - D_k)',
    compute(D) {
      return g1Compute(name, sign, D);
    },
  };
}

function g1Compute(name: string, sign: 1 | -1, D: readonly number[]): GainResult {
  const N = checkDeviations(D, name);
  if (N < 2) throw new AnalysisError(`${name}: the depth power law needs N ≥ 2 blocks (got N = ${N}); use g0`);
  const ks = Array.from({ length: N }, (_, i) => i + 1);
  const fit = fitPowerLaw(ks, D.slice(1));
  const fitted = [D[0], ...ks.map((k) => fit.A * Math.pow(k, -fit.alpha) + fit.E)];
  const expected: number[] = [];
  const gains: number[] = [];
  for (let k = 1; k <= N; k++) {
    expected.push(fitted[k - 1] - fitted[k]);
    gains.push(sign * (D[k - 1] - D[k] - (fitted[k - 1] - fitted[k])));
  }
  return {
    strategy: name,
    gains,
    details: { fit, fitted, expectedReduction: expected, observedReduction: observedReductions(D), sign },
  };
}

// ---------------------------------------------------------------------------------------------- g2

/**
 * Constants of g2's fine-tuning law (Zhang et al. 2024's multiplicative form
 * L̂(X, D_f) = A·X^(−α)·D_f^(−β) + E, with X = trainable parameters).
 * The defaults are not fitted values from the paper (its constants are per task and model and do not
 * transfer): A = 1, α = 0.1, β = 0.1, E = 0, which puts the predicted term at O(0.05) for GPT-2 small
 * (p ≈ 7.1·10⁶ parameters per block) and D_f ≈ 10⁶ tokens. The experiments' fit on the code task
 * (EXPERIMENTS.md) kept them: no candidate of its grid landed nearer that task's 90% line. That is
 * weak evidence, not a fit. Override via ctx.params.
 */
export interface G2Params {
  A: number;
  alpha: number;
  beta: number;
  E: number;
}

export const G2_DEFAULTS: Readonly<G2Params> = { A: 1, alpha: 0.1, beta: 0.1, E: 0 };

/**
 * g2: B_k = D_k − (A·((N−k)·p)^(−α)·D_f^(−β) + E) for k = 1..N−1 — the benefit of training the N − k
 * blocks above k with D_f data; gain G_k = B_k (eof = k freezes blocks 1..k).
 * k = N (no trainable blocks): B_N := 0 by definition (nothing trains, nothing changes; the power law's
 * 0^(−α) = ∞ is not used), so argmax picks "freeze all" only when every other benefit is negative.
 * Needs D_f (ctx.dataSize > 0) and p (ctx.params.p, or ctx.config → parameters per block).
 */
export function createG2(defaults: Partial<G2Params> = {}): GainStrategy {
  const base: G2Params = { ...G2_DEFAULTS, ...defaults };
  return {
    name: 'g2',
    description: 'fine-tuning scaling law: G_k = D_k - (A ((N-k) p)^-alpha D_f^-beta + E), G_N = 0',
    compute(D, ctx = {}) {
      const N = checkDeviations(D, 'g2');
      const over = ctx.params ?? {};
      const prm: G2Params = {
        A: over.A ?? base.A,
        alpha: over.alpha ?? base.alpha,
        beta: over.beta ?? base.beta,
        E: over.E ?? base.E,
      };
      for (const [k, v] of Object.entries(prm)) if (!Number.isFinite(v)) throw new AnalysisError(`g2: parameter ${k} is not finite (${v})`);
      const p = over.p ?? (ctx.config ? blockParamCount(ctx.config) : undefined);
      if (p === undefined || !(p > 0)) throw new AnalysisError('g2: needs the parameters per block p (ctx.params.p or ctx.config)');
      if (ctx.config && ctx.config.nLayer !== N) throw new AnalysisError(`g2: ${N + 1} deviations imply N = ${N} blocks but the config has nLayer ${ctx.config.nLayer}`);
      const Df = ctx.dataSize;
      if (Df === undefined || !(Df > 0) || !Number.isFinite(Df)) throw new AnalysisError(`g2: needs the fine-tuning data size D_f > 0 (ctx.dataSize), got ${Df}`);
      const predicted: (number | null)[] = [];
      const gains: number[] = [];
      for (let k = 1; k <= N; k++) {
        if (k === N) {
          predicted.push(null);
          gains.push(0);
          continue;
        }
        const L = prm.A * Math.pow((N - k) * p, -prm.alpha) * Math.pow(Df, -prm.beta) + prm.E;
        predicted.push(L);
        gains.push(D[k] - L);
      }
      return { strategy: 'g2', gains, details: { params: prm, p, dataSize: Df, predictedDeviation: predicted, lastBlock: 'B_N := 0 (no trainable blocks)' } };
    },
  };
}

export const g2: GainStrategy = createG2();

// ---------------------------------------------------------------------------------------------- registry

const registry = new Map<string, GainStrategy>([
  ['g0', g0],
  ['g1', g1],
  ['g2', g2],
  ['g1-shortfall', createG1({ name: 'g1-shortfall', sign: -1 })],
]);

/**
 * The default, chosen by the experiments (EXPERIMENTS.md, "Against the 90% line"): averaged over the
 * deviations, g0's picks land nearest the cheapest boundary that keeps 90% of full fine-tuning's gain
 * on the shipped base model's three tasks, ahead of g2 and of g1 with either sign (docs/method.md §4).
 */
export const DEFAULT_GAIN_STRATEGY = 'g0';

export function gainStrategyNames(): string[] {
  return [...registry.keys()];
}

export function getGainStrategy(name: string): GainStrategy {
  const s = registry.get(name);
  if (!s) throw new AnalysisError(`unknown gain strategy '${name}' (known: ${gainStrategyNames().join(', ')})`);
  return s;
}

/** Add (or, with replace, swap) a strategy. */
export function registerGainStrategy(s: GainStrategy, replace = false): void {
  if (registry.has(s.name) && !replace) throw new AnalysisError(`gain strategy '${s.name}' is already registered`);
  registry.set(s.name, s);
}

/** Run a strategy by name and validate what it returns (length N, every gain a number; −∞ allowed). */
export function computeGains(name: string, D: readonly number[], ctx?: GainContext): GainResult {
  const N = checkDeviations(D, name);
  const r = getGainStrategy(name).compute(D, ctx);
  if (r.gains.length !== N) throw new AnalysisError(`gain strategy '${name}' returned ${r.gains.length} gains for N = ${N} blocks`);
  for (let k = 1; k <= N; k++) {
    const g = r.gains[k - 1];
    if (typeof g !== 'number' || Number.isNaN(g) || g === Infinity) throw new AnalysisError(`gain strategy '${name}': G_${k} is ${g}`);
  }
  return r;
}
