// The page's scriptable contract: query parameters → the same options as the CLI's flags.
//   ?model=URL&data=URL&seq=T[&deviation=&gain=&batch=&max-windows=&samples=&seed=&budget=&pad&final-norm=&labels=]
//     runs the analysis; #result gets the JSON of `semfreeze analyze --json`.
//   …&finetune=STEPS&freeze=K|auto|none[&lr=&eval=URL&optimizer=&weight-decay=&clip=&warmup=&schedule=&accum=&log-every=&eval-every=&eval-windows=&no-shuffle]
//     also fine-tunes; #result gets the JSON of `semfreeze finetune --json`.
// Unknown parameters are an error (a typo must not silently fall back to a default).
import type { AnalyzeOptions } from '../src/analysis/analyze.ts';
import type { OptimizerKind } from '../src/train/optimizer.ts';
import type { ScheduleKind } from '../src/train/schedule.ts';
import { UserError } from '../src/util/errors.ts';
import { parseFloatOption, parseIntOption } from '../src/util/options.ts';

export interface PageFinetune {
  steps: number;
  /** 'none', 'auto' or a block count (checked against the model once it is loaded). */
  freeze: string;
  eval?: string;
  batch?: number;
  lr?: number;
  optimizer?: OptimizerKind;
  weightDecay?: number;
  clip?: number;
  warmup?: number;
  schedule?: ScheduleKind;
  accum?: number;
  seed?: number;
  shuffle?: boolean;
  logEvery?: number;
  evalEvery?: number;
  evalWindows?: number;
}

export interface PageJob {
  analyze: AnalyzeOptions;
  finetune: PageFinetune | null;
}

const ANALYZE_KEYS = ['model', 'data', 'seq', 'batch', 'samples', 'seed', 'max-windows', 'deviation', 'gain', 'budget', 'pad', 'final-norm', 'labels'];
const FINETUNE_KEYS = ['finetune', 'freeze', 'eval', 'lr', 'optimizer', 'weight-decay', 'clip', 'warmup', 'schedule', 'accum', 'log-every', 'eval-every', 'eval-windows', 'no-shuffle'];

/** The job a URL's query asks for, or null when it names no model (the page then waits for the form). */
export function parseJob(query: URLSearchParams): PageJob | null {
  if (!query.has('model')) return null;
  for (const key of query.keys()) {
    if (!ANALYZE_KEYS.includes(key) && !FINETUNE_KEYS.includes(key)) throw new UserError(`unknown query parameter '${key}' (known: ${[...ANALYZE_KEYS, ...FINETUNE_KEYS].join(', ')})`);
  }
  const text = (k: string) => query.get(k) ?? undefined;
  const int = (k: string, min: number) => (query.has(k) ? parseIntOption(k, query.get(k)!, min) : undefined);
  const num = (k: string, min: number, exclusive = false) => (query.has(k) ? parseFloatOption(k, query.get(k)!, min, exclusive) : undefined);
  const flag = (k: string) => query.has(k) && query.get(k) !== 'false' && query.get(k) !== '0';
  const data = text('data');
  if (!data) throw new UserError('the query names a model but no data: add &data=URL (.txt, .json token ids, llm.c .bin, or .jsonl with &labels)');
  const analyze: AnalyzeOptions = {
    model: text('model')!,
    data,
    seq: int('seq', 1),
    batch: int('batch', 1),
    samples: int('samples', 1),
    seed: int('seed', 0),
    maxWindows: int('max-windows', 1),
    deviation: text('deviation'),
    gain: text('gain'),
    budget: text('budget'),
    pad: flag('pad') || undefined,
    finalNorm: text('final-norm'),
    labels: text('labels'),
  };
  if (!query.has('finetune')) {
    const stray = FINETUNE_KEYS.filter((k) => query.has(k));
    if (stray.length > 0) throw new UserError(`${stray.join(', ')} appl${stray.length > 1 ? 'y' : 'ies'} to a fine-tune: add &finetune=STEPS`);
    return { analyze, finetune: null };
  }
  const optimizer = text('optimizer');
  if (optimizer !== undefined && optimizer !== 'adamw' && optimizer !== 'sgd') throw new UserError(`optimizer must be adamw or sgd, got '${optimizer}'`);
  const schedule = text('schedule');
  if (schedule !== undefined && schedule !== 'cosine' && schedule !== 'constant') throw new UserError(`schedule must be cosine or constant, got '${schedule}'`);
  const finetune: PageFinetune = {
    steps: int('finetune', 1)!,
    freeze: text('freeze') ?? 'auto',
    eval: text('eval'),
    batch: analyze.batch,
    lr: num('lr', 0, true),
    optimizer: optimizer as OptimizerKind | undefined,
    weightDecay: num('weight-decay', 0),
    clip: num('clip', 0),
    warmup: int('warmup', 0),
    schedule: schedule as ScheduleKind | undefined,
    accum: int('accum', 1),
    seed: analyze.seed,
    shuffle: flag('no-shuffle') ? false : undefined,
    logEvery: int('log-every', 1),
    evalEvery: int('eval-every', 1),
    evalWindows: int('eval-windows', 1),
  };
  return { analyze, finetune };
}
