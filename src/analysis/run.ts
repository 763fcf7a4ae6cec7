// The whole SALF analysis (method.md sections 2-6) as one platform-free pipeline:
//   data (token windows, or classification examples) → analysed positions with their targets →
//   forward passes that capture the trace (raw residual stream h_0..h_N) → deviations reduced on the GPU
//   per run (only N+1 numbers come back) → position-weighted mean over runs → gains → boundary → report.
// No fs, no node: imports (the CLI in src/cli/analyze.ts reads files; a browser page could call this too).
//
// Bases (cosine/contrastive): G = WᵀW on the GPU once per model, Cholesky in float64 once, then one
// basis per token the first time it occurs as a target or label; all of it cached per model within the
// process (key: a caller-given string, else the GpuWeights object).
//
// Runs. The deviation kernel binds the whole trace buffer, (N+1)·capacity·C floats, so the positions per
// forward are capped by the device's maxStorageBufferBindingSize (and by 65535, the gather's grid limit).
//  - Every position of every sequence analysed (language-model data without --samples): the trace copies
//    whole residual buffers ('all' mode), batch B (lowered if B·T positions would not fit).
//  - Otherwise the trace gathers chosen rows ('rows' mode): runs hold up to B sequences and up to
//    `capacity` positions; a sequence with more positions than fit continues in the next run.
// D_k over all runs = Σ_r P_r·D_k^(r) / Σ_r P_r (P_r positions of run r): the mean over every analysed
// position, whatever the batching.

import { mulberry32 } from '../util/random.ts';
import type { Runtime } from '../gpu/runtime.ts';
import type { ModelConfig } from '../model/config.ts';
import { Gpt2Forward } from '../model/forward.ts';
import type { GpuWeights } from '../model/weights.ts';
import type { TokenWindows } from '../data/tokens.ts';
import { resolveLabelWords, type ClassificationExample } from '../data/classification.ts';
import type { Tokenizer } from '../tokenizer/bpe.ts';
import { parseBudget, type Budget } from './boundary.ts';
import { BasisSolver, cholesky, NotPositiveDefiniteError, type CholeskyFactor } from './cholesky.ts';
import { computeGains, DEFAULT_GAIN_STRATEGY, type GainResult } from './gain.ts';
import { GpuDeviationReducer, GpuGram } from './gpu.ts';
import { renderAnalysisSvg } from './plot.ts';
import { buildReport, type AnalysisReport } from './report.ts';
import { AnalysisError, DEVIATION_METRICS, type DeviationMetric, type DeviationResult, type TokenBases } from './types.ts';

// ------------------------------------------------------------------------------------------ data

/** One sequence of a forward: its tokens, the positions analysed in it and the target at each. */
export interface AnalysisExample {
  /** Token ids, 1..T of them (padded to T in the batch; causal attention makes the padding irrelevant). */
  ids: Int32Array;
  /** Positions analysed, each in [0, ids.length), ascending. */
  positions: Int32Array;
  /** Target token y at each analysed position. */
  targets: Int32Array;
}

export interface PreparedData {
  kind: 'lm' | 'classification';
  /** Tokens per sequence of every forward (padded length). */
  T: number;
  examples: AnalysisExample[];
  /** Classification: the label tokens C, sorted unique (contrastive runs over them). */
  labels?: Int32Array;
  /** Classification: label → first token of its label word. */
  labelTokens?: Record<string, number>;
  /** Positions analysed in all (Σ positions.length). */
  positions: number;
  /** D_f for the g2 strategy: tokens available for fine-tuning (LM) or examples (classification). */
  dataSize: number;
  /** One line saying what is analysed. */
  description: string;
  /** Things the user should know (truncated prompts, …). */
  notes: string[];
}


/** n distinct indices of [0, total), sorted ascending, seeded (Floyd's algorithm: O(n) expected). */
export function sampleIndices(total: number, n: number, seed: number): Int32Array {
  if (!Number.isInteger(n) || n < 1) throw new AnalysisError(`samples must be a positive integer, got ${n}`);
  if (n >= total) return Int32Array.from({ length: total }, (_, i) => i);
  const rnd = mulberry32(seed);
  const chosen = new Set<number>();
  for (let j = total - n; j < total; j++) {
    const t = Math.floor(rnd() * (j + 1));
    chosen.add(chosen.has(t) ? j : t);
  }
  return Int32Array.from([...chosen].sort((a, b) => a - b));
}

