// Freeze boundary and budget (method.md section 5).
//
// Numbering. The paper numbers blocks 1..N; eof ("end of freezing") = argmax_k G_k means blocks 1..eof
// are frozen, eof+1..N train. Our CLI numbers blocks 0..N−1 and `--freeze K` freezes blocks 0..K−1
// (with the embeddings), training K..N−1 (with the final norm, and an untied head). Paper block k is
// CLI block k−1, so paper's eof = k ⇔ K = k: the two numbers are the same (eofToFreeze is the identity,
// kept as a function so the mapping is explicit and tested). K = N freezes every block.
//
// Ties in argmax: the SHALLOWEST block with the maximal gain wins (smallest k: fewer frozen blocks, the
// conservative choice, closer to full fine-tuning; also what a first-max scan gives). Gains within
// floating-point noise of the maximum tie: noise is TIE_TOLERANCE · max|G| (float32 deviations carry
// ~1e-7 relative error, so a "larger" gain below that is an accident of rounding, not a signal).
// −∞ never wins unless all are −∞ (then an error); NaN is an error.
//
// No signal: when every gain is within noise of 0 on the deviations' own scale (max|G| ≤
// TIE_TOLERANCE · max|D|), the data says nothing about where to freeze; the boundary is then K = 0
// (nothing frozen: plain fine-tuning, the conservative choice) and `noSignal` is set so callers warn,
// rather than letting rounding noise pick a deep block and freeze everything below it.
//
// Budget. `--budget B` (B trainable blocks, integer ≥ 0) keeps at most the deepest B blocks trainable:
// K = max(K, N − B) (B ≥ N: no cap). `--pad` also unfreezes further down to exactly B: K = N − B
// (B ≥ N: K = 0). A budget may instead be a fraction of full fine-tuning's backward FLOPs ("25%"): the
// largest trainable suffix whose backward FLOPs ≤ fraction × backward FLOPs of full fine-tuning
// ('none', embeddings included; cost.ts) becomes B, then the same cap/pad rules apply.

import type { ModelConfig } from '../model/config.ts';
import { costTable, type CostOptions } from './cost.ts';
import { AnalysisError } from './types.ts';

export type Budget = { kind: 'blocks'; blocks: number } | { kind: 'backwardFraction'; fraction: number };

/** What a fraction budget needs to consult the cost model. */
export interface CostContext {
  config: ModelConfig;
  /** Sequences per step (B). */
  batch: number;
  /** Tokens per sequence (T). */
  seqLen: number;
  options?: CostOptions;
}

/** "4" → 4 trainable blocks; "25%" → 25% of full backward FLOPs. */
export function parseBudget(text: string): Budget {
  const s = text.trim();
  if (/^\d+$/.test(s)) {
    // 0 trainable blocks leaves only the final norm to train: not a fine-tuning budget.
    if (Number(s) === 0) throw new AnalysisError(`--budget ${s}: at least 1 block must stay trainable (to freeze every block, use finetune --freeze N)`);
    return { kind: 'blocks', blocks: Number(s) };
  }
  const m = /^(\d+(?:\.\d+)?)%$/.exec(s);
  if (m) {
    const pct = Number(m[1]);
    if (!(pct > 0) || pct > 100) throw new AnalysisError(`--budget '${text}': a percentage must be in (0, 100]`);
    return { kind: 'backwardFraction', fraction: pct / 100 };
  }
  throw new AnalysisError(`--budget '${text}': expected a number of trainable blocks (e.g. 4) or a percentage of full backward FLOPs (e.g. 25%)`);
}

export function formatBudget(b: Budget): string {
  return b.kind === 'blocks' ? `${b.blocks} block(s)` : `${+(b.fraction * 100).toPrecision(6)}% of full backward FLOPs`;
}

/** Paper's eof = k (blocks 1..k frozen) → CLI `--freeze K` (blocks 0..K−1 frozen): K = k. */
export function eofToFreeze(eof: number, nLayer: number): number {
  if (!Number.isInteger(eof) || eof < 0 || eof > nLayer) throw new AnalysisError(`eof ${eof} is not a block in 0..${nLayer}`);
  return eof;
}

