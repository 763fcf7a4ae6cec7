// The analysis report: deviations, gains, strategy details, eof, K, budget effect, cost at K vs full,
// as one JSON-serialisable object, and a plain-text table renderer.
//
// JSON: every non-finite number in the report (e.g. a −∞ gain from a custom strategy) is written as
// null; typed arrays become plain arrays. The report holds no typed arrays, Maps or functions.

import type { ModelConfig } from '../model/config.ts';
import { decideBoundary, parseBudget, type Budget, type BoundaryDecision, type CostContext } from './boundary.ts';
import { predictedSaving, stepCost, type CostRow } from './cost.ts';
import { computeGains, DEFAULT_GAIN_STRATEGY, observedReductions, type GainContext, type GainResult } from './gain.ts';
import { AnalysisError, type DeviationResult } from './types.ts';

export const REPORT_FORMAT = 'semfreeze.analysis/1';

export interface ReportInput {
  /** D_0..D_N, or the reducer's result (metric, positions and stderr are taken from it). */
  deviations: DeviationResult | readonly number[];
  metric?: string;
  /** Whether the final norm was applied to every latent space before measuring (method.md section 1). */
  finalNormApplied?: boolean;
  /** Gain strategy name (default DEFAULT_GAIN_STRATEGY), or an already computed result. */
  strategy?: string;
  gains?: GainResult;
  gainContext?: GainContext;
  budget?: Budget | string;
  pad?: boolean;
  /** Model shape and batch: enables the cost lines (and fraction budgets). */
  cost?: CostContext;
  /** Free-form label (checkpoint name or path). */
  model?: string;
}

export interface ReportCostSide {
  boundary: number | 'none';
  trainableBlocks: number;
  forwardFlops: number;
  backwardDXFlops: number;
  backwardDWFlops: number;
  backwardFlops: number;
  optimizerFlops: number;
  stepFlops: number;
  trainableParams: number;
  weightBytes: number;
  gradientBytes: number;
  adamStateBytes: number;
  activationBytes: number;
  totalBytes: number;
}

export interface AnalysisReport {
  format: typeof REPORT_FORMAT;
  model: string | null;
  shape: Pick<ModelConfig, 'nLayer' | 'nEmbd' | 'nHead' | 'nInner' | 'vocabSize' | 'tiedHead'> | null;
  metric: string | null;
  positions: number | null;
  finalNormApplied: boolean | null;
  nLayer: number;
  latentSpaces: { k: number; deviation: number; stderr: number | null }[];
  strategy: { name: string; details: unknown };
  blocks: { block: number; cliBlock: number; gain: number | null; observedReduction: number; chosen: boolean; frozen: boolean }[];
  boundary: BoundaryDecision;
  cost: {
    batch: number;
    seqLen: number;
    tokensPerStep: number;
    attention: 'causal' | 'full';
    atK: ReportCostSide;
    full: ReportCostSide;
    backwardRatio: number;
    stepRatio: number;
    memoryRatio: number;
    ruleOfThumbStepRatio: number;
    /** With the boundary activation cache (finetune --cache-boundary), after its first epoch. */
    cachedStepFlops: number;
    cachedStepRatio: number;
  } | null;
}

/** Deep copy with non-finite numbers → null, typed arrays → arrays. */
export function jsonSafe(v: unknown): unknown {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (v === null || typeof v !== 'object') return v;
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, (x) => jsonSafe(x));
  if (Array.isArray(v)) return v.map(jsonSafe);
  const o: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (x !== undefined && typeof x !== 'function') o[k] = jsonSafe(x);
  return o;
}

function costSide(r: CostRow): ReportCostSide {
  return {
    boundary: r.boundary,
    trainableBlocks: r.trainableBlocks,
    forwardFlops: r.flops.forward,
    backwardDXFlops: r.flops.backwardDX,
    backwardDWFlops: r.flops.backwardDW,
    backwardFlops: r.flops.backward,
    optimizerFlops: r.flops.optimizer,
    stepFlops: r.flops.total,
    trainableParams: r.memory.trainableParams,
    weightBytes: r.memory.weightBytes,
    gradientBytes: r.memory.gradientBytes,
    adamStateBytes: r.memory.adamStateBytes,
    activationBytes: r.memory.activationBytes,
    totalBytes: r.memory.totalBytes,
  };
}

/** What a boundary with `noSignal` means for the user. */
export const NO_SIGNAL = 'every gain is within floating-point noise of 0, so the data does not say where to freeze; nothing is frozen (K = 0). Choose --freeze K yourself, or analyse other data.';

