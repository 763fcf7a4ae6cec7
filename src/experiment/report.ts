// EXPERIMENTS.md from the stored results, and nothing else: the oracle's quality-versus-cost curve per
// task (mean and spread over seeds), every method placed on it with its regret (quality lost against
// the best boundary at equal or lower backward cost) and its saving, an SVG chart per task, and a plain
// verdict. A difference smaller than the seeds' spread is called a tie, never a win.
import type { Boundary } from '../analysis/cost.ts';
import { DEFAULT_GAIN_STRATEGY, G2_DEFAULTS, type G2Params } from '../analysis/gain.ts';
import { buildReport } from '../analysis/report.ts';
import type { ModelConfig } from '../model/config.ts';
import { ticks } from '../util/linechart.ts';
import { boundariesFor, boundaryKey, type AnalysisRecord, type ExperimentSettings, type ProbeRecord } from './experiment.ts';
import { BUDGET_POLICIES, fixedBaselines, probeBaselines, salfChoices, salfMethodName, type MethodChoice } from './methods.ts';
import type { RunRecord } from './runs.ts';
import { TASKS, type TaskName } from './tasks.ts';

export const DEFAULT_DEVIATION = 'cosine';

export interface OracleRow {
  boundary: Boundary;
  scores: number[];
  mean: number;
  sd: number;
  msPerStep: number;
  gpuMiB: number;
  backwardFraction: number;
}

export interface MethodRow extends MethodChoice {
  /** Mean quality score over seeds (higher is better). */
  mean: number;
  sd: number;
  /** Backward cost relative to full fine-tuning, the probe's steps included. */
  cost: number;
  /** Best oracle mean at cost ≤ this method's, minus this method's mean (≥ 0 unless it beats the curve). */
  regret: number;
  /** 1 − cost. */
  saving: number;
  /** Share of full fine-tuning's gain over --freeze N that the method keeps (null without both ends). */
  retained: number | null;
  /** Blocks frozen beyond the 90% line's boundary (negative: fewer), null without a line. */
  off: number | null;
}

/** The share of full fine-tuning's gain a boundary must keep to be on the right side of the line. */
export const RETAIN_LINE = 0.9;

export interface TaskReport {
  task: TaskName;
  lr: { lr: number; score: number }[];
  chosenLr: number;
  oracle: OracleRow[];
  methods: MethodRow[];
  /** The largest seed standard deviation on the oracle curve: differences below it are ties. */
  spread: number;
  verdict: string[];
  complete: boolean;
  /**
   * The 90% line: the cheapest boundary whose mean quality keeps ≥ RETAIN_LINE of full fine-tuning's
   * gain over the cheapest run (--freeze N), null until both ends are on the oracle.
   */
  line: { boundary: Boundary; retained: number; threshold: number } | null;
  /** The analyses' D_0..D_N by deviation metric, and the data size g2 uses. */
  deviations: Record<string, number[]>;
  /** Seconds each analysis took (on a shared machine: a rough guide). */
  analysisSeconds: Record<string, number>;
  dataSize: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));

/** Everything the report needs, read from the store by key. */
export interface StoredResults {
  settings: ExperimentSettings;
  config: ModelConfig;
  get(key: string): unknown | null;
}