/** CLI `--freeze K` → paper's eof (= K: the last frozen block in 1-based numbering; 0 = none frozen). */
export function freezeToEof(K: number, nLayer: number): number {
  if (!Number.isInteger(K) || K < 0 || K > nLayer) throw new AnalysisError(`--freeze ${K} is outside 0..${nLayer}`);
  return K;
}

/** "blocks 0..K−1 frozen, K..N−1 trainable" in both numberings. */
export function describeFreeze(K: number, nLayer: number): string {
  const range = (a: number, b: number) => (a === b ? `block ${a}` : `blocks ${a}..${b}`);
  const paper = (a: number, b: number) => (a === b ? `paper ${a}` : `paper ${a}..${b}`);
  const frozen = K === 0 ? 'no blocks frozen' : `${range(0, K - 1)} frozen (${paper(1, K)})`;
  const train = K === nLayer ? 'no blocks trainable' : `${range(K, nLayer - 1)} trainable (${paper(K + 1, nLayer)})`;
  return `--freeze ${K}: ${frozen}, ${train}`;
}

/** Relative size of floating-point noise in gains (see the header). */
export const TIE_TOLERANCE = 1e-6;

export interface ArgmaxResult {
  /** Paper block number 1..N with the maximal gain (shallowest among ties). */
  eof: number;
  maxGain: number;
  /** All blocks (1-based) within noise of the maximal gain. */
  ties: number[];
}

function maxAbsFinite(xs: readonly number[]): number {
  let m = 0;
  for (const x of xs) if (Number.isFinite(x)) m = Math.max(m, Math.abs(x));
  return m;
}

/** Every gain within noise of 0 relative to `scale` (e.g. max|D|): the data gives no signal. */
export function gainsWithoutSignal(gains: readonly number[], scale: number): boolean {
  return maxAbsFinite(gains) <= TIE_TOLERANCE * Math.abs(scale);
}

export function argmaxGain(gains: readonly number[]): ArgmaxResult {
  if (gains.length < 1) throw new AnalysisError('argmaxGain: no gains (N must be ≥ 1)');
  let best = -1;
  for (let i = 0; i < gains.length; i++) {
    const g = gains[i];
    if (typeof g !== 'number' || Number.isNaN(g) || g === Infinity) throw new AnalysisError(`argmaxGain: G_${i + 1} is ${g}`);
    if (g === -Infinity) continue;
    if (best < 0 || g > gains[best]) best = i;
  }
  if (best < 0) throw new AnalysisError('argmaxGain: every gain is −∞');
  const floor = gains[best] - TIE_TOLERANCE * maxAbsFinite(gains);
  const ties: number[] = [];
  for (let i = 0; i < gains.length; i++) if (gains[i] >= floor) ties.push(i + 1);
  return { eof: ties[0], maxGain: gains[ties[0] - 1], ties };
}

export interface BudgetEffect {
  budget: Budget;
  text: string;
  pad: boolean;
  /** B: the most trainable blocks the budget allows (a fraction budget resolves to this). */
  maxTrainable: number;
  freezeBefore: number;
  freezeAfter: number;
  /** 'capped': K raised to N − B; 'padded': K lowered to N − B; 'none': unchanged. */
  effect: 'none' | 'capped' | 'padded';
  /** Fraction budgets: backward FLOPs at B trainable blocks / full fine-tuning's backward FLOPs. */
  backwardFractionAtMax?: number;
}

/**
 * Resolve a budget to B (max trainable blocks). Fraction budgets need the cost model; if even K = N
 * (no trainable block: loss, head dX and ln_f only) exceeds the fraction, that is an error.
 */
