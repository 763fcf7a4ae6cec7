import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { activationTerms, blockParamCount, causalPairs, costTable, costTerms, logitsRowChunk, parameterCounts, predictedSaving, stepCost, trainableParams } from '../src/analysis/cost.ts';
import { parseConfig, type ModelConfig } from '../src/model/config.ts';
import { headRowChunk } from '../src/model/forward.ts';
import { paramCount, paramSpecs } from '../src/model/params.ts';
import { smolLM2_135MConfig } from '../src/model/random.ts';
import { gpt2Config } from './util/config.ts';
import { FIXTURES } from './util/fixtures.ts';


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

// ---- The Llama family: hand counts for two tiny shapes (numbers written out, not computed from the module).
const decoder = (fields: Record<string, unknown>): ModelConfig => parseConfig(JSON.stringify(fields), 'test config');
const flops = (cfg: ModelConfig, K: number | 'none', name: string) => costTerms(cfg, 1, 4, K).find((t) => t.name === name)?.flops;
const elements = (cfg: ModelConfig, K: number | 'none') => activationTerms(cfg, 1, 4, K).reduce((s, a) => s + a.elements, 0);

// Llama-shaped: N 2, C 8, 4 query heads / 2 kv heads of head_dim 4 (≠ C/heads = 2), SwiGLU F 12, V 10,
// untied head, no biases. T 4, B 1: M = 4; qW = 16, kvW = 8, qkv row 32; causal pairs B·H·10 = 40.
const llama = decoder({ model_type: 'llama', num_hidden_layers: 2, hidden_size: 8, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 4, intermediate_size: 12, vocab_size: 10, max_position_embeddings: 8, tie_word_embeddings: false });

const llamaBlockFwd =
  128 + //  input_layernorm (RMSNorm 4 flops/elem): 4·M·C = 4·32
  1024 + // q_proj: 2·M·C·qW = 2·4·8·16
  512 + //  k_proj: 2·M·C·kvW = 2·4·8·8
  512 + //  v_proj
  288 + //  rotary on q and k: 3 per rotated element · M·(4 + 2)·4 = 3·96
  320 + //  QKᵀ: 2·hd per pair · 40 = 8·40
  240 + //  scale (1) + softmax (5) per pair: 6·40
  320 + //  P·V: 8·40
  1024 + // o_proj: 2·M·qW·C
  32 + //   residual add
  128 + //  post_attention_layernorm (the MLP's norm)
  768 + //  gate_proj: 2·M·C·F = 2·4·8·12
  768 + //  up_proj
  288 + //  SwiGLU: 6 per element · M·F = 6·48
  768 + //  down_proj: 2·M·F·C
  32; //    residual add
const llamaForward = 2 * llamaBlockFwd + 128 /* final norm */ + 640 /* head 2·M·C·V */ + 200; /* loss 5·M·V */
// (no position embedding, embedding scale 1: nothing before the blocks)
const llamaBlockDXlowest =
  768 + //  down_proj dX
  576 + //  SwiGLU backward: 12 per element · 48
  768 + 768 + // gate_proj and up_proj dX (one [M, 2F]·[2F, C] product)
  224 + //  MLP norm dX: RMSNorm 7 per element · 32
  32 + //   residual merge
  1024 + // o_proj dX
  320 + 320 + // dP, dV: 8·40 each
  200 + //  softmax backward (4) + scale (1): 5·40
  320 + 320 + // dQ, dK
  288 + //  rotary backward: 3·96
  1024 + 512 + 512; // q/k/v dX
const llamaBlockDXfull = llamaBlockDXlowest + 224 /* input norm dX */ + 32; /* residual merge into the block input */
const llamaBlockDW =
  768 + 768 + 768 + // down, gate, up dW
  64 + //   MLP norm dw: 2 per element · 32
  1024 + // o_proj dW
  1024 + 512 + 512 + // q/k/v dW
  64; //    input norm dw
