// `semfreeze bench savings --lora R`: LoRA at each boundary against full fine-tuning ('none'), with the
// cost model's LoRA figures; LoRA holds less GPU memory than training the same blocks' weights.
import { describe, expect, it } from 'vitest';
import { benchSavingsCommand } from '../src/cli/bench.ts';
import { stepCost } from '../src/analysis/cost.ts';
import { fixture } from './util/fixtures.ts';

describe('semfreeze bench savings --lora', () => {
  it('gpt2-odd: LoRA rows at 0 and 2 with their analytic FLOPs and bytes; less memory than weights at the same K', async () => {
    const f = fixture('gpt2-odd');
    const B = 2;
    const T = 16;
    const lora = await benchSavingsCommand({ model: f.dir, batch: B, seq: T, boundaries: '0,2', rounds: 1, json: true, lora: 2 });
    const weights = await benchSavingsCommand({ model: f.dir, batch: B, seq: T, boundaries: '0,2', rounds: 1, json: true });
    expect(lora.map((r) => r.boundary)).toEqual(['none', 0, 2]);
    for (const r of lora) {
      const opts = r.boundary === 'none' ? {} : { lora: { r: 2 } };
      expect(r.analyticFlops).toBe(stepCost(f.config, B, T, r.boundary, opts).flops.total);
      expect(r.analyticBytes).toBe(stepCost(f.config, B, T, r.boundary, opts).memory.totalBytes);
    }
    // 'none' is the same full fine-tuning reference either way.
    expect(lora[0]!.analyticFlops).toBe(weights[0]!.analyticFlops);
    for (const i of [1, 2]) {
      expect(lora[i]!.gpuBytes, `K = ${lora[i]!.boundary}`).toBeLessThan(weights[i]!.gpuBytes);
      expect(lora[i]!.analyticBytes).toBeLessThan(weights[i]!.analyticBytes);
    }
  });

  it('--boundaries all leaves out K = N (nothing to adapt); naming it is refused', async () => {
    const f = fixture('gpt2-odd');
    const N = f.config.nLayer;
    await expect(benchSavingsCommand({ model: f.dir, batch: 1, seq: 8, boundaries: String(N), rounds: 1, json: true, lora: 2 })).rejects.toThrow(/--lora: boundary 3 freezes every block/);
    const rows = await benchSavingsCommand({ model: f.dir, batch: 1, seq: 8, boundaries: 'all', rounds: 1, json: true, lora: 2 });
    expect(rows.map((r) => r.boundary)).toEqual(['none', ...Array.from({ length: N }, (_, k) => k)]);
  });
});
