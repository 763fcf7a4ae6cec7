// `semfreeze bench savings`: one row per boundary with measured and analytic figures, boundaries
// parsed strictly; the SVG drawn. (Speed itself is shown by running it, never asserted here.)
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchSavingsCommand, pairedSaving, parseBoundaries } from '../src/cli/bench.ts';
import { stepCost } from '../src/analysis/cost.ts';
import { fixture } from './util/fixtures.ts';

describe('semfreeze bench savings', () => {
  it('parses boundaries: all, lists, none always first; rejects others', () => {
    expect(parseBoundaries('all', 3)).toEqual(['none', 0, 1, 2, 3]);
    expect(parseBoundaries('2,0', 3)).toEqual(['none', 2, 0]);
    expect(parseBoundaries('none,1,1', 3)).toEqual(['none', 1]);
    expect(() => parseBoundaries('4', 3)).toThrow(/'4' is not none or a block count 0..3/);
    expect(() => parseBoundaries('x', 3)).toThrow(/'x'/);
  });

  it('pairs each frozen step with the full steps around it: a slow spell cancels', () => {
    // The third pair ran 3× slower throughout and the second is a blip of K's: the median is 50%,
    // where the ratio of the medians (150 over 100) would say −50%.
    expect(pairedSaving([{ t: 50, before: 100, after: 100 }, { t: 150, before: 100, after: 100 }, { t: 150, before: 300, after: 300 }])).toBeCloseTo(0.5, 12);
    // A pair straddling a change of speed compares against the mean of its two sides.
    expect(pairedSaving([{ t: 75, before: 100, after: 200 }])).toBeCloseTo(0.5, 12);
    expect(pairedSaving([])).toBeNull();
  });

  it.each([false, true])('gpt2-odd, cached boundary %s: a row per boundary, savings against none, the plot', async (cached) => {
    const plot = join(mkdtempSync(join(tmpdir(), 'semfreeze-bench-')), 'savings.svg');
    const f = fixture('gpt2-odd');
    const rows = await benchSavingsCommand({ model: f.dir, batch: 2, seq: 16, boundaries: '0,3', rounds: 2, cacheBoundary: cached, json: true, plot, profile: !cached });
    expect(rows.map((r) => r.boundary)).toEqual(['none', 0, 3]);
    for (const r of rows) {
      expect(r.wallMs).toBeGreaterThan(0);
      expect(r.gpuBytes).toBeGreaterThan(0);
      expect(r.analyticBytes).toBe(stepCost(f.config, 2, 16, r.boundary).memory.totalBytes);
    }
    expect(rows[0]!.measuredSaving).toBeNull();
    // K = N trains only the final norm: far less memory than full fine-tuning, analytically and measured.
    expect(rows[2]!.gpuBytes).toBeLessThan(rows[0]!.gpuBytes);
    expect(rows[2]!.analyticSaving!).toBeGreaterThan(0.3);
    // The cached step drops the prefix's forward from the analytic figure.
    const uncachedK3 = stepCost(f.config, 2, 16, 3).flops.total;
    if (cached) expect(rows[2]!.analyticFlops).toBeLessThan(uncachedK3);
    else expect(rows[2]!.analyticFlops).toBe(uncachedK3);
    if (!cached) {
      // The profile: GPU time by kernel family; the attention backward runs at full fine-tuning, never
      // with every block frozen (K = N = 3), where only the final norm's and the head's backward remain.
      const families = (i: number) => rows[i]!.profile!.map((p) => p.kernel);
      expect(families(0)).toContain('attention:backward_q');
      expect(families(2)).not.toContain('attention:backward_q');
      expect(families(2)).toContain('crossentropy:fused');
      for (const r of rows) for (const p of r.profile!) expect(p.ms).toBeGreaterThanOrEqual(0);
      expect(rows[0]!.profile!.reduce((a, p) => a + p.dispatches, 0)).toBeGreaterThan(rows[2]!.profile!.reduce((a, p) => a + p.dispatches, 0));
    } else expect(rows[0]!.profile).toBeUndefined();
    expect(readFileSync(plot, 'utf8')).toMatch(/^<svg[\s\S]*step time per boundary[\s\S]*memory per boundary/);
  });
});
