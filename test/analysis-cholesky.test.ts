import { describe, expect, it } from 'vitest';
import {
  BasisSolver,
  basisRow,
  basisRows,
  cholesky,
  choleskySolve,
  choleskySolveMany,
  gramCpu,
  NotPositiveDefiniteError,
  tokenBases,
} from '../src/analysis/cholesky.ts';
import { mulberry32 } from '../src/util/random.ts';
import { factorGram } from '../src/analysis/run.ts';

/** Seeded uniform numbers in [0, 1). */
const rng = mulberry32;

/** Reference: Gaussian elimination with partial pivoting on a dense copy. */
function directSolve(A: ArrayLike<number>, b: ArrayLike<number>, n: number): Float64Array {
  const M = Float64Array.from(A);
  const x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r * n + c]) > Math.abs(M[p * n + c])) p = r;
    if (p !== c) {
      for (let j = 0; j < n; j++) [M[c * n + j], M[p * n + j]] = [M[p * n + j], M[c * n + j]];
      [x[c], x[p]] = [x[p], x[c]];
    }
    for (let r = c + 1; r < n; r++) {
      const f = M[r * n + c] / M[c * n + c];
      if (f === 0) continue;
      for (let j = c; j < n; j++) M[r * n + j] -= f * M[c * n + j];
      x[r] -= f * x[c];
    }
  }
  for (let r = n - 1; r >= 0; r--) {
    let s = x[r];
    for (let j = r + 1; j < n; j++) s -= M[r * n + j] * x[j];
    x[r] = s / M[r * n + r];
  }
  return x;
}

function randomHead(V: number, d: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: V * d }, () => 2 * r() - 1);
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