// Parameters: block = 2 norms 16 + q 128 + k 64 + v 64 + o 128 + gate/up/down 3·96 = 688; final norm 8;
// wte 80; untied head 80; no wpe.
const P_llamaBlock = 16 + 128 + 64 + 64 + 128 + 288;

describe('cost model: Llama-shaped hand count (GQA 4/2 heads, head_dim 4 ≠ C/heads, SwiGLU, untied head)', () => {
  it('the hand-count subtotals', () => {
    expect([llamaBlockFwd, llamaForward, llamaBlockDXlowest, llamaBlockDXfull, llamaBlockDW, P_llamaBlock]).toEqual([7152, 15272, 7976, 8232, 5504, 688]);
  });

  it('parameters', () => {
    expect(blockParamCount(llama)).toBe(688);
    expect(parameterCounts(llama)).toEqual({ block: 688, blocks: 1376, wte: 80, wpe: 0, lnF: 8, head: 80, total: 1544 });
  });

  const top = { lossDX: 80, headDX: 640, headDW: 640, lnfDW: 64, lnfDX: 224, wteDW: 32 };
  const expected = {
    0: { dX: top.lossDX + top.headDX + top.lnfDX + llamaBlockDXfull + llamaBlockDXlowest, dW: top.headDW + top.lnfDW + 2 * llamaBlockDW, params: 2 * 688 + 8 + 80 },
    1: { dX: top.lossDX + top.headDX + top.lnfDX + llamaBlockDXlowest, dW: top.headDW + top.lnfDW + llamaBlockDW, params: 688 + 8 + 80 },
    2: { dX: top.lossDX + top.headDX, dW: top.headDW + top.lnfDW, params: 8 + 80 },
    none: { dX: top.lossDX + top.headDX + top.lnfDX + 2 * llamaBlockDXfull, dW: top.headDW + top.lnfDW + 2 * llamaBlockDW + top.wteDW, params: 1544 },
  } as const;
  for (const K of [0, 1, 2, 'none'] as const) {
    it(`FLOPs at boundary ${K}`, () => {
      const e = expected[K];
      const r = stepCost(llama, 1, 4, K);
      expect(r.flops.forward).toBe(llamaForward);
      expect(r.flops.backwardDX).toBe(e.dX);
      expect(r.flops.backwardDW).toBe(e.dW);
      expect(r.memory.trainableParams).toBe(e.params);
      expect(r.flops.optimizer).toBe(16 * e.params);
      expect(r.headTrainable).toBe(true);
    });
  }

  it('the numbers themselves', () => {
    expect(costTable(llama, 1, 4).rows.map((r) => [r.flops.backwardDX, r.flops.backwardDW])).toEqual([
      [17152, 11712],
      [8920, 6208],
      [720, 704],
      [17408, 11744],
    ]);
    expect(flops(llama, 0, 'block0.q_proj')).toBe(1024);
    expect(flops(llama, 0, 'block0.k_proj')).toBe(512);
    expect(flops(llama, 0, 'block0.rope')).toBe(288);
    expect(flops(llama, 0, 'block1.ln1.dX')).toBe(224);
    expect(flops(llama, 0, 'block0.ln1.dX')).toBeUndefined(); // the truncation
    expect(flops(llama, 0, 'block0.rope.dX')).toBe(288); // paid in the lowest block (q/k dW need it)
    expect(flops(llama, 'none', 'wpe.dW')).toBeUndefined();
    expect(flops(llama, 0, 'embed.add')).toBeUndefined();
  });

  it('stored activations: qkv of width (H + 2·Hkv)·hd, gate|up [M, 2F], RMSNorm rstd only', () => {
    // per block: ln1 out 32 + rstd 4, qkv M·32 = 128, probs B·H·T² = 64, attn out M·qW = 64, residual 32,
    // ln2 out 32 + rstd 4, gate|up M·2F = 96, SwiGLU out M·F = 48, block output 32 = 536
    const perBlock = 32 + 4 + 128 + 64 + 64 + 32 + 32 + 4 + 96 + 48 + 32;
    expect(perBlock).toBe(536);
    const top = 4 + 32 + 40 + 4; // final norm rstd, its output (the untied head trains), probs, targets
    expect(elements(llama, 0)).toBe(32 + 2 * perBlock + top);
    expect(elements(llama, 1)).toBe(32 + perBlock + top);
    expect(elements(llama, 2)).toBe(32 + top);
    expect(elements(llama, 'none')).toBe(4 + 32 + 2 * perBlock + top);
    const names = activationTerms(llama, 1, 4, 1).map((a) => a.name);
    expect(names).toContain('block1.ln1.rstd');
    expect(names).toContain('block1.gate|up.out');
    expect(names).not.toContain('block1.ln1.mean+rstd');
    expect(names).not.toContain('block1.attn.proj.out'); // kept only with post-norms
    const r = stepCost(llama, 1, 4, 1);
    expect(r.memory.activationBytes).toBe(4 * (32 + perBlock + top));
    expect(r.memory.totalBytes).toBe(4 * 1544 + 12 * (688 + 88) + 4 * (32 + perBlock + top));
  });

  it('biases: q/k/v (Qwen2, attention_bias), o (attention_bias) and gate/up/down (mlp_bias)', () => {
    const qwen = decoder({ model_type: 'qwen2', num_hidden_layers: 2, hidden_size: 8, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 4, intermediate_size: 12, vocab_size: 10, max_position_embeddings: 8, tie_word_embeddings: false });
    expect(blockParamCount(qwen)).toBe(688 + 16 + 8 + 8); // q, k, v biases
    expect(flops(qwen, 0, 'block0.q_proj.bias')).toBe(64); // M·qW
    expect(flops(qwen, 0, 'block0.k_proj.bias')).toBe(32); // M·kvW
    expect(flops(qwen, 0, 'block0.v_proj.db')).toBe(32);
    expect(flops(qwen, 0, 'block0.o_proj.bias')).toBeUndefined();
    expect(stepCost(qwen, 1, 4, 0).flops.forward).toBe(llamaForward + 2 * 128);
    expect(stepCost(qwen, 1, 4, 0).flops.backwardDW).toBe(11712 + 2 * 128);
    const biased = decoder({ model_type: 'llama', num_hidden_layers: 2, hidden_size: 8, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 4, intermediate_size: 12, vocab_size: 10, max_position_embeddings: 8, tie_word_embeddings: false, attention_bias: true, mlp_bias: true });
    expect(blockParamCount(biased)).toBe(688 + 32 + 8 + 12 + 12 + 8); // q/k/v, o, gate, up, down biases
    expect(flops(biased, 0, 'block0.o_proj.bias')).toBe(32); // M·C
    expect(flops(biased, 0, 'block0.gate_proj.bias')).toBe(48); // M·F
    expect(flops(biased, 0, 'block0.down_proj.db')).toBe(32);
    // forward: q/k/v 128 + o 32 + gate, up 96 + down 32 per block
    expect(stepCost(biased, 1, 4, 'none').flops.forward).toBe(llamaForward + 2 * 288);
  });
});

