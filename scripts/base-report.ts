// The shipped base model's report card (numbers for models/README.md): held-out perplexity on prose
// and code next to a unigram model's, the SALF deviation curve on prose and on code, greedy samples,
// and the pretraining loss curve as SVG. Runs the CLI itself, so the numbers are what users get.
//   npx tsx scripts/base-report.ts [--model models/semfreeze-base] [--run runs/base] [--data data]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '../src/tokenizer/bpe.ts';
import { renderLineChart } from '../src/util/linechart.ts';

const arg = (name: string, fallback: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1]! : fallback);
const model = arg('--model', 'models/semfreeze-base');
const run = arg('--run', model);
const data = arg('--data', 'data');
const log = (s: string) => process.stderr.write(`${s}\n`);

function cli(args: string[]): string {
  log(`$ semfreeze ${args.join(' ')}`);
  return execFileSync(process.execPath, ['--import', 'tsx', 'bin/semfreeze.ts', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
}

/** Add-one-smoothed unigram model of the training tokens: perplexity on held-out tokens. */
function unigramPerplexity(tok: Tokenizer, train: string, held: string): number {
  const counts = new Float64Array(tok.vocabSize).fill(1);
  let total = tok.vocabSize;
  for (const id of tok.encode(train)) {
    counts[id]!++;
    total++;
  }
  let nll = 0;
  const ids = tok.encode(held);
  for (const id of ids) nll -= Math.log(counts[id]! / total);
  return Math.exp(nll / ids.length);
}

const tok = Tokenizer.fromJSON(JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')));
const trainText = readFileSync(join(data, 'prose', 'train.txt'), 'utf8');
const heldOut = {
  'prose: State of the Union 2000–2021': join(data, 'prose', 'heldout-sotu.txt'),
  'prose: Brown adventure fiction (genre never seen)': join(data, 'prose', 'heldout-brown.txt'),
  'code: TypeScript lib .d.ts (held-out files)': join(data, 'code', 'heldout.txt'),
};
const perplexity: Record<string, { model: number; unigram: number; tokens: number }> = {};
for (const [name, file] of Object.entries(heldOut)) {
  const r = JSON.parse(cli(['eval', '--model', model, '--data', file, '--seq', '128', '--batch', '8', '--json'])) as { perplexity: number; tokens: number };
  perplexity[name] = { model: r.perplexity, unigram: unigramPerplexity(tok, trainText, readFileSync(file, 'utf8')), tokens: r.tokens };
  log(`${name}: model ${r.perplexity.toFixed(1)}, unigram ${perplexity[name]!.unigram.toFixed(1)}`);
}

const analyses: Record<string, unknown> = {};
for (const [name, file] of [['prose', join(data, 'prose', 'heldout-sotu.txt')], ['code', join(data, 'code', 'train.txt')]] as const) {
  const r = JSON.parse(cli(['analyze', '--model', model, '--data', file, '--max-windows', '64', '--json', '--plot', join(model, `analysis-${name}.svg`)])) as { latentSpaces: { deviation: number }[]; blocks: { gain: number | null }[]; boundary: { freeze: number }; strategy: { name: string } };
  analyses[name] = { data: file, deviations: r.latentSpaces.map((l) => l.deviation), gains: r.blocks.map((b) => b.gain), freeze: r.boundary.freeze, strategy: r.strategy.name };
}

const samples: { prompt: string; greedy: string; sampled: string }[] = [];
for (const prompt of ['The Congress of the United States', 'In the morning, she', 'We will build']) {
  samples.push({
    prompt,
    greedy: cli(['generate', '--model', model, '--prompt', prompt, '--max-tokens', '40']).trim(),
    sampled: cli(['generate', '--model', model, '--prompt', prompt, '--max-tokens', '40', '--temperature', '0.8', '--seed', '1']).trim(),
  });
}

const trainLog = existsSync(join(run, 'train-log.json')) ? (JSON.parse(readFileSync(join(run, 'train-log.json'), 'utf8')) as { step: number; loss?: number; evalLoss?: number; tokens: number; seconds: number }[]) : [];
if (trainLog.length > 0) {
  const svg = renderLineChart([
    { name: 'training loss', points: trainLog.filter((e) => e.loss !== undefined).map((e) => ({ x: e.step, y: e.loss! })) },
    { name: 'held-out loss (SOTU 2000–)', points: trainLog.filter((e) => e.evalLoss !== undefined).map((e) => ({ x: e.step, y: e.evalLoss! })), dashed: true },
  ], { title: 'semfreeze-base pretraining', xLabel: 'step (8 × 128 tokens)', yLabel: 'cross-entropy (nats)' });
  writeFileSync(join(model, 'loss-curve.svg'), svg);
}
const last = trainLog.at(-1);
const report = { model, perplexity, analyses, samples, pretraining: last ? { steps: last.step, tokens: last.tokens, seconds: last.seconds } : null };
writeFileSync(join(model, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
