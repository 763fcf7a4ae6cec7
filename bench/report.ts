// Render bench/results/*.json as the Markdown tables of BENCHMARKS.md.
//   tsx bench/report.ts [results dir]   (prints Markdown on stdout)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pairSaving, type Pair } from '../src/cli/bench.ts';

const dir = process.argv[2] ?? 'bench/results';
const read = (f: string) => (existsSync(join(dir, f)) ? JSON.parse(readFileSync(join(dir, f), 'utf8')) : null);
const out: string[] = [];
const p = (s = '') => out.push(s);
const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const pct = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `${(100 * x).toFixed(1)}%`);

const machineLine = (m: { cpu: string; cores: number; memoryGiB: number; node: string; adapter: { vendor: string; architecture: string; description: string } }) =>
  `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; Node ${m.node}; adapter ${m.adapter.vendor} / ${m.adapter.architecture} (${m.adapter.description})`;

const mm = read('matmul.json');
if (mm) {
  p('## Matmul (`bench/matmul.ts`)');
  p();
  p(`${machineLine(mm.machine)}. ${mm.date.slice(0, 10)}. Median of ${mm.results[0].reps} runs, GPU timestamps; the strategies of one shape are run interleaved.`);
  p();
  if (mm.autoPath) p(`\`auto\` runs the ${mm.autoPath === 'tiled' ? 'tiled kernel' : 'transposes into tn'} on this adapter.`);
  if (mm.autoPath) p();
  p('| shape | path | ms | GFLOP/s | tiled kernel GFLOP/s | direct kernel GFLOP/s |');
  p('| --- | --- | ---: | ---: | ---: | ---: |');
  for (const r of mm.results) p(`| ${r.name} | ${r.path} | ${r.medianMs.toFixed(2)} | **${r.gflops.toFixed(1)}** | ${r.tiled ? r.tiled.gflops.toFixed(1) : '–'} | ${r.direct ? `${r.direct.gflops.toFixed(1)} (${r.direct.entry})` : '–'} |`);
  p();
}

for (const f of ['model-small.json', 'model-gpt2.json', 'model-smollm2.json']) {
  const m = read(f);
  if (!m) continue;
  for (const r of m.results) {
    p(`## ${r.config}: ${(r.parameters / 1e6).toFixed(1)}M parameters (\`bench/model.ts\`)`);
    p();
    p(`${machineLine(m.machine)}. ${m.date.slice(0, 10)}. Random weights; median of ${m.reps} runs after a warm-up, GPU timestamps; the freeze boundaries run interleaved.`);
    p();
    p('| forward | ms | tokens/s |');
    p('| --- | ---: | ---: |');
    for (const x of r.forward) p(`| B=${x.B}, T=${x.T} (with loss) | ${x.medianMs.toFixed(0)} | **${x.tokensPerSecond.toFixed(0)}** |`);
    p();
    p(`Training step (forward + backward + AdamW with clipping), B=${r.train.B}, T=${r.train.T}:`);
    p();
    p('| --freeze | ms/step | GPU MiB | step saving measured | analytic | measured/analytic | memory saving measured | analytic |');
    p('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const x of r.train.rows) {
      p(`| ${x.freeze} | ${x.medianMs.toFixed(0)} | ${mib(x.gpuBytes)} | ${pct(x.measuredStepSaving)} | ${pct(x.analyticStepSaving)} | ${x.stepSavingVsAnalytic === null ? '–' : pct(x.stepSavingVsAnalytic)} | ${pct(x.measuredMemorySaving)} | ${pct(x.analyticMemorySaving)} |`);
    }
    p();
    p('GPU bytes by kind (MiB):');
    p();
    const kinds = [...new Set(r.train.rows.flatMap((x: { byKind: Record<string, number> }) => Object.keys(x.byKind)))].filter((k) => !['dummy', 'uniform', 'input'].includes(k as string)) as string[];
    p(`| --freeze | ${kinds.join(' | ')} |`);
    p(`| --- | ${kinds.map(() => '---:').join(' | ')} |`);
    for (const x of r.train.rows) p(`| ${x.freeze} | ${kinds.map((k) => mib(x.byKind[k] ?? 0)).join(' | ')} |`);
    p();
  }
}

