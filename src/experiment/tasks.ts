// The experiments' downstream tasks and their data: prose → code adaptation (language modelling on
// held-out files) and two classifications with label words (spam vs ham, Brown genre), built from the
// project's data sets (`semfreeze data build`). Classification fine-tuning trains on the label word
// after the prompt, the loss on that one token only: the formulation the analysis uses.
import { prepareClassificationData } from '../analysis/run.ts';
import type { AnalysisExample } from '../analysis/run.ts';
import { parseClassificationJsonl } from '../data/classification.ts';
import { windows as lmWindows, type TokenWindows } from '../data/tokens.ts';
import type { ModelFiles } from '../model/weights.ts';
import { loadTokens } from '../model/load.ts';
import type { Platform } from '../platform/types.ts';
import { decodeText } from '../util/utf8.ts';

export type TaskName = 'code' | 'spam' | 'genre';
export const TASK_NAMES: readonly TaskName[] = ['code', 'spam', 'genre'];

export interface TaskSpec {
  name: TaskName;
  kind: 'lm' | 'classification';
  /** Paths relative to the data directory. */
  train: string;
  heldout: string;
  labels?: string;
  /** What the quality number is (higher is better for every task: LM quality is −loss). */
  quality: string;
}

export const TASKS: Record<TaskName, TaskSpec> = {
  code: { name: 'code', kind: 'lm', train: 'code/train.txt', heldout: 'code/heldout.txt', quality: 'held-out loss (nats/token; lower is better)' },
  spam: { name: 'spam', kind: 'classification', train: 'spam/train.jsonl', heldout: 'spam/heldout.jsonl', labels: 'spam=spam,ham=ham', quality: 'held-out macro-F1' },
  genre: {
    name: 'genre', kind: 'classification', train: 'genre/train.jsonl', heldout: 'genre/heldout.jsonl',
    labels: 'news=news,religion=religion,hobbies=hobbies,science=science,romance=romance', quality: 'held-out macro-F1',
  },
};

/** Targets the cross-entropy kernel ignores (0xFFFFFFFF as u32): loss 0 and no gradient. */
export const IGNORE_TARGET = -1;

/** Classification examples as fixed-length windows: the prompt (its last T tokens), then padding. */
export interface ClassWindows extends TokenWindows {
  /** Where the label word is predicted (the prompt's last position), per window. */
  positions: Int32Array;
  /** The label word's token, per window. */
  labelTokens: Int32Array;
  /** The label tokens of the task, in label order; `labelNames[i]` is labelIds[i]'s label. */
  labelIds: Int32Array;
  labelNames: string[];
}

function classWindows(examples: AnalysisExample[], T: number, labelTokens: Record<string, number>): ClassWindows {
  const count = examples.length;
  const inputs = new Int32Array(count * T);
  const targets = new Int32Array(count * T).fill(IGNORE_TARGET);
  const positions = new Int32Array(count);
  const labels = new Int32Array(count);
  examples.forEach((e, i) => {
    inputs.set(e.ids, i * T); // right padding with token 0: causal attention keeps it out of the prompt
    positions[i] = e.positions[0]!;
    labels[i] = e.targets[0]!;
    targets[i * T + positions[i]!] = labels[i]!;
  });
  const names = Object.keys(labelTokens);
  return {
    count,
    seq: T,
    tokens: inputs,
    inputs: (i) => inputs.subarray(i * T, (i + 1) * T),
    targets: (i) => targets.subarray(i * T, (i + 1) * T),
    positions,
    labelTokens: labels,
    labelIds: Int32Array.from(names.map((n) => labelTokens[n]!)),
    labelNames: names,
  };
}

/** A subset of windows by index (views stay views). */
export function selectWindows<W extends TokenWindows>(w: W, indices: readonly number[]): W {
  const pick = (i: number) => {
    const j = indices[i];
    if (j === undefined) throw new RangeError(`window ${i} does not exist (${indices.length} windows)`);
    return j;
  };
  const base: TokenWindows = { count: indices.length, seq: w.seq, tokens: w.tokens, inputs: (i) => w.inputs(pick(i)), targets: (i) => w.targets(pick(i)) };
  if (!('positions' in w)) return base as W;
  const c = w as unknown as ClassWindows;
  const cw: ClassWindows = {
    ...base,
    positions: Int32Array.from(indices, (j) => c.positions[j]!),
    labelTokens: Int32Array.from(indices, (j) => c.labelTokens[j]!),
    labelIds: c.labelIds,
    labelNames: c.labelNames,
  };
  return cw as unknown as W;
}

export interface TaskData {
  task: TaskSpec;
  /** Training windows (every 10th held back as the validation split). */
  train: TokenWindows | ClassWindows;
  /** From the training file, never trained on: the learning rate is chosen here. */
  validation: TokenWindows | ClassWindows;
  /** The held-out file: every reported quality. */
  test: TokenWindows | ClassWindows;
  /** Paths the analysis reads (the training file) and its label spec. */
  trainPath: string;
  seq: number;
}

/** Every 10th window (9, 19, …) is validation; the rest train. */
export function splitValidation(count: number): { train: number[]; validation: number[] } {
  const train: number[] = [];
  const validation: number[] = [];
  for (let i = 0; i < count; i++) (i % 10 === 9 ? validation : train).push(i);
  return { train, validation };
}

export async function loadTaskData(platform: Platform, files: ModelFiles, dataDir: string, task: TaskSpec, seq: number): Promise<TaskData> {
  const path = (p: string) => `${dataDir.replace(/\/$/, '')}/${p}`;
  let all: TokenWindows | ClassWindows;
  let test: TokenWindows | ClassWindows;
  if (task.kind === 'lm') {
    all = lmWindows(await loadTokens(platform, path(task.train), files), seq, path(task.train));
    test = lmWindows(await loadTokens(platform, path(task.heldout), files), seq, path(task.heldout));
  } else {
    const prep = async (p: string) => {
      const rows = parseClassificationJsonl(decodeText(await platform.readBytes(p)), p);
      const d = prepareClassificationData(rows, files.tokenizer!, { labels: task.labels!, seq, nPositions: files.config.nPositions, source: p });
      return classWindows(d.examples, d.T, d.labelTokens!);
    };
    all = await prep(path(task.train));
    test = await prep(path(task.heldout));
  }
  const split = splitValidation(all.count);
  return { task, train: selectWindows(all, split.train), validation: selectWindows(all, split.validation), test, trainPath: path(task.train), seq };
}
