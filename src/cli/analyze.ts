// `semfreeze analyze`: where to fine-tune. Runs the SALF analysis (src/analysis/run.ts) over language-model
// data (.txt/.json/.bin, as eval) or classification data (.jsonl {"text","label"} with --labels) and prints
// the deviations, gains, freeze boundary and predicted saving (text on stdout, or one JSON object with
// --json); --plot writes the SVG figure. Also the `--freeze auto` of finetune (autoFreeze below).
import { resolve } from 'node:path';
import { parseClassificationJsonl } from '../data/classification.ts';
import { windows } from '../data/tokens.ts';
import { parseBudget } from '../analysis/boundary.ts';
import { getGainStrategy } from '../analysis/gain.ts';
export { DEFAULT_GAIN_STRATEGY } from '../analysis/gain.ts';
import { NO_SIGNAL, jsonSafe, renderReportText, type AnalysisReport } from '../analysis/report.ts';
import { fingerprint, prepareClassificationData, prepareLmData, runAnalysis, type AnalysisOutcome, type PreparedData } from '../analysis/run.ts';
import { DEVIATION_METRICS, type DeviationMetric } from '../analysis/types.ts';
import { readText, writeFileAtomic } from '../platform/node.ts';
import { ProgressLine, UserError, formatEta, printJson, progress } from './common.ts';
import { loadModel, loadTokens } from './model.ts';
import { fitForwardBatch } from './shapes.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';

export interface AnalyzeOptions {
  model: string;
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
  json?: boolean;
  plot?: string;
  /** Where the text report goes (default stdout; ignored with --json). */
  reportTo?: 'stdout' | 'stderr' | 'none';
}

export interface AnalyzeResult {
  report: AnalysisReport;
  outcome: AnalysisOutcome;
  data: PreparedData;
}

export const DEFAULT_ANALYZE_BATCH = 8;
export const DEFAULT_LM_SEQ = 128;
/** --freeze auto analyses at most this many windows of the training data, spread evenly over it. */
export const AUTO_FREEZE_MAX_WINDOWS = 256;

const isClassification = (path: string) => path.toLowerCase().endsWith('.jsonl');

