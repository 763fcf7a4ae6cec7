// Float64 CPU reference for every GPT-2 op, forward and backward: the ground truth the WGSL kernels
// are tested against. Conventions follow llm.c's train_gpt2.c, with Hugging Face's weight layouts.
//
// Everything is a Float64Array, row-major, with explicit shape arguments. Clarity beats speed here:
// plain loops, no fused tricks, one formula per line where possible.

import type { ModelConfig } from '../../src/model/config.ts';

export type Ids = ArrayLike<number>;

// ---------------------------------------------------------------------------------------------
// Helpers: errors, seeded random numbers, finite differences
// ---------------------------------------------------------------------------------------------

/** ‖out − ref‖₂ / ‖ref‖₂. If ref is all zeros, returns ‖out‖₂ (absolute error). */
export function relError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new Error(`relError: length ${out.length} vs ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** max |out − ref|. */
export function maxAbsDiff(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new Error(`maxAbsDiff: length ${out.length} vs ${ref.length}`);
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(out[i] - ref[i]));
  return m;
}

/** Σ a⊙b. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`dot: length ${a.length} vs ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export type Rng = () => number;

/** mulberry32: a small seeded generator of uniform numbers in [0, 1) (the project's one copy). */
export { mulberry32 } from '../../src/util/random.ts';

/** n standard normals (Box–Muller) times scale. */
export function randn(n: number, rng: Rng, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng(); // (0, 1]: log is finite
    const u2 = rng();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = scale * r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = scale * r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** n uniform integers in [0, max). */
export function randInts(n: number, max: number, rng: Rng): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng() * max);
  return out;
}

/** Central difference (f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h. Perturbs x[i] in place and restores it. */
export function finiteDifference(f: (x: Float64Array) => number, x: Float64Array, i: number, h = 1e-5): number {
  const saved = x[i];
  x[i] = saved + h;
  const fp = f(x);
  x[i] = saved - h;
  const fm = f(x);
  x[i] = saved;
  return (fp - fm) / (2 * h);
}

/** Widen any numeric array (e.g. a Float32Array read from a GPU buffer) to float64. */
export function toF64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

// ---------------------------------------------------------------------------------------------
// Matmul
// ---------------------------------------------------------------------------------------------

/**
 * Generic C[M,N] = op(A)·op(B), where op(A) is [M,K] and op(B) is [K,N].
 * A is stored [M,K] (or [K,M] if transA); B is stored [K,N] (or [N,K] if transB).
 */
export function matmul(
  A: Float64Array, B: Float64Array, M: number, K: number, N: number,
  opts: { transA?: boolean; transB?: boolean } = {},
): Float64Array {
  const { transA = false, transB = false } = opts;
  if (A.length !== M * K) throw new Error(`matmul: A has ${A.length} elements, expected ${M}*${K}`);
  if (B.length !== K * N) throw new Error(`matmul: B has ${B.length} elements, expected ${K}*${N}`);
  const a = (m: number, k: number) => (transA ? A[k * M + m] : A[m * K + k]);
  const b = (k: number, n: number) => (transB ? B[n * K + k] : B[k * N + n]);
  const C = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a(m, k) * b(k, n);
      C[m * N + n] = s;
    }
  }
  return C;
}

/** Transpose a row-major [rows, cols] matrix into [cols, rows]. */
export function transpose(A: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = A[r * cols + c];
  return out;
}

/**
 * How a linear layer's weight is stored.
 * 'KN': [in=K, out=N], Hugging Face GPT-2 Conv1D (y = x·W + b).
 * 'NK': [out=N, in=K], nn.Linear / llm.c (y = x·Wᵀ + b); also the tied LM head (wte is [V, C]).
 */
export type WeightLayout = 'KN' | 'NK';

/** out[M,N] = inp[M,K]·W + bias, with W stored per `layout`. */
export function matmulForward(
  inp: Float64Array, weight: Float64Array, bias: Float64Array | null,
  M: number, K: number, N: number, layout: WeightLayout = 'KN',
): Float64Array {
  if (bias && bias.length !== N) throw new Error(`matmulForward: bias has ${bias.length} elements, expected ${N}`);
  const out = matmul(inp, weight, M, K, N, { transB: layout === 'NK' });
  if (bias) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[m * N + n] += bias[n];
  return out;
}

