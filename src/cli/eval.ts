// `semfreeze eval`: mean loss and perplexity over consecutive windows of the data.
import { windows } from '../data/tokens.ts';
import { Gpt2Forward } from '../model/forward.ts';
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
  const fwd = await Gpt2Forward.build(rt, weights, { B, T, saveFrom: cfg.nLayer, trace: { kind: 'none' }, loss: true, keepLogits: false });
  const inputs = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  let sum = 0;
  let n = 0;
  const bar = new ProgressLine();
  const t0 = performance.now();
  for (let w0 = 0; w0 < count; w0 += B) {
    const nb = Math.min(B, count - w0);
    for (let b = 0; b < B; b++) {
      // A short last batch repeats its first window; only the first nb rows are counted.
      const w = w0 + (b < nb ? b : 0);
      inputs.set(win.inputs(w), b * T);
      targets.set(win.targets(w), b * T);
    }
    fwd.setBatch(inputs, targets);
    await fwd.run('eval');
    const losses = await rt.memory.readFloat32(fwd.losses, 0, nb * T);
    for (const l of losses) sum += l;
    n += nb * T;
    const s = (performance.now() - t0) / 1000;
    if (!o.json) bar.update(`eval ${w0 + nb}/${count} windows  loss ${(sum / n).toFixed(4)}  ${(n / s).toFixed(0)} tok/s  ETA ${formatEta((s / (w0 + nb)) * (count - w0 - nb))}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  if (!o.json) bar.done();
  const loss = sum / n;
  if (!Number.isFinite(loss)) throw new UserError(`${o.model}: the loss is ${loss}: the model's weights are not finite (or the data is broken)`);
  const result: EvalResult = { loss, perplexity: Math.exp(loss), windows: count, tokens: n, seq: T, batch: B, seconds, tokensPerSecond: n / seconds };
  if (o.json) printJson(result);
  else process.stdout.write(`loss ${loss.toFixed(6)}  perplexity ${result.perplexity.toFixed(3)}  (${count} windows × ${T} tokens)\n`);
  return result;
}