export function taskReport(r: StoredResults, task: TaskName): TaskReport {
  const s = r.settings;
  const N = r.config.nLayer;
  const lr = s.lrGrid.map((x) => ({ lr: x, rec: r.get(`lr/${task}-${x}`) as RunRecord | null })).filter((x) => x.rec).map((x) => ({ lr: x.lr, score: x.rec!.score }));
  const chosenLr = lr.length ? lr.reduce((b, x) => (x.score > b.score ? x : b)).lr : NaN;
  const oracle: OracleRow[] = [];
  let complete = lr.length === s.lrGrid.length;
  for (const K of boundariesFor(s, N)) {
    const recs = s.seeds.map((seed) => r.get(`oracle/${task}-${boundaryKey(K)}-s${seed}`) as RunRecord | null);
    const have = recs.filter((x): x is RunRecord => x !== null);
    if (have.length < recs.length) complete = false;
    if (have.length === 0) continue;
    const scores = have.map((x) => x.score);
    oracle.push({
      boundary: K, scores, mean: mean(scores), sd: sd(scores), msPerStep: mean(have.map((x) => x.msPerStep)),
      gpuMiB: mean(have.map((x) => x.gpuBytes)) / 2 ** 20, backwardFraction: have[0]!.analytic.backwardFraction,
    });
  }
  const at = (K: Boundary) => oracle.find((o) => o.boundary === K);
  const retainedOf = retention(oracle, N);
  const line = retainedOf ? retainLine(oracle, retainedOf) : null;
  const analyses: Record<string, number[]> = {};
  const analysisSeconds: Record<string, number> = {};
  let dataSize = 0;
  for (const m of ['cosine', 'contrastive', 'lens']) {
    const a = r.get(`analysis/${task}-${m}`) as AnalysisRecord | null;
    if (a) {
      analyses[m] = a.deviations;
      analysisSeconds[m] = a.seconds;
      dataSize = a.dataSize;
    } else if (m !== 'contrastive' || TASKS[task].kind === 'classification') complete = false;
  }
  const probes: Record<string, ProbeRecord['probe']> = {};
  for (const seed of s.seeds) {
    const p = r.get(`probe/${task}-s${seed}`) as ProbeRecord | null;
    if (p) probes[String(seed)] = p.probe;
    else complete = false;
  }
  const choices: MethodChoice[] = [
    ...salfChoices(analyses, r.config, { batch: s.batch, seq: s.seq, dataSize }),
    ...fixedBaselines(N, analyses.cosine),
    ...(Object.keys(probes).length === s.seeds.length ? probeBaselines(probes) : []),
  ];
  const curveAtCost = (cost: number) => {
    const ok = oracle.filter((o) => o.backwardFraction <= cost + 1e-9);
    return ok.length ? Math.max(...ok.map((o) => o.mean)) : -Infinity;
  };
  const methods: MethodRow[] = [];
  for (const c of choices) {
    let scores: number[];
    let cost: number;
    if (c.boundary === 'expected') {
      const pts = oracle.filter((o) => o.boundary !== 'none');
      if (pts.length === 0) continue;
      scores = s.seeds.map((_, i) => mean(pts.map((o) => o.scores[i] ?? o.mean)));
      cost = mean(pts.map((o) => o.backwardFraction));
    } else if (c.perSeed) {
      const rows = s.seeds.map((seed, i) => at(c.perSeed![String(seed)]!)?.scores[i]);
      if (rows.some((x) => x === undefined)) continue;
      scores = rows as number[];
      cost = mean(s.seeds.map((seed) => at(c.perSeed![String(seed)]!)!.backwardFraction)) + (c.probeSteps ?? 0) / s.steps;
    } else {
      const o = at(c.boundary);
      if (!o) continue;
      scores = o.scores;
      cost = o.backwardFraction;
    }
    const m = mean(scores);
    // The random boundary's depth: the mean over the same oracle points its score averages.
    const depth = c.boundary === 'expected' ? mean(oracle.filter((o) => o.boundary !== 'none').map((o) => depthOf(o.boundary))) : c.perSeed ? mean(Object.values(c.perSeed).map(depthOf)) : depthOf(c.boundary);
    methods.push({
      ...c, mean: m, sd: sd(scores), cost, regret: curveAtCost(cost) - m, saving: 1 - cost,
      retained: retainedOf ? retainedOf(m) : null, off: blocksPast(line, depth),
    });
  }
  const spread = oracle.length ? Math.max(...oracle.map((o) => o.sd)) : 0;
  const rep: TaskReport = { task, lr, chosenLr, oracle, methods, spread, verdict: [], complete, line, deviations: analyses, analysisSeconds, dataSize };
  rep.verdict = verdict(rep);
  return rep;
}

/** How deep a boundary freezes, in blocks: none is −1 (not even the embeddings), K is K. */
export function depthOf(K: Boundary): number {
  return K === 'none' ? -1 : K;
}

/** Quality → share of full fine-tuning's gain over --freeze N; null unless both are on the oracle and differ. */
export function retention(oracle: readonly OracleRow[], N: number): ((score: number) => number) | null {
  const full = oracle.find((o) => o.boundary === 'none');
  const floor = oracle.find((o) => o.boundary === N);
  if (!full || !floor || !(full.mean > floor.mean)) return null;
  return (score) => (score - floor.mean) / (full.mean - floor.mean);
}

/** Whether a share of the gain is on the right side of the line. */
const keepsLine = (retained: number) => retained >= RETAIN_LINE - 1e-12;

