// A Hugging Face model directory (config.json, model.safetensors or a sharded checkpoint,
// tokenizer.json) read through the platform and checked against the config's parameter layout before
// anything is allocated; weights are read by ranges, tensor by tensor, then uploaded to the GPU once.
import type { Runtime } from '../gpu/runtime.ts';
import { isFloatDtype, SafetensorsReader, type TensorSource } from '../io/safetensors.ts';
import { openSharded } from '../io/sharded.ts';
import type { Platform } from '../platform/types.ts';
import { Tokenizer } from '../tokenizer/bpe.ts';
import { decodeText } from '../util/utf8.ts';
import type { ModelConfig } from './config.ts';
import { modelFile as join, readModelConfig } from './config-file.ts';
import { ModelLoadError, checkFiniteTensor } from './errors.ts';
import { canonicalName, embeddingName, hfName, paramSpecs, type ParamSpec } from './params.ts';

export { ModelLoadError } from './errors.ts';

export interface ModelFiles {
  dir: string;
  config: ModelConfig;
  /** config.json text, so checkpoints keep its other fields. */
  configJson: string;
  /** Header-only until read: tensors are read by hostParams. */
  weights: TensorSource;
  tokenizer: Tokenizer | null;
  /** tokenizer.json text, kept so checkpoints can copy it unchanged. */
  tokenizerJson: string | null;
}

/** Hugging Face's index of a sharded checkpoint, read when model.safetensors is absent. */
export const SHARD_INDEX = 'model.safetensors.index.json';

const isMissing = (e: unknown) => /: (no such file|HTTP 404)$/.test((e as Error).message);

