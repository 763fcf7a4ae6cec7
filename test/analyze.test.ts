// The SALF analysis end to end: GPU deviations (trace → reductions, accumulated over runs) against a
// float64 CPU computation from the Hugging Face fixtures' hidden states; the `analyze` command on
// language-model and classification data (and its errors); `finetune --freeze auto`.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cholesky, gramCpu, tokenBases } from '../src/analysis/cholesky.ts';
import { computeDeviationsCpu, finalNormCpu } from '../src/analysis/deviation.ts';
import { measureDeviations, planRuns, prepareClassificationData, prepareLmData, sampleIndices, type AnalysisExample, type PreparedData } from '../src/analysis/run.ts';
import type { DeviationMetric } from '../src/analysis/types.ts';
import { windows } from '../src/data/tokens.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { FIXTURES, fixture, type Fixture } from './util/fixtures.ts';
import { runtime } from './util/gpu.ts';

const run = promisify(execFile);
const BIN = join(FIXTURES, '..', '..', 'bin', 'semfreeze.ts');

/** Run the CLI; never throws: returns exit code, stdout, stderr. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run('npx', ['tsx', BIN, ...args], { maxBuffer: 64 * 2 ** 20, cwd: join(FIXTURES, '..', '..') });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** The fixture's batch as analysis data: positions `pick(t)` of every row, targets from the fixture. */
function fixtureData(f: Fixture, pick: (t: number) => boolean, labels?: Int32Array): PreparedData {
  const examples: AnalysisExample[] = [];
  for (let b = 0; b < f.B; b++) {
    const positions = Int32Array.from({ length: f.T }, (_, t) => t).filter(pick);
    const row = f.targets.subarray(b * f.T, (b + 1) * f.T);
    examples.push({ ids: f.inputIds.slice(b * f.T, (b + 1) * f.T), positions, targets: Int32Array.from(positions, (p) => row[p]) });
  }
  const positions = examples.reduce((s, e) => s + e.positions.length, 0);
  return { kind: 'lm', T: f.T, examples, positions, dataSize: positions, description: 'fixture', notes: [], ...(labels ? { labels } : {}) };
}

/** CPU float64 deviations from the fixture's own hidden states (HF): spaces 0..N−1 raw, residual.N raw. */
async function cpuDeviations(f: Fixture, data: PreparedData, metric: DeviationMetric, finalNorm: boolean): Promise<number[]> {
  const cfg = f.config;
  const C = cfg.nEmbd;
  const V = cfg.vocabSize;
  const params = await hostParams({ config: cfg, weights: f.model });
  const W = params.get('wte.weight')!;
  const P = data.positions;
  const targets = new Int32Array(P);
  const hidden: Float64Array[] = [];
  for (let k = 0; k <= cfg.nLayer; k++) {
    const h = f.ref.getFloat32(k < cfg.nLayer ? `hidden_states.${k}` : `residual.${cfg.nLayer}`);
    const sel = new Float64Array(P * C);
    let i = 0;
    data.examples.forEach((e, b) => {
      for (let j = 0; j < e.positions.length; j++, i++) {
        const src = (b * f.T + e.positions[j]) * C;
        for (let c = 0; c < C; c++) sel[i * C + c] = h[src + c];
        targets[i] = e.targets[j];
      }
    });
    hidden.push(finalNorm ? finalNormCpu(sel, P, C, params.get('ln_f.weight')!, params.get('ln_f.bias')!, cfg.layerNormEpsilon) : sel);
  }
  if (metric === 'lens') return computeDeviationsCpu(hidden, { metric, targets }, { W, vocab: V }).deviations;
  const factor = cholesky(gramCpu(W, V, C), C);
  const bases = tokenBases(factor, W, V, data.labels ? [...targets, ...data.labels] : targets);
  return computeDeviationsCpu(hidden, { metric, targets, bases, labels: data.labels }).deviations;
}

function expectClose(gpu: number[], cpu: number[], tol: number, what: string): void {
  expect(gpu.length, what).toBe(cpu.length);
  for (let k = 0; k < cpu.length; k++) {
    const rel = Math.abs(gpu[k] - cpu[k]) / Math.abs(cpu[k]);
    if (process.env.ANALYZE_TEST_VERBOSE) console.log(`${what} D_${k} rel ${rel.toExponential(2)}`);
    expect(rel, `${what}: D_${k} gpu ${gpu[k]} vs cpu ${cpu[k]}`).toBeLessThan(tol);
  }
}