/**
 * Backward of matmulForward. dinp = dout·Wᵀ; dweight = inpᵀ·dout (stored in `layout`, like W);
 * dbias = column sums of dout.
 */
export function matmulBackward(
  dout: Float64Array, inp: Float64Array, weight: Float64Array,
  M: number, K: number, N: number, layout: WeightLayout = 'KN',
): { dinp: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  if (dout.length !== M * N) throw new Error(`matmulBackward: dout has ${dout.length} elements, expected ${M}*${N}`);
  if (inp.length !== M * K) throw new Error(`matmulBackward: inp has ${inp.length} elements, expected ${M}*${K}`);
  if (weight.length !== K * N) throw new Error(`matmulBackward: weight has ${weight.length} elements, expected ${K}*${N}`);
  const w = (k: number, n: number) => (layout === 'KN' ? weight[k * N + n] : weight[n * K + k]);
  const dinp = new Float64Array(M * K);
  const dweight = new Float64Array(K * N);
  const dbias = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[m * N + n] * w(k, n);
      dinp[m * K + k] = s;
    }
  }
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let m = 0; m < M; m++) s += inp[m * K + k] * dout[m * N + n];
      dweight[layout === 'KN' ? k * N + n : n * K + k] = s;
    }
  }
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let m = 0; m < M; m++) s += dout[m * N + n];
    dbias[n] = s;
  }
  return { dinp, dweight, dbias };
}

// ---------------------------------------------------------------------------------------------
// LayerNorm (biased variance, eps inside the sqrt, as torch.nn.LayerNorm)
// ---------------------------------------------------------------------------------------------

export function layernormForward(
  x: Float64Array, gamma: Float64Array, beta: Float64Array, rows: number, C: number, eps = 1e-5,
): { out: Float64Array; mean: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(rows * C);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let m = 0;
    for (let i = 0; i < C; i++) m += x[o + i];
    m /= C;
    let v = 0;
    for (let i = 0; i < C; i++) v += (x[o + i] - m) * (x[o + i] - m);
    v /= C;
    const s = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < C; i++) out[o + i] = (x[o + i] - m) * s * gamma[i] + beta[i];
    mean[r] = m;
    rstd[r] = s;
  }
  return { out, mean, rstd };
}

/**
 * With n = (x − mean)·rstd and g = dout⊙gamma:
 * dx = rstd·(g − mean(g) − n·mean(g⊙n)); dgamma = Σ_rows dout⊙n; dbeta = Σ_rows dout.
 */
export function layernormBackward(
  dout: Float64Array, x: Float64Array, mean: Float64Array, rstd: Float64Array, gamma: Float64Array,
  rows: number, C: number,
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array } {
  const dx = new Float64Array(rows * C);
  const dgamma = new Float64Array(C);
  const dbeta = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let gMean = 0;
    let gnMean = 0;
    for (let i = 0; i < C; i++) {
      const n = (x[o + i] - mean[r]) * rstd[r];
      const g = dout[o + i] * gamma[i];
      gMean += g;
      gnMean += g * n;
    }
    gMean /= C;
    gnMean /= C;
    for (let i = 0; i < C; i++) {
      const n = (x[o + i] - mean[r]) * rstd[r];
      const g = dout[o + i] * gamma[i];
      dx[o + i] = rstd[r] * (g - gMean - n * gnMean);
      dgamma[i] += dout[o + i] * n;
      dbeta[i] += dout[o + i];
    }
  }
  return { dx, dgamma, dbeta };
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh approximation (HF 'gelu_new')
// ---------------------------------------------------------------------------------------------

const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise. */
export function geluForward(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = 0.5 * v * (1 + Math.tanh(GELU_K * (v + GELU_A * v * v * v)));
  }
  return out;
}

/** dx = dout · d/dx gelu(x). */
export function geluBackward(dout: Float64Array, x: Float64Array): Float64Array {
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const u = GELU_K * (v + GELU_A * v * v * v);
    const th = Math.tanh(u);
    const du = GELU_K * (1 + 3 * GELU_A * v * v);
    const grad = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du;
    dx[i] = dout[i] * grad;
  }
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Causal multi-head self-attention on HF's c_attn output
// ---------------------------------------------------------------------------------------------

