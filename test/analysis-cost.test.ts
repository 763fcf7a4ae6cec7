import { describe, expect, it } from 'vitest';
import { activationTerms, blockParamCount, costTable, costTerms, parameterCounts, predictedSaving, stepCost, trainableParams } from '../src/analysis/cost.ts';
import { gpt2Config } from './util/config.ts';


// Small config: N = 2 blocks, C = 8, H = 2 (hs = 4), F = 4C = 32, V = 10, nPositions 8, T = 4, B = 1.
// M = B·T = 4 tokens. Causal pairs per (batch row, head): T(T+1)/2 = 10; B·H·10 = 20 pairs.
const cfg = gpt2Config({ nLayer: 2, nEmbd: 8, nHead: 2, vocabSize: 10, nPositions: 8 });

// ---- hand count, term by term (numbers written out, not computed from the module's formulas)
// Forward, one block:
const blockFwd =
  256 + //  ln1: 8 flops/elem · M·C = 8·32
  1536 + // qkv matmul: 2·M·C·3C = 2·4·8·24
  96 + //   qkv bias: M·3C = 4·24
  160 + //  QKᵀ: 2·hs per pair · 20 pairs = 8·20
  120 + //  scale (1) + softmax (5) per pair: 6·20
  160 + //  P·V: 8·20
  512 + //  attn proj: 2·M·C·C = 2·4·8·8
  32 + //   attn proj bias: M·C
  32 + //   residual add: M·C
  256 + //  ln2: 8·32
  2048 + // fc: 2·M·C·F = 2·4·8·32
  128 + //  fc bias: M·F
  1152 + // gelu: 9 flops/elem · M·F = 9·128
  2048 + // fc proj: 2·M·F·C
  32 + //   fc proj bias: M·C
  32; //    residual add: M·C
// = 8600
const forward =
  32 + //   token + position embedding add: M·C
  2 * blockFwd +
  256 + //  ln_f: 8·32
  640 + //  head: 2·M·C·V = 2·4·8·10
  200; //   loss softmax: 5 per logit · M·V = 5·40
// = 18328

// Backward, one block, activation gradients (dX):
const blockDXlowest =
  2048 + // fc proj dX: 2·M·F·C
  2304 + // gelu backward: 18·M·F = 18·128
  2048 + // fc dX: 2·M·C·F
  320 + //  ln2 dX: 10·M·C
  32 + //   residual merge (after attention): M·C
  512 + //  attn proj dX: 2·M·C·C
  160 + //  dP = dO·Vᵀ: 8·20
  160 + //  dV = Pᵀ·dO: 8·20
  100 + //  softmax backward (4) + scale (1) per pair: 5·20
  160 + //  dQ: 8·20
  160 + //  dK: 8·20
  1536; //  qkv dX: 2·M·3C·C (needed even in the lowest block: ln1's dγ/dβ read d(ln1 out))
// = 9540
const blockDXfull =
  blockDXlowest +
  320 + //  ln1 dX: 10·M·C (skipped in the lowest trainable block)
  32; //    residual merge into the block input: M·C (skipped in the lowest trainable block)
// = 9892
// Backward, one block, parameter gradients (dW):
const blockDW =
  2048 + // fc proj dW: 2·M·F·C
  32 + //   fc proj db: M·C
  2048 + // fc dW: 2·M·C·F
  128 + //  fc db: M·F
  96 + //   ln2 dγ, dβ: 3·M·C
  512 + //  attn proj dW: 2·M·C·C
  32 + //   attn proj db: M·C
  1536 + // qkv dW: 2·M·C·3C
  96 + //   qkv db: M·3C
  96; //    ln1 dγ, dβ: 3·M·C
// = 6624
// Top of the backward (always paid: ln_f trains):
const lossDX = 80; //   2 per logit · M·V
const headDX = 640; //  2·M·V·C
const headDW = 640; //  2·M·V·C, only when the (tied) head trains: boundary 'none'
const lnfDW = 96; //    3·M·C
const lnfDX = 320; //   10·M·C, only when a block below trains
const embDW = 32 + 32; // wte scatter-add M·C, wpe sum M·C ('none' only)

