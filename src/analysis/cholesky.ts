// Float64 Cholesky of the d×d Gram matrix G = WᵀW, and the semantic bases s_t = G⁻¹ W[t]ᵀ
// (method.md section 2: row t of the pseudo-inverse of W when W has full column rank).
//
// Conventions: matrices are row-major; only the lower triangle of G (i ≥ j) is read, after an optional
// symmetry check (a Gram matrix from a float32 GPU matmul is symmetric only up to rounding).
// Cost: d³/3 multiply-adds for the factor (d = 768: ~0.15 GFLOP, well under a second), 2·d² per basis.

import { AnalysisError, type TokenBases } from './types.ts';

export class NotPositiveDefiniteError extends AnalysisError {
  constructor(
    /** 0-based index of the failing pivot. */
    readonly pivot: number,
    /** G[p][p] − Σ_{k<p} L[p][k]² at that pivot (≤ 0 or not finite). */
    readonly value: number,
    readonly d: number,
    readonly ridge: number,
  ) {
    super(
      `matrix is not symmetric positive definite: Cholesky pivot ${pivot} (0-based, of ${d}) is ${value} ` +
        `(must be > 0 and finite)` +
        (ridge > 0 ? ` even with ridge ${ridge}` : '; an ill-conditioned Gram matrix can be regularised with a ridge λ > 0 (G + λI)'),
    );
    this.name = 'NotPositiveDefiniteError';
  }
}

export interface CholeskyOptions {
  /** Absolute ridge λ: factor G + λ·I. Default 0. */
  ridge?: number;
  /** Relative ridge r: adds r · trace(G)/d to the diagonal (on top of `ridge`). Default 0. */
  relativeRidge?: number;
  /**
   * Symmetry check: fail when |G[i][j] − G[j][i]| > tol · max_i |G[i][i]|. Default 1e-3 (catches a wrong
   * layout, tolerates float32 rounding of a GPU Gram matrix); `false` skips the check.
   */
  symmetryTolerance?: number | false;
}

/** G + λI = L·Lᵀ, L lower triangular, row-major d×d (the strict upper triangle is 0). */
export interface CholeskyFactor {
  readonly d: number;
  readonly L: Float64Array;
  /** λ actually added to the diagonal (absolute + relative). */
  readonly ridge: number;
  /** min_i L[i][i]² / max_i L[i][i]²: a cheap (lower-bound-ish) indicator of conditioning. */
  readonly pivotRatio: number;
}

/** Factor a symmetric positive-definite d×d matrix (row-major, any numeric array type). */
export function cholesky(G: ArrayLike<number>, d: number, opts: CholeskyOptions = {}): CholeskyFactor {
  if (!Number.isInteger(d) || d <= 0) throw new AnalysisError(`cholesky: d must be a positive integer, got ${d}`);
  if (G.length !== d * d) throw new AnalysisError(`cholesky: expected ${d}×${d} = ${d * d} entries, got ${G.length}`);
  const tol = opts.symmetryTolerance ?? 1e-3;
  let trace = 0;
  let maxDiag = 0;
  for (let i = 0; i < d; i++) {
    const v = G[i * d + i];
    trace += v;
    maxDiag = Math.max(maxDiag, Math.abs(v));
  }
  if (tol !== false) {
    const lim = tol * maxDiag;
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < i; j++) {
        const a = G[i * d + j];
        const b = G[j * d + i];
        if (!(Math.abs(a - b) <= lim)) {
          throw new AnalysisError(`cholesky: matrix is not symmetric: G[${i}][${j}] = ${a} but G[${j}][${i}] = ${b} (tolerance ${lim})`);
        }
      }
    }
  }
  const ridgeAbs = opts.ridge ?? 0;
  const ridgeRel = opts.relativeRidge ?? 0;
  if (!(ridgeAbs >= 0) || !(ridgeRel >= 0)) throw new AnalysisError(`cholesky: ridge must be ≥ 0 (got ridge ${ridgeAbs}, relativeRidge ${ridgeRel})`);
  const ridge = ridgeAbs + (ridgeRel > 0 ? (ridgeRel * trace) / d : 0);

  const L = new Float64Array(d * d);
  let minP = Infinity;
  let maxP = 0;
  for (let j = 0; j < d; j++) {
    const rj = j * d;
    let s = G[rj + j] + ridge;
    for (let k = 0; k < j; k++) s -= L[rj + k] * L[rj + k];
    if (!(s > 0) || !Number.isFinite(s)) throw new NotPositiveDefiniteError(j, s, d, ridge);
    const ljj = Math.sqrt(s);
    L[rj + j] = ljj;
    minP = Math.min(minP, s);
    maxP = Math.max(maxP, s);
    const inv = 1 / ljj;
    for (let i = j + 1; i < d; i++) {
      const ri = i * d;
      let t = G[ri + j];
      for (let k = 0; k < j; k++) t -= L[ri + k] * L[rj + k];
      L[ri + j] = t * inv;
    }
  }
  return { d, L, ridge, pivotRatio: minP / maxP };
}

/**
 * Solve (L·Lᵀ) x = b in place on `x` (length d, initially b). Forward substitution reads rows of L;
 * the back substitution is done column-oriented so it also reads rows of L (contiguous).
 */
export function choleskySolveInPlace(f: CholeskyFactor, x: Float64Array, offset = 0): void {
  const { d, L } = f;
  // L y = b
  for (let i = 0; i < d; i++) {
    const ri = i * d;
    let s = x[offset + i];
    for (let k = 0; k < i; k++) s -= L[ri + k] * x[offset + k];
    x[offset + i] = s / L[ri + i];
  }
  // Lᵀ x = y: x_i = y_i / L_ii, then remove x_i·L[i][k] from every y_k, k < i.
  for (let i = d - 1; i >= 0; i--) {
    const ri = i * d;
    const xi = x[offset + i] / L[ri + i];
    x[offset + i] = xi;
    for (let k = 0; k < i; k++) x[offset + k] -= L[ri + k] * xi;
  }
}

