// `semfreeze eval`: mean loss and perplexity over consecutive windows of the data.
import { windows } from '../data/tokens.ts';
import { WindowEvaluator } from '../train/evaluate.ts';
import { loadModel, loadTokens } from './model.ts';
import { ProgressLine, UserError, formatEta, printJson } from './common.ts';
import { fitForwardBatch } from './shapes.ts';

export interface EvalResult {
  loss: number;
  perplexity: number;
  windows: number;
  tokens: number;
  seq: number;
  batch: number;
  seconds: number;
  tokensPerSecond: number;
}

export async function evalCommand(o: { model: string; data: string; seq: number; batch: number; json?: boolean; maxWindows?: number }): Promise<EvalResult> {
  const { rt, files, weights } = await loadModel(o.model, { quiet: o.json });
  const cfg = files.config;
  if (o.seq > cfg.nPositions) throw new UserError(`--seq ${o.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
  const ids = await loadTokens(o.data, files);
  const win = windows(ids, o.seq, o.data);
  const count = o.maxWindows ? Math.min(o.maxWindows, win.count) : win.count;
  const B = Math.min(fitForwardBatch(rt, cfg, { B: o.batch, T: o.seq, kind: 'forward' }), count);
  const T = o.seq;
  const evaluator = await WindowEvaluator.build(rt, weights, win, B);
  const bar = new ProgressLine();
  const t0 = performance.now();
  const loss = await evaluator.loss(count, (done, mean) => {
    const s = (performance.now() - t0) / 1000;
    if (!o.json) bar.update(`eval ${done}/${count} windows  loss ${mean.toFixed(4)}  ${((done * T) / s).toFixed(0)} tok/s  ETA ${formatEta((s / done) * (count - done))}`);
  });
  const n = count * T;
  const seconds = (performance.now() - t0) / 1000;
  if (!o.json) bar.done();
  if (!Number.isFinite(loss)) throw new UserError(`${o.model}: the loss is ${loss}: the model's weights are not finite (or the data is broken)`);
  const result: EvalResult = { loss, perplexity: Math.exp(loss), windows: count, tokens: n, seq: T, batch: B, seconds, tokensPerSecond: n / seconds };
  if (o.json) printJson(result);
  else process.stdout.write(`loss ${loss.toFixed(6)}  perplexity ${result.perplexity.toFixed(3)}  (${count} windows × ${T} tokens)\n`);
  return result;
}