/** n window indices spread evenly over [0, count) (all when n ≥ count). */
export function spreadWindows(count: number, n?: number): Int32Array {
  if (n === undefined || n >= count) return Int32Array.from({ length: count }, (_, i) => i);
  if (!Number.isInteger(n) || n < 1) throw new AnalysisError(`max windows must be a positive integer, got ${n}`);
  return Int32Array.from({ length: n }, (_, i) => Math.floor((i * count) / n));
}

export interface LmDataOptions {
  /** Analyse only this many windows, spread evenly over the data (default: all). */
  maxWindows?: number;
  /** Analyse a seeded sample of this many positions (default: every position). */
  samples?: number;
  seed?: number;
}

/**
 * Language-model data: windows of seq+1 tokens; position t of window w has input tokens[..t] and target
 * the next token. Every position, or a seeded sample of positions over the chosen windows.
 */
export function prepareLmData(win: TokenWindows, o: LmDataOptions = {}): PreparedData {
  const T = win.seq;
  const chosen = spreadWindows(win.count, o.maxWindows);
  const total = chosen.length * T;
  const examples: AnalysisExample[] = [];
  let description = `${chosen.length} window(s) of ${T} tokens${chosen.length < win.count ? ` (spread over ${win.count})` : ''}`;
  if (o.samples !== undefined && o.samples < total) {
    const picks = sampleIndices(total, o.samples, o.seed ?? 1);
    let i = 0;
    while (i < picks.length) {
      const w = Math.floor(picks[i] / T);
      let j = i;
      while (j < picks.length && Math.floor(picks[j] / T) === w) j++;
      const positions = Int32Array.from(picks.subarray(i, j), (p) => p - w * T);
      const tg = win.targets(chosen[w]);
      examples.push({ ids: win.inputs(chosen[w]), positions, targets: Int32Array.from(positions, (p) => tg[p]) });
      i = j;
    }
    description += `, a seeded sample of ${picks.length} of their ${total} positions (seed ${o.seed ?? 1})`;
  } else {
    const all = Int32Array.from({ length: T }, (_, i) => i);
    for (const w of chosen) examples.push({ ids: win.inputs(w), positions: all, targets: win.targets(w) });
    description += `, every position (${total})`;
  }
  const positions = examples.reduce((s, e) => s + e.positions.length, 0);
  return { kind: 'lm', T, examples, positions, dataSize: win.count * T, description, notes: [] };
}

export interface ClassificationDataOptions {
  /** "label=word,..." (resolveLabelWords). */
  labels: string;
  /** Fixed padded length; default: the longest prompt (capped at nPositions). */
  seq?: number;
  nPositions: number;
  /** Analyse a seeded sample of this many examples. */
  samples?: number;
  seed?: number;
  source: string;
}

/**
 * Classification data: each example's prompt is tokenized; the analysed position is its last token and
 * the target the label word's first token. Prompts longer than T keep their last T tokens.
 */