/** The cheapest boundary whose mean keeps at least RETAIN_LINE of the gain (full fine-tuning always does). */
export function retainLine(oracle: readonly OracleRow[], retainedOf: (score: number) => number): { boundary: Boundary; retained: number; threshold: number } {
  const ok = oracle.filter((o) => keepsLine(retainedOf(o.mean))).sort((a, b) => a.backwardFraction - b.backwardFraction);
  const o = ok[0]!;
  // The score that keeps exactly RETAIN_LINE (retainedOf is affine: invert it from two points).
  const r0 = retainedOf(0);
  const threshold = (RETAIN_LINE - r0) / (retainedOf(1) - r0);
  return { boundary: o.boundary, retained: retainedOf(o.mean), threshold };
}

/** Regret of fine-tuning at K on a task's oracle (null when K was not run). */
export function regretAt(t: TaskReport, K: Boundary): number | null {
  const o = t.oracle.find((x) => x.boundary === K);
  if (!o) return null;
  const ok = t.oracle.filter((x) => x.backwardFraction <= o.backwardFraction + 1e-9);
  return Math.max(...ok.map((x) => x.mean)) - o.mean;
}

/** Blocks frozen beyond the 90% line at a depth (negative: fewer); null without a line. */
function blocksPast(line: TaskReport['line'], depth: number): number | null {
  return line ? depth - depthOf(line.boundary) : null;
}

/** Blocks frozen beyond the task's 90% line at K (negative: fewer); null without a line. */
export function offAt(t: TaskReport, K: Boundary): number | null {
  return blocksPast(t.line, depthOf(K));
}

export interface G2Transfer {
  fitTask: TaskName;
  params: G2Params;
  candidates: number;
  /** Per task: K and its distance from the 90% line with the fitted constants and with the shipped defaults. */
  tasks: { task: TaskName; fitted: { K: number; off: number | null }; defaults: { K: number; off: number | null } }[];
}

/**
 * g2's constants fitted on one task's oracle (the grid point whose boundary lands nearest the task's
 * 90% line; the shipped defaults come first, so they win ties) and tested on the other tasks, cosine
 * deviations throughout.
 */
export function g2Transfer(cfg: ModelConfig, reports: TaskReport[], fitTask: TaskName, settings: { batch: number; seq: number }): G2Transfer | null {
  const usable = reports.filter((t) => t.deviations.cosine && t.line);
  const fit = usable.find((t) => t.task === fitTask);
  if (!fit) return null;
  const grid: G2Params[] = [{ ...G2_DEFAULTS }];
  for (const A of [0.25, 0.5, 1, 2, 4]) for (const alpha of [0.05, 0.1, 0.2, 0.4]) for (const beta of [0.05, 0.1, 0.2]) for (const E of [0, 0.1, 0.2]) grid.push({ A, alpha, beta, E });
  const boundaryWith = (t: TaskReport, params: G2Params) =>
    buildReport({ deviations: t.deviations.cosine!, strategy: 'g2', gainContext: { config: cfg, dataSize: t.dataSize, params: { ...params } }, cost: { config: cfg, batch: settings.batch, seqLen: settings.seq } }).boundary.freeze;
  let best = grid[0]!;
  let bestOff = Infinity;
  for (const params of grid) {
    const off = Math.abs(offAt(fit, boundaryWith(fit, params))!);
    if (off < bestOff) {
      bestOff = off;
      best = params;
    }
  }
  return {
    fitTask, params: best, candidates: grid.length,
    tasks: usable.map((t) => {
      const kf = boundaryWith(t, best);
      const kd = boundaryWith(t, { ...G2_DEFAULTS });
      return { task: t.task, fitted: { K: kf, off: offAt(t, kf) }, defaults: { K: kd, off: offAt(t, kd) } };
    }),
  };
}

/** The SALF configuration the project ships as its default. */
export const DEFAULT_SALF = salfMethodName(DEFAULT_DEVIATION, DEFAULT_GAIN_STRATEGY, {});

