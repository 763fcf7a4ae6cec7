// One training step of GPT-2 as dispatch lists built once: forward (frozen prefix forward-only),
// LM head + cross-entropy + head backward in row chunks, then the backward through the trainable
// suffix only, then the optimizer. The truncation at the freeze boundary is explicit here:
//   - the backward visits ln_f and blocks N−1 … K, nothing below;
//   - block K (the lowest trainable) computes its weight gradients but not the gradient of its
//     input (ln_1's dx is skipped), unless the embeddings train (freeze none);
//   - blocks below K ran forward-only in shared scratch (Gpt2Forward with saveFrom = K); only the
//     boundary hidden state (the shared residual buffer) is kept;
//   - gradient buffers and optimizer state exist only for trainable tensors.
import type { Runtime } from '../gpu/runtime.ts';
import type { Dispatch, StepItem } from '../gpu/step.ts';
import { matmul } from '../ops/matmul.ts';
import { attentionBackward, attentionBufferBytes } from '../ops/attention.ts';
import { layernormBackward, layernormBackwardParams, layernormScratchElems } from '../ops/layernorm.ts';
import { geluBackward } from '../ops/gelu.ts';
import { embeddingBackwardWpe, embeddingBackwardWte, TokenIndexBuffer } from '../ops/embedding.ts';
import { crossEntropyFused, crossEntropyLossSum } from '../ops/crossentropy.ts';
import { columnSum, columnSumScratchElemsFor } from '../ops/reduce.ts';
import { Gpt2Forward, range } from '../model/forward.ts';
import { decays, isTrainable, type ParamSpec } from '../model/params.ts';
import type { GpuWeights } from '../model/weights.ts';
import { Optimizer, type OptimizerOptions } from './optimizer.ts';

export interface TrainingShape {
  B: number;
  T: number;
  /** Freeze boundary K (0..N): embeddings and blocks 0..K−1 frozen. null = full fine-tuning. */
  freeze: number | null;
  /** Micro-batches per optimizer step (gradient accumulation). */
  accum: number;
  /** Bytes of head weight per head product (see Gpt2Forward; tests make it small). */
  headChunkBytes?: number;
}

export class TrainingGraph {
  readonly forward: Gpt2Forward;
  readonly trainable: ParamSpec[];
  /** Gradient buffers of the trainable tensors only (`grad.<name>`). */
  readonly grads: Map<string, GPUBuffer>;
  readonly optimizer: Optimizer;
  readonly tokenIndex: TokenIndexBuffer | null;
  /** Mean loss of each micro-batch of the current step [accum]. */
  readonly stepLosses: GPUBuffer;
  /** Items of one micro-batch: forward, head + loss, backward. Index i writes its loss to slot i. */
  readonly microItems: StepItem[][] = [];
  /** Zero the gradients (start of an optimizer step). */
  readonly zeroItems: Dispatch[] = [];
  /** Clip (optional) and update. */
  readonly updateItems: Dispatch[] = [];
  private readonly scratch: Record<string, GPUBuffer> = {};

  private constructor(readonly rt: Runtime, readonly weights: GpuWeights, readonly shape: TrainingShape, forward: Gpt2Forward, optimizer: Optimizer, grads: Map<string, GPUBuffer>) {
    this.forward = forward;
    this.optimizer = optimizer;
    this.grads = grads;
    this.trainable = weights.specs.filter((s) => isTrainable(s, shape.freeze));
    this.tokenIndex = shape.freeze === null ? new TokenIndexBuffer(rt, shape.B * shape.T, 'act.token_index') : null;
    this.stepLosses = rt.memory.storage('act.step_losses', 4 * Math.max(1, shape.accum));
  }

  get cfg() {
    return this.weights.cfg;
  }

  /** The block from which activations are kept: K, or 0 under full fine-tuning. */
  get firstTrainableBlock(): number {
    return this.shape.freeze ?? 0;
  }

  static async build(rt: Runtime, weights: GpuWeights, shape: TrainingShape, optim: OptimizerOptions): Promise<TrainingGraph> {
    const cfg = weights.cfg;
    const N = cfg.nLayer;
    if (shape.freeze !== null && !(Number.isInteger(shape.freeze) && shape.freeze >= 0 && shape.freeze <= N)) {
      throw new Error(`--freeze ${shape.freeze}: must be between 0 and the number of blocks (${N}), or 'none'`);
    }
    if (!(Number.isInteger(shape.accum) && shape.accum >= 1)) throw new Error(`accumulation steps must be a positive integer, got ${shape.accum}`);
    const forward = await Gpt2Forward.build(rt, weights, { B: shape.B, T: shape.T, saveFrom: shape.freeze ?? 0, trace: { kind: 'none' }, loss: false, keepLogits: false, headChunkBytes: shape.headChunkBytes });
    const grads = new Map<string, GPUBuffer>();
    const trainable = weights.specs.filter((s) => isTrainable(s, shape.freeze));
    for (const s of trainable) grads.set(s.name, rt.memory.storage(`grad.${s.name}`, s.numel * 4));
    const optimizer = await Optimizer.create(rt, trainable.map((s) => ({ name: s.name, param: weights.get(s.name), grad: grads.get(s.name)!, n: s.numel, weightDecay: decays(s) })), optim);
    const g = new TrainingGraph(rt, weights, shape, forward, optimizer, grads);
    await g.buildItems();
    return g;
  }