// Parameters: block = ln1 16 + qkv 192+24 + proj 64+8 + ln2 16 + fc 256+32 + proj 256+8 = 872
const P_block = 16 + (192 + 24) + (64 + 8) + 16 + (256 + 32) + (256 + 8);
const P_lnf = 16;
const P_wte = 80; // V·C
const P_wpe = 64; // nPositions·C

const expected = {
  0: { dX: lossDX + headDX + lnfDX + blockDXfull + blockDXlowest, dW: lnfDW + 2 * blockDW, params: 2 * P_block + P_lnf },
  1: { dX: lossDX + headDX + lnfDX + blockDXlowest, dW: lnfDW + blockDW, params: P_block + P_lnf },
  2: { dX: lossDX + headDX, dW: lnfDW, params: P_lnf },
  none: { dX: lossDX + headDX + lnfDX + 2 * blockDXfull, dW: headDW + lnfDW + 2 * blockDW + embDW, params: 2 * P_block + P_lnf + P_wte + P_wpe },
} as const;

describe('cost model: hand count (N 2, C 8, H 2, V 10, T 4, B 1)', () => {
  it('the hand-count subtotals are what the comments say', () => {
    expect([blockFwd, forward, blockDXlowest, blockDXfull, blockDW, P_block]).toEqual([8600, 18328, 9540, 9892, 6624, 872]);
  });

  it('parameters', () => {
    expect(blockParamCount(cfg)).toBe(P_block);
    expect(parameterCounts(cfg)).toEqual({ block: 872, blocks: 1744, wte: 80, wpe: 64, lnF: 16, head: 0, total: 1904 });
  });

  for (const K of [0, 1, 2, 'none'] as const) {
    it(`FLOPs at boundary ${K}`, () => {
      const e = expected[K];
      const r = stepCost(cfg, 1, 4, K);
      expect(r.flops.forward).toBe(forward);
      expect(r.flops.backwardDX).toBe(e.dX);
      expect(r.flops.backwardDW).toBe(e.dW);
      expect(r.flops.backward).toBe(e.dX + e.dW);
      expect(r.memory.trainableParams).toBe(e.params);
      expect(r.flops.optimizer).toBe(16 * e.params); // AdamW: 16 flops per trainable parameter
      expect(r.flops.total).toBe(forward + e.dX + e.dW + 16 * e.params);
    });
  }

  it('the numbers themselves', () => {
    const t = costTable(cfg, 1, 4);
    expect(t.rows.map((r) => r.boundary)).toEqual([0, 1, 2, 'none']);
    expect(t.rows.map((r) => [r.flops.backwardDX, r.flops.backwardDW, r.flops.optimizer])).toEqual([
      [20472, 13344, 28160],
      [10580, 6720, 14208],
      [720, 96, 256],
      [20824, 14048, 30464],
    ]);
    expect(t.full.flops.total).toBe(18328 + 20824 + 14048 + 30464);
    expect(t.full.ratioToFull).toEqual({ backward: 1, step: 1, memory: 1 });
    expect(t.rows[1].ratioToFull.backward).toBeCloseTo((10580 + 6720) / (20824 + 14048), 15);
  });

  it('stored activations, itemised', () => {
    // per trainable block: ln1 out 32, ln1 mean+rstd 8, qkv 96, probs B·H·T² = 32, attn out 32, residual 32,
    // ln2 out 32, ln2 mean+rstd 8, fc out 128, gelu out 128, block output 32 = 560 floats
    const perBlock = 32 + 8 + 96 + 32 + 32 + 32 + 32 + 8 + 128 + 128 + 32;
    expect(perBlock).toBe(560);
    const top = 8 + 40 + 4; // ln_f mean+rstd, probs M·V, targets (int32)
    const el = (K: 0 | 1 | 2 | 'none') => activationTerms(cfg, 1, 4, K).reduce((s, a) => s + a.elements, 0);
    expect(el(0)).toBe(32 + 2 * perBlock + top); // boundary state + 2 blocks + top
    expect(el(1)).toBe(32 + perBlock + top);
    expect(el(2)).toBe(32 + top);
    expect(el('none')).toBe(4 + 32 + 2 * perBlock + 32 + top); // + input ids, + ln_f out (tied head trains)
    const r = stepCost(cfg, 1, 4, 1);
    expect(r.memory.activationBytes).toBe(4 * (32 + perBlock + top));
    expect(r.memory.weightBytes).toBe(4 * 1904);
    expect(r.memory.gradientBytes).toBe(4 * (872 + 16));
    expect(r.memory.adamStateBytes).toBe(8 * (872 + 16));
    expect(r.memory.totalBytes).toBe(4 * 1904 + 12 * (872 + 16) + 4 * (32 + perBlock + top));
  });

  it('untied head: its dW is always paid and its weight always trains', () => {
    const u = { ...cfg, tiedHead: false };
    expect(parameterCounts(u).head).toBe(80);
    const r = stepCost(u, 1, 4, 2);
    expect(r.flops.backwardDW).toBe(lnfDW + headDW);
    expect(r.memory.trainableParams).toBe(P_lnf + 80);
    expect(trainableParams(u, 'none')).toBe(2 * P_block + P_lnf + P_wte + P_wpe + 80);
    expect(activationTerms(u, 1, 4, 2).some((a) => a.name === 'lnf.out')).toBe(true);
  });

  it("attention 'full' counts T² pairs instead of T(T+1)/2", () => {
    const causal = costTerms(cfg, 1, 4, 0).find((t) => t.name === 'block0.attn.qk')!.flops;
    const full = costTerms(cfg, 1, 4, 0, { attention: 'full' }).find((t) => t.name === 'block0.attn.qk')!.flops;
    expect(causal).toBe(160); // 2·hs·B·H·10
    expect(full).toBe(256); //   2·hs·B·H·16
  });

  it('a padded vocabulary is used for the head, loss and embedding', () => {
    const r = costTerms(cfg, 1, 4, 0, { vocab: 16 }).find((t) => t.name === 'head')!.flops;
    expect(r).toBe(2 * 4 * 8 * 16);
    expect(() => costTerms(cfg, 1, 4, 0, { vocab: 9 })).toThrow(/≥ vocabSize 10/);
  });

  it('input errors', () => {
    expect(() => stepCost(cfg, 1, 4, 3)).toThrow(/0..2 or 'none'/);
    expect(() => stepCost(cfg, 1, 9, 0)).toThrow(/seqLen 9 exceeds nPositions 8/);
    expect(() => stepCost(cfg, 0, 4, 0)).toThrow(/batch must be a positive integer/);
  });
});