export async function analyzeCommand(o: AnalyzeOptions): Promise<AnalyzeResult> {
  // Everything that can be checked without the model, first.
  const metric = (o.deviation ?? 'cosine') as DeviationMetric;
  if (!DEVIATION_METRICS.includes(metric)) throw new UserError(`--deviation must be one of ${DEVIATION_METRICS.join(', ')}, got '${o.deviation}'`);
  if (o.gain !== undefined) getGainStrategy(o.gain);
  const finalNorm = o.finalNorm ?? 'on';
  if (finalNorm !== 'on' && finalNorm !== 'off') throw new UserError(`--final-norm must be on or off, got '${finalNorm}'`);
  const budget = o.budget !== undefined ? parseBudget(o.budget) : undefined;
  if (o.pad && !budget) throw new UserError('--pad needs a --budget');
  const batch = o.batch ?? DEFAULT_ANALYZE_BATCH;
  const classification = isClassification(o.data);
  if (classification && o.labels === undefined) throw new UserError(`${o.data}: classification data (.jsonl) needs --labels label=word,... (e.g. --labels pos=great,neg=terrible)`);
  if (!classification && o.labels !== undefined) throw new UserError(`--labels applies to classification data (.jsonl {"text", "label"} lines); ${o.data} is language-model data`);
  if (!classification && metric === 'contrastive') throw new UserError(`--deviation contrastive needs label tokens: classification data (.jsonl) with --labels; for language-model data use cosine or lens`);
  const quiet = o.json === true;
  if (o.plot !== undefined) {
    assertNotInput('--plot', o.plot, [{ flag: '--model', path: o.model, dir: true }, { flag: '--data', path: o.data }], 'file');
    await assertWritableFile('--plot', o.plot);
  }

  const { rt, files, weights } = await loadModel(o.model, { quiet });
  try {
    const cfg = files.config;
    if (o.seq !== undefined && o.seq > cfg.nPositions) throw new UserError(`--seq ${o.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
    let data: PreparedData;
    if (classification) {
      if (!files.tokenizer) throw new UserError(`${o.data}: classification data needs the model's tokenizer.json, and ${files.dir} has none`);
      const rows = parseClassificationJsonl(await readText(o.data), o.data);
      data = prepareClassificationData(rows, files.tokenizer, { labels: o.labels!, seq: o.seq, nPositions: cfg.nPositions, samples: o.samples, seed: o.seed, source: o.data });
    } else {
      const seq = o.seq ?? Math.min(DEFAULT_LM_SEQ, cfg.nPositions);
      const ids = await loadTokens(o.data, files);
      data = prepareLmData(windows(ids, seq, o.data), { samples: o.samples, seed: o.seed, maxWindows: o.maxWindows });
    }
    if (!quiet) {
      progress(`analysing ${data.description}; deviation ${metric}, final norm ${finalNorm}`);
      for (const n of data.notes) progress(`note: ${n}`);
    }

    const head = await rt.memory.readFloat32(weights.head, 0, cfg.vocabSize * cfg.nEmbd);
    const bar = new ProgressLine();
    const outcome = await runAnalysis(rt, weights, data, {
      metric,
      finalNorm: finalNorm === 'on',
      batch: fitForwardBatch(rt, cfg, { B: batch, T: data.T, kind: 'forward' }),
      basesKey: `${resolve(o.model)}#${fingerprint(head)}`,
      head,
      strategy: o.gain,
      budget,
      pad: o.pad,
      costBatch: batch,
      costSeq: data.T,
      model: o.model,
      onProgress: quiet
        ? undefined
        : (p) => {
            const rate = p.positions / Math.max(p.seconds, 1e-9);
            bar.update(`analysis ${p.runs}/${p.totalRuns} batches  ${p.positions}/${p.totalPositions} positions  ${rate.toFixed(0)} positions/s  ETA ${formatEta((p.totalPositions - p.positions) / rate)}`, p.runs === p.totalRuns);
          },
    });
    if (!quiet) bar.done();
    const s = outcome.stats;
    if (s.gramRidge > 0) progress(`note: the LM head's Gram matrix WᵀW is singular (the head has rank < ${cfg.nEmbd}); regularised automatically with a ridge of ${s.gramRidge}·trace/d (G + λI) for the semantic bases`);
    if (outcome.report.boundary.noSignal) progress(`warning: no signal in ${o.data}: ${NO_SIGNAL}`);
    if (!quiet) {
      progress(`analysed ${s.positions} positions in ${s.seconds.toFixed(2)} s (${s.runs} forward(s) of ${s.B}×${s.T}, trace ${s.mode}; gram ${s.gramSeconds.toFixed(2)} s, cholesky ${s.choleskySeconds.toFixed(2)} s, ${s.basisTokens} bases ${s.basisSeconds.toFixed(2)} s, forward ${s.forwardSeconds.toFixed(2)} s, reduce ${s.reduceSeconds.toFixed(2)} s)`);
    }
    if (o.plot) {
      await writeFileAtomic(o.plot, outcome.svg());
      if (!quiet) progress(`wrote ${o.plot}`);
    }
    const report = outcome.report;
    if (o.json) {
      printJson(jsonSafe({
        ...report,
        analysis: {
          data: o.data,
          kind: data.kind,
          description: data.description,
          notes: data.notes,
          labels: data.labelTokens ?? null,
          seq: data.T,
          batch,
          samples: o.samples ?? null,
          seed: o.seed ?? null,
          ...s,
          positionsPerSecond: s.positions / s.seconds,
          plot: o.plot ?? null,
        },
      }));
    } else {
      const text = renderReportText(report);
      if ((o.reportTo ?? 'stdout') === 'stdout') process.stdout.write(text);
      else if (o.reportTo === 'stderr') process.stderr.write(text);
    }
    return { report, outcome, data };
  } finally {
    weights.destroy(rt);
  }
}

/** finetune --freeze auto: the analysis with default options on the training data; returns K. */
export async function autoFreeze(ctx: { model: string; data: string; seq: number; batch: number }): Promise<number> {
  progress(`--freeze auto: SALF analysis of ${ctx.data} (deviation cosine, default gain strategy, at most ${AUTO_FREEZE_MAX_WINDOWS} windows of ${ctx.seq})`);
  const r = await analyzeCommand({ model: ctx.model, data: ctx.data, seq: ctx.seq, batch: ctx.batch, maxWindows: AUTO_FREEZE_MAX_WINDOWS, reportTo: 'stderr' });
  return r.report.boundary.freeze;
}