function verdict(t: TaskReport): string[] {
  if (t.oracle.length === 0) return ['No oracle runs yet.'];
  const out: string[] = [];
  const fmt = (x: number) => x.toFixed(4);
  const best = t.oracle.reduce((b, o) => (o.mean > b.mean ? o : b));
  const full = t.oracle.find((o) => o.boundary === 'none');
  out.push(`Best boundary on the oracle: --freeze ${best.boundary} (quality ${fmt(display(t.task, best.mean))}, backward cost ${(100 * best.backwardFraction).toFixed(0)}% of full).`);
  if (full) {
    const within = t.oracle.filter((o) => o.mean >= full.mean - t.spread).sort((a, b) => a.backwardFraction - b.backwardFraction)[0]!;
    out.push(`The cheapest boundary within the seeds' spread (${fmt(t.spread)}) of full fine-tuning: --freeze ${within.boundary}, ${(100 * (1 - within.backwardFraction)).toFixed(0)}% of the backward saved.`);
  }
  const salf = t.methods.find((m) => m.method === DEFAULT_SALF);
  const baselines = t.methods.filter((m) => m.kind === 'baseline');
  if (t.line) {
    const o = t.oracle.find((x) => x.boundary === t.line!.boundary)!;
    out.push(`The ${pct(RETAIN_LINE)} line: the cheapest boundary that keeps ≥ ${pct(RETAIN_LINE)} of full fine-tuning's gain over --freeze ${t.oracle.at(-1)!.boundary} is --freeze ${t.line.boundary} (keeps ${pct(t.line.retained)}, saves ${pct(1 - o.backwardFraction)} of the backward).`);
    if (salf && salf.off !== null && salf.retained !== null) {
      const side = salf.off === 0 ? 'on the line' : salf.off > 0 ? `${salf.off} block(s) deeper: below the line, it keeps ${pct(salf.retained)} of the gain` : `${-salf.off} block(s) shallower: above the line, it spends ${pct(salf.cost - o.backwardFraction)} more of the backward than needed`;
      out.push(`SALF's default picks --freeze ${String(salf.boundary)}: ${side}.`);
    }
  }
  if (salf) {
    if (full && salf.boundary !== 'none') {
      const lost = full.mean - salf.mean;
      out.push(`Against full fine-tuning, SALF's default ${lost > t.spread ? 'gives up' : 'stays within the seeds\' spread of it, a difference of'} ${fmt(Math.abs(lost))} ${TASKS[t.task].kind === 'lm' ? 'nats of held-out loss' : 'macro-F1'} for ${(100 * salf.saving).toFixed(0)}% less backward work.`);
    }
    out.push(`SALF's default (${DEFAULT_SALF}) picks --freeze ${String(salf.boundary)}: regret ${fmt(salf.regret)} ${salf.regret <= t.spread ? '(within the seeds\' spread: no loss against the best boundary at its cost)' : '(more than the seeds\' spread)'}, saving ${(100 * salf.saving).toFixed(0)}%.`);
    if (Math.max(...t.oracle.map((o) => o.scores.length)) < 2) {
      out.push('Only one seed so far: no spread, so no win or loss against the baselines is called.');
      if (!t.complete) out.push('**Incomplete**: some runs are missing, so these lines may change.');
      return out;
    }
    const better = baselines.filter((b) => b.cost <= salf.cost + 1e-9 && b.mean > salf.mean + t.spread);
    if (better.length) out.push(`SALF's default LOSES to: ${better.map((b) => `${b.method} (${fmt(display(t.task, b.mean))} at cost ${(100 * b.cost).toFixed(0)}%)`).join('; ')}.`);
    const worse = baselines.filter((b) => b.cost >= salf.cost - 1e-9 && b.mean < salf.mean - t.spread);
    if (worse.length) out.push(`SALF's default beats, at no more cost: ${worse.map((b) => b.method).join('; ')}.`);
    if (!better.length && !worse.length) out.push('Against the baselines SALF\'s default neither wins nor loses beyond the seeds\' spread.');
  }
  const salfs = t.methods.filter((m) => m.kind === 'salf');
  if (salfs.length) {
    const lowest = Math.min(...salfs.map((m) => m.regret));
    out.push(`Lowest regret among SALF variants: ${fmt(lowest)} (${salfs.filter((m) => m.regret <= lowest + 1e-12).map((m) => m.method).slice(0, 4).join('; ')}).`);
  }
  if (!t.complete) out.push('**Incomplete**: some runs are missing, so these lines may change.');
  return out;
}

