// The user's flags checked against each other and against the model's config.json before anything
// heavy happens (weights, GPU, analysis): a mistake costs a second, not a model load.
import type { ModelConfig } from '../model/config.ts';
import { readModelConfig } from '../model/config-file.ts';
import { nodePlatform } from '../platform/node.ts';
import { readResumeState } from './checkpoint.ts';
import { UserError } from './common.ts';

export async function modelConfig(dir: string): Promise<ModelConfig> {
  return (await readModelConfig(nodePlatform, dir)).config;
}

export function checkSeq(seq: number | undefined, cfg: ModelConfig): void {
  if (seq !== undefined && seq > cfg.nPositions) throw new UserError(`--seq ${seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
}

/** --freeze: none, auto, or a block count 0..N written in decimal digits. */
export function checkFreezeSyntax(text: string, nLayer: number): void {
  if (text === 'none' || text === 'auto') return;
  if (!/^\d+$/.test(text)) throw new UserError(`--freeze must be none, auto or a block count 0..${nLayer}, got '${text}'`);
  if (Number(text) > nLayer) throw new UserError(`--freeze ${text}: the model has only ${nLayer} blocks (0 ≤ K ≤ ${nLayer})`);
}

export interface FinetuneFlags {
  model: string;
  freeze: string;
  steps: number;
  seq: number;
  warmup: number;
  resume?: string;
}

/** Everything about `finetune`'s flags that can be known from config.json and the resume state alone. */
export async function validateFinetune(o: FinetuneFlags): Promise<void> {
  if (o.warmup > o.steps) throw new UserError(`--warmup ${o.warmup} exceeds --steps ${o.steps}: the learning rate would never reach its peak`);
  const cfg = await modelConfig(o.resume ?? o.model);
  checkSeq(o.seq, cfg);
  checkFreezeSyntax(o.freeze, cfg.nLayer);
  // A corrupt train-state.json or optimizer.safetensors is reported (naming the file) before the model loads.
  if (o.resume) await readResumeState(o.resume);
}
