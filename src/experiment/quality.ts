// Held-out quality for the experiments: mean next-token loss for language modelling, and for label-word
// classification the label whose word's token has the largest logit at the prompt's last position
// (accuracy, macro-F1, and the mean cross-entropy of the true label's token over the whole vocabulary).
import type { TokenWindows } from '../data/tokens.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { ModelForward } from '../model/forward.ts';
import type { GpuWeights } from '../model/weights.ts';
import { WindowEvaluator } from '../train/evaluate.ts';
import { selectWindows, type ClassWindows } from './tasks.ts';

export interface LmQuality {
  kind: 'lm';
  loss: number;
  perplexity: number;
  windows: number;
}

export interface ClassQuality {
  kind: 'classification';
  accuracy: number;
  macroF1: number;
  /** Mean −log p(true label's token) over the full vocabulary. */
  labelLoss: number;
  examples: number;
  /** confusion[true][predicted], in label order. */
  confusion: number[][];
}

export type Quality = LmQuality | ClassQuality;

/** One number per run, higher is better: −loss for LM, macro-F1 for classification. */
export function qualityScore(q: Quality): number {
  return q.kind === 'lm' ? -q.loss : q.macroF1;
}

/** n indices spread evenly over [0, count) (all of them when n ≥ count): files are often ordered by class or source. */
export function evenIndices(count: number, n: number): number[] {
  const m = Math.min(n, count);
  return Array.from({ length: m }, (_, j) => Math.floor((j * count) / m));
}

export async function lmQuality(rt: Runtime, weights: GpuWeights, w: TokenWindows, batch: number, maxWindows: number): Promise<LmQuality> {
  const picked = selectWindows(w, evenIndices(w.count, maxWindows));
  const ev = await WindowEvaluator.build(rt, weights, picked, batch);
  const loss = await ev.loss(picked.count);
  return { kind: 'lm', loss, perplexity: Math.exp(loss), windows: picked.count };
}

/** Macro-F1 from a confusion matrix (a class never predicted nor present counts F1 = 0 only if present). */
export function macroF1(confusion: number[][]): number {
  const k = confusion.length;
  let sum = 0;
  let classes = 0;
  for (let c = 0; c < k; c++) {
    const tp = confusion[c]![c]!;
    const support = confusion[c]!.reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[c]!, 0);
    if (support === 0) continue;
    classes++;
    sum += tp === 0 ? 0 : (2 * tp) / (support + predicted);
  }
  return classes === 0 ? 0 : sum / classes;
}

export async function classQuality(rt: Runtime, weights: GpuWeights, all: ClassWindows, batch: number, maxExamples: number): Promise<ClassQuality> {
  const w = selectWindows(all, evenIndices(all.count, maxExamples));
  const cfg = weights.cfg;
  const V = cfg.vocabSize;
  const T = w.seq;
  const n = Math.min(maxExamples, w.count);
  const B = Math.max(1, Math.min(batch, n));
  const fwd = await ModelForward.build(rt, weights, { B, T, saveFrom: cfg.nLayer, trace: { kind: 'none' }, loss: false, keepLogits: true });
  const k = w.labelIds.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  const labelIndex = new Map<number, number>(Array.from(w.labelIds, (id, i) => [id, i]));
  const ids = new Int32Array(B * T);
  let lossSum = 0;
  try {
    for (let e0 = 0; e0 < n; e0 += B) {
      const nb = Math.min(B, n - e0);
      for (let b = 0; b < B; b++) ids.set(w.inputs(e0 + (b < nb ? b : 0)), b * T);
      fwd.setBatch(ids);
      await fwd.run('classify');
      for (let b = 0; b < nb; b++) {
        const e = e0 + b;
        const row = await rt.memory.readFloat32(fwd.logits, (b * T + w.positions[e]!) * V, V);
        let max = -Infinity;
        for (const x of row) if (x > max) max = x;
        let z = 0;
        for (const x of row) z += Math.exp(x - max);
        const truth = w.labelTokens[e]!;
        lossSum += Math.log(z) + max - row[truth]!;
        let best = 0;
        for (let j = 1; j < k; j++) if (row[w.labelIds[j]!]! > row[w.labelIds[best]!]!) best = j;
        confusion[labelIndex.get(truth)!]![best]!++;
      }
    }
  } finally {
    fwd.destroy();
  }
  const correct = confusion.reduce((a, row, i) => a + row[i]!, 0);
  return { kind: 'classification', accuracy: correct / n, macroF1: macroF1(confusion), labelLoss: lossSum / n, examples: n, confusion };
}

export function quality(rt: Runtime, weights: GpuWeights, w: TokenWindows | ClassWindows, batch: number, max: number): Promise<Quality> {
  return 'positions' in w ? classQuality(rt, weights, w as ClassWindows, batch, max) : lmQuality(rt, weights, w, batch, max);
}
