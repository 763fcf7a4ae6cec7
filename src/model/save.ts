// A model as the files Hugging Face loads (config.json, model.safetensors with GPT2LMHeadModel names,
// tokenizer.json copied unchanged): bytes only, so the CLI's crash-safe checkpoint writer and the
// page's download share them.
import { serializeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import { configToJson, type ModelConfig } from './config.ts';
import { hfName, paramSpecs } from './params.ts';

export interface HfFile {
  name: 'config.json' | 'model.safetensors' | 'tokenizer.json';
  /** Text, or bytes in parts (a safetensors header then the tensors, never copied into one buffer). */
  data: string | Uint8Array | Uint8Array[];
}

export interface HfModelContents {
  config: ModelConfig;
  /** The input model's config.json text: its other fields (token ids, dropout, …) are kept. */
  configJson?: string | null;
  params: Map<string, Float32Array>;
  tokenizerJson: string | null;
}

/** Fields of the input config.json that ours does not set (bos/eos ids, dropout, task params…). */
export function originalFields(text: string | null | undefined): Record<string, unknown> {
  if (!text) return {};
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    return typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? raw : {};
  } catch {
    return {};
  }
}

export function hfModelFiles(c: HfModelContents): HfFile[] {
  const tensors: TensorToWrite[] = paramSpecs(c.config).map((s) => ({ name: hfName(s.name, c.config), dtype: 'F32', shape: s.shape, data: c.params.get(s.name)! }));
  return [
    { name: 'config.json', data: configToJson(c.config, originalFields(c.configJson), c.configJson ?? undefined) },
    { name: 'model.safetensors', data: serializeSafetensors(tensors, { format: 'pt' }) },
    ...(c.tokenizerJson ? [{ name: 'tokenizer.json' as const, data: c.tokenizerJson }] : []),
  ];
}
