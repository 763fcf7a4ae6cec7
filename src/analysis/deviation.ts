// CPU reference / fallback for the deviation per latent space (method.md section 3), in float64.
//
// Input: hidden states per latent space k = 0..N, each [positions, d] row-major, ALREADY passed through
// the final norm if the analysis applies it (method.md section 1: default, every space is normed; use
// `finalNormCpu` below for that on the CPU path). Output: D_0..D_N.
//
// Definitions (the GPU reducer must implement exactly these):
//   cos(a, b) = a·b / (‖a‖·‖b‖), and 0 when ‖a‖·‖b‖ = 0 (zero vector: no direction, no similarity).
//   cosine      D_k = mean_p (1 − cos(h_k,p, s_{y_p}))                                ∈ [0, 2]
//   contrastive D_k = mean_p (max_{j∈C} cos(h_k,p, s_j) − cos(h_k,p, s_{y_p}))       ∈ [0, 2]
//               C = the label tokens; every y_p must be in C (error otherwise) and the max runs over all
//               of C, y_p included: a position adds 0 when its target is (one of) the closest labels.
//   lens        D_k = mean_p (logsumexp_v (W·h_k,p)_v − (W·h_k,p)_{y_p})   (cross-entropy of softmax(W·h))
// Non-finite hidden values are an error naming the space and position.

import { basisRow, basisRows } from './cholesky.ts';
import { AnalysisError, type DeviationReducer, type DeviationRequest, type DeviationResult, type TokenBases } from './types.ts';

/** Hidden states: N+1 arrays (latent spaces 0..N), each [positions, d] row-major. */
export type HiddenStates = ReadonlyArray<ArrayLike<number>>;

/** The LM head for `lens`: W [vocab, d] row-major (no bias: GPT-2's head has none). */
export interface LensHead {
  W: ArrayLike<number>;
  vocab: number;
}

/** Split one flat [nSpaces, positions, d] array into per-space views (no copy for typed arrays). */
export function splitSpaces(flat: Float32Array | Float64Array, nSpaces: number, positions: number, d: number): HiddenStates {
  if (flat.length !== nSpaces * positions * d) {
    throw new AnalysisError(`splitSpaces: expected ${nSpaces}×${positions}×${d} = ${nSpaces * positions * d} values, got ${flat.length}`);
  }
  const per = positions * d;
  return Array.from({ length: nSpaces }, (_, k) => flat.subarray(k * per, (k + 1) * per));
}

/**
 * LayerNorm of each row (CPU path for "apply the final norm to every space"): y = (x − μ)/√(σ² + eps)·γ + β,
 * σ² the biased variance (as GPT-2 / PyTorch). Returns float64 [positions, d].
 */
export function finalNormCpu(x: ArrayLike<number>, positions: number, d: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number): Float64Array {
  if (x.length !== positions * d) throw new AnalysisError(`finalNormCpu: expected ${positions}×${d} values, got ${x.length}`);
  if (gamma.length !== d || beta.length !== d) throw new AnalysisError(`finalNormCpu: gamma/beta must have ${d} entries`);
  const out = new Float64Array(positions * d);
  for (let p = 0; p < positions; p++) {
    const o = p * d;
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[o + i];
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) {
      const c = x[o + i] - mean;
      v += c * c;
    }
    const rstd = 1 / Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++) out[o + i] = (x[o + i] - mean) * rstd * gamma[i] + beta[i];
  }
  return out;
}

function norm(a: ArrayLike<number>, o: number, d: number): number {
  let s = 0;
  for (let i = 0; i < d; i++) s += a[o + i] * a[o + i];
  return Math.sqrt(s);
}

function dot(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, d: number): number {
  let s = 0;
  for (let i = 0; i < d; i++) s += a[ao + i] * b[bo + i];
  return s;
}

function cosOf(dotv: number, na: number, nb: number): number {
  const den = na * nb;
  return den > 0 ? dotv / den : 0;
}

interface Shape {
  nSpaces: number;
  positions: number;
  d: number;
}

function checkShape(hidden: HiddenStates, req: DeviationRequest, d: number): Shape {
  const nSpaces = hidden.length;
  if (nSpaces < 2) throw new AnalysisError(`deviations: need latent spaces 0..N with N ≥ 1 (got ${nSpaces} space(s))`);
  const positions = req.targets.length;
  if (positions === 0) throw new AnalysisError('deviations: no positions to analyse (targets is empty)');
  for (let k = 0; k < nSpaces; k++) {
    if (hidden[k].length !== positions * d) {
      throw new AnalysisError(`deviations: latent space ${k} has ${hidden[k].length} values, expected positions ${positions} × d ${d} = ${positions * d}`);
    }
  }
  for (let k = 0; k < nSpaces; k++) {
    const h = hidden[k];
    for (let i = 0; i < h.length; i++) {
      if (!Number.isFinite(h[i])) {
        throw new AnalysisError(`deviations: latent space ${k}, position ${Math.floor(i / d)}, component ${i % d} is not finite (${h[i]})`);
      }
    }
  }
  return { nSpaces, positions, d };
}

function summarise(metric: DeviationRequest['metric'], perPos: Float64Array[], positions: number): DeviationResult {
  const deviations: number[] = [];
  const stderr: number[] = [];
  for (const v of perPos) {
    let m = 0;
    for (let p = 0; p < positions; p++) m += v[p];
    m /= positions;
    let s = 0;
    for (let p = 0; p < positions; p++) s += (v[p] - m) * (v[p] - m);
    deviations.push(m);
    stderr.push(positions > 1 ? Math.sqrt(s / (positions - 1) / positions) : 0);
  }
  return { metric, deviations, positions, stderr };
}

