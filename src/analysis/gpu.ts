// The GPU side of the analysis: the Gram matrix of the LM head and the deviation reductions over
// the trace buffer. Only d×d numbers (once per model) and N+1 numbers (per analysis) come back.
import type { Runtime } from '../gpu/runtime.ts';
import type { Dispatch, StepItem } from '../gpu/step.ts';
import { matmul } from '../ops/matmul.ts';
import { layernormForward } from '../ops/layernorm.ts';
import { rmsnormForward } from '../ops/rmsnorm.ts';
import { softcapForward } from '../ops/softcap.ts';
import { crossEntropyForward } from '../ops/crossentropy.ts';
import type { ModelConfig } from '../model/config.ts';
import type { GpuWeights } from '../model/weights.ts';
import { HEAD_CHUNK_BYTES, headRowChunk, headVocabChunk, range } from '../model/forward.ts';
import { modelSpec } from '../model/spec.ts';
import { AnalysisError, type DeviationReducer, type DeviationRequest, type DeviationResult, type GramProvider } from './types.ts';

/** G = WᵀW of the head W [V, d], accumulated over vocabulary chunks that each fit one binding. */
export class GpuGram implements GramProvider {
  constructor(private readonly rt: Runtime, private readonly weights: GpuWeights) {}

  async gram(): Promise<{ d: number; data: Float32Array }> {
    const { rt, weights } = this;
    const cfg = weights.cfg;
    const d = cfg.nEmbd;
    const V = cfg.vocabSize;
    const maxBinding = rt.gpu.limits.maxStorageBufferBindingSize ?? 128 * 2 ** 20;
    const chunk = headVocabChunk(cfg, maxBinding);
    const out = rt.memory.storage('analysis.gram', d * d * 4);
    try {
      const items: Dispatch[] = [];
      for (let v0 = 0; v0 < V; v0 += chunk) {
        const vc = Math.min(chunk, V - v0);
        const w = range(weights.head, v0 * d * 4, vc * d * 4);
        // tn: C[d, d] = Aᵀ·B with A = B = W[v0:v0+vc] stored [K = vc, M = d].
        items.push(...(await matmul(rt, { form: 'tn', M: d, N: d, K: vc, a: w, b: w, c: out, accumulate: v0 > 0 })));
      }
      await rt.steps.run('gram', items);
      return { d, data: await rt.memory.readFloat32(out, 0, d * d) };
    } finally {
      rt.memory.destroy(out);
    }
  }
}

export interface TraceView {
  /** [N+1, P, C] raw residual stream. */
  trace: GPUBuffer;
  /** Positions per latent space in the buffer (its capacity). */
  positions: number;
  /** Elements per latent space (capacity·C padded to 64: each slot starts 256-byte aligned). */
  slotElems: number;
}

/**
 * Cosine and contrastive deviations on the GPU from a trace already on the device; lens runs the
 * head over each latent space in row chunks and reduces the cross-entropy. Built once per trace
 * and reused for every batch: its buffers and bound kernels are made on first use (or when a
 * batch needs more room) and each batch only writes its targets and bases into them. The first
 * req.targets.length positions of each space are analysed.
 */
export class GpuDeviationReducer implements DeviationReducer {
  readonly name = 'gpu';
  private readonly owned = new Map<string, GPUBuffer>();
  private cosineItems: { key: string; items: StepItem[] } | null = null;
  private readonly lensItems = new Map<number, Dispatch[][]>();

  constructor(
    private readonly rt: Runtime,
    private readonly weights: GpuWeights,
    private readonly view: TraceView,
    private readonly finalNorm: boolean,
  ) {}

  private get cfg(): ModelConfig {
    return this.weights.cfg;
  }

  /** A buffer of at least `bytes`, kept across batches; reallocated (and rebound) only to grow. */
  private buffer(name: string, bytes: number): GPUBuffer {
    const cur = this.owned.get(name);
    if (cur && cur.size >= bytes) return cur;
    if (cur) this.rt.memory.destroy(cur);
    const b = this.rt.memory.storage(`analysis.${name}`, bytes);
    this.owned.set(name, b);
    return b;
  }

