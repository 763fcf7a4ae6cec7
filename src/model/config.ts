// Model configuration: the shape every other module (layouts, kernels, cost model) is computed from.
// Parsed from Hugging Face's config.json: GPT-2, and the Llama family's decoders (Llama, Qwen2,
// Gemma2), whose differences from GPT-2 (norm kind, rotary positions, gated MLP, kv heads, soft-capping,
// sliding windows) live in `arch` rather than overloading GPT-2's members.

export type ModelType = 'gpt2' | 'llama' | 'qwen2' | 'gemma2';
export const MODEL_TYPES: readonly ModelType[] = ['gpt2', 'llama', 'qwen2', 'gemma2'];

/** Llama 3's rope_scaling (the only scaled rotary kind supported). */
export interface RopeScaling {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** What a Llama-family decoder adds to GPT-2's shape. */
export interface DecoderArch {
  /** Key/value heads (grouped-query attention when < nHead). */
  nKvHead: number;
  /** Width of one attention head (not necessarily nEmbd / nHead). */
  headDim: number;
  /** RMSNorm scaled by w (Llama, Qwen2) or by 1 + w (Gemma). */
  norm: 'rmsnorm' | 'rmsnorm1p';
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Biases on q, k, v (Qwen2; Llama's attention_bias) and on o (Llama's attention_bias). */
  qkvBias: boolean;
  oBias: boolean;
  /** Biases on gate, up and down (Llama's mlp_bias). */
  mlpBias: boolean;
  /** The embedding output is multiplied by this (Gemma: √hidden, rounded to float32). */
  embedScale: number;
  /** Attention scores are multiplied by this (default 1/√headDim; Gemma2: query_pre_attn_scalar^−½). */
  attnScale: number;
  /** Gemma2: scores s → c·tanh(s/c) (0 = off). */
  attnSoftcap: number;
  /** Gemma2: logits z → c·tanh(z/c) (0 = off). */
  finalSoftcap: number;
  /** Keys a sliding layer attends to (query i: keys i−window < j ≤ i). */
  slidingWindow: number;
  /** Per block: full causal attention or the sliding window. */
  layerTypes: ('full' | 'sliding')[];
  /** Gemma2: norms after attention and after the MLP too (before each residual add). */
  postNorms: boolean;
}

export interface ModelConfig {
  /** Hugging Face `model_type`. */
  modelType: ModelType;
  /** N: transformer blocks. */
  nLayer: number;
  /** d: width of the residual stream. */
  nEmbd: number;
  nHead: number;
  /** Width of the MLP's hidden layer (GPT-2: n_inner or 4·d; Llama family: intermediate_size). */
  nInner: number;
  vocabSize: number;
  /** Longest sequence the position embedding covers (Llama family: max_position_embeddings). */
  nPositions: number;
  /** GPT-2: layer_norm_epsilon; Llama family: rms_norm_eps. */
  layerNormEpsilon: number;
  /** 'gelu_new' and friends: GPT-2's tanh approximation (Gemma2's gated MLP too); silu: Llama, Qwen2. */
  activation: 'gelu_tanh' | 'silu';
  /** LM head shares the token embedding's storage. */
  tiedHead: boolean;
  /** Llama family only (absent for GPT-2). */
  arch?: DecoderArch;
}

export class ConfigError extends Error {
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/**
 * Upper bounds far beyond any GPT-2-style model (GPT-3 175B: 96 layers, width 12288), so a corrupt
 * or mistyped config.json (n_layer 1e9) fails in one line before any layout is built or memory
 * allocated. What the weights actually hold is checked against the config by checkWeights.
 */
export const CONFIG_LIMITS = {
  n_layer: 4096,
  n_embd: 1 << 16,
  n_head: 1 << 16,
  n_inner: 1 << 20,
  vocab_size: 1 << 24,
  n_positions: 1 << 20,
} as const;

const TANH_GELUS = new Set(['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast', 'gelu']);

/**
 * Parse config.json text. `file` names the source in every error.
 * Note: HF's `gelu` is the exact erf form; GPT-2 checkpoints use `gelu_new`. We accept `gelu` with
 * the tanh kernel only because the two differ by < 1e-3 absolute; the name is kept for a later exact kernel.
 */
export function parseConfig(text: string, file = 'config.json'): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(file, 'expected a JSON object');
  const c = raw as Record<string, unknown>;
  const modelType = c.model_type ?? 'gpt2';
  if (!(MODEL_TYPES as readonly unknown[]).includes(modelType)) throw new ConfigError(file, `model_type '${String(modelType)}' is not supported (supported: ${MODEL_TYPES.join(', ')})`);
  if (modelType !== 'gpt2') return parseDecoderConfig(c, modelType as Exclude<ModelType, 'gpt2'>, file);

