// Model shapes for tests that need a config but no weights.
import type { ModelConfig } from '../../src/model/config.ts';

/** GPT-2 small's config, with overrides (n_inner follows n_embd). */
export function gpt2Config(over: Partial<ModelConfig> = {}): ModelConfig {
  const nEmbd = over.nEmbd ?? 768;
  return {
    modelType: 'gpt2',
    nLayer: 12,
    nEmbd,
    nHead: 12,
    nInner: 4 * nEmbd,
    vocabSize: 50257,
    nPositions: 1024,
    layerNormEpsilon: 1e-5,
    activation: 'gelu_tanh',
    tiedHead: true,
    ...over,
  };
}