/** Compute gains (unless given), the boundary and the cost, and assemble the report. */
export function buildReport(input: ReportInput): AnalysisReport {
  const devRes = Array.isArray(input.deviations) ? null : (input.deviations as DeviationResult);
  const D: number[] = devRes ? [...devRes.deviations] : [...(input.deviations as readonly number[])];
  const N = D.length - 1;
  const strategyName = input.gains?.strategy ?? input.strategy ?? DEFAULT_GAIN_STRATEGY;
  const ctx: GainContext = { ...input.gainContext };
  if (input.cost && !ctx.config) ctx.config = input.cost.config;
  const gains = input.gains ?? computeGains(strategyName, D, ctx);
  if (gains.gains.length !== N) throw new AnalysisError(`report: ${gains.gains.length} gains for ${N + 1} deviations`);
  if (input.cost && input.cost.config.nLayer !== N) throw new AnalysisError(`report: ${N + 1} deviations imply N = ${N} but the config has nLayer ${input.cost.config.nLayer}`);
  const budget = typeof input.budget === 'string' ? parseBudget(input.budget) : input.budget;
  const boundary = decideBoundary(gains.gains, { budget, pad: input.pad, cost: input.cost, signalScale: Math.max(...D.map(Math.abs)) });
  const K = boundary.freeze;
  const obs = observedReductions(D);

  let cost: AnalysisReport['cost'] = null;
  if (input.cost) {
    const c = input.cost;
    const s = predictedSaving(c.config, c.batch, c.seqLen, K, c.options);
    cost = {
      batch: c.batch,
      seqLen: c.seqLen,
      tokensPerStep: c.batch * c.seqLen,
      attention: c.options?.attention ?? 'causal',
      atK: costSide(s.atK),
      full: costSide(s.full),
      backwardRatio: s.backwardRatio,
      stepRatio: s.stepRatio,
      memoryRatio: s.memoryRatio,
      ruleOfThumbStepRatio: s.ruleOfThumbStepRatio,
      cachedStepFlops: 0,
      cachedStepRatio: 0,
    };
    const cached = stepCost(c.config, c.batch, c.seqLen, K, { ...c.options, cachedBoundary: true }).flops.total;
    cost.cachedStepFlops = cached;
    cost.cachedStepRatio = cached / s.full.flops.total;
  }
  const cfg = input.cost?.config ?? input.gainContext?.config;
  const report: AnalysisReport = {
    format: REPORT_FORMAT,
    model: input.model ?? null,
    shape: cfg ? { nLayer: cfg.nLayer, nEmbd: cfg.nEmbd, nHead: cfg.nHead, nInner: cfg.nInner, vocabSize: cfg.vocabSize, tiedHead: cfg.tiedHead } : null,
    metric: devRes?.metric ?? input.metric ?? null,
    positions: devRes?.positions ?? null,
    finalNormApplied: input.finalNormApplied ?? null,
    nLayer: N,
    latentSpaces: D.map((d, k) => ({ k, deviation: d, stderr: devRes?.stderr?.[k] ?? null })),
    strategy: { name: gains.strategy, details: gains.details },
    blocks: gains.gains.map((g, i) => ({ block: i + 1, cliBlock: i, gain: g, observedReduction: obs[i], chosen: i + 1 === boundary.eof, frozen: i + 1 <= K })),
    boundary,
    cost,
  };
  return jsonSafe(report) as AnalysisReport;
}

export function reportToJson(r: AnalysisReport): string {
  return JSON.stringify(jsonSafe(r), null, 2) + '\n';
}

function num(v: number | null | undefined, digits = 5): string {
  if (v === null || v === undefined) return '—';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (v !== 0 && (a >= 1e6 || a < 1e-4)) return v.toExponential(digits - 1);
  return v.toFixed(digits);
}

function flops(v: number): string {
  const units: [number, string][] = [[1e15, 'PFLOP'], [1e12, 'TFLOP'], [1e9, 'GFLOP'], [1e6, 'MFLOP'], [1e3, 'kFLOP']];
  for (const [s, u] of units) if (Math.abs(v) >= s) return `${(v / s).toFixed(3)} ${u}`;
  return `${v} FLOP`;
}

