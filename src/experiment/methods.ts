// Every method the experiments compare, as a rule that names a freeze boundary: SALF for each
// deviation × gain strategy × budget policy, and the baselines. Because the oracle fine-tunes at every
// boundary with the same steps, learning rate, data order and seeds, a method's quality and cost are the
// oracle's at the boundary it picks (plus, for the probe-based baselines, the probe's full steps).
import type { Boundary } from '../analysis/cost.ts';
import type { ModelConfig } from '../model/config.ts';
import { buildReport } from '../analysis/report.ts';
import { gainStrategyNames } from '../analysis/gain.ts';
import { DEVIATION_METRICS } from '../analysis/types.ts';
import { median } from '../util/stats.ts';
import type { GradientProbe } from './runs.ts';

export interface MethodChoice {
  method: string;
  kind: 'salf' | 'baseline';
  /** The boundary it picks, or 'expected' for the random boundary (the mean over K = 0..N). */
  boundary: Boundary | 'expected';
  /** Full fine-tuning steps a probe spends before the decision (gradient-based baselines). */
  probeSteps?: number;
  /** For SALF: its settings. */
  deviation?: string;
  strategy?: string;
  budget?: string;
  pad?: boolean;
  /** Per seed, for decisions that depend on the seed's probe. */
  perSeed?: Record<string, Boundary>;
  note?: string;
}

/** The budget policies tried: none, half the backward FLOPs, and the same padded to it. */
export const BUDGET_POLICIES: readonly { budget?: string; pad?: boolean; label: string }[] = [
  { label: 'no budget' },
  { budget: '50%', label: 'budget 50%' },
  { budget: '50%', pad: true, label: 'budget 50% + pad' },
];

export function salfMethodName(deviation: string, strategy: string, policy: { budget?: string; pad?: boolean }): string {
  return `SALF ${strategy}/${deviation}${policy.budget ? `, budget ${policy.budget}${policy.pad ? ' + pad' : ''}` : ''}`;
}

/** SALF's boundary for every deviation (with measured deviations) × gain strategy × budget policy. */
export function salfChoices(deviations: Partial<Record<string, readonly number[]>>, cfg: ModelConfig, cost: { batch: number; seq: number; dataSize: number }): MethodChoice[] {
  const out: MethodChoice[] = [];
  for (const metric of DEVIATION_METRICS) {
    const D = deviations[metric];
    if (!D) continue;
    for (const strategy of gainStrategyNames()) {
      for (const policy of BUDGET_POLICIES) {
        const report = buildReport({
          deviations: D,
          strategy,
          gainContext: { config: cfg, dataSize: cost.dataSize },
          budget: policy.budget,
          pad: policy.pad,
          cost: { config: cfg, batch: cost.batch, seqLen: cost.seq },
        });
        out.push({
          method: salfMethodName(metric, strategy, policy), kind: 'salf', boundary: report.boundary.freeze,
          deviation: metric, strategy, ...(policy.budget ? { budget: policy.budget } : {}), ...(policy.pad ? { pad: true } : {}),
          ...(report.boundary.noSignal ? { note: 'no signal: K = 0' } : {}),
        });
      }
    }
  }
  return out;
}

/** The plain deviation knee: the block with the largest drop D_{k−1} − D_k is the last frozen one (K = k). */
export function kneeBoundary(D: readonly number[]): number {
  let best = 1;
  for (let k = 2; k < D.length; k++) if (D[k - 1]! - D[k]! > D[best - 1]! - D[best]!) best = k;
  return best;
}

/**
 * AutoFreeze's rule (Liu et al., 2021), decided once: the per-block gradient norm's relative change
 * between the probe's first and second half, |‖g‖₂ − ‖g‖₁| / ‖g‖₁; the leading blocks whose change is
 * below the median change of all blocks are frozen (AutoFreeze freezes front layers only, and never
 * all of them).
 */
export function autoFreezeBoundary(p: GradientProbe): number {
  const steps = p.gradNorms.length;
  const N = p.weightNorms.length;
  if (steps < 2) throw new Error('the AutoFreeze rule needs at least 2 probe steps');
  const half = Math.floor(steps / 2);
  const mean = (rows: number[][], l: number) => rows.reduce((a, r) => a + r[l]!, 0) / rows.length;
  const change = Array.from({ length: N }, (_, l) => {
    const a = mean(p.gradNorms.slice(0, half), l);
    const b = mean(p.gradNorms.slice(half), l);
    return a > 0 ? Math.abs(b - a) / a : 0;
  });
  const threshold = median(change);
  let K = 0;
  while (K < N - 1 && change[K]! < threshold) K++;
  return K;
}

/**
 * Auto-RGN (Lee et al., 2023: relative gradient norm ‖g_l‖/‖θ_l‖ says which layers to tune), as a
 * boundary: tune from the first block whose mean RGN over the probe is at least half the largest.
 */
export function autoRgnBoundary(p: GradientProbe): number {
  const N = p.weightNorms.length;
  const rgn = Array.from({ length: N }, (_, l) => p.gradNorms.reduce((a, r) => a + r[l]!, 0) / p.gradNorms.length / Math.max(p.weightNorms[l]!, 1e-30));
  const max = Math.max(...rgn);
  const K = rgn.findIndex((r) => r >= 0.5 * max);
  return Math.max(0, K);
}

/** The baselines that need no probe. */
export function fixedBaselines(N: number, cosineDeviations: readonly number[] | undefined): MethodChoice[] {
  const k = Math.max(1, Math.floor(N / 4));
  const out: MethodChoice[] = [
    { method: 'full fine-tuning', kind: 'baseline', boundary: 'none' },
    { method: `last-k (k = N/4 = ${k})`, kind: 'baseline', boundary: N - k },
    { method: `fixed half (K = ${Math.floor(N / 2)})`, kind: 'baseline', boundary: Math.floor(N / 2) },
    { method: 'random boundary (expected)', kind: 'baseline', boundary: 'expected', note: 'mean over K = 0..N' },
  ];
  if (cosineDeviations) out.push({ method: 'deviation knee (largest drop, cosine)', kind: 'baseline', boundary: kneeBoundary(cosineDeviations) });
  return out;
}

/** The probe-based baselines, decided per seed from that seed's probe. */
export function probeBaselines(probes: Record<string, GradientProbe>): MethodChoice[] {
  const seeds = Object.keys(probes);
  if (seeds.length === 0) return [];
  const steps = probes[seeds[0]!]!.gradNorms.length;
  const make = (method: string, rule: (p: GradientProbe) => number): MethodChoice => {
    const perSeed: Record<string, Boundary> = {};
    for (const s of seeds) perSeed[s] = rule(probes[s]!);
    const values = Object.values(perSeed) as number[];
    // The boundary most seeds pick (ties: the lowest) names the method's row; quality uses each seed's own.
    const counts = new Map<number, number>();
    for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
    const mode = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
    return { method, kind: 'baseline', boundary: mode, perSeed, probeSteps: steps };
  };
  return [make('AutoFreeze (gradient-norm change, decided once)', autoFreezeBoundary), make('Auto-RGN (relative gradient norm)', autoRgnBoundary)];
}