export function maxTrainableBlocks(nLayer: number, budget: Budget, cost?: CostContext): { maxTrainable: number; backwardFraction?: number } {
  if (budget.kind === 'blocks') {
    if (!Number.isInteger(budget.blocks) || budget.blocks < 0) throw new AnalysisError(`budget: trainable blocks must be an integer ≥ 0, got ${budget.blocks}`);
    return { maxTrainable: Math.min(budget.blocks, nLayer) };
  }
  const f = budget.fraction;
  if (!(f > 0) || f > 1) throw new AnalysisError(`budget: backward FLOPs fraction must be in (0, 1], got ${f}`);
  if (!cost) throw new AnalysisError('budget: a fraction of backward FLOPs needs the model shape and batch (cost context)');
  if (cost.config.nLayer !== nLayer) throw new AnalysisError(`budget: cost config has nLayer ${cost.config.nLayer}, gains have N = ${nLayer}`);
  const table = costTable(cost.config, cost.batch, cost.seqLen, cost.options);
  const fullBwd = table.full.flops.backward;
  // rows[K] for K = 0..N; backward FLOPs decrease with K: the smallest K that fits gives the largest suffix.
  for (let K = 0; K <= nLayer; K++) {
    const r = table.rows[K];
    if (r.flops.backward <= f * fullBwd) return { maxTrainable: nLayer - K, backwardFraction: r.flops.backward / fullBwd };
  }
  const minFrac = table.rows[nLayer].flops.backward / fullBwd;
  throw new AnalysisError(`budget ${formatBudget(budget)} is below the backward of zero trainable blocks (loss, head dX, final norm): ${(minFrac * 100).toFixed(3)}% of full`);
}

/** Apply cap (and optionally pad) to a freeze boundary K. */
export function applyBudget(K: number, nLayer: number, budget: Budget, pad = false, cost?: CostContext): BudgetEffect {
  freezeToEof(K, nLayer);
  const { maxTrainable, backwardFraction } = maxTrainableBlocks(nLayer, budget, cost);
  const floorK = nLayer - maxTrainable;
  const after = pad ? floorK : Math.max(K, floorK);
  const effect = after > K ? 'capped' : after < K ? 'padded' : 'none';
  const out: BudgetEffect = { budget, text: formatBudget(budget), pad, maxTrainable, freezeBefore: K, freezeAfter: after, effect };
  if (backwardFraction !== undefined) out.backwardFractionAtMax = backwardFraction;
  return out;
}

export interface BoundaryOptions {
  budget?: Budget;
  /** Unfreeze down to exactly B trainable blocks (needs a budget). */
  pad?: boolean;
  /** Needed for a fraction budget. */
  cost?: CostContext;
  /** Scale of the deviations the gains came from (max|D|): enables the no-signal check. */
  signalScale?: number;
}

export interface BoundaryDecision {
  nLayer: number;
  /** Paper numbering: block 1..N with the maximal gain. */
  eof: number;
  maxGain: number;
  ties: number[];
  /** K implied by eof alone (= eof; 0 when there is no signal). */
  freezeFromEof: number;
  /** Every gain within noise of 0: the analysis cannot tell where to freeze (K = 0 before the budget). */
  noSignal: boolean;
  /** Final K after the budget: CLI `--freeze K`, blocks 0..K−1 frozen. */
  freeze: number;
  trainableBlocks: number;
  description: string;
  budget?: BudgetEffect;
}

/** eof = argmax G_k, K = eof, then the budget. `gains[k − 1]` = G_k. */
export function decideBoundary(gains: readonly number[], opts: BoundaryOptions = {}): BoundaryDecision {
  const N = gains.length;
  const { eof, maxGain, ties } = argmaxGain(gains);
  const noSignal = opts.signalScale !== undefined && gainsWithoutSignal(gains, opts.signalScale);
  const K0 = noSignal ? 0 : eofToFreeze(eof, N);
  if (opts.pad && !opts.budget) throw new AnalysisError('--pad needs a --budget');
  const budget = opts.budget ? applyBudget(K0, N, opts.budget, opts.pad ?? false, opts.cost) : undefined;
  const K = budget ? budget.freezeAfter : K0;
  const d: BoundaryDecision = { nLayer: N, eof, maxGain, ties, freezeFromEof: K0, noSignal, freeze: K, trainableBlocks: N - K, description: describeFreeze(K, N) };
  if (budget) d.budget = budget;
  return d;
}
