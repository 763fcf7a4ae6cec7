// The cost model under LoRA (src/analysis/cost.ts, options.lora), against hand counts on the small
// GPT-2 config of test/analysis-cost.test.ts (N 2, C 8, H 2, F 32, V 10, T 4, B 1: M = 4) with r = 2,
// and the adapters' parameter count against the layout the training graph allocates for every family.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { activationTerms, costTable, costTerms, predictedSaving, stepCost, trainableParams } from '../src/analysis/cost.ts';
import { parseConfig } from '../src/model/config.ts';
import { loraModules, loraTargetNames } from '../src/model/lora.ts';
import { gpt2Config } from './util/config.ts';
import { FIXTURES } from './util/fixtures.ts';

const cfg = gpt2Config({ nLayer: 2, nEmbd: 8, nHead: 2, vocabSize: 10, nPositions: 8 });
const lora = { r: 2 };

// Adapter parameters r·(in + out): c_attn 2·(8+24) = 64, attn.c_proj 2·(8+8) = 32, c_fc 2·(8+32) = 80,
// mlp.c_proj 2·(32+8) = 80: 256 per block.
const P_block = 64 + 32 + 80 + 80;
// Forward per adapted projection: x·Aᵀ 2·M·in·r, scale M·r, u·Bᵀ 2·M·r·out, add into y M·out.
const fwdQkv = 128 + 8 + 384 + 96; //   616
const fwdO = 128 + 8 + 128 + 32; //      296
const fwdFc = 128 + 8 + 512 + 128; //    776
const fwdDown = 512 + 8 + 128 + 32; //   680
const fwdBlock = fwdQkv + fwdO + fwdFc + fwdDown; // 2368
const baseForward = 18328; // test/analysis-cost.test.ts's hand count
// Backward dX per adapted projection: du = dy·B 2·M·out·r, scale M·r, dx += du·A 2·M·r·in + M·in.
const dxQkvLowest = 384 + 8; //          no dx at the lowest block's qkv: 392
const dxQkv = 384 + 8 + 128 + 32; //     552
const dxO = 128 + 8 + 128 + 32; //       296
const dxFc = 512 + 8 + 128 + 32; //      680
const dxDown = 128 + 8 + 512 + 128; //   776
// dW per adapted projection: dB 2·M·out·r, dA 2·M·r·in.
const dwBlock = (384 + 128) + (128 + 128) + (512 + 128) + (128 + 512); // 2048
// The base dX chain of one block (test/analysis-cost.test.ts: 9540 lowest, 9892 with its input's dX);
// LoRA's lowest block also skips the qkv dX product 2·M·3C·C = 1536 (nothing needs d(ln1 out)).
const chainLowest = 9540 - 1536; // 8004
const chainFull = 9892;
const top = 80 + 640 + 320; // loss dX, head dX, lnf dX (no lnf dW, no head dW)

