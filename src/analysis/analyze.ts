// `analyze` as one call for every shell (the CLI's `semfreeze analyze`, `finetune --freeze auto`, the
// demo, the browser page, embedding code): options checked, data read through the platform and
// prepared, the pipeline of run.ts run, and the report with the JSON object `analyze --json` prints.
import { parseClassificationJsonl } from '../data/classification.ts';
import { windows } from '../data/tokens.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { dataName, loadTokens, type LoadedModel } from '../model/load.ts';
import type { Platform } from '../platform/types.ts';
import { fitForwardBatch, type NoteSink } from '../train/shapes.ts';
import { UserError } from '../util/errors.ts';
import { decodeText } from '../util/utf8.ts';
import { parseBudget, type Budget } from './boundary.ts';
import { getGainStrategy } from './gain.ts';
import { NO_SIGNAL, jsonSafe, type AnalysisReport } from './report.ts';
import { fingerprint, prepareClassificationData, prepareLmData, runAnalysis, type AnalysisOutcome, type AnalysisProgress, type PreparedData } from './run.ts';
import { DEVIATION_METRICS, type DeviationMetric } from './types.ts';

export interface AnalyzeOptions {
  /** The model's directory (path or URL), as the report names it. */
  model: string;
  /** Keys the cache of semantic bases together with the head's fingerprint (default: `model`). */
  basesKey?: string;
  /** LM data (.txt/.json/.bin) or classification data (.jsonl {"text","label"} lines, with `labels`). */
  data: string;
  /** Tokens per sequence. LM data: default min(128, n_positions); classification: default the longest prompt. */
  seq?: number;
  /** Sequences per forward (default 8). */
  batch?: number;
  /** LM: a seeded sample of this many positions; classification: of this many examples. */
  samples?: number;
  seed?: number;
  /** LM: analyse only this many windows, spread evenly over the data. */
  maxWindows?: number;
  deviation?: string;
  gain?: string;
  budget?: string;
  pad?: boolean;
  /** 'on' (default) or 'off': apply ln_f to every latent space before measuring. */
  finalNorm?: string;
  /** Classification: "label=word,…". */
  labels?: string;
  /** Where the SVG figure is written (recorded in the JSON; the shell writes it). */
  plot?: string;
}

export interface AnalyzeHooks {
  /** Lines the user should see (what is analysed, notes, warnings). */
  onNote?: NoteSink;
  onProgress?: (p: AnalysisProgress) => void;
}

export interface AnalyzeResult {
  report: AnalysisReport;
  outcome: AnalysisOutcome;
  data: PreparedData;
  /** The object `semfreeze analyze --json` prints. */
  json: unknown;
}

export const DEFAULT_ANALYZE_BATCH = 8;
export const DEFAULT_LM_SEQ = 128;
/** `--freeze auto` analyses at most this many windows of the training data, spread evenly over it. */
export const AUTO_FREEZE_MAX_WINDOWS = 256;

/** The analysis behind `--freeze auto`: default metric and gain on the training data, at the run's shape. */
export function autoFreezeOptions(ctx: { model: string; data: string; seq: number; batch: number }): AnalyzeOptions {
  return { model: ctx.model, data: ctx.data, seq: ctx.seq, batch: ctx.batch, maxWindows: AUTO_FREEZE_MAX_WINDOWS };
}

export const isClassificationData = (path: string) => dataName(path).toLowerCase().endsWith('.jsonl');

interface CheckedOptions {
  metric: DeviationMetric;
  finalNorm: boolean;
  budget: Budget | undefined;
  batch: number;
  classification: boolean;
}

/** Everything that can be checked without the model (so a bad option fails before a slow load). */
export function checkAnalyzeOptions(o: AnalyzeOptions): CheckedOptions {
  const metric = (o.deviation ?? 'cosine') as DeviationMetric;
  if (!DEVIATION_METRICS.includes(metric)) throw new UserError(`--deviation must be one of ${DEVIATION_METRICS.join(', ')}, got '${o.deviation}'`);
  if (o.gain !== undefined) getGainStrategy(o.gain);
  const finalNorm = o.finalNorm ?? 'on';
  if (finalNorm !== 'on' && finalNorm !== 'off') throw new UserError(`--final-norm must be on or off, got '${finalNorm}'`);
  const budget = o.budget !== undefined ? parseBudget(o.budget) : undefined;
  if (o.pad && !budget) throw new UserError('--pad needs a --budget');
  const batch = o.batch ?? DEFAULT_ANALYZE_BATCH;
  if (!Number.isInteger(batch) || batch < 1) throw new UserError(`--batch must be an integer ≥ 1, got '${o.batch}'`);
  const classification = isClassificationData(o.data);
  if (classification && o.labels === undefined) throw new UserError(`${o.data}: classification data (.jsonl) needs --labels label=word,... (e.g. --labels pos=great,neg=terrible)`);
  if (!classification && o.labels !== undefined) throw new UserError(`--labels applies to classification data (.jsonl {"text", "label"} lines); ${o.data} is language-model data`);
  if (!classification && metric === 'contrastive') throw new UserError(`--deviation contrastive needs label tokens: classification data (.jsonl) with --labels; for language-model data use cosine or lens`);
  return { metric, finalNorm: finalNorm === 'on', budget, batch, classification };
}

