// The experiments (EXPERIMENTS.md): the baselines' boundary rules, macro-F1, the report's regret and
// verdict on hand-made results, and `semfreeze experiment run --quick` end to end on the shipped base
// model (it resumes, and refuses a results folder made with other settings).
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Boundary } from '../src/analysis/cost.ts';
import { experimentRunCommand, fileStore } from '../src/cli/experiment.ts';
import { boundaryKey, QUICK_SETTINGS, type ExperimentSettings } from '../src/experiment/experiment.ts';
import { autoFreezeBoundary, autoRgnBoundary, kneeBoundary, salfChoices } from '../src/experiment/methods.ts';
import { evenIndices, macroF1 } from '../src/experiment/quality.ts';
import { DEFAULT_SALF, g2Transfer, offAt, regretAt, retention, settle, taskReport, renderExperimentsMd, renderTaskSvg, type StoredResults } from '../src/experiment/report.ts';
import { splitValidation } from '../src/experiment/tasks.ts';
import { packageRoot } from '../src/platform/node.ts';
import { fixture } from './util/fixtures.ts';

describe('baseline rules', () => {
  it('the deviation knee is the block with the largest drop', () => {
    expect(kneeBoundary([1, 0.9, 0.5, 0.45, 0.4])).toBe(2);
    expect(kneeBoundary([1, 0.2, 0.1])).toBe(1);
  });

  it('AutoFreeze freezes the leading blocks whose gradient norm changes less than the median', () => {
    // Blocks 0,1 barely change between the halves; 2,3 change a lot; 4 is in between.
    const gradNorms = [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1.01, 1.02, 2, 3, 1.5], [1.01, 1.02, 2, 3, 1.5]];
    expect(autoFreezeBoundary({ gradNorms, weightNorms: [1, 1, 1, 1, 1] })).toBe(2);
    // Never every block.
    expect(autoFreezeBoundary({ gradNorms: [[1, 1], [1, 1], [2, 2], [2, 2]], weightNorms: [1, 1] })).toBeLessThan(2);
  });

  it('Auto-RGN tunes from the first block with half the largest relative gradient norm', () => {
    const probe = { gradNorms: [[0.1, 0.2, 1, 0.3], [0.1, 0.2, 1, 0.3]], weightNorms: [1, 1, 1, 0.5] };
    // RGN = 0.1, 0.2, 1, 0.6 → first ≥ 0.5 is block 2.
    expect(autoRgnBoundary(probe)).toBe(2);
  });

  it('macro-F1, even subsets and the validation split', () => {
    expect(macroF1([[5, 0], [0, 5]])).toBe(1);
    // Always "class 0": F1 0 for class 1, 2·5/(5+10) for class 0.
    expect(macroF1([[5, 0], [5, 0]])).toBeCloseTo((2 * 5) / 15 / 2, 12);
    expect(evenIndices(400, 4)).toEqual([0, 100, 200, 300]);
    expect(evenIndices(3, 10)).toEqual([0, 1, 2]);
    const s = splitValidation(25);
    expect(s.validation).toEqual([9, 19]);
    expect(s.train.length + s.validation.length).toBe(25);
  });
});