  private grad(name: string): GPUBuffer {
    const b = this.grads.get(name);
    if (!b) throw new Error(`internal: no gradient buffer for '${name}' (frozen?)`);
    return b;
  }

  private async buildItems(): Promise<void> {
    const { rt, cfg, shape } = this;
    const f = this.forward;
    const { B, T } = shape;
    const rows = B * T;
    const C = cfg.nEmbd;
    const H = cfg.nInner;
    const V = cfg.vocabSize;
    const N = cfg.nLayer;
    const K = this.firstTrainableBlock;
    const embeddingsTrain = shape.freeze === null;
    const headTrains = !cfg.tiedHead || embeddingsTrain;
    const mem = rt.memory;
    const f32 = (name: string, n: number) => mem.storage(name, n * 4);
    const s = this.scratch;
    s.dres = f32('bwd.dres', rows * C);
    s.dln = f32('bwd.dln', rows * C);
    s.datt = f32('bwd.datt', rows * C);
    s.dqkv = f32('bwd.dqkv', rows * 3 * C);
    s.dfc = f32('bwd.dfc', rows * H);
    s.dfcPre = f32('bwd.dfc_pre', rows * H);
    s.lnScratch = f32('bwd.ln_scratch', layernormScratchElems(rows, C));
    // One scratch for the bias sums of every width below (c_proj C, c_fc H, c_attn 3C).
    s.colScratch = f32('bwd.col_scratch', Math.max(4, columnSumScratchElemsFor(rows, [C, 3 * C, H])));
    s.attScratch = mem.storage('bwd.att_scratch', attentionBufferBytes({ B, T, C, nHead: cfg.nHead }).scratchBytes);

    // Zero every gradient at the start of an optimizer step; every gradient kernel accumulates.
    this.zeroItems.push(...this.optimizer.zeroGradDispatches());

    for (let micro = 0; micro < shape.accum; micro++) {
      const items: StepItem[] = [...f.items];
      const push = (d: Dispatch | Dispatch[]) => items.push(...(Array.isArray(d) ? d : [d]));
      // --- LM head + cross-entropy + head backward, in row chunks through one logits buffer.
      const scale = 1 / (rows * shape.accum);
      for (let r0 = 0; r0 < rows; r0 += f.rowChunk) {
        const r = Math.min(f.rowChunk, rows - r0);
        push(await f.headChunk(r0, r));
        push(await crossEntropyFused(rt, { logits: f.logitsRange(0, r), targets: f.targets, losses: f.losses, rowOff: r0, rows: r, V, ld: f.ldLogits, scale }));
        for (let v0 = 0; v0 < V; v0 += f.headRows) {
          const vc = Math.min(f.headRows, V - v0);
          const headRange = range(this.weights.head, v0 * C * 4, vc * C * 4);
          // dlnf[rows] (+)= dlogits[:, v0:v0+vc] · head[v0:v0+vc]
          push(await matmul(rt, { form: 'nn', M: r, N: C, K: vc, a: f.logitsRange(0, r), lda: f.ldLogits, aOff: v0, b: headRange, c: range(s.dln, r0 * C * 4, r * C * 4), accumulate: v0 > 0 }));
          if (headTrains) {
            const dhead = cfg.tiedHead ? this.grad('wte.weight') : this.grad('lm_head.weight');
            // dhead[v0:v0+vc] += dlogits[:, v0:v0+vc]ᵀ · lnf[rows]
            push(await matmul(rt, { form: 'tn', M: vc, N: C, K: r, a: f.logitsRange(0, r), lda: f.ldLogits, aOff: v0, b: range(f.lnf, r0 * C * 4, r * C * 4), c: range(dhead, v0 * C * 4, vc * C * 4), accumulate: true }));
          }
        }
      }
      push(await crossEntropyLossSum(rt, { losses: f.losses, n: rows, total: this.stepLosses, outIdx: micro, scale: 1 / rows }));

      // --- ln_f backward: dres = LN_f'(dlnf).
      const lastRes = f.residualAfter(N - 1);
      push(await layernormBackward(rt, { rows, C, dout: s.dln, inp: lastRes, gamma: this.weights.get('ln_f.weight'), mean: f.lnfMean, rstd: f.lnfRstd, dx: s.dres, dgamma: this.grad('ln_f.weight'), dbeta: this.grad('ln_f.bias'), scratch: s.lnScratch, accumulateParams: true }));

      // --- Blocks N−1 … K.
      for (let l = N - 1; l >= K; l--) {
        const a = f.acts[l - K]!;
        const p = (n: string) => this.weights.get(`h.${l}.${n}`);
        const gr = (n: string) => this.grad(`h.${l}.${n}`);
        // MLP: resOut = res2 + gelu(ln2·Wfc + bfc)·Wp + bp
        push(await matmul(rt, { form: 'nt', M: rows, N: H, K: C, a: s.dres, b: p('mlp.c_proj.weight'), c: s.dfc }));
        push(await matmul(rt, { form: 'tn', M: H, N: C, K: rows, a: a.fcGelu, b: s.dres, c: gr('mlp.c_proj.weight'), accumulate: true }));
        push(await columnSum(rt, { inp: s.dres, out: gr('mlp.c_proj.bias'), rows, N: C, scratch: s.colScratch, accumulate: true }));
        push(await geluBackward(rt, { n: rows * H, dout: s.dfc, inp: a.fc, dinp: s.dfcPre }));
        push(await matmul(rt, { form: 'nt', M: rows, N: C, K: H, a: s.dfcPre, b: p('mlp.c_fc.weight'), c: s.dln }));
        push(await matmul(rt, { form: 'tn', M: C, N: H, K: rows, a: a.ln2, b: s.dfcPre, c: gr('mlp.c_fc.weight'), accumulate: true }));
        push(await columnSum(rt, { inp: s.dfcPre, out: gr('mlp.c_fc.bias'), rows, N: H, scratch: s.colScratch, accumulate: true }));
        // The residual stream's gradient gains ln_2's input gradient.
        push(await layernormBackward(rt, { rows, C, dout: s.dln, inp: a.res2, gamma: p('ln_2.weight'), mean: a.ln2Mean, rstd: a.ln2Rstd, dx: s.dres, accumulate: true, dgamma: gr('ln_2.weight'), dbeta: gr('ln_2.bias'), scratch: s.lnScratch, accumulateParams: true }));
        // Attention: res2 = resIn + attn(ln1·Wqkv + bqkv)·Wo + bo
        push(await matmul(rt, { form: 'nt', M: rows, N: C, K: C, a: s.dres, b: p('attn.c_proj.weight'), c: s.datt }));
        push(await matmul(rt, { form: 'tn', M: C, N: C, K: rows, a: a.att, b: s.dres, c: gr('attn.c_proj.weight'), accumulate: true }));
        push(await columnSum(rt, { inp: s.dres, out: gr('attn.c_proj.bias'), rows, N: C, scratch: s.colScratch, accumulate: true }));
        push(await attentionBackward(rt, { B, T, C, nHead: cfg.nHead, dout: s.datt, qkv: a.qkv, stats: a.attStats, out: a.att, dqkv: s.dqkv, scratch: s.attScratch }));
        // ln_1's γ/β gradients need dln1 even in the lowest trainable block.
        push(await matmul(rt, { form: 'nt', M: rows, N: C, K: 3 * C, a: s.dqkv, b: p('attn.c_attn.weight'), c: s.dln }));
        push(await matmul(rt, { form: 'tn', M: C, N: 3 * C, K: rows, a: a.ln1, b: s.dqkv, c: gr('attn.c_attn.weight'), accumulate: true }));
        push(await columnSum(rt, { inp: s.dqkv, out: gr('attn.c_attn.bias'), rows, N: 3 * C, scratch: s.colScratch, accumulate: true }));
        const needInputGrad = l > K || embeddingsTrain;
        if (needInputGrad) {
          push(await layernormBackward(rt, { rows, C, dout: s.dln, inp: a.resIn, gamma: p('ln_1.weight'), mean: a.ln1Mean, rstd: a.ln1Rstd, dx: s.dres, accumulate: true, dgamma: gr('ln_1.weight'), dbeta: gr('ln_1.bias'), scratch: s.lnScratch, accumulateParams: true }));
        } else {
          // Truncation: the boundary block's input gradient is never computed.
          push(await layernormBackwardParams(rt, { rows, C, dout: s.dln, inp: a.resIn, mean: a.ln1Mean, rstd: a.ln1Rstd, dgamma: gr('ln_1.weight'), dbeta: gr('ln_1.bias'), scratch: s.lnScratch, accumulate: true }));
        }
      }

      // --- Embeddings (full fine-tuning only).
      if (embeddingsTrain) {
        push(await embeddingBackwardWpe(rt, { B, T, C, dout: s.dres, dwpe: this.grad('wpe.weight'), accumulate: true }));
        const dwte = this.grad('wte.weight');
        const parts = f.wteParts();
        push(await embeddingBackwardWte(rt, { C, index: this.tokenIndex!, dout: s.dres, dwte: parts.wte.map((b) => ('buffer' in b ? { ...b, buffer: dwte } : dwte)), partRows: parts.partRows }));
      }
      this.microItems.push(items);
    }
    this.updateItems.push(...this.optimizer.clipDispatches(), ...this.optimizer.dispatches());
  }

  /** Upload one micro-batch (ids and targets, B·T each). */
  setBatch(ids: ArrayLike<number>, targets: ArrayLike<number>): void {
    this.forward.setBatch(ids, targets);
    this.tokenIndex?.upload(ids, this.cfg.vocabSize);
  }

  /** Per-step GPU memory the training graph holds, grouped by kind (param, grad, optim, act, bwd). */
  memoryBreakdown(): Record<string, number> {
    return this.rt.memory.breakdown();
  }
}
