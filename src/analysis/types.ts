// Shared types of the analysis (method.md sections 2-5), and the interfaces the GPU parts plug into.
//
// Division of work:
//  - GPU (elsewhere): the Gram matrix G = WᵀW (GramProvider) and the deviation reductions over the
//    transition trace (DeviationReducer). Only d×d numbers and N+1 numbers come back to the host.
//  - Host (here, src/analysis/): Cholesky + bases (cholesky.ts), a CPU reference DeviationReducer
//    (deviation.ts), gains (gain.ts), boundary and budget (boundary.ts), cost model (cost.ts),
//    plot (plot.ts), report (report.ts).
// Everything here is platform-agnostic (no fs, no node: imports): it also runs in a browser.

/** Error raised by the analysis for bad input; the message says what and where. */
export class AnalysisError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AnalysisError';
  }
}

/** The deviation measures of method.md section 3. */
export type DeviationMetric = 'cosine' | 'contrastive' | 'lens';
export const DEVIATION_METRICS: readonly DeviationMetric[] = ['cosine', 'contrastive', 'lens'];

/**
 * Semantic bases s_t = G⁻¹ W[t]ᵀ for a set of token ids (cholesky.ts builds them).
 * `tokens` is sorted ascending and unique; row r of `data` (d floats) is the basis of tokens[r].
 */
export interface TokenBases {
  readonly d: number;
  readonly tokens: Int32Array;
  /** [tokens.length, d] row-major, float64. */
  readonly data: Float64Array;
}

/**
 * What the host hands a deviation reducer (CPU reference or GPU). The hidden states themselves are not
 * here: a GPU reducer already holds the trace on the device; the CPU reducer is constructed with them.
 */
export interface DeviationRequest {
  metric: DeviationMetric;
  /** Target token y per analysed position (length = positions). */
  targets: Int32Array;
  /**
   * cosine/contrastive: bases of every target (and, for contrastive, every label token).
   * Unused by lens (which reads the LM head W).
   */
  bases?: TokenBases;
  /**
   * contrastive only: C, the label tokens (classification). Every target must be in C; the max in
   * D = mean(max_{j∈C} cos(h, s_j) − cos(h, s_y)) runs over all of C, y included, so D ≥ 0 and a
   * position contributes 0 exactly when its target's basis is (one of) the closest among the labels.
   */
  labels?: Int32Array;
}

/** D_0..D_N for one metric. */
export interface DeviationResult {
  metric: DeviationMetric;
  /** N+1 numbers: deviations[k] is D_k of latent space k (0 = embedding output, k = after block k). */
  deviations: number[];
  /** Positions averaged over. */
  positions: number;
  /** Optional standard error of each D_k (sample std / √positions); the CPU reducer provides it. */
  stderr?: number[];
}

/** The GPU (or CPU reference) reduction over the trace: returns N+1 numbers. */
export interface DeviationReducer {
  readonly name: string;
  reduce(request: DeviationRequest): Promise<DeviationResult>;
}

/**
 * Source of the Gram matrix G = WᵀW of the LM head W [V, d] (the GPU matmul lives elsewhere).
 * Row-major d×d; float32 from the GPU is accepted (cholesky.ts promotes to float64).
 */
export interface GramProvider {
  gram(): Promise<{ d: number; data: Float32Array | Float64Array }>;
}
