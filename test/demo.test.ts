// `semfreeze demo` (what `npm start` runs on the shipped base) on a tiny fixture: the analysis picks a
// boundary, both runs train on the same batches, the figures are written, --json has every number.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, removeDir, runCli, stdoutJson, tempDir } from './util/cli.ts';
import { FIXTURES } from './util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');

let dir: string;
beforeAll(() => { dir = tempDir('demo'); });
afterAll(() => removeDir(dir));

interface DemoJson {
  freeze: number;
  steps: number;
  heldOutLoss: { before: number; frozen: number; full: number };
  msPerStep: { frozen: number; full: number };
  gpuBytes: { frozen: number; full: number };
  stepSaving: { measured: number; predicted: number };
  analysis: { deviations: number[]; gains: (number | null)[] };
  files: { analysisSvg: string; lossSvg: string };
}

describe('semfreeze demo', () => {
  it('analyses, fine-tunes frozen and full side by side, and writes both figures', async () => {
    const out = join(dir, 'out');
    const r = await runCli(['demo', '--model', TINY, '--data', join(TINY, 'train.txt'), '--steps', '6', '--batch', '2', '--seq', '16', '--lr', '3e-3', '--analysis-windows', '4', '--eval-windows', '4', '--out', out, '--json'], { timeoutMs: 300_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const d = stdoutJson<DemoJson>(r);
    expect(d.analysis.deviations).toHaveLength(3); // N + 1 latent spaces
    expect(d.analysis.gains).toHaveLength(2);
    expect(d.freeze).toBeGreaterThanOrEqual(0);
    expect(d.freeze).toBeLessThanOrEqual(2);
    // Both runs trained (their held-out losses moved) and differ from each other (different trainable sets).
    expect(d.heldOutLoss.full).not.toBe(d.heldOutLoss.before);
    expect(d.heldOutLoss.frozen).not.toBe(d.heldOutLoss.full);
    expect(d.msPerStep.frozen).toBeGreaterThan(0);
    expect(d.gpuBytes.frozen).toBeLessThan(d.gpuBytes.full);
    expect(d.stepSaving.predicted).toBeGreaterThan(0);
    for (const f of [d.files.analysisSvg, d.files.lossSvg]) {
      expect(existsSync(f)).toBe(true);
      expect(readFileSync(f, 'utf8')).toMatch(/^<svg/);
    }
    expect((readFileSync(d.files.lossSvg, 'utf8').match(/class="series"/g) ?? []).length).toBe(2);
  });
});