// Gemma2-shaped: as above but tied, GeGLU, Gemma's RMSNorm (1 + w), post-norms, embedding scale √C,
// block 0 sliding with window 2 (pairs per head 1 + 2 + 2 + 2 = 7: B·H·7 = 28), block 1 full (40),
// attention soft-capping 5, final logit soft-capping 3.
const gemma = decoder({ model_type: 'gemma2', num_hidden_layers: 2, hidden_size: 8, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 4, intermediate_size: 12, vocab_size: 10, max_position_embeddings: 8, sliding_window: 2, attn_logit_softcapping: 5, final_logit_softcapping: 3, query_pre_attn_scalar: 4 });

const gemmaBlock0Fwd =
  160 + //  input_layernorm: (RMSNorm 4 + the 1 of 1 + w) · 32
  1024 + 512 + 512 + // q/k/v
  288 + //  rotary
  224 + //  QKᵀ: 8·28
  84 + //   attention soft-cap: 3 per pair · 28
  168 + //  scale + softmax: 6·28
  224 + //  P·V
  1024 + // o_proj
  160 + //  post_attention_layernorm (the attention's post-norm)
  32 + //   residual add
  160 + //  pre_feedforward_layernorm
  768 + 768 + // gate, up
  480 + //  GeGLU: 10 per element · 48
  768 + //  down
  160 + //  post_feedforward_layernorm
  32; //    residual add
