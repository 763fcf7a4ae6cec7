// Random weights for benchmarks and tests (no downloads), for GPT-2 and the Llama family (Llama, Qwen2,
// Gemma2): N(0, std) matrices and embeddings (GPT-2's and transformers' init, initializer_range 0.02 by
// default), zero biases, norms at identity: LayerNorm γ 1 and β 0, RMSNorm weight 1 (x·w), Gemma's
// RMSNorm weight 0 (x·(1 + w)). A seeded generator so runs are reproducible; GPT-2's draws are the
// same as before the family joined.
import { parseConfig, type ModelConfig } from './config.ts';
import { paramSpecs } from './params.ts';
import { mulberry32 } from '../util/random.ts';

/** Projections that write into the residual stream: GPT-2's c_proj, the family's o_proj and down_proj. */
const RESIDUAL_PROJECTION = /\.(c_proj|o_proj|down_proj)\.weight$/;

export function randomParams(cfg: ModelConfig, seed = 1, std = 0.02, opts: { scaleResidualProjections?: boolean } = {}): Map<string, Float32Array> {
  const uniform = mulberry32(seed);
  const out = new Map<string, Float32Array>();
  // Identity norms: Gemma scales by (1 + w), so its identity is w = 0.
  const normWeight = cfg.arch?.norm === 'rmsnorm1p' ? 0 : 1;
  for (const spec of paramSpecs(cfg)) {
    const x = new Float32Array(spec.numel);
    if (spec.role === 'norm') x.fill(spec.name.endsWith('.weight') ? normWeight : 0);
    else if (spec.role !== 'bias') {
      // GPT-2's paper: projections into the residual stream start 1/√(2N) smaller, so that the
      // stream's variance does not grow with depth (what pretraining from scratch uses).
      const scaled = opts.scaleResidualProjections && spec.role === 'matrix' && RESIDUAL_PROJECTION.test(spec.name);
      const s = scaled ? std / Math.sqrt(2 * cfg.nLayer) : std;
      // Irwin–Hall approximation of a normal: cheap enough for 124M values.
      for (let i = 0; i < x.length; i++) x[i] = (uniform() + uniform() + uniform() + uniform() - 2) * s * 1.7320508;
    }
    out.set(spec.name, x);
  }
  return out;
}

/** GPT-2 small's shape (124M parameters). */
export function gpt2SmallConfig(): ModelConfig {
  return { modelType: 'gpt2', nLayer: 12, nEmbd: 768, nHead: 12, nInner: 3072, vocabSize: 50257, nPositions: 1024, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true };
}

/**
 * A Llama-family config from Hugging Face config.json fields (what loading that config.json gives:
 * parsed by parseConfig, so every default and check is the loader's).
 */
export function decoderConfig(fields: Record<string, unknown>): ModelConfig {
  return parseConfig(JSON.stringify(fields), `${String(fields.model_type ?? 'llama')} config`);
}

/**
 * SmolLM2-135M's shape (134.5M parameters): LlamaForCausalLM, 30 blocks, hidden 576, 9 heads, 3 kv
 * heads, head_dim 64, intermediate 1536 (SwiGLU), vocab 49152, tied embeddings, rope_theta 100000,
 * rms_norm_eps 1e-5, 8192 positions.
 */
export function smolLM2_135MConfig(): ModelConfig {
  return decoderConfig({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    num_hidden_layers: 30,
    hidden_size: 576,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    head_dim: 64,
    intermediate_size: 1536,
    hidden_act: 'silu',
    vocab_size: 49152,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 100000,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: true,
  });
}