/** SALF's variants against the 90% line across tasks: what the evidence says about method.md's open choices. */
export interface Settled {
  /** Per variant (no budget): mean |blocks past the line| over the tasks that have it, and how many tasks it keeps ≥ 90% on. */
  variants: { method: string; deviation: string; strategy: string; tasks: number; meanAbsOff: number; kept: number }[];
  /** The variant nearest the line on every task that has a line (cosine and lens run on all tasks), ties to the shipped default. */
  nearest: string | null;
  policies: { label: string; meanAbsOff: number; kept: number; n: number }[];
}

export function settle(reports: TaskReport[]): Settled {
  const withLine = reports.filter((t) => t.line);
  const variants: Settled['variants'] = [];
  const names = [...new Set(withLine.flatMap((t) => t.methods.filter((m) => m.kind === 'salf' && !m.budget).map((m) => m.method)))];
  for (const name of names) {
    const rows = withLine.map((t) => t.methods.find((m) => m.method === name)).filter((m): m is MethodRow => m !== undefined && m.off !== null);
    if (!rows.length) continue;
    variants.push({ method: name, deviation: rows[0]!.deviation!, strategy: rows[0]!.strategy!, tasks: rows.length, meanAbsOff: meanAbs(rows.map((m) => m.off!)), kept: rows.filter((m) => keepsLine(m.retained!)).length });
  }
  const everywhere = variants.filter((v) => v.tasks === withLine.length);
  let nearest: string | null = null;
  if (everywhere.length) {
    const best = Math.min(...everywhere.map((v) => v.meanAbsOff));
    const tied = everywhere.filter((v) => v.meanAbsOff <= best + 1e-9);
    nearest = (tied.find((v) => v.method === DEFAULT_SALF) ?? tied[0]!).method;
  }
  const policies = BUDGET_POLICIES.map((p) => {
    const rows = withLine.flatMap((t) => t.methods.filter((m) => m.kind === 'salf' && m.budget === p.budget && !!m.pad === !!p.pad && m.off !== null));
    return { label: p.label, meanAbsOff: rows.length ? meanAbs(rows.map((m) => m.off!)) : NaN, kept: rows.filter((m) => keepsLine(m.retained!)).length, n: rows.length };
  });
  return { variants, nearest, policies };
}

function settleSection(reports: TaskReport[]): string[] {
  const st = settle(reports);
  if (!st.variants.length) return [];
  const L: string[] = [`### Against the ${pct(RETAIN_LINE)} line: what settles method.md's open choices`, ''];
  L.push(`Regret alone cannot rank the variants when the oracle's quality falls steadily with K: every boundary is then the best at its own cost, and every pick has regret 0. So each pick is also measured against the task's ${pct(RETAIN_LINE)} line, the cheapest boundary that keeps ${pct(RETAIN_LINE)} of full fine-tuning's gain over freezing every block (after Lee et al. 2019, where the last quarter of the layers gave about 90% of full quality): "blocks past the line" is how many blocks deeper (+, quality lost) or shallower (−, backward spent for nothing) the pick is. --freeze none counts as depth −1.`, '');
  L.push(`| SALF variant (no budget) | ${reports.map((t) => t.task).join(' | ')} | mean \|blocks past\| | tasks keeping ≥ ${pct(RETAIN_LINE)} |`, `| --- | ${reports.map(() => '---:').join(' | ')} | ---: | ---: |`);
  for (const v of [...st.variants].sort((a, b) => a.meanAbsOff - b.meanAbsOff)) {
    const cells = reports.map((t) => {
      const m = t.methods.find((x) => x.method === v.method);
      return m ? `${String(m.boundary)} (${fmtOff(m.off)})` : '–';
    });
    L.push(`| ${v.method === DEFAULT_SALF ? `**${v.method}** (default)` : v.method} | ${cells.join(' | ')} | ${v.meanAbsOff.toFixed(2)} | ${v.kept} of ${v.tasks} |`);
  }
  L.push('');
  const by = (key: 'deviation' | 'strategy') => [...new Set(st.variants.map((v) => v[key]))].map((k) => {
    const vs = st.variants.filter((v) => v[key] === k);
    return `${k} ${mean(vs.map((v) => v.meanAbsOff)).toFixed(2)}`;
  }).join(', ');
  L.push(`- Mean |blocks past the line| by gain strategy (over deviations): ${by('strategy')}.`);
  L.push(`- By deviation (over gain strategies; contrastive runs on the classification tasks only): ${by('deviation')}.`);
  const secs = [...new Set(reports.flatMap((t) => Object.keys(t.analysisSeconds)))].map((d) => {
    const xs = reports.map((t) => t.analysisSeconds[d]).filter((x): x is number => x !== undefined);
    return `${d} ${mean(xs).toFixed(0)} s`;
  });
  if (secs.length) L.push(`- What an analysis costs (mean seconds per task on this machine, the forward over the data included): ${secs.join(', ')}.`);
  L.push(`- Budget policies, over every SALF variant and task: ${st.policies.map((p) => `${p.label} ${Number.isNaN(p.meanAbsOff) ? '–' : p.meanAbsOff.toFixed(2)} (${p.kept} of ${p.n} picks keep ≥ ${pct(RETAIN_LINE)})`).join('; ')}.`);
  if (st.nearest) L.push(`- Nearest the line over all tasks (ties go to the shipped default): **${st.nearest}**.`);
  const shipped = st.variants.find((v) => v.method === DEFAULT_SALF);
  if (shipped && st.nearest !== DEFAULT_SALF) L.push(`- The shipped default, ${DEFAULT_SALF}, lands ${shipped.meanAbsOff.toFixed(2)} blocks from the line on average; docs/method.md §4 says why it was chosen over the nearest variant.`);
  L.push('');
  return L;
}