const gemmaBlock1Fwd = gemmaBlock0Fwd + (320 - 224) + (120 - 84) + (240 - 168) + (320 - 224); // 40 pairs instead of 28
const gemmaForward =
  32 + //   embedding scale: M·C
  gemmaBlock0Fwd + gemmaBlock1Fwd +
  160 + //  final norm
  640 + //  head
  200 + //  final soft-cap with its saved derivative: 5 per logit · 40
  200; //   loss
const gemmaBlock0DXlowest =
  256 + //  post_feedforward_layernorm dX: (7 + 1)·32
  768 + //  down dX
  1104 + // GeGLU backward: 23·48
  768 + 768 + // gate, up dX
  256 + //  pre_feedforward_layernorm dX
  32 + //   residual merge
  256 + //  post_attention_layernorm dX
  1024 + // o_proj dX
  224 + 224 + // dP, dV: 8·28
  140 + //  softmax backward + scale: 5·28
  112 + //  soft-cap backward: 4·28
  224 + 224 + // dQ, dK
  288 + //  rotary backward
  1024 + 512 + 512; // q/k/v dX
const gemmaBlock1DXlowest = gemmaBlock0DXlowest + 4 * (320 - 224) + (200 - 140) + (160 - 112);
const gemmaInputDX = 256 + 32; // input_layernorm dX + residual merge (not in the lowest trainable block)
const gemmaBlockDW =
  64 + 64 + 64 + 64 + // four norms' dw: 2·32 each
  768 * 3 + // down, gate, up
  1024 + // o
  1024 + 512 + 512; // q/k/v
// Parameters: block = 4 norms 32 + 656 = 704; final norm 8; wte 80; tied head.
const gemmaTop = { lossDX: 80, softcapDX: 40 /* ·sech² per logit */, headDX: 640, headDW: 640, lnfDW: 64, lnfDX: 256, wteDW: 32 + 32 /* scatter-add + scale */ };

