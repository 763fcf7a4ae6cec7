import { describe, expect, it } from 'vitest';
import {
  applyBudget,
  argmaxGain,
  decideBoundary,
  describeFreeze,
  eofToFreeze,
  freezeToEof,
  maxTrainableBlocks,
  parseBudget,
  type Budget,
} from '../src/analysis/boundary.ts';
import { buildReport, renderReportText } from '../src/analysis/report.ts';
import { costTable } from '../src/analysis/cost.ts';
import { gpt2Config } from './util/config.ts';


describe('eof = argmax G_k', () => {
  const table: [string, number[], number, number[]][] = [
    // name, gains G_1..G_N, eof (paper, 1-based), ties
    ['single max', [0.1, 0.5, 0.2, 0.0], 2, [2]],
    ['max at the last block', [-1, -2, -3, 0.5], 4, [4]],
    ['tie → shallowest', [0.3, 0.1, 0.3, 0], 1, [1, 3]],
    ['all equal → block 1', [0, 0, 0, 0], 1, [1, 2, 3, 4]],
    ['−∞ never wins', [-Infinity, -1, -2, -Infinity], 2, [2]],
    ['N = 1', [-5], 1, [1]],
  ];
  for (const [name, gains, eof, ties] of table) {
    it(name, () => {
      expect(argmaxGain(gains)).toEqual({ eof, maxGain: gains[eof - 1], ties });
    });
  }
  it('errors: empty, NaN, +∞, all −∞', () => {
    expect(() => argmaxGain([])).toThrow(/no gains/);
    expect(() => argmaxGain([0, NaN])).toThrow(/G_2 is NaN/);
    expect(() => argmaxGain([Infinity])).toThrow(/G_1 is Infinity/);
    expect(() => argmaxGain([-Infinity, -Infinity])).toThrow(/every gain is −∞/);
  });
});

describe('paper eof ↔ CLI --freeze K', () => {
  it('eof = k ⇒ K = k (paper blocks 1..k = CLI blocks 0..k−1 frozen)', () => {
    for (let k = 0; k <= 4; k++) {
      expect(eofToFreeze(k, 4)).toBe(k);
      expect(freezeToEof(k, 4)).toBe(k);
    }
    expect(() => eofToFreeze(5, 4)).toThrow(/not a block in 0..4/);
    expect(() => freezeToEof(-1, 4)).toThrow(/outside 0..4/);
    // Fig. 2: 4 layers, layer 2 chosen, layers 1–2 frozen, 3–4 fine-tuned
    const d = decideBoundary([0.1, 0.4, 0.2, 0.3]);
    expect(d.eof).toBe(2);
    expect(d.freeze).toBe(2);
    expect(d.trainableBlocks).toBe(2);
    expect(d.description).toBe('--freeze 2: blocks 0..1 frozen (paper 1..2), blocks 2..3 trainable (paper 3..4)');
    expect(describeFreeze(0, 4)).toBe('--freeze 0: no blocks frozen, blocks 0..3 trainable (paper 1..4)');
    expect(describeFreeze(4, 4)).toBe('--freeze 4: blocks 0..3 frozen (paper 1..4), no blocks trainable');
  });
});

describe('--budget B / --pad (N = 4)', () => {
  const table: [number, number, boolean, number, string][] = [
    // K from eof, B, pad, final K, effect
    [1, 2, false, 2, 'capped'], // 3 trainable > 2: keep the deepest 2
    [1, 2, true, 2, 'capped'],
    [3, 2, false, 3, 'none'], // 1 trainable ≤ 2: unchanged
    [3, 2, true, 2, 'padded'], // pad: unfreeze down to exactly 2
    [2, 2, false, 2, 'none'],
    [2, 2, true, 2, 'none'],
    [0, 0, false, 4, 'capped'], // B = 0: nothing trains
    [0, 4, false, 0, 'none'],
    [2, 10, false, 2, 'none'], // B > N: no cap
    [2, 10, true, 0, 'padded'], // pad to min(B, N) = 4 trainable
    [4, 1, true, 3, 'padded'],
    [4, 1, false, 4, 'none'],
  ];
  for (const [K, B, pad, after, effect] of table) {
    it(`K = ${K}, budget ${B}${pad ? ', pad' : ''} → K = ${after} (${effect})`, () => {
      const e = applyBudget(K, 4, { kind: 'blocks', blocks: B }, pad);
      expect(e.freezeAfter).toBe(after);
      expect(e.effect).toBe(effect);
      expect(e.maxTrainable).toBe(Math.min(B, 4));
      expect(e.freezeAfter).toBe(pad ? 4 - Math.min(B, 4) : Math.max(K, 4 - B));
    });
  }
  it('decideBoundary applies the budget after argmax', () => {
    const d = decideBoundary([0.9, 0.1, 0.2, 0.3], { budget: { kind: 'blocks', blocks: 2 } });
    expect(d.eof).toBe(1);
    expect(d.freezeFromEof).toBe(1);
    expect(d.freeze).toBe(2);
    expect(d.budget?.effect).toBe('capped');
    expect(() => decideBoundary([1, 2], { pad: true })).toThrow(/--pad needs a --budget/);
    expect(() => applyBudget(1, 4, { kind: 'blocks', blocks: -1 })).toThrow(/integer ≥ 0/);
  });
});