describe.each(['gpt2-odd', 'gpt2-deep', 'gpt2-tiny'])('GPU deviations = float64 CPU from the HF hidden states: %s', (name) => {
  const f = fixture(name);
  const uniqueTargets = Int32Array.from(new Set(f.targets)).sort();
  const cases: [DeviationMetric, boolean][] = [['cosine', true], ['cosine', false], ['contrastive', true], ['contrastive', false], ['lens', true], ['lens', false]];

  it.each(cases)('%s, final norm %s: every position, batches of 2 (all mode)', async (metric, finalNorm) => {
    const rt = await runtime();
    const weights = GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
    try {
      const data = fixtureData(f, () => true, metric === 'contrastive' ? uniqueTargets : undefined);
      const { result, stats } = await measureDeviations(rt, weights, data, { metric, finalNorm, batch: 2 });
      expect(stats.mode).toBe('all');
      expect(stats.runs).toBe(Math.ceil(f.B / 2));
      expect(result.positions).toBe(f.B * f.T);
      expectClose(result.deviations, await cpuDeviations(f, data, metric, finalNorm), 1e-4, `${name} ${metric} norm ${finalNorm}`);
      if (metric === 'contrastive') for (const d of result.deviations) expect(d).toBeGreaterThanOrEqual(0);
    } finally {
      weights.destroy(rt);
    }
  });

  it.each([['cosine', true], ['contrastive', false], ['lens', true]] as [DeviationMetric, boolean][])('%s, final norm %s: every 3rd position, traces split over many runs (rows mode)', async (metric, finalNorm) => {
    const rt = await runtime();
    const weights = GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
    try {
      const data = fixtureData(f, (t) => t % 3 === 1, metric === 'contrastive' ? uniqueTargets : undefined);
      // A binding that holds 5 positions per latent space: rows of a sequence spill into the next run.
      const C = f.config.nEmbd;
      const maxBindingBytes = (f.config.nLayer + 1) * Math.ceil((5 * C) / 64) * 64 * 4;
      const { result, stats } = await measureDeviations(rt, weights, data, { metric, finalNorm, batch: 2, maxBindingBytes });
      expect(stats.mode).toBe('rows');
      expect(stats.capacity).toBeLessThanOrEqual(5);
      expect(stats.runs).toBe(Math.ceil(data.positions / 5));
      expect(result.positions).toBe(data.positions);
      expectClose(result.deviations, await cpuDeviations(f, data, metric, finalNorm), 1e-4, `${name} ${metric} rows`);
    } finally {
      weights.destroy(rt);
    }
  });
});