describe('cost model: Gemma2-shaped hand count (post-norms, sliding window, soft-caps, embedding scale, GeGLU)', () => {
  it('the hand-count subtotals', () => {
    expect([gemmaBlock0Fwd, gemmaBlock1Fwd, gemmaForward, gemmaBlock0DXlowest, gemmaBlock1DXlowest, gemmaBlockDW]).toEqual([7548, 7848, 16628, 8716, 9208, 5632]);
  });

  it('windowed pairs', () => {
    expect([causalPairs(4, 2), causalPairs(4, 0), causalPairs(4, 4), causalPairs(4, 9), causalPairs(8, 3)]).toEqual([7, 10, 10, 10, 6 + 5 * 3]);
    expect(flops(gemma, 0, 'block0.attn.qk')).toBe(224);
    expect(flops(gemma, 0, 'block1.attn.qk')).toBe(320);
    expect(costTerms(gemma, 1, 4, 0, { attention: 'full' }).find((t) => t.name === 'block0.attn.qk')!.flops).toBe(8 * 4 * 16);
  });

  it('parameters', () => {
    expect(parameterCounts(gemma)).toEqual({ block: 704, blocks: 1408, wte: 80, wpe: 0, lnF: 8, head: 0, total: 1496 });
  });

  const expected = {
    0: { dX: gemmaTop.lossDX + gemmaTop.softcapDX + gemmaTop.headDX + gemmaTop.lnfDX + gemmaBlock1DXlowest + gemmaInputDX + gemmaBlock0DXlowest, dW: gemmaTop.lnfDW + 2 * gemmaBlockDW, params: 2 * 704 + 8 },
    1: { dX: gemmaTop.lossDX + gemmaTop.softcapDX + gemmaTop.headDX + gemmaTop.lnfDX + gemmaBlock1DXlowest, dW: gemmaTop.lnfDW + gemmaBlockDW, params: 704 + 8 },
    2: { dX: gemmaTop.lossDX + gemmaTop.softcapDX + gemmaTop.headDX, dW: gemmaTop.lnfDW, params: 8 },
    none: { dX: gemmaTop.lossDX + gemmaTop.softcapDX + gemmaTop.headDX + gemmaTop.lnfDX + gemmaBlock1DXlowest + gemmaBlock0DXlowest + 2 * gemmaInputDX, dW: gemmaTop.headDW + gemmaTop.lnfDW + 2 * gemmaBlockDW + gemmaTop.wteDW, params: 1496 },
  } as const;
  for (const K of [0, 1, 2, 'none'] as const) {
    it(`FLOPs at boundary ${K}`, () => {
      const e = expected[K];
      const r = stepCost(gemma, 1, 4, K);
      expect(r.flops.forward).toBe(gemmaForward);
      expect(r.flops.backwardDX).toBe(e.dX);
      expect(r.flops.backwardDW).toBe(e.dW);
      expect(r.memory.trainableParams).toBe(e.params);
      expect(r.flops.optimizer).toBe(16 * e.params);
    });
  }

  it('the numbers themselves', () => {
    expect(costTable(gemma, 1, 4).rows.map((r) => [r.flops.backwardDX, r.flops.backwardDW])).toEqual([
      [19228, 11328],
      [10224, 5696],
      [760, 64],
      [19516, 12032],
    ]);
  });

  it('stored activations: post-norm inputs and rstd, the final soft-cap derivative [rowChunk, V]', () => {
    // per block: the Llama list (536) + attention and MLP projection outputs 32 + 32 and their post-norms' rstd 4 + 4
    const perBlock = 536 + 32 + 4 + 32 + 4;
    const top = 4 + 40 + 40 + 4; // final norm rstd, probs, soft-cap derivative (rowChunk 4 · V), targets
    expect(elements(gemma, 0)).toBe(32 + 2 * perBlock + top);
    expect(elements(gemma, 1)).toBe(32 + perBlock + top);
    expect(elements(gemma, 2)).toBe(32 + top);
    expect(elements(gemma, 'none')).toBe(4 + 32 + 2 * perBlock + 32 + top); // + ids, + final norm out (tied head trains)
    const names = activationTerms(gemma, 1, 4, 1).map((a) => a.name);
    for (const n of ['block1.attn.proj.out', 'block1.attn.postnorm.rstd', 'block1.mlp.proj.out', 'block1.mlp.postnorm.rstd', 'logits.softcap.deriv']) expect(names).toContain(n);
    expect(activationTerms(gemma, 1, 4, 1, { logitsRowChunk: 2 }).find((a) => a.name === 'logits.softcap.deriv')!.elements).toBe(20);
    expect(() => activationTerms(gemma, 1, 4, 1, { logitsRowChunk: 0 })).toThrow(/logitsRowChunk/);
  });

  it("the logits row chunk is ModelForward's", () => {
    const shapes: [ModelConfig, number][] = [[gemma, 4], [smolLM2_135MConfig(), 128], [smolLM2_135MConfig(), 4096], [{ ...gpt2Config(), vocabSize: 300000, nEmbd: 8, nHead: 2 }, 1000], [gpt2Config(), 8 * 1024]];
    for (const [cfg, rows] of shapes) {
      const want = headRowChunk(cfg, rows, 128 * 2 ** 20);
      expect(logitsRowChunk(cfg.nEmbd, cfg.vocabSize, rows)).toBe(want);
      expect(headRowChunk(cfg, rows, 2 ** 31)).toBe(want); // any binding limit ≥ the 64 MiB cap
    }
  });

  it('GPT-2 has no post-norm, soft-cap, rotary or scale terms', () => {
    const names = costTerms(cfg, 1, 4, 'none').map((t) => t.name);
    expect(names.filter((n) => /postnorm|softcap|rope|scale|_proj/.test(n))).toEqual([]);
    expect(activationTerms(cfg, 1, 4, 'none').map((a) => a.name).filter((n) => /softcap|\.rstd$|proj\.out/.test(n))).toEqual([]);
  });
});

