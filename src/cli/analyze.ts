// `semfreeze analyze`: where to fine-tune. The CLI shell around the core analysis
// (src/analysis/analyze.ts): paths checked, progress on stderr, the text report on stdout (or one JSON
// object with --json), --plot written. Also the `--freeze auto` of finetune (autoFreeze below).
import { resolve } from 'node:path';
import { AUTO_FREEZE_MAX_WINDOWS, analyze, autoFreezeOptions, checkAnalyzeOptions, type AnalyzeOptions as CoreAnalyzeOptions, type AnalyzeResult } from '../analysis/analyze.ts';
import { renderReportText } from '../analysis/report.ts';
import { nodePlatform, writeFileAtomic } from '../platform/node.ts';
import { ProgressLine, formatEta, printJson, progress } from './common.ts';
import { loadModel } from './model.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';

export { DEFAULT_GAIN_STRATEGY } from '../analysis/gain.ts';
export { AUTO_FREEZE_MAX_WINDOWS, DEFAULT_ANALYZE_BATCH, DEFAULT_LM_SEQ, type AnalyzeResult } from '../analysis/analyze.ts';

export interface AnalyzeOptions extends CoreAnalyzeOptions {
  json?: boolean;
  /** Where the text report goes (default stdout; ignored with --json). */
  reportTo?: 'stdout' | 'stderr' | 'none';
}


export async function analyzeCommand(o: AnalyzeOptions): Promise<AnalyzeResult> {
  // Everything that can be checked without the model, first.
  checkAnalyzeOptions(o);
  const quiet = o.json === true;
  if (o.plot !== undefined) {
    assertNotInput('--plot', o.plot, [{ flag: '--model', path: o.model, dir: true }, { flag: '--data', path: o.data }], 'file');
    await assertWritableFile('--plot', o.plot);
  }

  const model = await loadModel(o.model, { quiet });
  const { rt, weights } = model;
  try {
    const bar = new ProgressLine();
    let barDrawn = false;
    // The bases cache is keyed by the model's absolute path, so `m` and `./m` share one.
    const result = await analyze(nodePlatform, rt, model, { ...o, basesKey: resolve(o.model) }, {
      onNote: (line, important) => {
        if (!quiet || important) progress(line);
      },
      onProgress: quiet
        ? undefined
        : (p) => {
            const rate = p.positions / Math.max(p.seconds, 1e-9);
            barDrawn = true;
            bar.update(`analysis ${p.runs}/${p.totalRuns} batches  ${p.positions}/${p.totalPositions} positions  ${rate.toFixed(0)} positions/s  ETA ${formatEta((p.totalPositions - p.positions) / rate)}`, p.runs === p.totalRuns);
          },
    });
    if (barDrawn) bar.done();
    if (o.plot) {
      await writeFileAtomic(o.plot, result.outcome.svg());
      if (!quiet) progress(`wrote ${o.plot}`);
    }
    if (o.json) printJson(result.json);
    else {
      const text = renderReportText(result.report);
      if ((o.reportTo ?? 'stdout') === 'stdout') process.stdout.write(text);
      else if (o.reportTo === 'stderr') process.stderr.write(text);
    }
    return result;
  } finally {
    weights.destroy(rt);
  }
}

/** finetune --freeze auto: the analysis with default options on the training data; returns K. */
export async function autoFreeze(ctx: { model: string; data: string; seq: number; batch: number }): Promise<number> {
  progress(`--freeze auto: SALF analysis of ${ctx.data} (deviation cosine, default gain strategy, at most ${AUTO_FREEZE_MAX_WINDOWS} windows of ${ctx.seq})`);
  const r = await analyzeCommand({ ...autoFreezeOptions(ctx), reportTo: 'stderr' });
  return r.report.boundary.freeze;
}