async function readOptional(platform: Platform, path: string): Promise<Uint8Array | null> {
  try {
    return await platform.readBytes(path);
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}

export async function readModelDir(platform: Platform, dir: string, weightsFile = 'model.safetensors'): Promise<ModelFiles> {
  const { config, configJson: configText } = await readModelConfig(platform, dir);
  const configPath = join(dir, 'config.json');
  const weights = await openWeights(platform, dir, weightsFile);
  try {
    checkWeights(config, weights, configPath);
    const tokPath = join(dir, 'tokenizer.json');
    const tokBytes = await readOptional(platform, tokPath);
    let tokenizer: Tokenizer | null = null;
    let tokenizerJson: string | null = null;
    if (tokBytes) {
      tokenizerJson = decodeText(tokBytes);
      let json: unknown;
      try {
        json = JSON.parse(tokenizerJson);
      } catch (e) {
        throw new ModelLoadError(`${tokPath}: not valid JSON (${(e as Error).message})`);
      }
      tokenizer = Tokenizer.fromJSON(json, tokPath);
    }
    return { dir, config, configJson: configText, weights, tokenizer, tokenizerJson };
  } catch (e) {
    await weights.close();
    throw e;
  }
}

/** DIR/weightsFile read by ranges, or, when DIR/model.safetensors is absent, the shards its index names. */
async function openWeights(platform: Platform, dir: string, weightsFile: string): Promise<TensorSource> {
  const open = (file: string) => {
    const path = join(dir, file);
    return SafetensorsReader.open(path, () => platform.openFile(path));
  };
  try {
    return await open(weightsFile);
  } catch (e) {
    if (weightsFile !== 'model.safetensors' || !isMissing(e)) throw e;
    const indexPath = join(dir, SHARD_INDEX);
    const index = await readOptional(platform, indexPath);
    if (!index) throw new ModelLoadError(`${(e as Error).message} (nor is there a ${SHARD_INDEX} for a sharded checkpoint)`);
    return openSharded(indexPath, index, open);
  }
}

// Causal-mask buffers that older transformers versions saved with GPT-2 weights; not parameters.
const MASK_BUFFER = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/**
 * The weights must be exactly the model config.json describes, checked from the headers before any
 * tensor is read: every parameter present once with its shape and a float dtype, no block beyond
 * n_layer, no tensor the model would ignore. Returns each parameter's stored name.
 */
export function checkWeights(config: ModelConfig, weights: Pick<TensorSource, 'source' | 'tensors' | 'fileOf'>, configPath = 'config.json'): Map<string, string> {
  const fail = (file: string, problem: string): never => { throw new ModelLoadError(`${file}: ${problem}`); };
  const stored = new Map<string, string>();
  let lastBlock = -1;
  let lastBlockTensor = '';
  for (const name of weights.tensors.keys()) {
    const canonical = canonicalName(name, config);
    const twin = stored.get(canonical);
    if (twin !== undefined) fail(weights.fileOf(name), `holds both '${twin}' and '${name}', the same parameter twice`);
    stored.set(canonical, name);
    const block = Number((config.arch ? /^layers\.(\d+)\./ : /^h\.(\d+)\./).exec(canonical)?.[1] ?? -1);
    if (block > lastBlock) [lastBlock, lastBlockTensor] = [block, name];
  }
  const bp = config.arch ? 'layers' : 'h';
  const nLayerKey = config.arch ? 'num_hidden_layers' : 'n_layer';
  const blocks = (n: number) => (n === 0 ? 'no blocks' : `${n} block${n === 1 ? '' : 's'} (${bp}.0..${bp}.${n - 1})`);
  if (lastBlock >= config.nLayer) {
    fail(weights.fileOf(lastBlockTensor), `has ${blocks(lastBlock + 1)} (e.g. '${lastBlockTensor}') but ${configPath} says ${nLayerKey} ${config.nLayer}`);
  }
  const specs = paramSpecs(config);
  for (const spec of specs) {
    const name = stored.get(spec.name);
    if (name === undefined) {
      if (spec.block >= 0 && spec.block < config.nLayer && spec.block > lastBlock) {
        fail(weights.source, `has ${blocks(lastBlock + 1)} but ${configPath} says ${nLayerKey} ${config.nLayer} (no '${spec.name}')`);
      }
      const why = spec.name === 'lm_head.weight' ? 'tie_word_embeddings false' : `${nLayerKey} ${config.nLayer}`;
      const some = [...weights.tensors.keys()].slice(0, 5).join(', ');
      fail(weights.source, `missing tensor '${spec.name}' (or '${hfName(spec.name, config)}') required by ${configPath} (${why}); the weights have ${weights.tensors.size} tensors, e.g. ${some}`);
    }
    const info = weights.tensors.get(name!)!;
    const same = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
    if (!same) fail(weights.fileOf(name!), `tensor '${name}' has shape [${info.shape.join(', ')}], expected [${spec.shape.join(', ')}] from ${configPath}`);
    if (!isFloatDtype(info.dtype)) fail(weights.fileOf(name!), `tensor '${name}' has dtype ${info.dtype}; weights must be F32, F16, BF16 or F64`);
  }
  const expected = new Set(specs.map((s) => s.name));
  for (const [canonical, name] of stored) {
    if (expected.has(canonical) || MASK_BUFFER.test(canonical)) continue;
    if (canonical === 'lm_head.weight') {
      fail(weights.fileOf(name), `has '${name}' but ${configPath} ties the LM head to ${embeddingName(config)} (tie_word_embeddings true), so it would be ignored; set tie_word_embeddings to false to use it`);
    }
    // HF's rotary inv_freq buffer is recomputed from the config, never a parameter.
    if (config.arch && /^layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(canonical)) continue;
    fail(weights.fileOf(name), `tensor '${name}' is not a parameter of the ${config.modelType === 'gpt2' ? 'GPT-2' : `${config.modelType} model`} that ${configPath} describes (${nLayerKey} ${config.nLayer}); semfreeze will not ignore weights silently`);
  }
  return stored;
}

/**
 * Host float32 copies of every parameter, read tensor by tensor straight into their arrays (the file
 * is never held whole beside them); the weights' files are closed afterwards.
 */
export async function hostParams(files: Pick<ModelFiles, 'config' | 'weights'>): Promise<Map<string, Float32Array>> {
  const { config, weights } = files;
  const stored = checkWeights(config, weights);
  const out = new Map<string, Float32Array>();
  try {
    for (const spec of paramSpecs(config)) {
      const name = stored.get(spec.name)!;
      const values = await weights.readFloat32(name);
      checkFiniteTensor(weights.fileOf(name), name, values);
      out.set(spec.name, values);
    }
  } finally {
    await weights.close();
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
    return this.cfg.tiedHead ? this.get(embeddingName(this.cfg)) : this.get('lm_head.weight');
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