const an = read('analysis.json');
if (an) {
  p(`## Analysis cost (\`bench/analysis.ts\`)`);
  p();
  const m = an.model;
  p(`${machineLine(an.machine)}. ${an.date.slice(0, 10)}. Random-weight model ${m.nLayer}×${m.nEmbd}, vocab ${m.vocab} (${(m.params / 1e6).toFixed(1)}M parameters); ${an.shape.sequences} sequences × ${an.shape.seq} tokens = ${an.shape.positions} positions, batch ${an.shape.batch}, deviation ${an.shape.metric}.`);
  p();
  p('| what | time |');
  p('| --- | ---: |');
  p(`| full analysis, first run (Gram, Cholesky, bases, ${an.analysis.cold.runs} forwards, reductions) | ${an.analysis.coldSeconds.toFixed(2)} s |`);
  p(`| full analysis, again (bases cached) | ${an.analysis.warmSeconds.toFixed(2)} s |`);
  p(`| one fine-tuning step, full (B=${an.shape.batch}, T=${an.shape.seq}) | ${(an.trainStep.fullMs / 1000).toFixed(2)} s |`);
  p(`| one fine-tuning step at the chosen --freeze ${an.analysis.freeze} | ${(an.trainStep.atKMs / 1000).toFixed(2)} s |`);
  p(`| analysis ÷ full step (first run / again) | ${an.ratio.analysisOverFullStepCold.toFixed(1)} / ${an.ratio.analysisOverFullStepWarm.toFixed(1)} steps |`);
  p(`| steps of fine-tuning at K=${an.analysis.freeze} that pay for the first analysis | ${an.ratio.breakEvenStepsCold.toFixed(0)} |`);
  p();
}
const at = read('attention.json');
if (at) {
  p(`## Attention (\`bench/attention.ts\`)`);
  p();
  p(`${machineLine(at.machine)}. ${at.date.slice(0, 10)}. Median of ${at.results[0].reps} runs, GPU timestamps; the layer's matmuls measured in the same run for scale.`);
  p();
  p('| shape | forward ms | forward-only ms | backward ms (dq + dk,dv) | recomputing backward ms | saved per layer | backward scratch | c_attn / attn_proj / c_fc / mlp_proj ms |');
  p('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const r of at.results) {
    const mmMs = r.matmulMs ? `${r.matmulMs.c_attn.toFixed(0)} / ${r.matmulMs.attn_proj.toFixed(0)} / ${r.matmulMs.c_fc.toFixed(0)} / ${r.matmulMs.mlp_proj.toFixed(0)}` : '–';
    const ms = (x: number | null | undefined) => (x === undefined || x === null || Number.isNaN(x) ? '–' : x.toFixed(1));
    const rec = r.recomputeBackwardQMs !== undefined && r.recomputeBackwardQMs !== null ? `${(r.recomputeBackwardQMs + r.recomputeBackwardKvMs).toFixed(1)} (${r.recomputeBackwardQMs.toFixed(0)} + ${r.recomputeBackwardKvMs.toFixed(0)})` : '–';
    const kind = r.storesProbabilities ? 'stored p, dS' : 'recomputing';
    p(`| ${r.name} | ${ms(r.forwardMs)} | ${ms(r.forwardOnlyMs)} | ${(r.backwardQMs + r.backwardKvMs).toFixed(1)} (${r.backwardQMs.toFixed(0)} + ${r.backwardKvMs.toFixed(0)}), ${kind} | ${rec} | ${(r.statsBytes / 1024).toFixed(0)} KiB | ${mib(r.scratchBytes)} MiB | ${mmMs} |`);
  }
  p();
}
// `semfreeze bench savings --json` on the shipped base model: uncached and with the boundary cache.
for (const [f, title] of [['savings-base.json', 'every boundary'], ['savings-base-cached.json', 'with the boundary activation cache (`--cache-boundary`)']] as const) {
  const sv = read(f);
  if (!sv) continue;
  const none = sv.rows.find((r: { boundary: unknown }) => r.boundary === 'none');
  p(`## Savings on the shipped base model, ${title} (\`semfreeze bench savings\`)`);
  p();
  p(`${sv.machine ? machineLine(sv.machine) : `adapter ${sv.adapter.vendor} / ${sv.adapter.architecture} (${sv.adapter.description})`}.${sv.date ? ` ${sv.date.slice(0, 10)}.` : ''} \`${sv.command ?? 'semfreeze bench savings'}\`: ${sv.model}, B=${sv.batch}, T=${sv.seq}, AdamW; median of ${sv.rounds} rounds with the boundaries' order rotated each round; each frozen step runs between two full fine-tuning steps and its saving is the median over rounds of 1 − t / (mean of the two) (paired within about a second, so the machine's slow spells cancel); the step cost is 1 − that saving over the analytic share. Wall time covers encoding, submit and the wait; GPU time is between timestamps.`);
  p();
  // The middle half of the pairs' savings, where the JSON has them: the noise each median sits in.
  const iqr = (r: { wallPairs?: Pair[] }) => {
    if (!r.wallPairs?.length) return '–';
    const s = r.wallPairs.map(pairSaving).sort((a, b) => a - b);
    const q = (f: number) => s[Math.min(s.length - 1, Math.floor(f * s.length))]!;
    return `${(100 * q(0.25)).toFixed(1)}–${(100 * q(0.75)).toFixed(1)}%`;
  };
  p('| --freeze | wall ms | GPU ms | wall / GPU | GPU MiB | step saving (wall) | pairs\' middle half | analytic | measured / analytic | step cost measured / analytic |');
  p('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of sv.rows) {
    const costRatio = (r.measuredSaving === null ? 1 : 1 - r.measuredSaving) / (r.analyticFlops / none.analyticFlops);
    p(`| ${r.boundary} | ${r.wallMs.toFixed(0)} | ${r.gpuMs === null ? '–' : r.gpuMs.toFixed(0)} | ${r.gpuMs ? (r.wallMs / r.gpuMs).toFixed(3) : '–'} | ${mib(r.gpuBytes)} | ${pct(r.measuredSaving)} | ${r.boundary === 'none' ? '–' : iqr(r)} | ${pct(r.analyticSaving)} | ${r.ratio === null ? '–' : `${(100 * r.ratio).toFixed(0)}%`} | ${costRatio.toFixed(2)} |`);
  }
  p();
  const prof = none.profile as { kernel: string; dispatches: number; ms: number }[] | undefined;
  if (prof) {
    const total = prof.reduce((a, x) => a + x.ms, 0);
    p(`GPU time of one full fine-tuning step by kernel family (\`--profile\`: each dispatch its own timed pass, so the total, ${total.toFixed(0)} ms, is above the step's):`);
    p();
    p('| kernel | dispatches | ms | share |');
    p('| --- | ---: | ---: | ---: |');
    for (const x of prof.slice(0, 12)) p(`| ${x.kernel} | ${x.dispatches} | ${x.ms.toFixed(1)} | ${pct(x.ms / total)} |`);
    p();
  }
}
process.stdout.write(`${out.join('\n')}\n`);
