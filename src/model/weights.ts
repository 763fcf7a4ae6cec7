// A Hugging Face model directory (config.json, model.safetensors, tokenizer.json) read through the
// platform, checked against the config's parameter layout, and uploaded to the GPU once.
import type { Runtime } from '../gpu/runtime.ts';
import { parseSafetensors, type SafetensorsFile } from '../io/safetensors.ts';
import type { Platform } from '../platform/types.ts';
import { Tokenizer } from '../tokenizer/bpe.ts';
import type { ModelConfig } from './config.ts';
import { modelFile as join, readModelConfig } from './config-file.ts';
import { ModelLoadError, checkFiniteTensor } from './errors.ts';
import { canonicalName, paramSpecs, type ParamSpec } from './params.ts';

export { ModelLoadError } from './errors.ts';

export interface ModelFiles {
  dir: string;
  config: ModelConfig;
  /** config.json text, so checkpoints keep its other fields. */
  configJson: string;
  weights: SafetensorsFile;
  tokenizer: Tokenizer | null;
  /** tokenizer.json text, kept so checkpoints can copy it unchanged. */
  tokenizerJson: string | null;
}

async function readOptional(platform: Platform, path: string): Promise<Uint8Array | null> {
  try {
    return await platform.readBytes(path);
  } catch (e) {
    if (/no such file|HTTP 404/.test((e as Error).message)) return null;
    throw e;
  }
}

export async function readModelDir(platform: Platform, dir: string, weightsFile = 'model.safetensors'): Promise<ModelFiles> {
  const { config, configJson: configText } = await readModelConfig(platform, dir);
  const weightsPath = join(dir, weightsFile);
  const weights = parseSafetensors(await platform.readBytes(weightsPath), weightsPath);
  const tokPath = join(dir, 'tokenizer.json');
  const tokBytes = await readOptional(platform, tokPath);
  let tokenizer: Tokenizer | null = null;
  let tokenizerJson: string | null = null;
  if (tokBytes) {
    tokenizerJson = new TextDecoder().decode(tokBytes);
    let json: unknown;
    try {
      json = JSON.parse(tokenizerJson);
    } catch (e) {
      throw new ModelLoadError(`${tokPath}: not valid JSON (${(e as Error).message})`);
    }
    tokenizer = Tokenizer.fromJSON(json, tokPath);
  }
  return { dir, config, configJson: configText, weights, tokenizer, tokenizerJson };
}

/** Host float32 copies of every parameter, checked against the layout (names and shapes). */
export function hostParams(files: Pick<ModelFiles, 'config' | 'weights'>): Map<string, Float32Array> {
  const { config, weights } = files;
  const byName = new Map<string, string>();
  for (const name of weights.tensors.keys()) byName.set(canonicalName(name), name);
  const out = new Map<string, Float32Array>();
  for (const spec of paramSpecs(config)) {
    const stored = byName.get(spec.name);
    if (!stored) {
      const some = [...weights.tensors.keys()].slice(0, 5).join(', ');
      throw new ModelLoadError(`${weights.source}: missing tensor '${spec.name}' (or 'transformer.${spec.name}') required by config (n_layer ${config.nLayer}); the file has ${weights.tensors.size} tensors, e.g. ${some}`);
    }
    const info = weights.tensors.get(stored)!;
    const same = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
    if (!same) throw new ModelLoadError(`${weights.source}: tensor '${stored}' has shape [${info.shape.join(', ')}], expected [${spec.shape.join(', ')}] from config.json`);
    out.set(spec.name, weights.getFloat32(stored));
    checkFiniteTensor(weights.source, stored, out.get(spec.name)!);
  }
  return out;
}

/** The model's parameters on the GPU, one buffer per tensor, named `param.<name>`. */
export class GpuWeights {
  private constructor(
    readonly cfg: ModelConfig,
    readonly specs: ParamSpec[],
    readonly buffers: Map<string, GPUBuffer>,
  ) {}

  static upload(rt: Runtime, cfg: ModelConfig, params: Map<string, Float32Array>): GpuWeights {
    const specs = paramSpecs(cfg);
    const buffers = new Map<string, GPUBuffer>();
    for (const spec of specs) {
      const data = params.get(spec.name);
      if (!data || data.length !== spec.numel) throw new ModelLoadError(`parameter '${spec.name}': expected ${spec.numel} values, got ${data?.length ?? 0}`);
      buffers.set(spec.name, rt.memory.upload(`param.${spec.name}`, data));
    }
    return new GpuWeights(cfg, specs, buffers);
  }

  get(name: string): GPUBuffer {
    const b = this.buffers.get(name);
    if (!b) throw new Error(`no parameter '${name}'`);
    return b;
  }

  /** The LM head's weight [V, C]: the token embedding when tied. */
  get head(): GPUBuffer {
    return this.cfg.tiedHead ? this.get('wte.weight') : this.get('lm_head.weight');
  }

  /** Read every parameter back (for checkpoints). */
  async download(rt: Runtime): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const spec of this.specs) out.set(spec.name, await rt.memory.readFloat32(this.get(spec.name), 0, spec.numel));
    return out;
  }

  destroy(rt: Runtime): void {
    for (const b of this.buffers.values()) rt.memory.destroy(b);
    this.buffers.clear();
  }
}
