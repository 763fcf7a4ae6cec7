// The semfreeze page: the analysis and a truncated fine-tune in the browser, from the same core as the
// CLI (src/browser.ts). Driven by the form, or by query parameters (web/contract.ts) for scripts and
// tests: then #result gets the JSON the CLI's --json prints and body[data-state] becomes done or error.
import { parseJob, type PageFinetune } from './contract.ts';
import { describeFreeze, describeModel, openSemfreeze, parseFreeze, renderReportText, type LoadedModel, type Semfreeze, type TrainLogEntry } from '../src/browser.ts';
import { renderLineChart } from '../src/util/linechart.ts';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);
const setState = (s: 'loading' | 'ready' | 'running' | 'done' | 'error') => {
  document.body.dataset.state = s;
};
const status = (line: string) => {
  $('status').textContent = line;
};
const log = (line: string) => {
  const el = $('log');
  el.textContent += `${line}\n`;
  el.scrollTop = el.scrollHeight;
};
const showResult = (value: unknown) => {
  $('result').textContent = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
};

/** Files the user picked, by the name the core reads them under (picked/model/config.json, …). */
const picked = new Map<string, Blob>();
let sf: Semfreeze | null = null;
/** The model on the GPU; `trained` once a fine-tune changed its weights (the next job reloads it). */
let loaded: { key: string; model: LoadedModel; trained: boolean } | null = null;
let chosenFreeze: number | null = null;

async function ensureModel(dir: string): Promise<LoadedModel> {
  if (loaded?.key === dir && !loaded.trained) return loaded.model;
  if (loaded) loaded.model.weights.destroy(sf!.rt);
  loaded = null;
  status(`loading ${dir} …`);
  const model = await sf!.loadModel(dir);
  loaded = { key: dir, model, trained: false };
  log(describeModel(dir, model));
  return model;
}

function fail(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  status(`error: ${msg}`);
  showResult({ error: msg });
  setState('error');
  if (!(e instanceof Error && e.name === 'UserError')) console.error(e);
}

async function runAnalysis(opts: Parameters<Semfreeze['analyze']>[1] & { model: string }): Promise<unknown> {
  const model = await ensureModel(opts.model);
  const t0 = performance.now();
  const result = await sf!.analyze(model, opts, {
    onNote: log,
    onProgress: (p) => status(`analysis ${p.runs}/${p.totalRuns} batches, ${p.positions}/${p.totalPositions} positions, ${(p.positions / Math.max(p.seconds, 1e-9)).toFixed(0)} positions/s`),
  });
  $('chart').innerHTML = result.outcome.svg();
  $('report').textContent = renderReportText(result.report);
  chosenFreeze = result.report.boundary.freeze;
  input('freeze').value = String(chosenFreeze);
  status(`analysed in ${((performance.now() - t0) / 1000).toFixed(1)} s: freeze K = ${chosenFreeze}`);
  return result.json;
}

async function runFinetune(modelDir: string, data: string, seq: number, f: PageFinetune): Promise<unknown> {
  const model = await ensureModel(modelDir);
  const cfg = model.files.config;
  const parsed = parseFreeze(f.freeze, cfg.nLayer);
  const run = await sf!.finetune(model, { ...f, data, seq, freeze: parsed }, { onNote: log });
  loaded!.trained = true;
  log(`fine-tuning ${describeFreeze(run.spec.freeze, cfg.nLayer)}: ${run.trainableParameters().toLocaleString()} trainable parameters`);
  log(run.describe());
  const points: TrainLogEntry[] = [];
  const ms: number[] = [];
  await run.run({
    onStep: (e, eta) => {
      ms.push(e.ms);
      if (e.loss !== undefined) points.push(e);
      status(`step ${e.step}/${f.steps}  loss ${e.loss?.toFixed(4) ?? '-'}${e.evalLoss !== undefined ? `  eval ${e.evalLoss.toFixed(4)}` : ''}  ${e.ms.toFixed(0)} ms/step  ${e.tokensPerSecond.toFixed(0)} tok/s  ETA ${eta.toFixed(0)} s`);
      $('loss-chart').innerHTML = renderLineChart([{ name: `freeze ${run.spec.freeze ?? 'none'}`, points: points.map((p) => ({ x: p.step, y: p.loss! })) }], { title: 'training loss', xLabel: 'step', yLabel: 'loss' });
    },
  });
  const sorted = [...ms].sort((a, b) => a - b);
  log(`fine-tuned ${run.step} steps, median ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)} ms/step`);
  await offerDownloads(run);
  return run.json();
}

async function offerDownloads(run: Awaited<ReturnType<Semfreeze['finetune']>>): Promise<void> {
  const box = $('downloads');
  box.textContent = 'Download the fine-tuned model (Hugging Face files): ';
  for (const f of await run.modelFiles()) {
    const parts = Array.isArray(f.data) ? f.data : [f.data];
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob(parts as BlobPart[]));
    a.download = f.name;
    a.textContent = f.name;
    box.append(a, ' ');
  }
}

function formModelDir(): string {
  const files = input('model-files').files;
  if (files && files.length > 0) {
    for (const f of files) picked.set(`picked/model/${f.name}`, f);
    return 'picked/model';
  }
  return new URL(input('model').value, location.href).href;
}

function formData(): string {
  const f = input('data-file').files?.[0];
  if (f) {
    picked.set(`picked/${f.name}`, f);
    return `picked/${f.name}`;
  }
  return new URL(input('data').value, location.href).href;
}

async function guarded(fn: () => Promise<unknown>): Promise<void> {
  setState('running');
  try {
    const json = await fn();
    showResult(json);
    setState('done');
  } catch (e) {
    fail(e);
  }
}

async function main(): Promise<void> {
  if (!('gpu' in navigator)) {
    const msg = 'This browser has no WebGPU, which semfreeze needs: use a recent Chrome or Edge (or Safari 26, Firefox 141+ on Windows), on a page served over https or from localhost.';
    $('adapter').textContent = msg;
    throw new Error(msg);
  }
  sf = await openSemfreeze({ files: picked });
  const info = sf.rt.gpu.info;
  $('adapter').textContent = `WebGPU: ${info.vendor} / ${info.architecture}${info.isSoftware ? ' (software)' : ''}, backend ${info.backend}`;
  const job = parseJob(new URLSearchParams(location.search));
  if (job) {
    setState('running');
    // A bad freeze fails before the analysis runs, as the CLI's --freeze does.
    const model = await ensureModel(job.analyze.model);
    if (job.finetune) parseFreeze(job.finetune.freeze, model.files.config.nLayer);
    const analysisJson = await runAnalysis(job.analyze);
    if (!job.finetune) return showResult(analysisJson);
    const seq = job.analyze.seq ?? Math.min(128, loaded!.model.files.config.nPositions);
    showResult(await runFinetune(job.analyze.model, job.analyze.data, seq, job.finetune));
    return;
  }
  setState('ready');
  status('ready: choose a model and data, then Analyse');
  $('analyze').addEventListener('click', () =>
    guarded(() => runAnalysis({ model: formModelDir(), data: formData(), seq: Number(input('seq').value), maxWindows: Number(input('max-windows').value) })),
  );
  $('finetune').addEventListener('click', () =>
    guarded(() => runFinetune(formModelDir(), formData(), Number(input('seq').value), { steps: Number(input('steps').value), freeze: input('freeze').value.trim() || 'auto', lr: Number(input('lr').value), logEvery: 1 })),
  );
}

main().then(
  () => {
    if (document.body.dataset.state === 'running') setState('done');
  },
  fail,
);