/**
 * qkv: [B, T, 3C], q = [..., 0:C], k = [..., C:2C], v = [..., 2C:3C]; head h uses columns
 * h·hs..(h+1)·hs of each (hs = C / nHead).
 * Returns out [B, T, C] (heads concatenated in the same column order) and probs [B, nHead, T, T]:
 * softmax over t2 ≤ t of q_t·k_t2 / √hs, exactly 0 where t2 > t.
 */
export function attentionForward(
  qkv: Float64Array, B: number, T: number, C: number, nHead: number,
): { out: Float64Array; probs: Float64Array } {
  if (C % nHead !== 0) throw new Error(`attention: C ${C} not divisible by nHead ${nHead}`);
  if (qkv.length !== B * T * 3 * C) throw new Error(`attention: qkv has ${qkv.length} elements, expected ${B}*${T}*3*${C}`);
  const hs = C / nHead;
  const scale = 1 / Math.sqrt(hs);
  const out = new Float64Array(B * T * C);
  const probs = new Float64Array(B * nHead * T * T);
  const q = (b: number, t: number, h: number, i: number) => qkv[(b * T + t) * 3 * C + h * hs + i];
  const k = (b: number, t: number, h: number, i: number) => qkv[(b * T + t) * 3 * C + C + h * hs + i];
  const v = (b: number, t: number, h: number, i: number) => qkv[(b * T + t) * 3 * C + 2 * C + h * hs + i];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let t = 0; t < T; t++) {
        const p = (b * nHead + h) * T * T + t * T; // row t of this head's probs
        // scores and max over the causal window
        let maxS = -Infinity;
        for (let t2 = 0; t2 <= t; t2++) {
          let s = 0;
          for (let i = 0; i < hs; i++) s += q(b, t, h, i) * k(b, t2, h, i);
          s *= scale;
          probs[p + t2] = s;
          if (s > maxS) maxS = s;
        }
        let sum = 0;
        for (let t2 = 0; t2 <= t; t2++) {
          probs[p + t2] = Math.exp(probs[p + t2] - maxS);
          sum += probs[p + t2];
        }
        for (let t2 = 0; t2 <= t; t2++) probs[p + t2] /= sum;
        // masked entries t2 > t stay 0
        for (let i = 0; i < hs; i++) {
          let o = 0;
          for (let t2 = 0; t2 <= t; t2++) o += probs[p + t2] * v(b, t2, h, i);
          out[(b * T + t) * C + h * hs + i] = o;
        }
      }
    }
  }
  return { out, probs };
}

/**
 * Backward of attentionForward: with P = probs, S = scores,
 * dv_t2 = Σ_t P[t,t2]·dout_t; dP[t,t2] = dout_t·v_t2; dS[t,t2] = P[t,t2]·(dP[t,t2] − Σ_j P[t,j]·dP[t,j]);
 * dq_t = scale·Σ_t2 dS[t,t2]·k_t2; dk_t2 = scale·Σ_t dS[t,t2]·q_t. Returns dqkv [B, T, 3C].
 */
export function attentionBackward(
  dout: Float64Array, qkv: Float64Array, probs: Float64Array, B: number, T: number, C: number, nHead: number,
): Float64Array {
  const hs = C / nHead;
  const scale = 1 / Math.sqrt(hs);
  const dqkv = new Float64Array(B * T * 3 * C);
  const qi = (b: number, t: number, h: number, i: number) => (b * T + t) * 3 * C + h * hs + i;
  const ki = (b: number, t: number, h: number, i: number) => (b * T + t) * 3 * C + C + h * hs + i;
  const vi = (b: number, t: number, h: number, i: number) => (b * T + t) * 3 * C + 2 * C + h * hs + i;
  const dP = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHead; h++) {
      for (let t = 0; t < T; t++) {
        const p = (b * nHead + h) * T * T + t * T;
        const d = (i: number) => dout[(b * T + t) * C + h * hs + i];
        // dP and dv
        for (let t2 = 0; t2 <= t; t2++) {
          let s = 0;
          for (let i = 0; i < hs; i++) {
            s += d(i) * qkv[vi(b, t2, h, i)];
            dqkv[vi(b, t2, h, i)] += probs[p + t2] * d(i);
          }
          dP[t2] = s;
        }
        // softmax backward
        let pdp = 0;
        for (let t2 = 0; t2 <= t; t2++) pdp += probs[p + t2] * dP[t2];
        for (let t2 = 0; t2 <= t; t2++) {
          const dS = probs[p + t2] * (dP[t2] - pdp);
          for (let i = 0; i < hs; i++) {
            dqkv[qi(b, t, h, i)] += scale * dS * qkv[ki(b, t2, h, i)];
            dqkv[ki(b, t2, h, i)] += scale * dS * qkv[qi(b, t, h, i)];
          }
        }
      }
    }
  }
  return dqkv;
}