export function prepareClassificationData(rows: ClassificationExample[], tokenizer: Pick<Tokenizer, 'encode'>, o: ClassificationDataOptions): PreparedData {
  if (rows.length === 0) throw new AnalysisError(`${o.source}: contains no examples`);
  const labelIds = resolveLabelWords(o.labels, tokenizer, new Set(rows.map((r) => r.label)), o.source);
  const picked = o.samples !== undefined && o.samples < rows.length ? Array.from(sampleIndices(rows.length, o.samples, o.seed ?? 1), (i) => rows[i]) : rows;
  const tokenized = picked.map((r) => {
    const ids = tokenizer.encode(r.text);
    if (ids.length === 0) throw new AnalysisError(`${o.source}: line ${r.line}: the text tokenizes to nothing (no prompt token to analyse)`);
    return { ids, target: labelIds.get(r.label)!, line: r.line };
  });
  const longest = tokenized.reduce((m, e) => Math.max(m, e.ids.length), 0);
  if (o.seq !== undefined && (!Number.isInteger(o.seq) || o.seq < 1 || o.seq > o.nPositions)) throw new AnalysisError(`sequence length ${o.seq} must be in 1..${o.nPositions} (the model's context)`);
  const T = o.seq ?? Math.min(longest, o.nPositions);
  let truncated = 0;
  const examples: AnalysisExample[] = tokenized.map((e) => {
    let ids = e.ids;
    if (ids.length > T) {
      ids = ids.slice(ids.length - T);
      truncated++;
    }
    return { ids: Int32Array.from(ids), positions: Int32Array.of(ids.length - 1), targets: Int32Array.of(e.target) };
  });
  const notes: string[] = [];
  if (truncated > 0) notes.push(`${truncated} of ${examples.length} prompt(s) are longer than ${T} tokens: each keeps its last ${T} tokens`);
  const labelTokens: Record<string, number> = {};
  for (const [l, t] of labelIds) labelTokens[l] = t;
  const labels = Int32Array.from(new Set(labelIds.values())).sort();
  const description = `${examples.length} classification example(s)${picked.length < rows.length ? ` (a seeded sample of ${rows.length}, seed ${o.seed ?? 1})` : ''}, ${labelIds.size} label(s) (${[...labelIds].map(([l, t]) => `${l} → token ${t}`).join(', ')}), padded to ${T} tokens`;
  return { kind: 'classification', T, examples, labels, labelTokens, positions: examples.length, dataSize: examples.length, description, notes };
}

// ------------------------------------------------------------------------------------------ bases

/** Everything solved once per model: the Cholesky factor of G (+ ridge if needed) and the basis cache. */
export interface ModelBases {
  factor: CholeskyFactor;
  solver: BasisSolver;
  /** The relative ridge r the Gram matrix needed (G + r·trace(G)/d·I); 0 = none. */
  relativeRidge: number;
  gramSeconds: number;
  choleskySeconds: number;
}

const basesByKey = new Map<string, Promise<ModelBases>>();
const basesByWeights = new WeakMap<GpuWeights, Promise<ModelBases>>();

/** FNV-1a over the float bits (a cache key for the head's contents). */
export function fingerprint(data: Float32Array): string {
  const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
  let h = 0x811c9dc5;
  for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i], 0x01000193);
  return `${data.length}:${(h >>> 0).toString(16)}`;
}

/** Relative ridges tried in turn when G is numerically not positive definite (0 first). */
const RIDGES = [0, 1e-7, 1e-5, 1e-3];

/**
 * Factor the head's Gram matrix, adding the smallest ridge that makes it positive definite (a head of
 * rank < d, e.g. a dimension no token uses, gives a singular G). The caller reports a ridge > 0.
 */
export function factorGram(G: ArrayLike<number>, d: number): { factor: CholeskyFactor; relativeRidge: number } {
  let last: NotPositiveDefiniteError | null = null;
  for (const r of RIDGES) {
    try {
      return { factor: cholesky(G, d, { relativeRidge: r }), relativeRidge: r };
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
      last = e;
    }
  }
  throw new AnalysisError(`the LM head's Gram matrix WᵀW stays singular even with a ridge of ${RIDGES[RIDGES.length - 1]}·trace/d (Cholesky pivot ${last!.pivot} is ${last!.value}): the head's weights are degenerate (all zero, or not finite)`);
}

async function solveModelBases(rt: Runtime, weights: GpuWeights, head?: Float32Array): Promise<ModelBases> {
  const cfg = weights.cfg;
  const t0 = performance.now();
  const G = await new GpuGram(rt, weights).gram();
  const t1 = performance.now();
  const { factor, relativeRidge } = factorGram(G.data, G.d);
  const t2 = performance.now();
  const W = head ?? (await rt.memory.readFloat32(weights.head, 0, cfg.vocabSize * cfg.nEmbd));
  return { factor, solver: new BasisSolver(factor, W, cfg.vocabSize), relativeRidge, gramSeconds: (t1 - t0) / 1000, choleskySeconds: (t2 - t1) / 1000 };
}

/**
 * The model's bases, cached per process: by `key` when given (e.g. model path + head fingerprint, so a
 * fresh upload of the same model hits), else by the GpuWeights object. `head`: the host copy of the LM
 * head [V, C] (read back from the GPU when absent).
 */