describe('parseBudget', () => {
  const ok: [string, Budget][] = [
    ['4', { kind: 'blocks', blocks: 4 }],
    ['25%', { kind: 'backwardFraction', fraction: 0.25 }],
    [' 100% ', { kind: 'backwardFraction', fraction: 1 }],
    ['12.5%', { kind: 'backwardFraction', fraction: 0.125 }],
  ];
  for (const [s, b] of ok) it(`'${s}'`, () => expect(parseBudget(s)).toEqual(b));
  // '0' would leave nothing but the final norm to train: a user mistake, refused with the flag named.
  for (const s of ['0', '00', '0.25', '-1', 'abc', '150%', '0%', '']) it(`rejects '${s}'`, () => expect(() => parseBudget(s)).toThrow(/budget/));
});

describe('budget as a fraction of backward FLOPs', () => {
  const cfg = gpt2Config({ nLayer: 12, nEmbd: 64, nHead: 4, vocabSize: 1000, nPositions: 128 });
  const cost = { config: cfg, batch: 2, seqLen: 64 };
  const t = costTable(cfg, 2, 64);
  const full = t.full.flops.backward;
  for (const pct of [100, 90, 50, 25, 10]) {
    it(`${pct}%: the largest trainable suffix whose backward ≤ ${pct}% of full`, () => {
      const f = pct / 100;
      const { maxTrainable, backwardFraction } = maxTrainableBlocks(12, { kind: 'backwardFraction', fraction: f }, cost);
      const K = 12 - maxTrainable;
      expect(t.rows[K].flops.backward).toBeLessThanOrEqual(f * full);
      if (K > 0) expect(t.rows[K - 1].flops.backward).toBeGreaterThan(f * full); // one more block would not fit
      expect(backwardFraction).toBeCloseTo(t.rows[K].flops.backward / full, 14);
    });
  }
  it('monotone, and applied like a block budget', () => {
    const m = (f: number) => maxTrainableBlocks(12, { kind: 'backwardFraction', fraction: f }, cost).maxTrainable;
    expect(m(1)).toBe(12);
    expect(m(0.5)).toBeLessThanOrEqual(m(0.9));
    const d = decideBoundary(Array.from({ length: 12 }, (_, i) => (i === 0 ? 1 : 0)), { budget: parseBudget('25%'), cost });
    expect(d.freeze).toBe(12 - m(0.25));
    expect(d.budget?.backwardFractionAtMax).toBeLessThanOrEqual(0.25);
  });
  it('errors: no cost context, too small, N mismatch', () => {
    expect(() => maxTrainableBlocks(12, { kind: 'backwardFraction', fraction: 0.5 })).toThrow(/needs the model shape/);
    expect(() => maxTrainableBlocks(12, { kind: 'backwardFraction', fraction: 1e-6 }, cost)).toThrow(/below the backward of zero trainable blocks/);
    expect(() => maxTrainableBlocks(4, { kind: 'backwardFraction', fraction: 0.5 }, cost)).toThrow(/nLayer 12, gains have N = 4/);
  });
});

// Item 13 of issue 8: float32 deviations make gains noisy at ~1e-7 relative; that noise must not
// pick the boundary, and gains that are all noise must not freeze everything.
describe('gains within floating-point noise', () => {
  it('tie with the maximum (shallowest wins) when within 1e-6·max|G|', () => {
    expect(argmaxGain([1, 1 + 1e-9, 0.5])).toEqual({ eof: 1, maxGain: 1, ties: [1, 2] });
    expect(argmaxGain([0.5, -2, 0.5 + 1e-7])).toEqual({ eof: 1, maxGain: 0.5, ties: [1, 3] });
    // A real difference still wins.
    expect(argmaxGain([1, 1 + 1e-4, 0.5]).eof).toBe(2);
  });

  it('all gains ≈ 0 relative to the deviations: no signal, nothing frozen', () => {
    const d = decideBoundary([0, 1e-12, 3e-9], { signalScale: 0.8 });
    expect(d.noSignal).toBe(true);
    expect(d.freeze).toBe(0);
    // The same gains against tiny deviations are a signal.
    expect(decideBoundary([0, 1e-12, 3e-9], { signalScale: 1e-8 }).noSignal).toBe(false);
    // A budget still caps the trainable blocks.
    expect(decideBoundary([0, 0, 0], { signalScale: 1, budget: { kind: 'blocks', blocks: 1 } }).freeze).toBe(2);
  });

  it('the report of flat deviations (g0) says so instead of freezing every block', () => {
    const r = buildReport({ deviations: [0.8, 0.8, 0.8, 0.8 - 3e-9], strategy: 'g0' });
    expect(r.boundary.noSignal).toBe(true);
    expect(r.boundary.freeze).toBe(0);
    expect(renderReportText(r)).toMatch(/no signal/);
  });
});