describe('cost model: parameter counts match the parameter layout', () => {
  const fixtureConfig = (name: string) => parseConfig(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8'));
  const configs: [string, ModelConfig][] = [
    ['gpt2 (small)', gpt2Config()],
    ['gpt2 (untied, n_inner)', gpt2Config({ nLayer: 3, nEmbd: 64, nHead: 4, nInner: 100, vocabSize: 77, nPositions: 32, tiedHead: false })],
    ['llama (llama-gqa fixture)', fixtureConfig('llama-gqa')],
    ['llama (attention and mlp biases)', { ...llama, arch: { ...llama.arch!, qkvBias: true, oBias: true, mlpBias: true } }],
    ['SmolLM2-135M', smolLM2_135MConfig()],
    ['qwen2 (qwen2-bias fixture)', fixtureConfig('qwen2-bias')],
    ['gemma2 (gemma2-softcap fixture)', fixtureConfig('gemma2-softcap')],
    ['llama (tiny, untied)', llama],
    ['gemma2 (tiny)', gemma],
  ];
  for (const [name, c] of configs) {
    it(name, () => {
      const specs = paramSpecs(c);
      const p = parameterCounts(c);
      const sum = (f: (b: number) => boolean) => specs.filter((s) => f(s.block)).reduce((a, s) => a + s.numel, 0);
      for (let l = 0; l < c.nLayer; l++) expect(sum((b) => b === l)).toBe(p.block);
      expect(sum((b) => b === -1)).toBe(p.wte + p.wpe);
      expect(sum((b) => b === c.nLayer)).toBe(p.lnF + p.head);
      expect(p.total).toBe(paramCount(c));
      expect(blockParamCount(c)).toBe(p.block);
      for (const K of [0, c.nLayer >> 1, c.nLayer, 'none'] as const) {
        const trainable = specs.filter((s) => K === 'none' || s.block >= K).reduce((a, s) => a + s.numel, 0);
        expect(trainableParams(c, K)).toBe(trainable);
      }
    });
  }
  it('SmolLM2-135M: 134,515,008 parameters', () => {
    expect(parameterCounts(smolLM2_135MConfig()).total).toBe(134515008);
  });
});

describe('cost model: the boundary activation cache (cachedBoundary)', () => {
  const cfg = { modelType: 'gpt2' as const, nLayer: 4, nEmbd: 16, nHead: 2, nInner: 64, vocabSize: 50, nPositions: 32, layerNormEpsilon: 1e-5, activation: 'gelu_tanh' as const, tiedHead: true };
  it('drops exactly the embedding and the frozen blocks\' forward terms; nothing else changes', () => {
    for (const K of [0, 2, 4] as const) {
      const plain = costTerms(cfg, 2, 8, K);
      const cached = costTerms(cfg, 2, 8, K, { cachedBoundary: true });
      const dropped = plain.filter((t) => !cached.some((c) => c.name === t.name && c.phase === t.phase));
      expect(dropped.length).toBeGreaterThan(0);
      for (const t of dropped) {
        expect(t.phase).toBe('forward');
        expect(t.name.startsWith('embed') || Number(/^block(\d+)\./.exec(t.name)![1]) < K, t.name).toBe(true);
      }
      const b = stepCost(cfg, 2, 8, K);
      const c = stepCost(cfg, 2, 8, K, { cachedBoundary: true });
      expect(b.flops.total - c.flops.total).toBe(dropped.reduce((s, t) => s + t.flops, 0));
      expect(c.flops.backward).toBe(b.flops.backward);
      expect(c.memory.totalBytes).toBe(b.memory.totalBytes);
    }
    expect(stepCost(cfg, 2, 8, 'none', { cachedBoundary: true }).flops.total).toBe(stepCost(cfg, 2, 8, 'none').flops.total);
  });
});
