// Model configuration: the shape every other module (layouts, kernels, cost model) is computed from.
// Parsed from Hugging Face's config.json. GPT-2 today; the fields that Llama/Qwen2 add later
// (norm kind, rotary, gated MLP, kv heads) get their own members rather than overloading these.

export interface ModelConfig {
  /** Hugging Face `model_type` (only 'gpt2' is implemented). */
  modelType: 'gpt2';
  /** N: transformer blocks. */
  nLayer: number;
  /** d: width of the residual stream. */
  nEmbd: number;
  nHead: number;
  /** Width of the MLP's hidden layer (GPT-2: n_inner or 4·d). */
  nInner: number;
  vocabSize: number;
  /** Longest sequence the position embedding covers. */
  nPositions: number;
  layerNormEpsilon: number;
  /** 'gelu_new' and friends: GPT-2's tanh approximation. */
  activation: 'gelu_tanh';
  /** LM head shares the token embedding's storage. */
  tiedHead: boolean;
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
  if (modelType !== 'gpt2') throw new ConfigError(file, `model_type '${String(modelType)}' is not supported (supported: gpt2)`);

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
export function configToJson(cfg: ModelConfig, extra: Record<string, unknown> = {}): string {
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
  return cfg.nEmbd / cfg.nHead;
}