describe('cholesky', () => {
  for (const [d, V, seed] of [[37, 80, 1], [37, 41, 2], [5, 9, 3], [1, 3, 4]] as const) {
    it(`matches a direct solve on a random SPD Gram matrix (d = ${d}, V = ${V}) to 1e-10`, () => {
      const W = randomHead(V, d, seed);
      const G = gramCpu(W, V, d);
      const f = cholesky(G, d);
      // L·Lᵀ reproduces G
      let e = 0;
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < d; j++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += f.L[i * d + k] * f.L[j * d + k];
          e = Math.max(e, Math.abs(s - G[i * d + j]));
        }
      }
      expect(e).toBeLessThan(1e-10 * Math.max(...Array.from({ length: d }, (_, i) => G[i * d + i])));
      const r = rng(seed + 100);
      for (let t = 0; t < 3; t++) {
        const b = Float64Array.from({ length: d }, () => 2 * r() - 1);
        expect(maxRelErr(choleskySolve(f, b), directSolve(G, b, d))).toBeLessThan(1e-10);
      }
    });
  }

  it('solves many right-hand sides at once (rows), like one at a time', () => {
    const d = 37;
    const W = randomHead(60, d, 9);
    const f = cholesky(gramCpu(W, 60, d), d);
    const r = rng(5);
    const n = 7;
    const B = Float64Array.from({ length: n * d }, () => r() - 0.5);
    const X = choleskySolveMany(f, B, n);
    for (let i = 0; i < n; i++) {
      const one = choleskySolve(f, B.subarray(i * d, (i + 1) * d));
      expect(maxRelErr(X.subarray(i * d, (i + 1) * d), one)).toBe(0);
    }
  });

  it('names the failing pivot when the matrix is not positive definite', () => {
    const G = [4, 0, 0, 0, 1, 0, 0, 0, -1];
    expect(() => cholesky(G, 3)).toThrow(NotPositiveDefiniteError);
    try {
      cholesky(G, 3);
    } catch (e) {
      expect((e as NotPositiveDefiniteError).pivot).toBe(2);
      expect((e as Error).message).toMatch(/pivot 2 \(0-based, of 3\) is -1/);
      expect((e as Error).message).toMatch(/ridge/);
    }
    // Singular (PSD, rank 1): pivot 1 is exactly 0.
    expect(() => cholesky([1, 1, 1, 1], 2)).toThrow(/pivot 1 .* is 0/);
  });

  it('a ridge regularises a singular Gram matrix', () => {
    const f = cholesky([1, 1, 1, 1], 2, { ridge: 1e-3 });
    expect(f.ridge).toBe(1e-3);
    const x = choleskySolve(f, [1, 1]);
    // (G + λI) x = b  →  x = b / (2 + λ) for b = (1, 1)
    expect(x[0]).toBeCloseTo(1 / 2.001, 12);
    expect(x[1]).toBeCloseTo(1 / 2.001, 12);
    const g = cholesky([2, 0, 0, 4], 2, { relativeRidge: 0.5 }); // + 0.5·trace/d = 1.5
    expect(g.ridge).toBe(1.5);
    expect(g.L[0]).toBeCloseTo(Math.sqrt(3.5), 14);
  });

  it('rejects a non-symmetric matrix and wrong sizes', () => {
    expect(() => cholesky([2, 1, 0, 2], 2)).toThrow(/not symmetric: G\[1\]\[0\] = 0 but G\[0\]\[1\] = 1/);
    expect(() => cholesky([2, 1, 0, 2], 2, { symmetryTolerance: false })).not.toThrow();
    expect(() => cholesky([1, 2, 3], 2)).toThrow(/expected 2×2 = 4 entries, got 3/);
  });

  it('bases are the rows of the pseudo-inverse: Σ_t s_t W[t]ᵀ = I', () => {
    const d = 11;
    const V = 29;
    const W = randomHead(V, d, 21);
    const f = cholesky(gramCpu(W, V, d), d);
    const all = Array.from({ length: V }, (_, i) => i);
    const bases = tokenBases(f, W, V, [...all].reverse().concat([3, 3]));
    expect(Array.from(bases.tokens)).toEqual(all);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let t = 0; t < V; t++) s += bases.data[t * d + i] * W[t * d + j];
        expect(Math.abs(s - (i === j ? 1 : 0))).toBeLessThan(1e-10);
      }
    }
    // W·s_t is the least-squares reconstruction of e_t: largest at t for a well-conditioned W
    const t = 7;
    const logits = all.map((v) => {
      let s = 0;
      for (let i = 0; i < d; i++) s += W[v * d + i] * bases.data[basisRow(bases, t) * d + i];
      return s;
    });
    expect(logits.indexOf(Math.max(...logits))).toBe(t);
  });

  it('basisRow / basisRows / BasisSolver', () => {
    const d = 6;
    const V = 20;
    const W = randomHead(V, d, 33);
    const f = cholesky(gramCpu(W, V, d), d);
    const b = tokenBases(f, W, V, [5, 2, 17]);
    expect(basisRow(b, 2)).toBe(0);
    expect(basisRow(b, 17)).toBe(2);
    expect(basisRow(b, 3)).toBe(-1);
    expect(Array.from(basisRows(b, [17, 5, 5]))).toEqual([2, 1, 1]);
    expect(() => basisRows(b, [5, 4])).toThrow(/target token 4 at position 1 has no basis/);
    expect(() => tokenBases(f, W, V, [20])).toThrow(/token id 20 at index 0 is outside the vocabulary \[0, 20\)/);
    const solver = new BasisSolver(f, W, V);
    const b1 = solver.bases([17, 2]);
    expect(solver.cachedTokens).toBe(2);
    const b2 = solver.bases([5, 2, 17]);
    expect(solver.cachedTokens).toBe(3);
    expect(Array.from(b2.data)).toEqual(Array.from(b.data));
    expect(Array.from(b1.data)).toEqual(Array.from(b.data.subarray(0, d)).concat(Array.from(b.data.subarray(2 * d))));
  });
});

// Item 13 of issue 8: a singular Gram matrix (a head of rank < d) is regularised automatically and the
// caller is told the ridge; one that no ridge can fix is an error that suggests no option the CLI lacks.
describe('factorGram', () => {
  it('a full-rank Gram matrix needs no ridge; a rank-deficient one gets the smallest that works', () => {
    const d = 6;
    const rand = mulberry32(7);
    const W = Array.from({ length: 40 * d }, () => rand() - 0.5);
    expect(factorGram(gramCpu(W, 40, d), d).relativeRidge).toBe(0);
    for (let v = 0; v < 40; v++) W[v * d + 3] = 0; // a dimension no token uses
    const { relativeRidge } = factorGram(gramCpu(W, 40, d), d);
    expect(relativeRidge).toBeGreaterThan(0);
  });
  it('an all-zero head is an error naming the head, with no advice about options', () => {
    expect(() => factorGram(new Float64Array(16), 4)).toThrow(/LM head.*degenerate/);
    try {
      factorGram(new Float64Array(16), 4);
    } catch (e) {
      expect((e as Error).message).not.toMatch(/can be regularised|--ridge/);
    }
  });
});