describe('the report on hand-made results', () => {
  const cfg = fixture('gpt2-odd').config; // N = 3
  const settings: ExperimentSettings = { ...QUICK_SETTINGS, tasks: ['spam'], seeds: [1, 2], boundaries: 'all', lrGrid: [1e-3], steps: 10, probeSteps: 4 };
  const scores: Record<string, [number, number]> = { none: [0.80, 0.82], K0: [0.80, 0.81], K1: [0.85, 0.86], K2: [0.84, 0.85], K3: [0.70, 0.71] };
  const fraction: Record<string, number> = { none: 1, K0: 0.9, K1: 0.6, K2: 0.35, K3: 0.1 };
  const store = new Map<string, unknown>();
  store.set('lr/spam-0.001', { score: 0.8 });
  for (const K of ['none', 0, 1, 2, 3] as Boundary[]) {
    for (const [i, seed] of [1, 2].entries()) {
      const k = boundaryKey(K);
      store.set(`oracle/spam-${k}-s${seed}`, { score: scores[k]![i], msPerStep: 10, gpuBytes: 2 ** 20, analytic: { backwardFraction: fraction[k] } });
    }
  }
  const D = [1, 0.95, 0.5, 0.45];
  for (const m of ['cosine', 'contrastive', 'lens']) store.set(`analysis/spam-${m}`, { deviations: D, dataSize: 100 });
  for (const seed of [1, 2]) store.set(`probe/spam-s${seed}`, { probe: { gradNorms: [[1, 1, 1], [1, 1, 1], [1, 2, 3], [1, 2, 3]], weightNorms: [1, 1, 1] } });
  const results: StoredResults = { settings, config: cfg, get: (k) => store.get(k) ?? null };

  it('places every method on the oracle curve with its regret and saving', () => {
    const r = taskReport(results, 'spam');
    expect(r.complete).toBe(true);
    expect(r.oracle.map((o) => o.boundary)).toEqual(['none', 0, 1, 2, 3]);
    const byName = (prefix: string) => r.methods.find((m) => m.method.startsWith(prefix))!;
    // Full fine-tuning: the best at cost ≤ 100% is K=1 (0.855); full's mean is 0.81.
    expect(byName('full').regret).toBeCloseTo(0.855 - 0.81, 12);
    expect(byName('fixed half').boundary).toBe(1);
    expect(byName('fixed half').regret).toBeCloseTo(0, 12);
    // last-k with k = max(1, ⌊3/4⌋) = 1 → K = 2: at ≤ 35% the best is K2 itself.
    expect(byName('last-k').boundary).toBe(2);
    expect(byName('last-k').regret).toBeCloseTo(0, 12);
    expect(byName('last-k').saving).toBeCloseTo(0.65, 12);
    // The random boundary's expectation over K = 0..3.
    expect(byName('random').mean).toBeCloseTo((0.805 + 0.855 + 0.845 + 0.705) / 4, 12);
    expect(byName('deviation knee').boundary).toBe(kneeBoundary(D));
    // AutoFreeze: block 0 never changes, 1 and 2 do → K = 1; its cost adds the probe's 4 full steps of 10.
    expect(byName('AutoFreeze').boundary).toBe(1);
    expect(byName('AutoFreeze').cost).toBeCloseTo(0.6 + 0.4, 12);
    // SALF's default is whatever its analysis picks from D, at the oracle's numbers for that K.
    const K = salfChoices({ cosine: D }, cfg, { batch: settings.batch, seq: settings.seq, dataSize: 100 }).find((c) => c.method === DEFAULT_SALF)!.boundary;
    const salf = r.methods.find((m) => m.method === DEFAULT_SALF)!;
    expect(salf.boundary).toBe(K);
    expect(salf.mean).toBeCloseTo(r.oracle.find((o) => o.boundary === K)!.mean, 12);
    expect(r.verdict.join('\n')).toContain(`picks --freeze ${K}`);
    expect(r.verdict[0]).toContain('--freeze 1');
    // The 90% line: full 0.81 over the floor K3 0.705 is a gain of 0.105; the cheapest boundary keeping
    // ≥ 90% of it (≥ 0.7995) is K2 (0.845, cost 35%), which keeps (0.845 − 0.705)/0.105 of it.
    expect(r.line!.boundary).toBe(2);
    expect(r.line!.retained).toBeCloseTo((0.845 - 0.705) / 0.105, 12);
    expect(r.line!.threshold).toBeCloseTo(0.705 + 0.9 * 0.105, 12);
    expect(byName('fixed half').off).toBe(-1);
    expect(byName('last-k').off).toBe(0);
    expect(byName('full').off).toBe(-3);
    expect(byName('full').retained).toBeCloseTo(1, 12);
    expect(byName('random').off).toBeCloseTo(1.5 - 2, 12);
    expect(r.verdict.join('\n')).toContain('is --freeze 2 (keeps 133%, saves 65% of the backward)');
    expect(offAt(r, 0)).toBe(-2);
    // g2's constants fitted on this task's oracle: never farther from its line than the defaults.
    const g = g2Transfer(cfg, [r], 'spam', settings)!;
    expect(g.candidates).toBeGreaterThan(100);
    expect(Math.abs(g.tasks[0]!.fitted.off!)).toBeLessThanOrEqual(Math.abs(g.tasks[0]!.defaults.off!));
    expect(offAt(r, g.tasks[0]!.fitted.K)).toBe(g.tasks[0]!.fitted.off);
    expect(regretAt(r, 2)).toBeCloseTo(0, 12);
    // Across tasks: every no-budget SALF variant is ranked by its distance from the line.
    const st = settle([r]);
    expect(st.variants.length).toBe(12);
    for (const v of st.variants) expect(v.meanAbsOff).toBe(Math.abs(r.methods.find((m) => m.method === v.method)!.off!));
    expect(st.nearest).toBe(st.variants.reduce((b, v) => (v.meanAbsOff < b.meanAbsOff || (v.meanAbsOff === b.meanAbsOff && v.method === DEFAULT_SALF) ? v : b)).method);
    const md = renderExperimentsMd(results, [r], { commit: 'abc', chartPath: () => 'charts/spam.svg', command: 'x', g2: g });
    expect(md).toContain("g2's constants: fitted on spam");
    expect(md).toContain('Against the 90% line: what settles');
    expect(md).toMatch(/\| fixed half \(K = 1\) \| 1 \| 0\.8550 \| 60% \| 40% \| 0\.0000 \| 143% \| −1 \|/);
    expect(md).toMatch(/\| 1 \| 0\.8550 ± 0\.0071 \| 0\.8500, 0\.8600 \| 60% \|/);
    expect(renderTaskSvg(r)).toMatch(/^<svg[\s\S]*oracle \(mean ± sd over seeds\)[\s\S]*<\/svg>\n$/);
    expect(renderTaskSvg(r)).toContain("90% of full fine-tuning's gain");
    // No line without both ends, or when full fine-tuning is no better than freezing every block.
    const row = (boundary: Boundary, m: number) => ({ boundary, scores: [m], mean: m, sd: 0, msPerStep: 1, gpuMiB: 1, backwardFraction: 0.5 });
    expect(retention([row('none', 0.8)], 3)).toBeNull();
    expect(retention([row('none', 0.5), row(3, 0.6)], 3)).toBeNull();
    expect(retention([row('none', 0.9), row(3, 0.5)], 3)!(0.7)).toBeCloseTo(0.5, 12);
  });

  it('says when SALF loses to a baseline beyond the seeds\' spread, and marks missing runs', () => {
    // Deviations whose largest drop is block 1: the default (g0) picks K = 1 (cost 60%); last-k
    // (K = 2, cost 35%) is cheaper.
    const D1 = [1, 0.5, 0.45, 0.4];
    const K = salfChoices({ cosine: D1 }, cfg, { batch: 2, seq: 32, dataSize: 100 }).find((c) => c.method === DEFAULT_SALF)!.boundary as Boundary;
    expect(K).toBe(1);
    // Make SALF's boundary clearly worse than a cheaper baseline's.
    const worse = new Map(store);
    for (const m of ['cosine', 'contrastive', 'lens']) worse.set(`analysis/spam-${m}`, { deviations: D1, dataSize: 100 });
    for (const seed of [1, 2]) worse.set(`oracle/spam-${boundaryKey(K)}-s${seed}`, { score: 0.2, msPerStep: 10, gpuBytes: 1, analytic: { backwardFraction: fraction[boundaryKey(K)] } });
    worse.delete('probe/spam-s2');
    const r = taskReport({ ...results, get: (k) => worse.get(k) ?? null }, 'spam');
    expect(r.complete).toBe(false);
    expect(r.verdict.join('\n')).toMatch(/LOSES to: .*last-k/);
    expect(r.verdict.at(-1)).toContain('Incomplete');
    expect(r.methods.some((m) => m.method.startsWith('AutoFreeze'))).toBe(false);
  });
});