/** x = (G + λI)⁻¹ b for one right-hand side. */
export function choleskySolve(f: CholeskyFactor, b: ArrayLike<number>): Float64Array {
  if (b.length !== f.d) throw new AnalysisError(`choleskySolve: right-hand side has ${b.length} entries, expected ${f.d}`);
  const x = Float64Array.from(b);
  choleskySolveInPlace(f, x);
  return x;
}

/**
 * Many right-hand sides: `B` is [n, d] row-major, each row one right-hand side; returns X [n, d] with
 * row r = (G + λI)⁻¹ B[r].
 */
export function choleskySolveMany(f: CholeskyFactor, B: ArrayLike<number>, n: number): Float64Array {
  if (B.length !== n * f.d) throw new AnalysisError(`choleskySolveMany: expected ${n}×${f.d} = ${n * f.d} entries, got ${B.length}`);
  const X = Float64Array.from(B);
  for (let r = 0; r < n; r++) choleskySolveInPlace(f, X, r * f.d);
  return X;
}

/**
 * CPU reference / fallback for G = WᵀW, W [V, d] row-major. V·d² multiply-adds (GPT-2 small: 3·10¹⁰,
 * tens of seconds in JS): the GPU GramProvider is the normal path.
 */
export function gramCpu(W: ArrayLike<number>, V: number, d: number): Float64Array {
  if (W.length !== V * d) throw new AnalysisError(`gramCpu: W has ${W.length} entries, expected ${V}×${d} = ${V * d}`);
  const G = new Float64Array(d * d);
  const row = new Float64Array(d);
  for (let v = 0; v < V; v++) {
    for (let i = 0; i < d; i++) row[i] = W[v * d + i];
    for (let i = 0; i < d; i++) {
      const a = row[i];
      if (a === 0) continue;
      const gi = i * d;
      for (let j = 0; j <= i; j++) G[gi + j] += a * row[j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) G[j * d + i] = G[i * d + j];
  return G;
}

/** Sorted unique token ids, each checked to lie in [0, V). */
export function uniqueTokens(tokens: ArrayLike<number>, V: number, what = 'token'): Int32Array {
  const set = new Set<number>();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new AnalysisError(`${what} id ${t} at index ${i} is outside the vocabulary [0, ${V})`);
    set.add(t);
  }
  return Int32Array.from([...set].sort((a, b) => a - b));
}

/**
 * Bases s_t = (G + λI)⁻¹ W[t]ᵀ for the given token ids (duplicates allowed; the result is sorted unique).
 * W is the LM head [V, d] row-major (float32 as it lives on the GPU, or float64).
 */
export function tokenBases(f: CholeskyFactor, W: ArrayLike<number>, V: number, tokens: ArrayLike<number>): TokenBases {
  const d = f.d;
  if (W.length !== V * d) throw new AnalysisError(`tokenBases: W has ${W.length} entries, expected ${V}×${d} = ${V * d}`);
  const toks = uniqueTokens(tokens, V);
  const data = new Float64Array(toks.length * d);
  for (let r = 0; r < toks.length; r++) {
    const src = toks[r] * d;
    for (let i = 0; i < d; i++) data[r * d + i] = W[src + i];
    choleskySolveInPlace(f, data, r * d);
  }
  return { d, tokens: toks, data };
}

/** Row of token t in `bases`, or −1 when absent (binary search: tokens are sorted). */
export function basisRow(bases: TokenBases, t: number): number {
  const a = bases.tokens;
  let lo = 0;
  let hi = a.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] === t) return mid;
    if (a[mid] < t) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Row index per token (for a GPU gather), failing with the position of the first token without a basis. */
export function basisRows(bases: TokenBases, tokens: ArrayLike<number>, what = 'target'): Int32Array {
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const r = basisRow(bases, tokens[i]);
    if (r < 0) throw new AnalysisError(`${what} token ${tokens[i]} at position ${i} has no basis (solve for it with tokenBases)`);
    out[i] = r;
  }
  return out;
}

/** The bases as float32 (for upload to the GPU reducer). */
export function basesToFloat32(bases: TokenBases): Float32Array {
  return Float32Array.from(bases.data);
}

/**
 * Per-model cache of bases: factor once, solve each token once, on demand. In memory only (persisting it
 * is the caller's business; this module has no fs).
 */
export class BasisSolver {
  private readonly cache = new Map<number, Float64Array>();
  constructor(
    readonly factor: CholeskyFactor,
    private readonly W: ArrayLike<number>,
    readonly vocab: number,
  ) {
    if (W.length !== vocab * factor.d) throw new AnalysisError(`BasisSolver: W has ${W.length} entries, expected ${vocab}×${factor.d}`);
  }

  /** Bases for these tokens (sorted unique), solving only those not seen before. */
  bases(tokens: ArrayLike<number>): TokenBases {
    const d = this.factor.d;
    const toks = uniqueTokens(tokens, this.vocab);
    const data = new Float64Array(toks.length * d);
    for (let r = 0; r < toks.length; r++) {
      const t = toks[r];
      let s = this.cache.get(t);
      if (!s) {
        s = new Float64Array(d);
        for (let i = 0; i < d; i++) s[i] = this.W[t * d + i];
        choleskySolveInPlace(this.factor, s);
        this.cache.set(t, s);
      }
      data.set(s, r * d);
    }
    return { d, tokens: toks, data };
  }

  get cachedTokens(): number {
    return this.cache.size;
  }
}