describe('cost model under LoRA: hand count (r 2)', () => {
  it('subtotals are what the comments say', () => {
    expect([P_block, fwdBlock, dwBlock, chainLowest]).toEqual([256, 2368, 2048, 8004]);
  });

  it('K = 1, every target: adapters on block 1 only, no base gradient, the dX chain through block 1', () => {
    const r = stepCost(cfg, 1, 4, 1, { lora });
    expect(r.memory.trainableParams).toBe(P_block);
    expect(r.flops.forward).toBe(baseForward + fwdBlock);
    expect(r.flops.backwardDX).toBe(top + chainLowest + dxQkvLowest + dxO + dxFc + dxDown);
    expect(r.flops.backwardDX).toBe(11188);
    expect(r.flops.backwardDW).toBe(dwBlock);
    expect(r.flops.optimizer).toBe(16 * P_block);
    expect(r.embeddingsTrainable).toBe(false);
    expect(r.headTrainable).toBe(false);
    expect(r.memory.gradientBytes).toBe(4 * P_block);
    expect(r.memory.adamStateBytes).toBe(8 * P_block);
    expect(r.memory.weightBytes).toBe(4 * (1904 + P_block));
    // Activations: those of the frozen boundary 1 plus u [M, r] per adapted projection.
    const frozen = activationTerms(cfg, 1, 4, 1).reduce((s, a) => s + a.elements, 0);
    const withLora = activationTerms(cfg, 1, 4, 1, { lora });
    expect(withLora.reduce((s, a) => s + a.elements, 0)).toBe(frozen + 4 * 8);
    expect(withLora.filter((a) => a.name.endsWith('.lora.u')).map((a) => a.name)).toEqual(['block1.attn.c_attn.lora.u', 'block1.attn.c_proj.lora.u', 'block1.mlp.c_fc.lora.u', 'block1.mlp.c_proj.lora.u']);
    const names = costTerms(cfg, 1, 4, 1, { lora }).map((t) => t.name);
    for (const absent of ['block1.qkv.dX', 'block1.qkv.dW', 'block1.ln1.dX', 'block1.ln1.dW', 'block1.ln2.dW', 'lnf.dW', 'head.dW', 'block1.fc.db']) expect(names, absent).not.toContain(absent);
    for (const present of ['block1.fc.dX', 'block1.ln2.dX', 'block1.attn.dQ', 'lnf.dX', 'head.dX', 'block1.qkv.lora.dW']) expect(names, present).toContain(present);
  });

  it("'none' is K = 0: adapters on both blocks, block 0's input dX not paid, embeddings frozen", () => {
    const r = stepCost(cfg, 1, 4, 'none', { lora });
    expect(r.memory.trainableParams).toBe(2 * P_block);
    expect(r.flops.forward).toBe(baseForward + 2 * fwdBlock);
    expect(r.flops.backwardDX).toBe(top + chainFull + dxQkv + dxO + dxFc + dxDown + chainLowest + dxQkvLowest + dxO + dxFc + dxDown);
    expect(r.flops.backwardDX).toBe(23384);
    expect(r.flops.backwardDW).toBe(2 * dwBlock);
    expect(stepCost(cfg, 1, 4, 0, { lora }).flops).toEqual(r.flops);
    expect(activationTerms(cfg, 1, 4, 'none', { lora }).map((a) => a.name)).not.toContain('input ids (int32)');
  });

  it('a subset of targets: attn.c_attn only', () => {
    const r = stepCost(cfg, 1, 4, 1, { lora: { r: 2, targets: ['attn.c_attn'] } });
    expect(r.memory.trainableParams).toBe(64);
    expect(r.flops.forward).toBe(baseForward + fwdQkv);
    expect(r.flops.backwardDX).toBe(top + chainLowest + dxQkvLowest);
    expect(r.flops.backwardDW).toBe(384 + 128);
  });

  // Block 1 is the lowest: of its dX chain only what its adapters read is paid.
  it('mlp.c_fc only: down dX and the GELU backward, nothing of the attention half, no dx of c_fc', () => {
    const r = stepCost(cfg, 1, 4, 1, { lora: { r: 2, targets: ['mlp.c_fc'] } });
    expect(r.flops.forward).toBe(baseForward + fwdFc);
    // fc proj dX 2·M·F·C 2048 + GELU backward 18·M·F 2304; c_fc's du 2·M·32·2 512 + scale 8.
    expect(r.flops.backwardDX).toBe(top + 2048 + 2304 + 512 + 8);
    expect(r.flops.backwardDW).toBe(512 + 128);
    const names = costTerms(cfg, 1, 4, 1, { lora: { r: 2, targets: ['mlp.c_fc'] } }).map((t) => t.name);
    for (const absent of ['block1.fc.dX', 'block1.ln2.dX', 'block1.attproj.dX', 'block1.attn.dQ']) expect(names, absent).not.toContain(absent);
  });

  it('mlp.c_proj only: none of the chain, only its own du', () => {
    const r = stepCost(cfg, 1, 4, 1, { lora: { r: 2, targets: ['mlp.c_proj'] } });
    // du = dy·B 2·M·8·2 = 128, scale 8.
    expect(r.flops.backwardDX).toBe(top + 128 + 8);
    expect(r.flops.backwardDW).toBe(128 + 512);
  });

  it('attn.c_proj only: the MLP chain and ln2 dX, no attention backward, no dx of c_proj', () => {
    const r = stepCost(cfg, 1, 4, 1, { lora: { r: 2, targets: ['attn.c_proj'] } });
    // fc proj dX 2048 + GELU 2304 + fc dX 2048 + ln2 dX 320 + merge 32; c_proj's du 128 + scale 8.
    expect(r.flops.backwardDX).toBe(top + 2048 + 2304 + 2048 + 320 + 32 + 128 + 8);
    expect(r.flops.backwardDW).toBe(128 + 128);
  });

  it('a block above the lowest always pays its whole dX chain', () => {
    // K = 0, mlp.c_proj only: block 1 pays chainFull (9892) and c_proj's dx; block 0 only c_proj's du.
    const r = stepCost(cfg, 1, 4, 0, { lora: { r: 2, targets: ['mlp.c_proj'] } });
    expect(r.flops.backwardDX).toBe(top + chainFull + (128 + 8 + 512 + 128) + (128 + 8));
  });

  it('ratios are against full fine-tuning of the weights', () => {
    const full = stepCost(cfg, 1, 4, 'none');
    const r = stepCost(cfg, 1, 4, 1, { lora });
    expect(r.ratioToFull.step).toBeCloseTo(r.flops.total / full.flops.total, 15);
    expect(r.ratioToFull.memory).toBeCloseTo(r.memory.totalBytes / full.memory.totalBytes, 15);
    const t = costTable(cfg, 1, 4, { lora });
    expect(t.full.flops).toEqual(full.flops);
    expect(t.rows[1]!.flops).toEqual(r.flops);
    expect(predictedSaving(cfg, 1, 4, 1, { lora }).full.flops).toEqual(full.flops);
    // LoRA at K = 1 costs less backward than training block 1's weights (no base dW).
    expect(r.flops.backward).toBeLessThan(stepCost(cfg, 1, 4, 1).flops.backward);
  });

  it('refuses a bad rank', () => {
    expect(() => stepCost(cfg, 1, 4, 1, { lora: { r: 0 } })).toThrow(/LoRA rank must be a positive integer/);
  });
});

describe.each(['gpt2-odd', 'llama-gqa', 'qwen2-bias', 'gemma2-softcap'])('%s: LoRA parameters as the training graph lays them out', (name) => {
  const c = parseConfig(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8'), name);
  it('Σ r·(in + out) over the adapted modules of blocks K..N−1, every target and one', () => {
    for (const K of [0, 1, c.nLayer - 1]) {
      for (const targets of [loraTargetNames(c), [loraTargetNames(c).at(-1)!]]) {
        const mods = loraModules(c, { r: 3, alpha: 6, targets }, K);
        expect(trainableParams(c, K, { lora: { r: 3, targets } })).toBe(mods.reduce((s, m) => s + 3 * (m.inputs + m.outputs), 0));
      }
    }
  });
});