describe('semfreeze experiment run --quick', () => {
  it('runs every job on the base model, writes the report, resumes, and refuses other settings', async () => {
    const out = mkdtempSync(join(tmpdir(), 'semfreeze-exp-'));
    const md = join(out, 'EXPERIMENTS.md');
    const o = { model: join(packageRoot, 'models', 'semfreeze-base'), data: join(packageRoot, 'data'), out: join(out, 'runs'), md, quick: true };
    await experimentRunCommand(o);
    const text = readFileSync(md, 'utf8');
    expect(text).toContain('## code: held-out loss');
    expect(text).toContain('## spam: held-out macro-F1');
    expect(text).toMatch(/\| none \| \d\.\d{4} ± \d\.\d{4} \|/);
    expect(existsSync(join(out, 'runs', 'charts', 'code.svg'))).toBe(true);
    const store = fileStore(join(out, 'runs'));
    const rec = (await store.get('oracle/code-K6-s2')) as { boundary: number; seed: number; steps: number; quality: { kind: string; loss: number }; trainableParameters: number };
    expect(rec).toMatchObject({ boundary: 6, seed: 2, steps: QUICK_SETTINGS.steps, quality: { kind: 'lm' } });
    expect((rec as unknown as { commit: string }).commit).toMatch(/^[0-9a-f]{7,}|unknown/);
    expect(Number.isFinite(rec.quality.loss)).toBe(true);
    const full = (await store.get('oracle/code-none-s2')) as { trainableParameters: number };
    expect(rec.trainableParameters).toBeLessThan(full.trainableParameters);
    const spam = (await store.get('oracle/spam-K12-s1')) as { quality: { kind: string; examples: number; confusion: number[][] } };
    expect(spam.quality.kind).toBe('classification');
    expect(spam.quality.confusion.flat().reduce((a, b) => a + b, 0)).toBe(spam.quality.examples);
    const probe = (await store.get('probe/spam-s1')) as { probe: { gradNorms: number[][] } };
    expect(probe.probe.gradNorms).toHaveLength(QUICK_SETTINGS.probeSteps);
    expect(probe.probe.gradNorms[0]).toHaveLength(12);
    // A second run has nothing left to do; the timing file is not touched by it.
    const before = readFileSync(join(out, 'runs', 'timing.json'), 'utf8');
    await experimentRunCommand(o);
    expect(readFileSync(join(out, 'runs', 'timing.json'), 'utf8')).toBe(before);
    await expect(experimentRunCommand({ ...o, tasks: 'code' })).rejects.toThrow(/other settings/);
  }, 600_000);
});
