// Random GPT-2 weights for benchmarks and tests (no downloads): GPT-2's init, N(0, 0.02) matrices
// and embeddings, zero biases, unit norm gains; a seeded generator so runs are reproducible.
import type { ModelConfig } from './config.ts';
import { paramSpecs } from './params.ts';
import { mulberry32 } from '../util/random.ts';

export function randomParams(cfg: ModelConfig, seed = 1, std = 0.02, opts: { scaleResidualProjections?: boolean } = {}): Map<string, Float32Array> {
  const uniform = mulberry32(seed);
  const out = new Map<string, Float32Array>();
  for (const spec of paramSpecs(cfg)) {
    const x = new Float32Array(spec.numel);
    if (spec.role === 'norm') x.fill(spec.name.endsWith('.weight') ? 1 : 0);
    else if (spec.role !== 'bias') {
      // GPT-2's paper: projections into the residual stream start 1/√(2N) smaller, so that the
      // stream's variance does not grow with depth (what pretraining from scratch uses).
      const scaled = opts.scaleResidualProjections && spec.role === 'matrix' && spec.name.endsWith('.c_proj.weight');
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