export function modelBases(rt: Runtime, weights: GpuWeights, o: { key?: string; head?: Float32Array } = {}): Promise<ModelBases> {
  const hit = o.key !== undefined ? basesByKey.get(o.key) : basesByWeights.get(weights);
  if (hit) return hit;
  const p = solveModelBases(rt, weights, o.head);
  if (o.key !== undefined) basesByKey.set(o.key, p);
  else basesByWeights.set(weights, p);
  p.catch(() => (o.key !== undefined ? basesByKey.delete(o.key) : basesByWeights.delete(weights)));
  return p;
}

export function clearBasesCache(): void {
  basesByKey.clear();
}

// ------------------------------------------------------------------------------------------ runs

export interface AnalysisProgress {
  runs: number;
  totalRuns: number;
  positions: number;
  totalPositions: number;
  seconds: number;
}

/** A slot of a run: positions [from, to) of example `ex` in batch row `row`. */
interface Slot {
  ex: number;
  from: number;
  to: number;
}

export interface RunPlan {
  mode: 'all' | 'rows';
  /** Sequences per forward. */
  B: number;
  T: number;
  /** Trace positions per forward (B·T in 'all' mode). */
  capacity: number;
  runs: Slot[][];
}

/** Largest trace capacity whose buffer fits one storage binding: (N+1)·roundUp(cap·C, 64)·4 ≤ maxBinding. */
export function maxTracePositions(cfg: ModelConfig, maxBinding: number): number {
  const slot = Math.floor(maxBinding / 4 / (cfg.nLayer + 1) / 64) * 64;
  return Math.floor(slot / cfg.nEmbd);
}

/** Group examples into forward runs (see the header). */
export function planRuns(data: PreparedData, batch: number, maxPositions: number): RunPlan {
  const T = data.T;
  if (!Number.isInteger(batch) || batch < 1) throw new AnalysisError(`batch must be a positive integer, got ${batch}`);
  if (maxPositions < 1) throw new AnalysisError('the trace of a single position does not fit one storage binding of this device');
  const full = data.examples.every((e) => e.ids.length === T && e.positions.length === T && e.positions.every((p, i) => p === i));
  const runs: Slot[][] = [];
  if (full && Math.min(batch, Math.floor(maxPositions / T)) >= 1) {
    const B = Math.min(batch, Math.floor(maxPositions / T), data.examples.length);
    for (let i = 0; i < data.examples.length; i += B) {
      runs.push(Array.from({ length: Math.min(B, data.examples.length - i) }, (_, j) => ({ ex: i + j, from: 0, to: T })));
    }
    return { mode: 'all', B, T, capacity: B * T, runs };
  }
  const cap = Math.min(maxPositions, 65535, batch * T, Math.max(1, data.positions));
  let cur: Slot[] = [];
  let used = 0;
  const flush = () => {
    if (cur.length > 0) runs.push(cur);
    cur = [];
    used = 0;
  };
  data.examples.forEach((e, ex) => {
    let from = 0;
    while (from < e.positions.length) {
      if (cur.length === batch || used === cap) flush();
      const take = Math.min(e.positions.length - from, cap - used);
      cur.push({ ex, from, to: from + take });
      used += take;
      from += take;
    }
  });
  flush();
  const capacity = runs.reduce((m, r) => Math.max(m, r.reduce((s, x) => s + x.to - x.from, 0)), 0);
  const B = Math.min(batch, runs.reduce((m, r) => Math.max(m, r.length), 0));
  return { mode: 'rows', B, T, capacity, runs };
}

export interface DeviationRunOptions {
  metric: DeviationMetric;
  /** Apply ln_f to every latent space before measuring (method.md section 1; default on). */
  finalNorm: boolean;
  /** Sequences per forward. */
  batch: number;
  /** Bases (cosine/contrastive): cache key and host head, see modelBases. */
  basesKey?: string;
  head?: Float32Array;
  /** Override the device's storage binding limit (tests use it to force many small runs). */
  maxBindingBytes?: number;
  onProgress?: (p: AnalysisProgress) => void;
}