function bytes(v: number): string {
  const units: [number, string][] = [[2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']];
  for (const [s, u] of units) if (Math.abs(v) >= s) return `${(v / s).toFixed(2)} ${u}`;
  return `${v} B`;
}

const pct = (r: number) => `${(r * 100).toFixed(1)}%`;

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function padL(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

/** Plain-text tables: latent spaces, blocks (chosen marked), boundary, budget, predicted saving. */
export function renderReportText(r: AnalysisReport): string {
  const L: string[] = [];
  const head = [`SALF analysis`];
  if (r.model) head.push(`model ${r.model}`);
  if (r.metric) head.push(`metric ${r.metric}`);
  if (r.positions !== null) head.push(`${r.positions} positions`);
  head.push(`N = ${r.nLayer} blocks`);
  head.push(`strategy ${r.strategy.name}`);
  L.push(head.join(', '));
  if (r.finalNormApplied !== null) L.push(`final norm applied to every latent space: ${r.finalNormApplied ? 'yes' : 'no'}`);

  const det = (r.strategy.details ?? {}) as Record<string, unknown>;
  const fit = det.fit as Record<string, unknown> | undefined;
  if (fit && typeof fit === 'object') {
    L.push(`fit D̂_k = A·k^(−α) + E: A = ${num(fit.A as number)}, α = ${num(fit.alpha as number)}, E = ${num(fit.E as number)}, rms(log) = ${num(fit.rmsLog as number)}, rms = ${num(fit.rmsLinear as number)} (${String(fit.method)})`);
  }
  const prm = det.params as Record<string, unknown> | undefined;
  if (prm && typeof prm === 'object') {
    L.push(`parameters: ${Object.entries(prm).map(([k, v]) => `${k} = ${typeof v === 'number' ? num(v) : String(v)}`).join(', ')}` + (det.p !== undefined ? `, p = ${String(det.p)}` : '') + (det.dataSize !== undefined ? `, D_f = ${String(det.dataSize)}` : ''));
  }
  L.push('');

  const hasErr = r.latentSpaces.some((s) => s.stderr !== null);
  L.push(`latent space  ${padL('deviation', 12)}${hasErr ? padL('± stderr', 12) : ''}`);
  for (const s of r.latentSpaces) {
    const name = s.k === 0 ? '0 (embed)' : String(s.k);
    L.push(`${pad('  ' + name, 14)}${padL(num(s.deviation), 12)}${hasErr ? padL(num(s.stderr), 12) : ''}${s.k === r.boundary.freeze ? '   <- boundary hidden state' : ''}`);
  }
  L.push('');
  L.push(`block (paper)  cli  ${padL('D_{k-1}-D_k', 12)}${padL('gain', 12)}  state`);
  for (const b of r.blocks) {
    const mark = b.chosen ? '  <== eof (max gain)' : '';
    L.push(`${pad('  ' + b.block, 15)}${padL(String(b.cliBlock), 3)}  ${padL(num(b.observedReduction), 12)}${padL(num(b.gain), 12)}  ${b.frozen ? 'frozen' : 'train '}${mark}`);
  }
  L.push('');
  const bd = r.boundary;
  if (bd.noSignal) L.push(`no signal: ${NO_SIGNAL}`);
  L.push(`eof = ${bd.eof} (max gain ${num(bd.maxGain)}${bd.ties.length > 1 ? `; tied with blocks ${bd.ties.join(', ')}, shallowest taken` : ''})`);
  if (bd.budget) {
    const b = bd.budget;
    const fr = b.backwardFractionAtMax !== undefined ? ` (${pct(b.backwardFractionAtMax)} of full backward)` : '';
    const eff = b.effect === 'none' ? 'no change' : `${b.effect}: --freeze ${b.freezeBefore} → ${b.freezeAfter}`;
    L.push(`budget ${b.text}${b.pad ? ', pad' : ''}: at most ${b.maxTrainable} trainable block(s)${fr}; ${eff}`);
  }
  L.push(`boundary ${bd.description}`);

  if (r.cost) {
    const c = r.cost;
    L.push('');
    L.push(`predicted cost per step (B = ${c.batch}, T = ${c.seqLen}, ${c.tokensPerStep} tokens, ${c.attention} attention), --freeze ${bd.freeze} vs full fine-tuning:`);
    const row = (name: string, a: number, f: number, fmtv: (x: number) => string) =>
      L.push(`  ${pad(name, 18)}${padL(fmtv(a), 14)}  vs ${padL(fmtv(f), 14)}  = ${padL(pct(a / f), 6)}  (saving ${pct(1 - a / f)})`);
    row('forward FLOPs', c.atK.forwardFlops, c.full.forwardFlops, flops);
    row('backward FLOPs', c.atK.backwardFlops, c.full.backwardFlops, flops);
    L.push(`  ${pad('  of which dX/dW', 18)}${padL(flops(c.atK.backwardDXFlops), 14)} / ${flops(c.atK.backwardDWFlops)}`);
    row('optimizer FLOPs', c.atK.optimizerFlops, c.full.optimizerFlops, flops);
    row('step FLOPs', c.atK.stepFlops, c.full.stepFlops, flops);
    row('  boundary cached', c.cachedStepFlops, c.full.stepFlops, flops);
    L.push(`  ${pad('', 18)}rule of thumb (1 + 2(N−K)/N)/3 = ${pct(c.ruleOfThumbStepRatio)}`);
    row('trainable params', c.atK.trainableParams, c.full.trainableParams, (x) => String(x));
    row('grads + AdamW', c.atK.gradientBytes + c.atK.adamStateBytes, c.full.gradientBytes + c.full.adamStateBytes, bytes);
    row('activations', c.atK.activationBytes, c.full.activationBytes, bytes);
    row('memory total', c.atK.totalBytes, c.full.totalBytes, bytes);
  }
  return L.join('\n') + '\n';
}
