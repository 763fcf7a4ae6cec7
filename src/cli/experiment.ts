// `semfreeze experiment run|report`: the oracle sweeps and baselines of EXPERIMENTS.md, resumable. Each
// finished job is one JSON file under --out (written atomically), so a stopped run continues where it
// stopped; `report` rebuilds EXPERIMENTS.md and the charts from those files alone.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { runExperiment, FULL_SETTINGS, QUICK_SETTINGS, jobKeys, type ExperimentSettings, type ExperimentStore } from '../experiment/experiment.ts';
import { g2Transfer, renderExperimentsMd, renderTaskSvg, taskReport, type StoredResults } from '../experiment/report.ts';
import { TASKS, TASK_NAMES, type TaskName } from '../experiment/tasks.ts';
import { readModelDir } from '../model/weights.ts';
import { nodePlatform, packageRoot, writeFileAtomic } from '../platform/node.ts';
import { ProgressLine, UserError, formatEta, openRuntime, printJson, progress } from './common.ts';
import { buildData } from './data.ts';

export interface ExperimentOptions {
  model: string;
  data: string;
  out: string;
  md: string;
  quick?: boolean;
  tasks?: string;
  json?: boolean;
}

/** One JSON file per key under `dir` (keys contain '/', which become folders); `stamp` is added to every object written (the commit). */
export function fileStore(dir: string, stamp: Record<string, unknown> = {}): ExperimentStore & { keys(): string[] } {
  const path = (key: string) => join(dir, `${key}.json`);
  return {
    async get(key) {
      const p = path(key);
      if (!existsSync(p)) return null;
      try {
        return JSON.parse(readFileSync(p, 'utf8'));
      } catch (e) {
        throw new UserError(`${p}: not valid JSON (${(e as Error).message}); remove it and run again to redo that job`);
      }
    },
    async put(key, value) {
      mkdirSync(dirname(path(key)), { recursive: true });
      const stamped = typeof value === 'object' && value !== null && !Array.isArray(value) ? { ...value, ...stamp } : value;
      await writeFileAtomic(path(key), `${JSON.stringify(stamped, null, 1)}\n`);
    },
    keys() {
      const out: string[] = [];
      const walk = (d: string, prefix: string) => {
        if (!existsSync(d)) return;
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(d, e.name), `${prefix}${e.name}/`);
          else if (e.name.endsWith('.json')) out.push(`${prefix}${e.name.slice(0, -5)}`);
        }
      };
      walk(dir, '');
      return out;
    },
  };
}

function settingsFor(o: ExperimentOptions): ExperimentSettings {
  const base = o.quick ? QUICK_SETTINGS : FULL_SETTINGS;
  if (!o.tasks) return { ...base };
  const tasks = o.tasks.split(',').map((t) => t.trim());
  for (const t of tasks) if (!(TASK_NAMES as readonly string[]).includes(t)) throw new UserError(`--tasks: '${t}' is not a task (${TASK_NAMES.join(', ')})`);
  return { ...base, tasks: tasks as TaskName[] };
}

function commit(): string {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot, encoding: 'utf8' });
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: packageRoot, encoding: 'utf8' });
  if (r.status !== 0) return 'unknown';
  return `${r.stdout.trim()}${dirty.stdout.trim() ? ' (with uncommitted changes)' : ''}`;
}

async function ensureData(o: ExperimentOptions, s: ExperimentSettings): Promise<void> {
  const missing = s.tasks.filter((t) => ![TASKS[t].train, TASKS[t].heldout].every((f) => existsSync(join(o.data, f))));
  if (missing.length === 0) return;
  progress(`building the data of ${missing.join(', ')} into ${o.data} (from npm packages; nothing is downloaded)`);
  await buildData(missing, o.data);
}

