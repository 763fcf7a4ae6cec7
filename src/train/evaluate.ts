// Held-out loss over token windows with a forward-only graph built once (no activations kept).
// Shared by pretraining, fine-tuning and the demo so that every reported held-out loss is the same
// quantity: the mean next-token cross-entropy over the first `count` windows of the data.
import type { TokenWindows } from '../data/tokens.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { Gpt2Forward } from '../model/forward.ts';
import type { GpuWeights } from '../model/weights.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { UserError } from '../util/errors.ts';
import { fitForwardBatch, type NoteSink } from './shapes.ts';

export class WindowEvaluator {
  private readonly inputs: Int32Array;
  private readonly targets: Int32Array;

  private constructor(readonly rt: Runtime, readonly forward: Gpt2Forward, readonly windows: TokenWindows) {
    const { B, T } = forward.opts;
    this.inputs = new Int32Array(B * T);
    this.targets = new Int32Array(B * T);
  }

  /** `lora`: evaluate the model with these adapters (a LoRA fine-tune's held-out loss). */
  static async build(rt: Runtime, weights: GpuWeights, windows: TokenWindows, batch: number, lora?: LoraAdapters): Promise<WindowEvaluator> {
    const B = Math.max(1, Math.min(batch, windows.count));
    const fwd = await Gpt2Forward.build(rt, weights, { B, T: windows.seq, saveFrom: weights.cfg.nLayer, trace: { kind: 'none' }, loss: true, keepLogits: false, lora });
    return new WindowEvaluator(rt, fwd, windows);
  }

  /**
   * Mean loss over the first `count` windows (all of them by default); every token counts once.
   * `onBatch` sees the windows done and the mean so far after each forward (progress lines).
   */
  async loss(count = this.windows.count, onBatch?: (windowsDone: number, meanLoss: number) => void): Promise<number> {
    const { B, T } = this.forward.opts;
    const n = Math.min(count, this.windows.count);
    let sum = 0;
    let tokens = 0;
    for (let w0 = 0; w0 < n; w0 += B) {
      const nb = Math.min(B, n - w0);
      for (let b = 0; b < B; b++) {
        // A short last batch repeats its first window; only the first nb rows are counted.
        const w = w0 + (b < nb ? b : 0);
        this.inputs.set(this.windows.inputs(w), b * T);
        this.targets.set(this.windows.targets(w), b * T);
      }
      this.forward.setBatch(this.inputs, this.targets);
      await this.forward.run('eval');
      const losses = await this.rt.memory.readFloat32(this.forward.losses, 0, nb * T);
      for (const l of losses) sum += l;
      tokens += nb * T;
      onBatch?.(w0 + nb, sum / tokens);
    }
    return sum / tokens;
  }
}

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

/**
 * `semfreeze eval` for every shell: mean loss and perplexity over the first `maxWindows` windows (all
 * by default), batches of at most `batch` windows (fewer if the adapter cannot fit them).
 */
export async function evaluateWindows(
  rt: Runtime,
  weights: GpuWeights,
  win: TokenWindows,
  o: { batch: number; maxWindows?: number; now?: () => number; onNote?: NoteSink; onBatch?: (windowsDone: number, count: number, meanLoss: number, seconds: number) => void; model?: string },
): Promise<EvalResult> {
  const now = o.now ?? (() => performance.now());
  const count = o.maxWindows ? Math.min(o.maxWindows, win.count) : win.count;
  const T = win.seq;
  const B = Math.min(fitForwardBatch(rt, weights.cfg, { B: o.batch, T, kind: 'forward' }, undefined, o.onNote), count);
  const evaluator = await WindowEvaluator.build(rt, weights, win, B);
  const t0 = now();
  const loss = await evaluator.loss(count, (done, mean) => o.onBatch?.(done, count, mean, (now() - t0) / 1000));
  const seconds = (now() - t0) / 1000;
  const n = count * T;
  if (!Number.isFinite(loss)) throw new UserError(`${o.model ? `${o.model}: ` : ''}the loss is ${loss}: the model's weights are not finite (or the data is broken)`);
  return { loss, perplexity: Math.exp(loss), windows: count, tokens: n, seq: T, batch: B, seconds, tokensPerSecond: n / seconds };
}