/**
 * Per-position deviation values, [nSpaces][positions] (the mean of each row is D_k). Exposed for tests
 * and for GPU parity checks at position granularity.
 */
export function deviationsPerPosition(hidden: HiddenStates, req: DeviationRequest, lens?: LensHead): Float64Array[] {
  const metric = req.metric;
  if (metric === 'lens') return lensPerPosition(hidden, req, lens);
  if (metric !== 'cosine' && metric !== 'contrastive') throw new AnalysisError(`deviations: unknown metric '${String(metric)}' (known: cosine, contrastive, lens)`);
  const bases = req.bases;
  if (!bases) throw new AnalysisError(`deviations: metric '${metric}' needs the bases of the targets (request.bases)`);
  const { nSpaces, positions, d } = checkShape(hidden, req, bases.d);
  const targetRows = basisRows(bases, req.targets);
  const bNorm = new Float64Array(bases.tokens.length);
  for (let r = 0; r < bNorm.length; r++) bNorm[r] = norm(bases.data, r * d, d);

  let labelRows: Int32Array = new Int32Array(0);
  if (metric === 'contrastive') {
    const labels = req.labels;
    if (!labels || labels.length === 0) throw new AnalysisError(`deviations: metric 'contrastive' needs the label tokens C (request.labels)`);
    const labelSet = new Set<number>(Array.from(labels));
    for (let p = 0; p < positions; p++) {
      if (!labelSet.has(req.targets[p])) {
        throw new AnalysisError(`deviations: contrastive target ${req.targets[p]} at position ${p} is not among the label tokens C = {${[...labelSet].join(', ')}}`);
      }
    }
    labelRows = basisRows(bases, [...labelSet].sort((a, b) => a - b), 'label');
  }

  const out: Float64Array[] = [];
  for (let k = 0; k < nSpaces; k++) {
    const h = hidden[k];
    const v = new Float64Array(positions);
    for (let p = 0; p < positions; p++) {
      const ho = p * d;
      const hn = norm(h, ho, d);
      const ry = targetRows[p];
      const cy = cosOf(dot(h, ho, bases.data, ry * d, d), hn, bNorm[ry]);
      if (metric === 'cosine') {
        v[p] = 1 - cy;
      } else {
        let best = -Infinity;
        for (const r of labelRows) {
          const c = r === ry ? cy : cosOf(dot(h, ho, bases.data, r * d, d), hn, bNorm[r]);
          if (c > best) best = c;
        }
        v[p] = best - cy;
      }
    }
    out.push(v);
  }
  return out;
}

function lensPerPosition(hidden: HiddenStates, req: DeviationRequest, lens?: LensHead): Float64Array[] {
  if (!lens) throw new AnalysisError(`deviations: metric 'lens' needs the LM head W (lens argument)`);
  const V = lens.vocab;
  if (!(V > 0) || lens.W.length % V !== 0) throw new AnalysisError(`deviations: lens head W has ${lens.W.length} values, not a multiple of vocab ${V}`);
  const d = lens.W.length / V;
  const { nSpaces, positions } = checkShape(hidden, req, d);
  for (let p = 0; p < positions; p++) {
    const y = req.targets[p];
    if (!Number.isInteger(y) || y < 0 || y >= V) throw new AnalysisError(`deviations: target ${y} at position ${p} is outside the vocabulary [0, ${V})`);
  }
  const W = lens.W;
  const logits = new Float64Array(V);
  const out: Float64Array[] = [];
  for (let k = 0; k < nSpaces; k++) {
    const h = hidden[k];
    const v = new Float64Array(positions);
    for (let p = 0; p < positions; p++) {
      const ho = p * d;
      let mx = -Infinity;
      for (let t = 0; t < V; t++) {
        const z = dot(W, t * d, h, ho, d);
        logits[t] = z;
        if (z > mx) mx = z;
      }
      let s = 0;
      for (let t = 0; t < V; t++) s += Math.exp(logits[t] - mx);
      v[p] = mx + Math.log(s) - logits[req.targets[p]];
    }
    out.push(v);
  }
  return out;
}

/** D_0..D_N on the CPU (float64). `lens` is required for metric 'lens' only. */
export function computeDeviationsCpu(hidden: HiddenStates, req: DeviationRequest, lens?: LensHead): DeviationResult {
  const per = deviationsPerPosition(hidden, req, lens);
  return summarise(req.metric, per, req.targets.length);
}

/** The CPU reference as a DeviationReducer (same interface as the GPU one). */
export class CpuDeviationReducer implements DeviationReducer {
  readonly name = 'cpu-f64';
  constructor(
    private readonly hidden: HiddenStates,
    private readonly lens?: LensHead,
  ) {}

  reduce(request: DeviationRequest): Promise<DeviationResult> {
    return Promise.resolve(computeDeviationsCpu(this.hidden, request, this.lens));
  }
}

/** Whether `bases` holds every token in `tokens` (a precondition the GPU reducer may want to check). */
export function basesCover(bases: TokenBases, tokens: ArrayLike<number>): boolean {
  for (let i = 0; i < tokens.length; i++) if (basisRow(bases, tokens[i]) < 0) return false;
  return true;
}