export async function experimentRunCommand(o: ExperimentOptions): Promise<void> {
  const s = settingsFor(o);
  await ensureData(o, s);
  const rt = await openRuntime();
  const files = fileStore(o.out, { commit: commit() });
  const t0 = Date.now();
  // Machine time accumulates over resumed runs, written with every finished job (a run may be killed).
  const before = ((await files.get('timing')) as { seconds: number } | null)?.seconds ?? 0;
  const store: ExperimentStore = {
    get: (key) => files.get(key),
    put: async (key, value) => {
      await files.put(key, value);
      if (key !== 'settings') await files.put('timing', { seconds: before + (Date.now() - t0) / 1000 });
    },
  };
  const bar = new ProgressLine();
  let current = '';
  let jobStart = Date.now();
  let doneAtStart = -1;
  const res = await runExperiment(nodePlatform, rt, o.model, o.data, s, store, {
    onNote: (line) => progress(line),
    onJob: (key, done, total) => {
      if (doneAtStart < 0) doneAtStart = done;
      const ran = done - doneAtStart;
      const elapsed = (Date.now() - t0) / 1000;
      const eta = ran > 0 ? (elapsed / ran) * (total - done) : NaN;
      current = `job ${done + 1}/${total} ${key}`;
      jobStart = Date.now();
      bar.update(`${current}  elapsed ${formatEta(elapsed)}  ETA ${formatEta(eta)}`, true);
    },
    onStep: (step, loss) => bar.update(`${current}  step ${step}${loss !== undefined ? `  loss ${loss.toFixed(4)}` : ''}  ${((Date.now() - jobStart) / 1000).toFixed(0)} s`),
  });
  bar.done();
  const seconds = (Date.now() - t0) / 1000;
  const total = before + (res.ran > 0 ? seconds : 0);
  progress(`ran ${res.ran} job(s), ${res.skipped} already done; ${formatEta(seconds)} this time, ${formatEta(total)} in all`);
  await experimentReportCommand(o);
}

export async function experimentReportCommand(o: ExperimentOptions): Promise<void> {
  const store = fileStore(o.out);
  const saved = (await store.get('settings')) as { settings: ExperimentSettings; model: string } | null;
  if (!saved) throw new UserError(`${o.out}: no experiment results there (run \`semfreeze experiment run --out ${o.out}\` first)`);
  const files = await readModelDir(nodePlatform, saved.model);
  await files.weights.close(); // the config is all the report needs
  const cache = new Map<string, unknown>();
  for (const k of store.keys()) cache.set(k, await store.get(k));
  const results: StoredResults = { settings: saved.settings, config: files.config, get: (k) => cache.get(k) ?? null };
  const reports = saved.settings.tasks.map((t) => taskReport(results, t));
  const chartDir = join(o.out, 'charts');
  mkdirSync(chartDir, { recursive: true });
  for (const r of reports) if (r.oracle.length > 0) await writeFileAtomic(join(chartDir, `${r.task}.svg`), renderTaskSvg(r));
  const timing = cache.get('timing') as { seconds: number } | undefined;
  const done = jobKeys(saved.settings, files.config.nLayer).filter((k) => cache.has(k)).length;
  const total = jobKeys(saved.settings, files.config.nLayer).length;
  const commits = [...new Set([...cache.values()].map((v) => (v as { commit?: string } | null)?.commit).filter((c): c is string => typeof c === 'string'))];
  const md = renderExperimentsMd(results, reports, {
    commit: commits.length ? commits.join(', ') : commit(),
    chartPath: (t) => relative(dirname(o.md), join(chartDir, `${t}.svg`)),
    command: `semfreeze experiment run${saved.settings.mode === 'quick' ? ' --quick' : ''} --out ${relative(packageRoot, o.out) || o.out}`,
    elapsed: `${timing ? formatEta(timing.seconds) : '?'} for ${done} of ${total} jobs`,
    // Fitted on the code task (its oracle), tested on the classification tasks.
    g2: g2Transfer(files.config, reports, saved.settings.tasks[0]!, saved.settings),
  });
  await writeFileAtomic(o.md, md);
  if (o.json) printJson({ settings: saved.settings, jobs: { done, total }, reports });
  else progress(`wrote ${o.md} and ${reports.filter((r) => r.oracle.length).length} chart(s) in ${chartDir} (${done}/${total} jobs done)`);
}