// ---------------------------------------------------------------------------------------------
// Residual and embeddings
// ---------------------------------------------------------------------------------------------

export function residualForward(a: Float64Array, b: Float64Array): Float64Array {
  if (a.length !== b.length) throw new Error(`residual: length ${a.length} vs ${b.length}`);
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}

/** The gradient flows unchanged to both inputs. */
export function residualBackward(dout: Float64Array): { da: Float64Array; db: Float64Array } {
  return { da: dout.slice(), db: dout.slice() };
}

/** out[b,t,:] = wte[ids[b,t], :] + wpe[t, :]. ids: [B·T]. */
export function embeddingForward(
  ids: Ids, wte: Float64Array, wpe: Float64Array, B: number, T: number, C: number,
): Float64Array {
  const V = wte.length / C;
  if (wpe.length < T * C) throw new Error(`embedding: wpe has ${wpe.length / C} positions, T is ${T}`);
  const out = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const id = ids[b * T + t];
      if (!(id >= 0 && id < V)) throw new Error(`embedding: token id ${id} at [${b},${t}] outside [0, ${V})`);
      for (let i = 0; i < C; i++) out[(b * T + t) * C + i] = wte[id * C + i] + wpe[t * C + i];
    }
  }
  return out;
}

/** dwte [V,C] (scatter-add over ids), dwpe [maxT,C] (rows ≥ T stay 0). */
export function embeddingBackward(
  dout: Float64Array, ids: Ids, B: number, T: number, C: number, V: number, maxT: number,
): { dwte: Float64Array; dwpe: Float64Array } {
  const dwte = new Float64Array(V * C);
  const dwpe = new Float64Array(maxT * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const id = ids[b * T + t];
      for (let i = 0; i < C; i++) {
        const g = dout[(b * T + t) * C + i];
        dwte[id * C + i] += g;
        dwpe[t * C + i] += g;
      }
    }
  }
  return { dwte, dwpe };
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy
// ---------------------------------------------------------------------------------------------

/**
 * losses[r] = logsumexp(logits[r,:]) − logits[r, targets[r]] (stable: max subtracted).
 * A negative target (e.g. HF's −100) ignores its row: loss 0, and the mean is over the other rows
 * (as torch's cross_entropy with ignore_index). With every target valid, loss = Σ losses / rows.
 */
export function crossEntropyForward(
  logits: Float64Array, targets: Ids, rows: number, V: number,
): { losses: Float64Array; loss: number; probs: Float64Array } {
  const losses = new Float64Array(rows);
  const probs = softmaxRows(logits, rows, V);
  let sum = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const tgt = targets[r];
    if (tgt < 0) continue;
    if (tgt >= V) throw new Error(`crossEntropy: target ${tgt} at row ${r} outside [0, ${V})`);
    let maxL = -Infinity;
    for (let j = 0; j < V; j++) maxL = Math.max(maxL, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - maxL);
    losses[r] = maxL + Math.log(s) - logits[r * V + tgt];
    sum += losses[r];
    count++;
  }
  return { losses, loss: count > 0 ? sum / count : NaN, probs };
}

/** Row-wise stable softmax of a [rows, V] matrix. */
export function softmaxRows(logits: Float64Array, rows: number, V: number): Float64Array {
  const out = new Float64Array(rows * V);
  for (let r = 0; r < rows; r++) {
    let maxL = -Infinity;
    for (let j = 0; j < V; j++) maxL = Math.max(maxL, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - maxL);
    for (let j = 0; j < V; j++) out[r * V + j] = Math.exp(logits[r * V + j] - maxL) / s;
  }
  return out;
}

/**
 * dlogits[r,:] = dlosses[r]·(softmax(logits[r,:]) − onehot(targets[r])).
 * dlosses defaults to 1/count for every valid row (the gradient of the mean loss), i.e. 1/rows
 * when no target is ignored. Ignored rows (negative target) get 0.
 */