export interface DeviationRunStats {
  mode: 'all' | 'rows';
  runs: number;
  B: number;
  T: number;
  capacity: number;
  positions: number;
  /** Distinct tokens with a basis (targets + labels). */
  basisTokens: number;
  gramSeconds: number;
  choleskySeconds: number;
  /** Relative ridge added to a singular Gram matrix (0 = none needed). */
  gramRidge: number;
  basisSeconds: number;
  forwardSeconds: number;
  reduceSeconds: number;
  seconds: number;
}

function checkMetric(metric: string): DeviationMetric {
  if (!(DEVIATION_METRICS as readonly string[]).includes(metric)) throw new AnalysisError(`unknown deviation '${metric}' (known: ${DEVIATION_METRICS.join(', ')})`);
  return metric as DeviationMetric;
}

/** Forward every run, reduce its trace on the GPU, and combine: D_0..D_N over all analysed positions. */
export async function measureDeviations(rt: Runtime, weights: GpuWeights, data: PreparedData, o: DeviationRunOptions): Promise<{ result: DeviationResult; stats: DeviationRunStats }> {
  const cfg = weights.cfg;
  const metric = checkMetric(o.metric);
  if (data.examples.length === 0 || data.positions === 0) throw new AnalysisError('no positions to analyse (the data is empty)');
  if (metric === 'contrastive' && !(data.labels && data.labels.length > 0)) {
    throw new AnalysisError("deviation 'contrastive' needs label tokens: classification data (.jsonl) with --labels");
  }
  if (data.T > cfg.nPositions) throw new AnalysisError(`sequence length ${data.T} exceeds the model's context n_positions = ${cfg.nPositions}`);
  const t0 = performance.now();
  const needBases = metric !== 'lens';
  const bases = needBases ? await modelBases(rt, weights, { key: o.basesKey, head: o.head }) : null;
  const maxBinding = o.maxBindingBytes ?? rt.gpu.limits.maxStorageBufferBindingSize ?? 128 * 2 ** 20;
  const plan = planRuns(data, o.batch, maxTracePositions(cfg, maxBinding));
  const { B, T } = plan;
  const fwd = await Gpt2Forward.build(rt, weights, {
    B, T, saveFrom: cfg.nLayer, loss: false, keepLogits: false,
    trace: plan.mode === 'all' ? { kind: 'all' } : { kind: 'rows', capacity: plan.capacity },
  });
  const reducer = new GpuDeviationReducer(rt, weights, { trace: fwd.trace!, positions: fwd.tracePositions, slotElems: fwd.traceSlotElems }, o.finalNorm);
  const spaces = cfg.nLayer + 1;
  const sum = new Float64Array(spaces);
  let done = 0;
  let basisSeconds = 0;
  let forwardSeconds = 0;
  let reduceSeconds = 0;
  const basisTokens = new Set<number>();
  // Progress rates count only the loop's own work: not the one-off Gram/Cholesky/forward build before
  // it, nor kernels compiled inside it (the reducer's, at its first run), so an ETA is not inflated.
  const loopStart = performance.now();
  const buildMsAtStart = rt.kernels.buildMs;
  const loopSeconds = () => (performance.now() - loopStart - (rt.kernels.buildMs - buildMsAtStart)) / 1000;
  try {
    const ids = new Int32Array(B * T);
    for (let r = 0; r < plan.runs.length; r++) {
      const slots = plan.runs[r];
      const rowIdx: number[] = [];
      const targets: number[] = [];
      for (let b = 0; b < B; b++) {
        // Rows without a slot repeat the run's first sequence (any valid tokens do; nothing reads them).
        const e = data.examples[slots[b < slots.length ? b : 0].ex];
        const len = e.ids.length;
        ids.set(e.ids, b * T);
        ids.fill(e.ids[len - 1], b * T + len, (b + 1) * T);
        if (b >= slots.length) continue;
        const s = slots[b];
        for (let i = s.from; i < s.to; i++) {
          rowIdx.push(b * T + e.positions[i]);
          targets.push(e.targets[i]);
        }
      }
      const P = targets.length;
      const tf = performance.now();
      fwd.setBatch(ids);
      if (plan.mode === 'rows') fwd.setTraceRows(rowIdx);
      await fwd.run('analysis forward');
      const tb = performance.now();
      forwardSeconds += (tb - tf) / 1000;
      let labels: Int32Array | undefined;
      let tokenBases: TokenBases | undefined;
      if (bases) {
        const need = data.labels ? [...targets, ...data.labels] : targets;
        tokenBases = bases.solver.bases(need);
        for (const t of tokenBases.tokens) basisTokens.add(t);
        if (metric === 'contrastive') labels = data.labels;
      }
      const tr = performance.now();
      basisSeconds += (tr - tb) / 1000;
      const d = await reducer.reduce({ metric, targets: Int32Array.from(targets), bases: tokenBases, labels });
      reduceSeconds += (performance.now() - tr) / 1000;
      for (let k = 0; k < spaces; k++) {
        const v = d.deviations[k];
        if (!Number.isFinite(v)) throw new AnalysisError(`deviation of latent space ${k} is not finite (${v}) in run ${r + 1}: the model's weights or the data are broken`);
        sum[k] += v * P;
      }
      done += P;
      o.onProgress?.({ runs: r + 1, totalRuns: plan.runs.length, positions: done, totalPositions: data.positions, seconds: loopSeconds() });
    }
  } finally {
    reducer.destroy();
    fwd.destroy();
  }
  const deviations = Array.from(sum, (s) => s / done);
  const stats: DeviationRunStats = {
    mode: plan.mode, runs: plan.runs.length, B, T, capacity: plan.capacity, positions: done, basisTokens: basisTokens.size,
    gramSeconds: bases?.gramSeconds ?? 0, choleskySeconds: bases?.choleskySeconds ?? 0, gramRidge: bases?.relativeRidge ?? 0, basisSeconds, forwardSeconds, reduceSeconds,
    seconds: (performance.now() - t0) / 1000,
  };
  return { result: { metric, deviations, positions: done }, stats };
}