/** Read and prepare the data the analysis runs over. */
export async function prepareAnalysisData(platform: Platform, model: LoadedModel, o: AnalyzeOptions, classification: boolean): Promise<PreparedData> {
  const { files } = model;
  const cfg = files.config;
  if (o.seq !== undefined && o.seq > cfg.nPositions) throw new UserError(`--seq ${o.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
  if (classification) {
    if (!files.tokenizer) throw new UserError(`${o.data}: classification data needs the model's tokenizer.json, and ${files.dir} has none`);
    const rows = parseClassificationJsonl(decodeText(await platform.readBytes(o.data)), o.data);
    return prepareClassificationData(rows, files.tokenizer, { labels: o.labels!, seq: o.seq, nPositions: cfg.nPositions, samples: o.samples, seed: o.seed, source: o.data });
  }
  const seq = o.seq ?? Math.min(DEFAULT_LM_SEQ, cfg.nPositions);
  const ids = await loadTokens(platform, o.data, files);
  return prepareLmData(windows(ids, seq, o.data), { samples: o.samples, seed: o.seed, maxWindows: o.maxWindows });
}

/** The SALF analysis of `model` over `o.data`: deviations, gains, boundary, predicted saving. */
export async function analyze(platform: Platform, rt: Runtime, model: LoadedModel, o: AnalyzeOptions, hooks: AnalyzeHooks = {}): Promise<AnalyzeResult> {
  const checked = checkAnalyzeOptions(o);
  const note = hooks.onNote ?? (() => {});
  const { files, weights } = model;
  const cfg = files.config;
  const data = await prepareAnalysisData(platform, model, o, checked.classification);
  note(`analysing ${data.description}; deviation ${checked.metric}, final norm ${checked.finalNorm ? 'on' : 'off'}`);
  for (const n of data.notes) note(`note: ${n}`);

  const head = await rt.memory.readFloat32(weights.head, 0, cfg.vocabSize * cfg.nEmbd);
  const outcome = await runAnalysis(rt, weights, data, {
    metric: checked.metric,
    finalNorm: checked.finalNorm,
    batch: fitForwardBatch(rt, cfg, { B: checked.batch, T: data.T, kind: 'forward' }, undefined, note),
    basesKey: `${o.basesKey ?? o.model}#${fingerprint(head)}`,
    head,
    strategy: o.gain,
    budget: checked.budget,
    pad: o.pad,
    costBatch: checked.batch,
    costSeq: data.T,
    model: o.model,
    onProgress: hooks.onProgress,
  });
  const s = outcome.stats;
  if (s.gramRidge > 0) note(`note: the LM head's Gram matrix WᵀW is singular (the head has rank < ${cfg.nEmbd}); regularised automatically with a ridge of ${s.gramRidge}·trace/d (G + λI) for the semantic bases`, true);
  if (outcome.report.boundary.noSignal) note(`warning: no signal in ${o.data}: ${NO_SIGNAL}`, true);
  note(`analysed ${s.positions} positions in ${s.seconds.toFixed(2)} s (${s.runs} forward(s) of ${s.B}×${s.T}, trace ${s.mode}; gram ${s.gramSeconds.toFixed(2)} s, cholesky ${s.choleskySeconds.toFixed(2)} s, ${s.basisTokens} bases ${s.basisSeconds.toFixed(2)} s, forward ${s.forwardSeconds.toFixed(2)} s, reduce ${s.reduceSeconds.toFixed(2)} s)`);
  const report = outcome.report;
  const json = jsonSafe({
    ...report,
    analysis: {
      data: o.data,
      kind: data.kind,
      description: data.description,
      notes: data.notes,
      labels: data.labelTokens ?? null,
      seq: data.T,
      batch: checked.batch,
      samples: o.samples ?? null,
      seed: o.seed ?? null,
      ...s,
      positionsPerSecond: s.positions / s.seconds,
      plot: o.plot ?? null,
    },
  });
  return { report, outcome, data, json };
}