export function crossEntropyBackward(
  logits: Float64Array, targets: Ids, rows: number, V: number, dlosses?: Float64Array,
): Float64Array {
  const probs = softmaxRows(logits, rows, V);
  let count = 0;
  for (let r = 0; r < rows; r++) if (targets[r] >= 0) count++;
  const dlogits = new Float64Array(rows * V);
  for (let r = 0; r < rows; r++) {
    const tgt = targets[r];
    if (tgt < 0) continue;
    const dl = dlosses ? dlosses[r] : 1 / count;
    for (let j = 0; j < V; j++) dlogits[r * V + j] = dl * (probs[r * V + j] - (j === tgt ? 1 : 0));
  }
  return dlogits;
}

// ---------------------------------------------------------------------------------------------
// Whole GPT-2 (tied LM head), float64
// ---------------------------------------------------------------------------------------------

/** The fields the reference model reads; a full ModelConfig fits. nInner defaults to 4·nEmbd. */
export type RefConfig = Pick<ModelConfig, 'nLayer' | 'nEmbd' | 'nHead' | 'vocabSize' | 'nPositions' | 'layerNormEpsilon'>
  & { nInner?: number; tiedHead?: boolean };

/** Parameters by Hugging Face name without the `transformer.` prefix. */
export type Params = Map<string, Float64Array>;

/** Every parameter's name and shape, in HF's order. */
export function gpt2ParamShapes(cfg: RefConfig): Map<string, number[]> {
  const C = cfg.nEmbd;
  const F = cfg.nInner ?? 4 * C;
  const shapes = new Map<string, number[]>();
  shapes.set('wte.weight', [cfg.vocabSize, C]);
  shapes.set('wpe.weight', [cfg.nPositions, C]);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `h.${l}.`;
    shapes.set(p + 'ln_1.weight', [C]);
    shapes.set(p + 'ln_1.bias', [C]);
    shapes.set(p + 'attn.c_attn.weight', [C, 3 * C]);
    shapes.set(p + 'attn.c_attn.bias', [3 * C]);
    shapes.set(p + 'attn.c_proj.weight', [C, C]);
    shapes.set(p + 'attn.c_proj.bias', [C]);
    shapes.set(p + 'ln_2.weight', [C]);
    shapes.set(p + 'ln_2.bias', [C]);
    shapes.set(p + 'mlp.c_fc.weight', [C, F]);
    shapes.set(p + 'mlp.c_fc.bias', [F]);
    shapes.set(p + 'mlp.c_proj.weight', [F, C]);
    shapes.set(p + 'mlp.c_proj.bias', [C]);
  }
  shapes.set('ln_f.weight', [C]);
  shapes.set('ln_f.bias', [C]);
  return shapes;
}

/** Random parameters for tests: weights ~ N(0, scale²), layernorm gains ~ 1 + N(0, 0.1²), biases ~ N(0, 0.1²). */
export function randomGpt2Params(cfg: RefConfig, rng: Rng, scale = 0.2): Params {
  const params: Params = new Map();
  for (const [name, shape] of gpt2ParamShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (/ln_\w+\.weight$/.test(name)) {
      const w = randn(n, rng, 0.1);
      for (let i = 0; i < n; i++) w[i] += 1;
      params.set(name, w);
    } else if (name.endsWith('.bias')) {
      params.set(name, randn(n, rng, 0.1));
    } else {
      params.set(name, randn(n, rng, scale));
    }
  }
  return params;
}

/** What one block saves for its backward. */
export interface BlockActs {
  /** Residual entering the block [BT, C]. */
  resIn: Float64Array;
  ln1: { out: Float64Array; mean: Float64Array; rstd: Float64Array };
  /** c_attn output [BT, 3C]. */
  qkv: Float64Array;
  /** Attention output before c_proj [BT, C] and its probabilities [B, nHead, T, T]. */
  att: { out: Float64Array; probs: Float64Array };
  /** Residual after the attention half [BT, C]. */
  res2: Float64Array;
  ln2: { out: Float64Array; mean: Float64Array; rstd: Float64Array };
  /** c_fc output, before GELU [BT, F]. */
  fch: Float64Array;
  /** GELU(fch) [BT, F]. */
  fchGelu: Float64Array;
  /** Residual leaving the block [BT, C]. */
  resOut: Float64Array;
}