describe('cost model: shape of the curve', () => {
  it('for large N with blocks dominating, the step ratio approaches (1 + 2(N−F)/N)/3', () => {
    const big = gpt2Config({ nLayer: 96, nEmbd: 2048, nHead: 16, vocabSize: 64, nPositions: 64 });
    for (const K of [0, 24, 48, 72, 96]) {
      const s = predictedSaving(big, 64, 64, K);
      expect(s.ruleOfThumbStepRatio).toBeCloseTo((1 + (2 * (96 - K)) / 96) / 3, 15);
      expect(Math.abs(s.stepRatio - s.ruleOfThumbStepRatio)).toBeLessThan(1e-3);
      expect(Math.abs(s.backwardRatio - (96 - K) / 96)).toBeLessThan(1e-3);
    }
  });

  it('GPT-2 small: 124,439,808 parameters; costs fall monotonically with K', () => {
    const g = gpt2Config();
    expect(parameterCounts(g).total).toBe(124439808);
    const t = costTable(g, 8, 1024);
    for (let K = 1; K <= 12; K++) {
      expect(t.rows[K].flops.backward).toBeLessThan(t.rows[K - 1].flops.backward);
      expect(t.rows[K].flops.total).toBeLessThan(t.rows[K - 1].flops.total);
      expect(t.rows[K].memory.totalBytes).toBeLessThan(t.rows[K - 1].memory.totalBytes);
      expect(t.rows[K].flops.forward).toBe(t.rows[0].flops.forward);
    }
    expect(t.rows[0].flops.total).toBeLessThan(t.full.flops.total);
    const s = predictedSaving(g, 8, 1024, 6);
    expect(s.stepSaving).toBeCloseTo(1 - s.stepRatio, 15);
    expect(s.freeze).toBe(6);
    expect(s.trainableBlocks).toBe(6);
  });
});
