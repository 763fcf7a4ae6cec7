// `semfreeze eval`: mean loss and perplexity over consecutive windows of the data (the core's
// evaluateWindows, src/train/evaluate.ts, with a progress line and the result on stdout).
import { windows } from '../data/tokens.ts';
import { evaluateWindows, type EvalResult } from '../train/evaluate.ts';
import { UserError } from '../util/errors.ts';
import { loadModel, loadTokens } from './model.ts';
import { ProgressLine, formatEta, printJson, progress } from './common.ts';

export type { EvalResult } from '../train/evaluate.ts';

export async function evalCommand(o: { model: string; data: string; seq: number; batch: number; json?: boolean; maxWindows?: number }): Promise<EvalResult> {
  const { rt, files, weights } = await loadModel(o.model, { quiet: o.json });
  const cfg = files.config;
  if (o.seq > cfg.nPositions) throw new UserError(`--seq ${o.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
  const win = windows(await loadTokens(o.data, files), o.seq, o.data);
  const bar = new ProgressLine();
  const result = await evaluateWindows(rt, weights, win, {
    batch: o.batch,
    maxWindows: o.maxWindows,
    model: o.model,
    onNote: (line) => progress(line),
    onBatch: (done, count, mean, s) => {
      if (!o.json) bar.update(`eval ${done}/${count} windows  loss ${mean.toFixed(4)}  ${((done * o.seq) / s).toFixed(0)} tok/s  ETA ${formatEta((s / done) * (count - done))}`);
    },
  });
  if (!o.json) bar.done();
  if (o.json) printJson(result);
  else process.stdout.write(`loss ${result.loss.toFixed(6)}  perplexity ${result.perplexity.toFixed(3)}  (${result.windows} windows × ${result.seq} tokens)\n`);
  return result;
}