// ------------------------------------------------------------------------------------------ analysis

export interface AnalysisOptions extends DeviationRunOptions {
  /** Gain strategy (default DEFAULT_GAIN_STRATEGY; g0 when N < 2 and none is named). */
  strategy?: string;
  /** Strategy parameter overrides (g2: A, alpha, beta, E, p). */
  gainParams?: Record<string, number>;
  budget?: Budget | string;
  pad?: boolean;
  /** Shape of a fine-tuning step for the cost lines (default: batch and data.T). */
  costBatch?: number;
  costSeq?: number;
  /** Label of the model in the report. */
  model?: string;
  plotTitle?: string;
}

export interface AnalysisOutcome {
  report: AnalysisReport;
  deviations: DeviationResult;
  gains: GainResult;
  stats: DeviationRunStats;
  /** renderAnalysisSvg of the result. */
  svg(): string;
}

/** Deviations → gains → boundary (with budget) → cost → report. */
export async function runAnalysis(rt: Runtime, weights: GpuWeights, data: PreparedData, o: AnalysisOptions): Promise<AnalysisOutcome> {
  const cfg = weights.cfg;
  const N = cfg.nLayer;
  // Check what can fail cheaply before the expensive part.
  const budget = typeof o.budget === 'string' ? parseBudget(o.budget) : o.budget;
  if (o.pad && !budget) throw new AnalysisError('--pad needs a --budget');
  const strategy = o.strategy ?? (N >= 2 ? DEFAULT_GAIN_STRATEGY : 'g0');
  const { result, stats } = await measureDeviations(rt, weights, data, o);
  const gainContext = { config: cfg, dataSize: data.dataSize, params: o.gainParams };
  const gains = computeGains(strategy, result.deviations, gainContext);
  const costBatch = o.costBatch ?? o.batch;
  const costSeq = Math.min(o.costSeq ?? data.T, cfg.nPositions);
  const report = buildReport({
    deviations: result,
    finalNormApplied: o.finalNorm,
    gains,
    gainContext,
    budget,
    pad: o.pad,
    cost: { config: cfg, batch: costBatch, seqLen: costSeq },
    model: o.model,
  });
  return {
    report,
    deviations: result,
    gains,
    stats,
    svg: () =>
      renderAnalysisSvg({
        deviations: result.deviations,
        gains: gains.gains,
        freeze: report.boundary.freeze,
        eof: report.boundary.eof,
        metric: result.metric,
        strategy: gains.strategy,
        ...(o.plotTitle ? { title: o.plotTitle } : {}),
      }),
  };
}