export interface Gpt2ForwardResult {
  /** [B·T, V]. */
  logits: Float64Array;
  /**
   * HF's output_hidden_states, N+1 tensors [B·T, C]: 0 = embeddings; k (1 ≤ k < N) = residual after
   * k blocks; N = ln_f(residual after all N blocks).
   */
  hiddenStates: Float64Array[];
  /** The residual after all N blocks, before ln_f [B·T, C]. */
  residual: Float64Array;
  /** Mean cross-entropy, or null without targets. */
  loss: number | null;
  /** Per-position losses [B·T], or null without targets. */
  losses: Float64Array | null;
  /** Saved activations for gpt2Backward. */
  blocks: BlockActs[];
  lnf: { out: Float64Array; mean: Float64Array; rstd: Float64Array };
}

function param(params: Params, name: string): Float64Array {
  const p = params.get(name);
  if (!p) throw new Error(`gpt2 reference: missing parameter '${name}'`);
  return p;
}

function checkConfig(cfg: RefConfig, B: number, T: number, ids: Ids): void {
  if (cfg.tiedHead === false) throw new Error('gpt2 reference: only the tied LM head is implemented');
  if (cfg.nEmbd % cfg.nHead !== 0) throw new Error(`gpt2 reference: nEmbd ${cfg.nEmbd} not divisible by nHead ${cfg.nHead}`);
  if (T > cfg.nPositions) throw new Error(`gpt2 reference: T ${T} exceeds nPositions ${cfg.nPositions}`);
  if (ids.length !== B * T) throw new Error(`gpt2 reference: ${ids.length} ids, expected ${B}*${T}`);
}

export function gpt2Forward(
  params: Params, cfg: RefConfig, ids: Ids, targets: Ids | null, B: number, T: number,
): Gpt2ForwardResult {
  checkConfig(cfg, B, T, ids);
  const C = cfg.nEmbd;
  const F = cfg.nInner ?? 4 * C;
  const V = cfg.vocabSize;
  const BT = B * T;
  const eps = cfg.layerNormEpsilon;

  let x = embeddingForward(ids, param(params, 'wte.weight'), param(params, 'wpe.weight'), B, T, C);
  const hiddenStates: Float64Array[] = [x];
  const blocks: BlockActs[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = (n: string) => param(params, `h.${l}.${n}`);
    const resIn = x;
    const ln1 = layernormForward(resIn, p('ln_1.weight'), p('ln_1.bias'), BT, C, eps);
    const qkv = matmulForward(ln1.out, p('attn.c_attn.weight'), p('attn.c_attn.bias'), BT, C, 3 * C);
    const att = attentionForward(qkv, B, T, C, cfg.nHead);
    const attProj = matmulForward(att.out, p('attn.c_proj.weight'), p('attn.c_proj.bias'), BT, C, C);
    const res2 = residualForward(resIn, attProj);
    const ln2 = layernormForward(res2, p('ln_2.weight'), p('ln_2.bias'), BT, C, eps);
    const fch = matmulForward(ln2.out, p('mlp.c_fc.weight'), p('mlp.c_fc.bias'), BT, C, F);
    const fchGelu = geluForward(fch);
    const mlpProj = matmulForward(fchGelu, p('mlp.c_proj.weight'), p('mlp.c_proj.bias'), BT, F, C);
    const resOut = residualForward(res2, mlpProj);
    blocks.push({ resIn, ln1, qkv, att, res2, ln2, fch, fchGelu, resOut });
    x = resOut;
    if (l < cfg.nLayer - 1) hiddenStates.push(x);
  }
  const residual = x;
  const lnf = layernormForward(residual, param(params, 'ln_f.weight'), param(params, 'ln_f.bias'), BT, C, eps);
  hiddenStates.push(lnf.out);
  // tied head: logits = lnf · wteᵀ, wte stored [V, C] = [N, K]
  const logits = matmulForward(lnf.out, param(params, 'wte.weight'), null, BT, C, V, 'NK');
  let loss: number | null = null;
  let losses: Float64Array | null = null;
  if (targets) {
    if (targets.length !== BT) throw new Error(`gpt2 reference: ${targets.length} targets, expected ${BT}`);
    const ce = crossEntropyForward(logits, targets, BT, V);
    loss = ce.loss;
    losses = ce.losses;
  }
  return { logits, hiddenStates, residual, loss, losses, blocks, lnf };
}