/** Scores are higher-is-better; code's is −loss: show the loss. */
export function display(task: TaskName, score: number): number {
  return TASKS[task].kind === 'lm' ? -score : score;
}

/** Quality against backward cost: the oracle's curve with its seed spread, and each method's marker. */
export function renderTaskSvg(t: TaskReport): string {
  const W = 760;
  const H = 440;
  const m = { l: 70, r: 200, t: 36, b: 50 };
  const y = (score: number) => display(t.task, score);
  const pts = [...t.oracle.flatMap((o) => [y(o.mean - o.sd), y(o.mean + o.sd)]), ...t.methods.map((x) => y(x.mean))];
  let [y0, y1] = [Math.min(...pts), Math.max(...pts)];
  const pad = (y1 - y0) * 0.06 || 0.01;
  y0 -= pad;
  y1 += pad;
  const x1 = Math.max(1, ...t.methods.map((x) => x.cost));
  const sx = (x: number) => m.l + (x / x1) * (W - m.l - m.r);
  const sy = (v: number) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts: string[] = [];
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(`${t.task}: ${TASKS[t.task].quality} vs backward cost`)}</text>`);
  for (const v of ticks(y0, y1)) parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${sy(v) + 4}" text-anchor="end" font-size="11">${+v.toPrecision(4)}</text>`);
  for (const v of ticks(0, x1)) parts.push(`<text x="${sx(v)}" y="${H - m.b + 16}" text-anchor="middle" font-size="11">${Math.round(v * 100)}%</text>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle" font-size="12">backward FLOPs per step, % of full fine-tuning (probe included)</text>`);
  const curve = [...t.oracle].sort((a, b) => a.backwardFraction - b.backwardFraction);
  if (t.line) {
    const ly = sy(y(t.line.threshold));
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${ly}" y2="${ly}" stroke="#888" stroke-dasharray="5,4"/><text x="${W - m.r - 4}" y="${ly - 4}" text-anchor="end" font-size="10" fill="#666">${pct(RETAIN_LINE)} of full fine-tuning's gain</text>`);
  }
  parts.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${curve.map((o) => `${sx(o.backwardFraction)},${sy(y(o.mean))}`).join(' ')}"/>`);
  for (const o of curve) {
    parts.push(`<line x1="${sx(o.backwardFraction)}" x2="${sx(o.backwardFraction)}" y1="${sy(y(o.mean - o.sd))}" y2="${sy(y(o.mean + o.sd))}" stroke="#1f77b4"/>`);
    parts.push(`<circle cx="${sx(o.backwardFraction)}" cy="${sy(y(o.mean))}" r="3" fill="#1f77b4"><title>${esc(`--freeze ${o.boundary}`)}</title></circle>`);
    parts.push(`<text x="${sx(o.backwardFraction) + 4}" y="${sy(y(o.mean)) - 5}" font-size="9" fill="#1f77b4">${o.boundary === 'none' ? 'full' : o.boundary}</text>`);
  }
  // Methods: SALF's default, the other SALF variants' distinct points, and every baseline.
  const shown = t.methods.filter((x) => x.kind === 'baseline' || x.method === DEFAULT_SALF);
  const colors = ['#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
  shown.forEach((x, i) => {
    const c = colors[i % colors.length]!;
    const cx = sx(x.cost);
    const cy = sy(y(x.mean));
    parts.push(x.kind === 'salf' ? `<polygon points="${cx},${cy - 7} ${cx + 7},${cy} ${cx},${cy + 7} ${cx - 7},${cy}" fill="${c}"/>` : `<rect x="${cx - 4}" y="${cy - 4}" width="8" height="8" fill="none" stroke="${c}" stroke-width="2"/>`);
    parts.push(`<text x="${W - m.r + 10}" y="${m.t + 14 + i * 16}" font-size="10" fill="${c}">${x.kind === 'salf' ? '◆' : '□'} ${esc(x.method)}</text>`);
  });
  parts.push(`<text x="${W - m.r + 10}" y="${m.t + 14 + shown.length * 16}" font-size="10" fill="#1f77b4">● oracle (mean ± sd over seeds)</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">\n${parts.join('\n')}\n</svg>\n`;
}

const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
const fmtOff = (x: number | null) => (x === null ? '–' : x === 0 ? '0' : `${x > 0 ? '+' : '−'}${+Math.abs(x).toFixed(2)}`);
const meanAbs = (xs: number[]) => mean(xs.map(Math.abs));

/** The markdown for all tasks (charts referenced by file name). */
export function renderExperimentsMd(r: StoredResults, reports: TaskReport[], meta: { commit: string; chartPath: (task: TaskName) => string; command: string; elapsed?: string; g2?: G2Transfer | null }): string {
  const s = r.settings;
  const L: string[] = [];
  L.push('# Experiments: does SALF\'s choice hold up?', '');
  L.push(`Generated by \`${meta.command}\` from the JSON it stored; every number below comes from those files. Made at commit(s) ${meta.commit} (each JSON file records its own). Mode: ${s.mode}.${meta.elapsed ? ` Machine time so far: ${meta.elapsed}.` : ''}`, '');
  L.push(`Settings: ${s.steps} steps of AdamW (cosine schedule, warmup ${s.warmup}), batch ${s.batch} × ${s.seq} tokens, seeds ${s.seeds.join(', ')} (the seed sets the data order), learning rate chosen once per task on full fine-tuning from ${s.lrGrid.join(', ')} against a validation split carved from the training file (every 10th window or example, never trained on). Quality is measured on the held-out file (${s.evalMax} windows or examples). Model: ${r.config.modelType}, ${r.config.nLayer} blocks × ${r.config.nEmbd}.`, '');
  L.push('Cost is the cost model\'s backward FLOPs per step relative to full fine-tuning (`src/analysis/cost.ts`); for the probe-based baselines the probe\'s full fine-tuning steps are added, spread over the run. Regret is the best oracle quality at equal or lower cost minus the method\'s (in the task\'s units; for code a loss difference, where lower loss is better, so regret is how much higher the loss is). Differences smaller than the seeds\' spread (the largest standard deviation on the oracle curve) are ties.', '');
  L.push('Not compared: LISA-style random layer sampling. It trains a changing, non-contiguous set of layers (embeddings and head included), and this engine\'s truncated backward runs only a contiguous top suffix, so it has no place on this curve (docs/method.md §7).', '');
  for (const t of reports) {
    const lm = TASKS[t.task].kind === 'lm';
    const q = (score: number) => display(t.task, score).toFixed(4);
    L.push(`## ${t.task}: ${TASKS[t.task].quality}`, '');
    L.push(...t.verdict.map((v) => `- ${v}`), '');
    L.push(`![${t.task}](${meta.chartPath(t.task)})`, '');
    L.push(`Learning rate (full fine-tuning, validation ${lm ? 'loss' : 'macro-F1'}): ${t.lr.map((x) => `${x.lr}: ${q(x.score)}`).join(', ')} → **${t.chosenLr}**.`, '');
    L.push('### Oracle: fine-tuning at every boundary', '');
    L.push(`| --freeze | ${lm ? 'loss' : 'macro-F1'} mean ± sd | per seed | backward cost | ms/step | GPU MiB |`, '| --- | ---: | --- | ---: | ---: | ---: |');
    for (const o of t.oracle) L.push(`| ${o.boundary} | ${q(o.mean)} ± ${o.sd.toFixed(4)} | ${o.scores.map(q).join(', ')} | ${pct(o.backwardFraction)} | ${o.msPerStep.toFixed(0)} | ${o.gpuMiB.toFixed(1)} |`);
    L.push('');
    L.push('### Methods on the oracle curve', '');
    L.push(`| method | --freeze | ${lm ? 'loss' : 'macro-F1'} | cost | saving | regret | gain kept | blocks past the ${pct(RETAIN_LINE)} line |`, '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const order = [...t.methods].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'baseline' ? -1 : 1));
    for (const m of order) {
      const K = m.perSeed ? Object.values(m.perSeed).join('/') : String(m.boundary);
      L.push(`| ${m.method === DEFAULT_SALF ? `**${m.method}** (default)` : m.method}${m.note ? ` (${m.note})` : ''} | ${K} | ${q(m.mean)} | ${pct(m.cost)} | ${pct(m.saving)} | ${m.regret.toFixed(4)} | ${m.retained === null ? '–' : pct(m.retained)} | ${fmtOff(m.off)} |`);
    }
    L.push('');
  }
  L.push('## Across tasks', '');
  const salfNames = [...new Set(reports.flatMap((t) => t.methods.filter((m) => m.kind === 'salf').map((m) => m.method)))];
  const baseNames = [...new Set(reports.flatMap((t) => t.methods.filter((m) => m.kind === 'baseline').map((m) => m.method)))];
  L.push(`Regret per task, and the share of full fine-tuning's gain kept against the backward saved, averaged over the tasks that have the method (lower regret is better; regret units differ between the loss task and the F1 tasks, so read the per-task tables for magnitudes). The last two columns are the trade each method makes.`, '');
  L.push(`| method | ${reports.map((t) => `${t.task} regret`).join(' | ')} | mean gain kept | mean saving |`, `| --- | ${reports.map(() => '---:').join(' | ')} | ---: | ---: |`);
  for (const name of [...baseNames, ...salfNames]) {
    const rows = reports.map((t) => t.methods.find((m) => m.method === name));
    const have = rows.filter((m): m is MethodRow => m !== undefined);
    if (have.length === 0) continue;
    const kept = have.filter((m) => m.retained !== null).map((m) => m.retained!);
    L.push(`| ${name === DEFAULT_SALF ? `**${name}** (default)` : name} | ${rows.map((m) => (m ? m.regret.toFixed(4) : '–')).join(' | ')} | ${kept.length ? pct(mean(kept)) : '–'} | ${pct(mean(have.map((m) => m.saving)))} |`);
  }
  L.push('');
  L.push(...settleSection(reports));
  if (meta.g2) {
    const g = meta.g2;
    L.push(`### g2's constants: fitted on ${g.fitTask}, tested on the others`, '');
    L.push(`Grid of ${g.candidates} candidates (A, α, β, E), cosine deviations; the candidate whose boundary lands nearest ${g.fitTask}'s ${pct(RETAIN_LINE)} line wins (the shipped defaults A = ${G2_DEFAULTS.A}, α = ${G2_DEFAULTS.alpha}, β = ${G2_DEFAULTS.beta}, E = ${G2_DEFAULTS.E} first, so they win ties). Fitted: A = ${g.params.A}, α = ${g.params.alpha}, β = ${g.params.beta}, E = ${g.params.E}.`, '');
    L.push(`| task | role | --freeze (fitted) | blocks past the line (fitted) | --freeze (defaults) | blocks past the line (defaults) |`, '| --- | --- | ---: | ---: | ---: | ---: |');
    for (const t of g.tasks) L.push(`| ${t.task} | ${t.task === g.fitTask ? 'fit' : 'test'} | ${t.fitted.K} | ${fmtOff(t.fitted.off)} | ${t.defaults.K} | ${fmtOff(t.defaults.off)} |`);
    const test = g.tasks.filter((t) => t.task !== g.fitTask && t.fitted.off !== null && t.defaults.off !== null);
    if (test.length) L.push('', `On the test task(s), mean |blocks past the line|: fitted ${+meanAbs(test.map((t) => t.fitted.off!)).toFixed(2)}, defaults ${+meanAbs(test.map((t) => t.defaults.off!)).toFixed(2)}.`);
    L.push('');
  }
  return `${L.join('\n')}\n`;
}