  destroy(): void {
    for (const b of this.owned.values()) this.rt.memory.destroy(b);
    this.owned.clear();
    this.cosineItems = null;
    this.lensItems.clear();
  }

  async reduce(req: DeviationRequest): Promise<DeviationResult> {
    const P = req.targets.length;
    if (P === 0) throw new AnalysisError('deviation: no positions to analyse');
    if (P > this.view.positions) throw new AnalysisError(`deviation: ${P} targets for a trace of ${this.view.positions} positions`);
    const deviations = req.metric === 'lens' ? await this.lens(req) : await this.cosine(req);
    return { metric: req.metric, deviations, positions: P };
  }

  private async cosine(req: DeviationRequest): Promise<number[]> {
    const { rt, cfg, view } = this;
    const bases = req.bases;
    if (!bases) throw new AnalysisError(`deviation '${req.metric}' needs the semantic bases`);
    const C = cfg.nEmbd;
    const P = req.targets.length;
    const spaces = cfg.nLayer + 1;
    const rowOf = new Map<number, number>();
    bases.tokens.forEach((t, r) => rowOf.set(t, r));
    const lookup = (t: number, what: string) => {
      const r = rowOf.get(t);
      if (r === undefined) throw new AnalysisError(`deviation: no basis for ${what} token ${t}`);
      return r;
    };
    const targetBase = Uint32Array.from(req.targets, (t) => lookup(t, 'target'));
    const contrastive = req.metric === 'contrastive';
    if (contrastive && !(req.labels && req.labels.length > 0)) throw new AnalysisError("deviation 'contrastive' needs the label tokens (classification data)");
    const labelBase = Uint32Array.from(contrastive ? req.labels! : [0], (t) => (contrastive ? lookup(t, 'label') : 0));
    const mem = rt.memory;
    const basesData = Float32Array.from(bases.data);
    const basesBuf = this.buffer('bases', basesData.byteLength);
    const targetBuf = this.buffer('target_base', view.positions * 4);
    const labelBuf = this.buffer('label_base', labelBase.byteLength);
    const values = this.buffer('values', spaces * view.positions * 4);
    const dev = this.buffer('dev', spaces * 4);
    mem.write(basesBuf, basesData);
    mem.write(targetBuf, targetBase);
    mem.write(labelBuf, labelBase);
    const uni = { C, P, stride: view.positions, slotElems: view.slotElems, nLabels: contrastive ? req.labels!.length : 0, eps: cfg.layerNormEpsilon };
    // Bound once per set of buffers and variant; later batches only change P and nLabels.
    const key = [contrastive, basesBuf.label, basesBuf.size, labelBuf.size].join(':');
    if (this.cosineItems?.key !== key) {
      const fn = modelSpec(cfg).finalNorm;
      const overrides = { FINAL_NORM: this.finalNorm, CONTRASTIVE: contrastive, NORM_KIND: fn.kind === 'layernorm' ? 0 : fn.kind === 'rmsnorm' ? 1 : 2 };
      const perPos = await rt.kernels.kernel('deviation', 'per_position', overrides);
      const meanK = await rt.kernels.kernel('deviation', 'mean', overrides);
      const buffers = { trace: view.trace, bases: basesBuf, targetBase: targetBuf, labelBase: labelBuf, gamma: this.weights.get(fn.weight), beta: fn.bias ? this.weights.get(fn.bias) : rt.dummy, values, dev };
      this.cosineItems = { key, items: [{ bound: rt.kernels.bind(perPos, buffers, uni), workgroups: [1] }, { bound: rt.kernels.bind(meanK, buffers, uni), workgroups: [spaces] }] };
    }
    const [perPos, meanK] = this.cosineItems.items as [Dispatch, Dispatch];
    perPos.bound.setUniforms(uni);
    meanK.bound.setUniforms(uni);
    const items: StepItem[] = [{ bound: perPos.bound, workgroups: [Math.min(P, 65535), spaces, Math.ceil(P / 65535)] }, meanK];
    await rt.steps.run('deviation', items);
    return Array.from(await mem.readFloat32(dev, 0, spaces));
  }