describe('analysis data and run planning', () => {
  it('LM data: every position, a seeded sample, evenly spread windows', () => {
    const ids = Int32Array.from({ length: 10 * 9 + 3 }, (_, i) => i % 50);
    const win = windows(ids, 8, 'x');
    const all = prepareLmData(win);
    expect(all.examples.length).toBe(10);
    expect(all.positions).toBe(80);
    expect(Array.from(all.examples[2].targets)).toEqual(Array.from(win.targets(2)));
    const s = prepareLmData(win, { samples: 13, seed: 7 });
    expect(s.positions).toBe(13);
    expect(prepareLmData(win, { samples: 13, seed: 7 }).examples.map((e) => Array.from(e.positions))).toEqual(s.examples.map((e) => Array.from(e.positions)));
    for (const e of s.examples) for (let j = 0; j < e.positions.length; j++) expect(e.targets[j]).toBe(e.ids[e.positions[j]] + 1 === 50 ? 0 : e.ids[e.positions[j]] + 1);
    const m = prepareLmData(win, { maxWindows: 4 });
    expect(m.examples.length).toBe(4);
    expect(m.examples[1].ids[0]).toBe(win.inputs(2)[0]);
    const idx = sampleIndices(1000, 100, 3);
    expect(new Set(idx).size).toBe(100);
    expect(Array.from(idx)).toEqual([...idx].sort((a, b) => a - b));
  });

  it('planning: all mode lowers B to fit the binding; rows mode splits a sequence across runs', () => {
    const ex = (n: number, pos: number[]): AnalysisExample => ({ ids: new Int32Array(n), positions: Int32Array.from(pos), targets: new Int32Array(pos.length) });
    const full: PreparedData = { kind: 'lm', T: 4, examples: [0, 1, 2, 3, 4].map(() => ex(4, [0, 1, 2, 3])), positions: 20, dataSize: 20, description: '', notes: [] };
    const a = planRuns(full, 4, 9);
    expect(a.mode).toBe('all');
    expect(a.B).toBe(2);
    expect(a.runs.map((r) => r.length)).toEqual([2, 2, 1]);
    const sparse: PreparedData = { ...full, examples: [ex(4, [0, 1, 2]), ex(4, [3]), ex(2, [1])], positions: 5 };
    const r = planRuns(sparse, 2, 2);
    expect(r.mode).toBe('rows');
    expect(r.runs).toEqual([[{ ex: 0, from: 0, to: 2 }], [{ ex: 0, from: 2, to: 3 }, { ex: 1, from: 0, to: 1 }], [{ ex: 2, from: 0, to: 1 }]]);
    expect(r.capacity).toBe(2);
  });

  it('classification: last prompt token, label word target; errors name the problem', () => {
    // One id per non-space character; 'nothing' adds no token.
    const tok = { encode: (s: string) => [...s.replace(/ nothing$/, '')].filter((c) => c !== ' ').map((c) => c.charCodeAt(0) % 100) };
    const rows = [{ text: 'abcdef', label: 'p', line: 1 }, { text: 'xy', label: 'n', line: 2 }];
    const d = prepareClassificationData(rows, tok, { labels: 'p=good,n=bad', nPositions: 4, source: 's.jsonl' });
    expect(d.T).toBe(4);
    expect(d.notes[0]).toMatch(/1 of 2 prompt\(s\) are longer than 4 tokens/);
    expect(Array.from(d.examples[0].ids)).toEqual([...'cdef'].map((c) => c.charCodeAt(0) % 100));
    expect(Array.from(d.examples[0].positions)).toEqual([3]);
    expect(Array.from(d.examples[1].positions)).toEqual([1]);
    expect(d.examples[0].targets[0]).toBe(tok.encode(' good')[0]);
    expect(Array.from(d.labels!)).toEqual([tok.encode(' good')[0], tok.encode(' bad')[0]].sort((a, b) => a - b));
    expect(() => prepareClassificationData(rows, tok, { labels: 'p=good', nPositions: 4, source: 's.jsonl' })).toThrow(/label 'n' has no label word/);
    expect(() => prepareClassificationData(rows, tok, { labels: 'p=good,n=nothing', nPositions: 4, source: 's.jsonl' })).toThrow(/label word 'nothing' for label 'n' tokenizes to nothing/);
    expect(() => prepareClassificationData([{ text: '', label: 'p', line: 3 }], tok, { labels: 'p=good', nPositions: 4, source: 's.jsonl' })).toThrow(/line 3: the text tokenizes to nothing/);
  });
});