  const int = (key: keyof typeof CONFIG_LIMITS, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (v === undefined) throw new ConfigError(file, `missing '${key}'`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
    if (v > CONFIG_LIMITS[key]) throw new ConfigError(file, `'${key}' ${v} is beyond any GPT-2-style model (at most ${CONFIG_LIMITS[key]}); a corrupt config?`);
    return v;
  };
  const nLayer = int('n_layer');
  const nEmbd = int('n_embd');
  const nHead = int('n_head');
  if (nEmbd % nHead !== 0) throw new ConfigError(file, `n_embd ${nEmbd} is not divisible by n_head ${nHead}`);
  const nInner = c.n_inner === null || c.n_inner === undefined ? 4 * nEmbd : int('n_inner');
  const eps = c.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) throw new ConfigError(file, `'layer_norm_epsilon' must be a positive number`);
  const act = String(c.activation_function ?? 'gelu_new');
  if (!TANH_GELUS.has(act)) throw new ConfigError(file, `activation_function '${act}' is not supported (supported: ${[...TANH_GELUS].join(', ')})`);
  if (c.scale_attn_weights === false) throw new ConfigError(file, `scale_attn_weights false is not supported`);
  if (c.scale_attn_by_inverse_layer_idx === true) throw new ConfigError(file, `scale_attn_by_inverse_layer_idx true is not supported`);
  if (c.add_cross_attention === true) throw new ConfigError(file, `add_cross_attention true is not supported (decoder-only models)`);
  const tied = c.tie_word_embeddings ?? true;
  return {
    modelType: 'gpt2',
    nLayer,
    nEmbd,
    nHead,
    nInner,
    vocabSize: int('vocab_size'),
    nPositions: int('n_positions', typeof c.n_ctx === 'number' ? c.n_ctx : undefined),
    layerNormEpsilon: eps,
    activation: 'gelu_tanh',
    tiedHead: tied !== false,
  };
}

/** config.json for a checkpoint we write: `extra` (the input's own config.json) with our shape fields on top. */
export function configToJson(cfg: ModelConfig, extra: Record<string, unknown> = {}, originalText?: string): string {
  if (cfg.modelType !== 'gpt2') return decoderConfigToJson(cfg, extra, originalText);
  return JSON.stringify({
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    ...extra,
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    n_layer: cfg.nLayer,
    n_embd: cfg.nEmbd,
    n_head: cfg.nHead,
    n_inner: cfg.nInner === 4 * cfg.nEmbd ? null : cfg.nInner,
    vocab_size: cfg.vocabSize,
    n_positions: cfg.nPositions,
    n_ctx: cfg.nPositions,
    layer_norm_epsilon: cfg.layerNormEpsilon,
    activation_function: 'gelu_new',
    tie_word_embeddings: cfg.tiedHead,
    torch_dtype: 'float32',
  }, null, 2) + '\n';
}

export function headSize(cfg: ModelConfig): number {
  return cfg.arch?.headDim ?? cfg.nEmbd / cfg.nHead;
}

/** Key/value heads: nHead for GPT-2. */
export function kvHeads(cfg: ModelConfig): number {
  return cfg.arch?.nKvHead ?? cfg.nHead;
}

const ARCHITECTURES: Record<Exclude<ModelType, 'gpt2'>, string> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', gemma2: 'Gemma2ForCausalLM' };
const SILUS = new Set(['silu', 'swish']);

/**
 * Llama, Qwen2 and Gemma2 config.json (transformers 4.x and 5.x spellings: rope_theta/rope_scaling or
 * rope_parameters; layer_types or Gemma2's alternation). Anything that would change the computation
 * and is not implemented is refused by name.
 */
function parseDecoderConfig(c: Record<string, unknown>, modelType: Exclude<ModelType, 'gpt2'>, file: string): ModelConfig {
  const int = (key: string, limit: number, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (v === undefined || v === null) throw new ConfigError(file, `missing '${key}'`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
    if (v > limit) throw new ConfigError(file, `'${key}' ${v} is beyond any model of this kind (at most ${limit}); a corrupt config?`);
    return v;
  };
  const num = (key: string, fallback: number | null, positive = true): number | null => {
    const v = c[key] ?? fallback;
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isFinite(v) || (positive && !(v > 0))) throw new ConfigError(file, `'${key}' must be a ${positive ? 'positive ' : ''}number, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = c[key] ?? fallback;
    if (typeof v !== 'boolean') throw new ConfigError(file, `'${key}' must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const gemma = modelType === 'gemma2';
  const nLayer = int('num_hidden_layers', CONFIG_LIMITS.n_layer);
  const nEmbd = int('hidden_size', CONFIG_LIMITS.n_embd);
  const nHead = int('num_attention_heads', CONFIG_LIMITS.n_head);
  const nKvHead = int('num_key_value_heads', CONFIG_LIMITS.n_head, nHead);
  if (nHead % nKvHead !== 0) throw new ConfigError(file, `num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nKvHead}`);
  if (c.head_dim === undefined || c.head_dim === null) {
    if (gemma) throw new ConfigError(file, `missing 'head_dim'`);
    if (nEmbd % nHead !== 0) throw new ConfigError(file, `hidden_size ${nEmbd} is not divisible by num_attention_heads ${nHead}, and there is no head_dim`);
  }
  const headDim = int('head_dim', 4096, nEmbd / nHead);
  if (headDim % 2 !== 0) throw new ConfigError(file, `head_dim ${headDim} must be even (rotary embeddings rotate pairs)`);
  const nInner = int('intermediate_size', CONFIG_LIMITS.n_inner);
  const act = String(c[gemma ? 'hidden_activation' : 'hidden_act'] ?? c.hidden_act ?? (gemma ? 'gelu_pytorch_tanh' : 'silu'));
  let activation: ModelConfig['activation'];
  if (SILUS.has(act)) activation = 'silu';
  else if (TANH_GELUS.has(act)) activation = 'gelu_tanh';
  else throw new ConfigError(file, `${gemma ? 'hidden_activation' : 'hidden_act'} '${act}' is not supported (supported: silu, ${[...TANH_GELUS].join(', ')})`);

  // Rotary: transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; 4.x rope_theta + rope_scaling.
  const params = (c.rope_parameters ?? null) as Record<string, unknown> | null;
  const scalingRaw = (params && params.rope_type !== undefined && params.rope_type !== 'default' ? params : c.rope_scaling ?? null) as Record<string, unknown> | null;
  const ropeTheta = Number(params?.rope_theta ?? c.rope_theta ?? 10000);
  if (!(ropeTheta > 0)) throw new ConfigError(file, `rope_theta must be a positive number, got ${JSON.stringify(params?.rope_theta ?? c.rope_theta)}`);
  let ropeScaling: RopeScaling | null = null;
  if (scalingRaw && (scalingRaw.rope_type ?? scalingRaw.type) !== 'default') {
    const kind = scalingRaw.rope_type ?? scalingRaw.type;
    if (kind !== 'llama3') throw new ConfigError(file, `rope scaling '${String(kind)}' is not supported (supported: llama3, or none)`);
    const f = (k: string) => {
      const v = scalingRaw[k];
      if (typeof v !== 'number' || !(v > 0)) throw new ConfigError(file, `rope scaling '${k}' must be a positive number, got ${JSON.stringify(v)}`);
      return v;
    };
    ropeScaling = { ropeType: 'llama3', factor: f('factor'), lowFreqFactor: f('low_freq_factor'), highFreqFactor: f('high_freq_factor'), originalMaxPositionEmbeddings: f('original_max_position_embeddings') };
  }

  const slidingWindow = gemma || c.use_sliding_window === true ? int('sliding_window', 1 << 24, 4096) : 0;
  let layerTypes: ('full' | 'sliding')[];
  if (Array.isArray(c.layer_types)) {
    if (c.layer_types.length !== nLayer) throw new ConfigError(file, `layer_types has ${c.layer_types.length} entries, num_hidden_layers is ${nLayer}`);
    layerTypes = c.layer_types.map((t, i) => {
      if (t === 'full_attention') return 'full';
      if (t === 'sliding_attention') return 'sliding';
      throw new ConfigError(file, `layer_types[${i}] '${String(t)}' is not supported (full_attention, sliding_attention)`);
    });
  } else if (gemma) {
    layerTypes = Array.from({ length: nLayer }, (_, i) => ((i + 1) % 2 === 0 ? 'full' : 'sliding'));
  } else if (c.use_sliding_window === true) {
    throw new ConfigError(file, `use_sliding_window true without layer_types is not supported`);
  } else {
    layerTypes = Array.from({ length: nLayer }, () => 'full' as const);
  }
  if (layerTypes.includes('sliding') && !(slidingWindow > 0)) throw new ConfigError(file, `sliding layers need a positive sliding_window`);

  const attentionBias = bool('attention_bias', false);
  const qpas = gemma ? num('query_pre_attn_scalar', headDim)! : headDim;
  const arch: DecoderArch = {
    nKvHead,
    headDim,
    norm: gemma ? 'rmsnorm1p' : 'rmsnorm',
    ropeTheta,
    ropeScaling,
    qkvBias: modelType === 'qwen2' ? true : attentionBias,
    oBias: modelType === 'qwen2' ? false : attentionBias,
    mlpBias: modelType === 'llama' ? bool('mlp_bias', false) : false,
    embedScale: gemma ? Math.fround(Math.sqrt(nEmbd)) : 1,
    attnScale: 1 / Math.sqrt(qpas),
    attnSoftcap: gemma ? num('attn_logit_softcapping', null) ?? 0 : 0,
    finalSoftcap: gemma ? num('final_logit_softcapping', null) ?? 0 : 0,
    slidingWindow,
    layerTypes,
    postNorms: gemma,
  };
  return {
    modelType,
    nLayer,
    nEmbd,
    nHead,
    nInner,
    vocabSize: int('vocab_size', CONFIG_LIMITS.vocab_size),
    nPositions: int('max_position_embeddings', CONFIG_LIMITS.n_positions),
    layerNormEpsilon: num('rms_norm_eps', 1e-6)!,
    activation,
    tiedHead: bool('tie_word_embeddings', gemma),
    arch,
  };
}

/**
 * JSON.stringify writes 3.0 as 3, and transformers 5's strict configs refuse an int where a float is
 * declared (final_logit_softcapping, rope_theta, …): numbers that were floats in the input config.json
 * (by key) are written with a decimal point again. Pretty-printed JSON has one key per line.
 */
function keepFloats(json: string, originalText: string | undefined): string {
  if (!originalText) return json;
  const floatKeys = new Set<string>();
  for (const m of originalText.matchAll(/"([^"\\]+)"\s*:\s*-?\d+(?:\.\d*|(?:\.\d*)?[eE][-+]?\d+)/g)) floatKeys.add(m[1]!);
  return json.replace(/^(\s*"([^"\\]+)": )(-?\d+)(,?)$/gm, (line, head: string, key: string, num: string, comma: string) => (floatKeys.has(key) ? `${head}${num}.0${comma}` : line));
}

/** config.json of a Llama-family checkpoint we write: the input's fields, with the shape fields ours. */
function decoderConfigToJson(cfg: ModelConfig, extra: Record<string, unknown>, originalText?: string): string {
  const a = cfg.arch!;
  return keepFloats(JSON.stringify({
    ...extra,
    architectures: [ARCHITECTURES[cfg.modelType as Exclude<ModelType, 'gpt2'>]],
    model_type: cfg.modelType,
    num_hidden_layers: cfg.nLayer,
    hidden_size: cfg.nEmbd,
    num_attention_heads: cfg.nHead,
    num_key_value_heads: a.nKvHead,
    head_dim: a.headDim,
    intermediate_size: cfg.nInner,
    vocab_size: cfg.vocabSize,
    max_position_embeddings: cfg.nPositions,
    rms_norm_eps: cfg.layerNormEpsilon,
    tie_word_embeddings: cfg.tiedHead,
    // The weights we write are float32 (transformers 5 reads `dtype`, 4.x `torch_dtype`).
    ...('dtype' in extra ? { dtype: 'float32' } : {}),
    torch_dtype: 'float32',
  }, null, 2), originalText) + '\n';
}