  /** Logit lens: D_k = mean CE of softmax(W·norm(h_k)) against y, head applied in row chunks. */
  private async lens(req: DeviationRequest): Promise<number[]> {
    const { rt, cfg } = this;
    const P = req.targets.length;
    const targets = this.buffer('lens.targets', this.view.positions * 4);
    rt.memory.write(targets, Uint32Array.from(req.targets));
    let perSpace = this.lensItems.get(P);
    if (!perSpace) {
      perSpace = await this.buildLens(P, targets);
      this.lensItems.set(P, perSpace);
    }
    const losses = this.owned.get('lens.losses')!;
    const out: number[] = [];
    for (let k = 0; k <= cfg.nLayer; k++) {
      await rt.steps.run(`lens ${k}`, perSpace[k]!);
      const l = await rt.memory.readFloat32(losses, 0, P);
      let s = 0;
      for (const x of l) s += x;
      out.push(s / P);
    }
    return out;
  }

  /** The lens dispatches for P positions, one list per latent space (built once per P). */
  private async buildLens(P: number, targets: GPUBuffer): Promise<Dispatch[][]> {
    const { rt, cfg, view } = this;
    const C = cfg.nEmbd;
    const V = cfg.vocabSize;
    const cap = view.positions;
    const maxBinding = rt.gpu.limits.maxStorageBufferBindingSize ?? 128 * 2 ** 20;
    const rowChunk = headRowChunk(cfg, P, maxBinding);
    const vocabChunk = headVocabChunk(cfg, maxBinding, HEAD_CHUNK_BYTES);
    const normed = this.buffer('lens.normed', cap * C * 4);
    const logits = this.buffer('lens.logits', headRowChunk(cfg, cap, maxBinding) * V * 4);
    const losses = this.buffer('lens.losses', cap * 4);
    const perSpace: Dispatch[][] = [];
    for (let k = 0; k <= cfg.nLayer; k++) {
      const items: Dispatch[] = [];
      const slot = range(view.trace, k * view.slotElems * 4, P * C * 4);
      if (this.finalNorm) {
        const fn = modelSpec(cfg).finalNorm;
        items.push(fn.kind === 'layernorm'
          ? await layernormForward(rt, { inp: slot, gamma: this.weights.get(fn.weight), beta: this.weights.get(fn.bias!), out: normed, rows: P, C, eps: cfg.layerNormEpsilon })
          : await rmsnormForward(rt, { inp: slot, weight: this.weights.get(fn.weight), out: normed, rows: P, C, eps: cfg.layerNormEpsilon, plusOne: fn.kind === 'rmsnorm1p' }));
      }
      for (let r0 = 0; r0 < P; r0 += rowChunk) {
        const r = Math.min(rowChunk, P - r0);
        for (let v0 = 0; v0 < V; v0 += vocabChunk) {
          const vc = Math.min(vocabChunk, V - v0);
          items.push(...await matmul(rt, {
            form: 'nt', M: r, N: vc, K: C,
            a: this.finalNorm ? range(normed, r0 * C * 4, r * C * 4) : range(view.trace, (k * view.slotElems + r0 * C) * 4, r * C * 4),
            b: range(this.weights.head, v0 * C * 4, vc * C * 4),
            c: range(logits, 0, r * V * 4), ldc: V, cOff: v0,
          }));
        }
        // The model's own prediction: Gemma2 soft-caps its logits before the softmax.
        const cap = modelSpec(cfg).finalSoftcap;
        if (cap > 0) items.push(...await softcapForward(rt, { logits: range(logits, 0, r * V * 4), rows: r, V, cap }));
        items.push(await crossEntropyForward(rt, { logits: range(logits, 0, r * V * 4), targets, losses, rowOff: r0, rows: r, V }));
      }
      perSpace.push(items);
    }
    return perSpace;
  }
}