describe('semfreeze analyze (CLI)', () => {
  const deep = join(FIXTURES, 'gpt2-deep');
  const N = fixture('gpt2-deep').config.nLayer;

  it('gpt2-deep train.txt: --json report and --plot SVG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'semfreeze-analyze-'));
    const svg = join(dir, 'fig.svg');
    const r = await cli(['analyze', '--model', deep, '--data', join(deep, 'train.txt'), '--json', '--plot', svg]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.format).toBe('semfreeze.analysis/1');
    expect(j.metric).toBe('cosine');
    expect(j.finalNormApplied).toBe(true);
    expect(j.latentSpaces).toHaveLength(N + 1);
    for (const s of j.latentSpaces) expect(Number.isFinite(s.deviation)).toBe(true);
    expect(j.blocks).toHaveLength(N);
    for (const b of j.blocks) expect(typeof b.gain).toBe('number');
    expect(j.strategy.name).toBe('g0');
    const K = j.boundary.freeze;
    expect(Number.isInteger(K) && K >= 0 && K <= N).toBe(true);
    expect(j.positions).toBe(j.analysis.positions);
    expect(j.analysis.mode).toBe('all');
    for (const key of ['backwardRatio', 'stepRatio', 'memoryRatio', 'ruleOfThumbStepRatio']) expect(Number.isFinite(j.cost[key]), key).toBe(true);
    expect(j.cost.atK.boundary).toBe(K);
    expect(j.cost.full.stepFlops).toBeGreaterThan(0);
    const text = readFileSync(svg, 'utf8');
    expect(text.startsWith('<svg')).toBe(true);
    expect(text.match(/<rect[^>]*class="dev-bar/g)).toHaveLength(N + 1);
    expect(text.match(/<rect[^>]*class="gain-bar/g)).toHaveLength(N);
  });

  it('--samples, lens, g0, budget, final norm off; and the text report', async () => {
    const r = await cli(['analyze', '--model', deep, '--data', join(deep, 'train.txt'), '--seq', '32', '--samples', '500', '--deviation', 'lens', '--gain', 'g0', '--budget', '1', '--final-norm', 'off', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.positions).toBe(500);
    expect(j.analysis.mode).toBe('rows');
    expect(j.metric).toBe('lens');
    expect(j.finalNormApplied).toBe(false);
    expect(j.strategy.name).toBe('g0');
    expect(j.boundary.freeze).toBeGreaterThanOrEqual(N - 1);
    expect(j.boundary.budget.maxTrainable).toBe(1);
    for (const s of j.latentSpaces) expect(s.deviation).toBeGreaterThan(0);
    const t = await cli(['analyze', '--model', deep, '--data', join(deep, 'train.txt'), '--max-windows', '20']);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/SALF analysis, model .*gpt2-deep, metric cosine, 800 positions/);
    expect(t.stdout).toMatch(/<== eof \(max gain\)/);
    expect(t.stdout).toMatch(/predicted cost per step \(B = 8, T = 40/);
    expect(t.stderr).toMatch(/positions\/s/);
  });

  it('classification .jsonl with --labels: contrastive deviations ≥ 0; clear errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'semfreeze-cls-'));
    const data = join(dir, 'cls.jsonl');
    const texts = ['the cat sat on the mat', 'a story of a king', 'in the morning the sun rose', 'to be or not to be', 'the end of the road', 'one of them was there', 'what a day it was', 'all of it'];
    writeFileSync(data, texts.map((t, i) => JSON.stringify({ text: t, label: i % 2 ? 'neg' : 'pos' })).join('\n') + '\n');
    const r = await cli(['analyze', '--model', deep, '--data', data, '--labels', 'pos=the,neg=of', '--deviation', 'contrastive', '--batch', '3', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.metric).toBe('contrastive');
    expect(j.positions).toBe(texts.length);
    expect(j.analysis.kind).toBe('classification');
    expect(Object.keys(j.analysis.labels).sort()).toEqual(['neg', 'pos']);
    expect(j.latentSpaces).toHaveLength(N + 1);
    for (const s of j.latentSpaces) expect(s.deviation).toBeGreaterThanOrEqual(0);
    expect(Number.isInteger(j.boundary.freeze)).toBe(true);

    const missing = await cli(['analyze', '--model', deep, '--data', data, '--labels', 'pos=the', '--deviation', 'contrastive']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/label 'neg' has no label word in 'pos=the'/);
    const noLabels = await cli(['analyze', '--model', deep, '--data', data]);
    expect(noLabels.code).toBe(1);
    expect(noLabels.stderr).toMatch(/needs --labels/);
    const lmContrastive = await cli(['analyze', '--model', deep, '--data', join(deep, 'train.txt'), '--deviation', 'contrastive']);
    expect(lmContrastive.code).toBe(1);
    expect(lmContrastive.stderr).toMatch(/contrastive needs label tokens/);
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '\n');
    const e1 = await cli(['analyze', '--model', deep, '--data', empty, '--labels', 'pos=the']);
    expect(e1.code).toBe(1);
    expect(e1.stderr).toMatch(/contains no examples/);
    const emptyTxt = join(dir, 'empty.txt');
    writeFileSync(emptyTxt, '');
    const e2 = await cli(['analyze', '--model', deep, '--data', emptyTxt]);
    expect(e2.code).toBe(1);
    expect(e2.stderr).toMatch(/0 tokens are too few for one window/);
    for (const e of [missing, noLabels, lmContrastive, e1, e2]) expect(e.stderr).not.toMatch(/\n\s+at /); // one line, no stack
  });
});

describe('semfreeze finetune --freeze auto', () => {
  it('gpt2-tiny, 2 steps: trains at the K the analysis picks', async () => {
    const tiny = join(FIXTURES, 'gpt2-tiny');
    const data = join(tiny, 'train.txt');
    const a = await cli(['analyze', '--model', tiny, '--data', data, '--seq', '16', '--batch', '2', '--max-windows', '256', '--json']);
    expect(a.code, a.stderr).toBe(0);
    const K = JSON.parse(a.stdout).boundary.freeze;
    const out = join(mkdtempSync(join(tmpdir(), 'semfreeze-auto-')), 'ckpt');
    const r = await cli(['finetune', '--model', tiny, '--data', data, '--freeze', 'auto', '--steps', '2', '--seq', '16', '--batch', '2', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.freeze).toBe(K);
    expect(j.steps).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`--freeze auto: the analysis chose K = ${K}`));
    expect(r.stderr).toMatch(/SALF analysis/); // the decision's report, on stderr
    expect(JSON.parse(readFileSync(join(out, 'train-state.json'), 'utf8')).freeze).toBe(K);
  });
});