/**
 * Gradients of the forward's mean loss (or of Σ dlogits⊙logits when `opts.dlogits` is given, in which
 * case targets may be null) for every parameter, by the same names. wte's gradient sums the tied
 * head's and the embedding's contributions.
 */
export function gpt2Backward(
  params: Params, cfg: RefConfig, ids: Ids, targets: Ids | null, B: number, T: number,
  opts: { forward?: Gpt2ForwardResult; dlogits?: Float64Array } = {},
): Map<string, Float64Array> {
  const fwd = opts.forward ?? gpt2Forward(params, cfg, ids, targets, B, T);
  const C = cfg.nEmbd;
  const F = cfg.nInner ?? 4 * C;
  const V = cfg.vocabSize;
  const BT = B * T;
  const grads = new Map<string, Float64Array>();

  let dlogits: Float64Array;
  if (opts.dlogits) dlogits = opts.dlogits;
  else if (targets) dlogits = crossEntropyBackward(fwd.logits, targets, BT, V);
  else throw new Error('gpt2Backward: need targets or opts.dlogits');

  const wte = param(params, 'wte.weight');
  const head = matmulBackward(dlogits, fwd.lnf.out, wte, BT, C, V, 'NK');
  const lnfB = layernormBackward(head.dinp, fwd.residual, fwd.lnf.mean, fwd.lnf.rstd, param(params, 'ln_f.weight'), BT, C);
  grads.set('ln_f.weight', lnfB.dgamma);
  grads.set('ln_f.bias', lnfB.dbeta);

  let dx = lnfB.dx; // gradient w.r.t. the residual leaving the current block
  for (let l = cfg.nLayer - 1; l >= 0; l--) {
    const name = (n: string) => `h.${l}.${n}`;
    const p = (n: string) => param(params, name(n));
    const a = fwd.blocks[l];
    // resOut = res2 + mlpProj
    const mlpProjB = matmulBackward(dx, a.fchGelu, p('mlp.c_proj.weight'), BT, F, C);
    grads.set(name('mlp.c_proj.weight'), mlpProjB.dweight);
    grads.set(name('mlp.c_proj.bias'), mlpProjB.dbias);
    const dfch = geluBackward(mlpProjB.dinp, a.fch);
    const fcB = matmulBackward(dfch, a.ln2.out, p('mlp.c_fc.weight'), BT, C, F);
    grads.set(name('mlp.c_fc.weight'), fcB.dweight);
    grads.set(name('mlp.c_fc.bias'), fcB.dbias);
    const ln2B = layernormBackward(fcB.dinp, a.res2, a.ln2.mean, a.ln2.rstd, p('ln_2.weight'), BT, C);
    grads.set(name('ln_2.weight'), ln2B.dgamma);
    grads.set(name('ln_2.bias'), ln2B.dbeta);
    const dres2 = residualForward(dx, ln2B.dx);
    // res2 = resIn + attProj
    const projB = matmulBackward(dres2, a.att.out, p('attn.c_proj.weight'), BT, C, C);
    grads.set(name('attn.c_proj.weight'), projB.dweight);
    grads.set(name('attn.c_proj.bias'), projB.dbias);
    const dqkv = attentionBackward(projB.dinp, a.qkv, a.att.probs, B, T, C, cfg.nHead);
    const attnB = matmulBackward(dqkv, a.ln1.out, p('attn.c_attn.weight'), BT, C, 3 * C);
    grads.set(name('attn.c_attn.weight'), attnB.dweight);
    grads.set(name('attn.c_attn.bias'), attnB.dbias);
    const ln1B = layernormBackward(attnB.dinp, a.resIn, a.ln1.mean, a.ln1.rstd, p('ln_1.weight'), BT, C);
    grads.set(name('ln_1.weight'), ln1B.dgamma);
    grads.set(name('ln_1.bias'), ln1B.dbeta);
    dx = residualForward(dres2, ln1B.dx);
  }

  const emb = embeddingBackward(dx, ids, B, T, C, V, cfg.nPositions);
  grads.set('wte.weight', residualForward(head.dweight, emb.dwte));
  grads.set('wpe.weight', emb.dwpe);

  // Return in HF's parameter order.
  const ordered = new Map<string, Float64Array>();
  for (const n of gpt2ParamShapes(cfg).keys()) ordered.set(n, grads.get(n)!);
  return ordered;
}
