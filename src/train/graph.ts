// One training step as dispatch lists built once from the model's spec (src/model/spec.ts: GPT-2 and
// the Llama family share it): forward (frozen prefix forward-only),
// LM head + cross-entropy + head backward in row chunks, then the backward through the trainable
// suffix only, then the optimizer. The truncation at the freeze boundary is explicit here:
//   - the backward visits ln_f and blocks N−1 … K, nothing below;
//   - block K (the lowest trainable) computes its weight gradients but not the gradient of its
//     input (its first norm's dx is skipped), unless the embeddings train (freeze none);
//   - blocks below K ran forward-only in shared scratch (ModelForward with saveFrom = K); only the
//     boundary hidden state (the shared residual buffer) is kept;
//   - gradient buffers and optimizer state exist only for trainable tensors.
// LoRA mode (shape.lora, src/model/lora.ts): only the adapters of blocks K..N−1 train. No base
// weight, norm or head gets a gradient; the backward still carries dX through the final norm and
// blocks N−1 … K (the adapters need it), each projection's dX including its adapter's share, and
// stops at block K, where not even the first projections' dX is formed (nothing below needs it).
import type { Runtime } from '../gpu/runtime.ts';
import type { Dispatch, StepItem } from '../gpu/step.ts';
import type { BufferBinding } from '../gpu/kernels.ts';
import { matmul } from '../ops/matmul.ts';
import { attentionBackward, attentionBufferBytes } from '../ops/attention.ts';
import { layernormBackward, layernormBackwardParams, layernormScratchElems } from '../ops/layernorm.ts';
import { rmsnormBackward, rmsnormBackwardParams, rmsnormScratchElems } from '../ops/rmsnorm.ts';
import { geluBackward } from '../ops/gelu.ts';
import { gluBackward } from '../ops/glu.ts';
import { ropeBackward } from '../ops/rope.ts';
import { softcapBackward, softcapForward } from '../ops/softcap.ts';
import { embeddingBackwardWpe, embeddingBackwardWte, TokenIndexBuffer } from '../ops/embedding.ts';
import { crossEntropyFused, crossEntropyLossSum } from '../ops/crossentropy.ts';
import { columnSum, columnSumScratchElemsFor } from '../ops/reduce.ts';
import { ModelForward, attentionShape, range, type NormStats } from '../model/forward.ts';
import { decays, isTrainable, type ParamSpec } from '../model/params.ts';
import type { NormSpec, ProjSpec } from '../model/spec.ts';
import type { GpuWeights } from '../model/weights.ts';
import { Optimizer, type OptimizerOptions, type TrainableTensor } from './optimizer.ts';
import { loraChainNeeds, type LoraAdapters } from '../model/lora.ts';
import { loraBackward } from '../ops/lora.ts';
import { layernormBackwardDx } from '../ops/layernorm.ts';
import { rmsnormBackwardDx } from '../ops/rmsnorm.ts';

export interface TrainingShape {
  B: number;
  T: number;
  /** Freeze boundary K (0..N): embeddings and blocks 0..K−1 frozen. null = full fine-tuning. */
  freeze: number | null;
  /** Micro-batches per optimizer step (gradient accumulation). */
  accum: number;
  /** Bytes of head weight per head product (see ModelForward; tests make it small). */
  headChunkBytes?: number;
  /**
   * The boundary hidden state comes from a cache (src/train/boundary.ts) through setBoundary: the
   * step runs blocks K..N−1 only, no embedding and no frozen prefix. Needs a freeze boundary.
   */
  cachedBoundary?: boolean;
  /**
   * Train LoRA adapters instead of the weights: the adapters must start at the boundary
   * (lora.fromBlock = freeze, or 0 with freeze null); the embeddings never train in this mode.
   */
  lora?: LoraAdapters;
}

export class TrainingGraph {
  readonly forward: ModelForward;
  readonly trainable: ParamSpec[];
  /** Gradient buffers of the trainable tensors only (`grad.<name>`); in LoRA mode the adapters' (by PEFT name). */
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

  private constructor(readonly rt: Runtime, readonly weights: GpuWeights, readonly shape: TrainingShape, forward: ModelForward, optimizer: Optimizer, grads: Map<string, GPUBuffer>) {
    this.forward = forward;
    this.optimizer = optimizer;
    this.grads = grads;
    this.trainable = shape.lora ? [] : weights.specs.filter((s) => isTrainable(s, shape.freeze));
    this.tokenIndex = shape.freeze === null && !shape.lora ? new TokenIndexBuffer(rt, shape.B * shape.T, 'act.token_index') : null;
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
    if (shape.cachedBoundary && shape.freeze === null) throw new Error('a cached boundary needs a freeze boundary (the embeddings frozen)');
    const startBlock = shape.cachedBoundary ? shape.freeze! : 0;
    const lora = shape.lora;
    if (lora && lora.fromBlock !== (shape.freeze ?? 0)) throw new Error(`internal: LoRA adapters from block ${lora.fromBlock}, boundary ${shape.freeze ?? 0}`);
    const forward = await ModelForward.build(rt, weights, { B: shape.B, T: shape.T, saveFrom: shape.freeze ?? 0, startBlock, trace: { kind: 'none' }, loss: false, keepLogits: false, headChunkBytes: shape.headChunkBytes, lora });
    const grads = new Map<string, GPUBuffer>();
    const tensors: TrainableTensor[] = [];
    if (lora) {
      // The adapters as matrices (decayed when --weight-decay is given, as torch's AdamW over them).
      for (const m of lora.modules) {
        for (const [name, param, n] of [[m.aName, m.A, lora.r * m.inputs], [m.bName, m.B, m.outputs * lora.r]] as const) {
          grads.set(name, rt.memory.storage(`grad.${name}`, n * 4));
          tensors.push({ name, param, grad: grads.get(name)!, n, weightDecay: true });
        }
      }
    } else {
      for (const s of weights.specs.filter((s) => isTrainable(s, shape.freeze))) {
        grads.set(s.name, rt.memory.storage(`grad.${s.name}`, s.numel * 4));
        tensors.push({ name: s.name, param: weights.get(s.name), grad: grads.get(s.name)!, n: s.numel, weightDecay: decays(s) });
      }
    }
    const optimizer = await Optimizer.create(rt, tensors, optim);
    const g = new TrainingGraph(rt, weights, shape, forward, optimizer, grads);
    await g.buildItems();
    return g;
  }

  private grad(name: string): GPUBuffer {
    const b = this.grads.get(name);
    if (!b) throw new Error(`internal: no gradient buffer for '${name}' (frozen?)`);
    return b;
  }

  /**
   * Backward of one norm: dx (+)= ∂/∂x (skipped when `dx` is null: the truncation), and the weight
   * (and LayerNorm bias) gradients accumulated.
   */
  private async normBackward(spec: NormSpec, dout: GPUBuffer, inp: GPUBuffer, stats: NormStats, dx: GPUBuffer | null, accumulateDx: boolean): Promise<Dispatch[]> {
    const { rt } = this;
    const rows = this.shape.B * this.shape.T;
    const C = this.cfg.nEmbd;
    const s = this.scratch;
    const w = this.weights.get(spec.weight);
    if (this.shape.lora) {
      // LoRA: norms are frozen; only the input gradient, and none at all where it is not needed.
      if (!dx) return [];
      return spec.kind === 'layernorm'
        ? [await layernormBackwardDx(rt, { rows, C, dout, inp, gamma: w, mean: stats.mean!, rstd: stats.rstd, dx, accumulate: accumulateDx })]
        : [await rmsnormBackwardDx(rt, { rows, C, dout, inp, weight: w, rstd: stats.rstd, dx, accumulate: accumulateDx, plusOne: spec.kind === 'rmsnorm1p' })];
    }
    const dw = this.grad(spec.weight);
    if (spec.kind === 'layernorm') {
      const common = { rows, C, dout, inp, mean: stats.mean!, rstd: stats.rstd, dgamma: dw, dbeta: this.grad(spec.bias!), scratch: s.normScratch! };
      return dx ? layernormBackward(rt, { ...common, gamma: w, dx, accumulate: accumulateDx, accumulateParams: true }) : layernormBackwardParams(rt, { ...common, accumulate: true });
    }
    const common = { rows, C, dout, inp, rstd: stats.rstd, dweight: dw, scratch: s.normScratch! };
    return dx ? rmsnormBackward(rt, { ...common, weight: w, dx, accumulate: accumulateDx, accumulateParams: true, plusOne: spec.kind === 'rmsnorm1p' }) : rmsnormBackwardParams(rt, { ...common, accumulate: true });
  }

  /**
   * Backward of one projection y[:, off..] = x·W + b whose output gradient is columns
   * [p.outOffset, p.outOffset + p.outputs) of `dy` (row stride ldy): dx (+)= dy·Wᵀ, dW += xᵀ·dy, db += Σ dy.
   */
  private async projBackward(p: ProjSpec, x: GPUBuffer, dy: GPUBuffer, ldy: number, dx: GPUBuffer | null, accumulateDx: boolean): Promise<Dispatch[]> {
    const { rt } = this;
    const rows = this.shape.B * this.shape.T;
    const W = this.weights.get(p.weight);
    const dyView = { a: dy as BufferBinding, lda: ldy, aOff: p.outOffset };
    const out: Dispatch[] = [];
    const lora = this.shape.lora;
    if (lora) {
      // Frozen W: dx (+)= dy·Wᵀ (or dy·W) only, then the adapter's dA, dB and its share of dx.
      if (dx) out.push(...await matmul(rt, { form: p.layout === 'in_out' ? 'nt' : 'nn', M: rows, N: p.inputs, K: p.outputs, ...dyView, b: W, c: dx, accumulate: accumulateDx }));
      const m = lora.get(p.weight);
      if (m) {
        out.push(...await loraBackward(rt, {
          rows, inputs: p.inputs, outputs: p.outputs, r: lora.r, scale: lora.scale, x, A: m.A, B: m.B, u: this.forward.loraU.get(p.weight)!,
          dy, ldy, dyOff: p.outOffset, du: this.scratch.loraDu!, dA: this.grad(m.aName), dB: this.grad(m.bName), dx: dx ?? undefined,
        }));
      }
      return out;
    }
    if (!dx) throw new Error('internal: a projection without its input gradient outside LoRA mode');
    const dW = this.grad(p.weight);
    if (p.layout === 'in_out') {
      // W [in, out]: dx = dy·Wᵀ, dW [in, out] += xᵀ·dy.
      out.push(...await matmul(rt, { form: 'nt', M: rows, N: p.inputs, K: p.outputs, ...dyView, b: W, c: dx, accumulate: accumulateDx }));
      out.push(...await matmul(rt, { form: 'tn', M: p.inputs, N: p.outputs, K: rows, a: x, b: dy, ldb: ldy, bOff: p.outOffset, c: dW, accumulate: true }));
    } else {
      // W [out, in]: dx = dy·W, dW [out, in] += dyᵀ·x.
      out.push(...await matmul(rt, { form: 'nn', M: rows, N: p.inputs, K: p.outputs, ...dyView, b: W, c: dx, accumulate: accumulateDx }));
      out.push(...await matmul(rt, { form: 'tn', M: p.outputs, N: p.inputs, K: rows, ...dyView, b: x, c: dW, accumulate: true }));
    }
    if (p.bias) out.push(...await columnSum(rt, { inp: dy, ld: ldy, off: p.outOffset, out: this.grad(p.bias), rows, N: p.outputs, scratch: this.scratch.colScratch, accumulate: true }));
    return out;
  }

  private async buildItems(): Promise<void> {
    const { rt, cfg, shape } = this;
    const f = this.forward;
    const spec = f.spec;
    const { B, T } = shape;
    const rows = B * T;
    const C = cfg.nEmbd;
    const H = cfg.nInner;
    const V = cfg.vocabSize;
    const N = cfg.nLayer;
    const K = this.firstTrainableBlock;
    const lora = shape.lora;
    const embeddingsTrain = shape.freeze === null && !lora;
    const headTrains = !lora && (!cfg.tiedHead || embeddingsTrain);
    const mem = rt.memory;
    const f32 = (name: string, n: number) => mem.storage(name, n * 4);
    const s = this.scratch;
    const postNorms = spec.blocks.some((bl) => bl.attention.postNorm || bl.mlp.postNorm);
    s.dres = f32('bwd.dres', rows * C);
    s.dln = f32('bwd.dln', rows * C);
    s.datt = f32('bwd.datt', rows * spec.attnWidth);
    s.dqkv = f32('bwd.dqkv', rows * spec.qkvWidth);
    s.dact = f32('bwd.dact', rows * H);
    s.dup = f32('bwd.dup', rows * spec.upWidth);
    if (postNorms) s.dproj = f32('bwd.dproj', rows * C);
    // Norm and bias gradients need partial-sum scratch; LoRA mode has neither, but the adapters' du.
    if (!lora) s.normScratch = f32('bwd.norm_scratch', spec.finalNorm.kind === 'layernorm' ? layernormScratchElems(rows, C) : rmsnormScratchElems(rows, C));
    else s.loraDu = f32('bwd.lora_du', rows * lora.r);
    // One scratch for the bias sums of every width below.
    const biasWidths = spec.blocks.flatMap((bl) => [bl.attention.body.o, ...bl.attention.body.qkv, bl.mlp.body.down, ...bl.mlp.body.up]).filter((p) => p.bias).map((p) => p.outputs);
    s.colScratch = f32('bwd.col_scratch', lora ? 4 : Math.max(4, columnSumScratchElemsFor(rows, biasWidths)));
    s.attScratch = mem.storage('bwd.att_scratch', attentionBufferBytes(attentionShape(B, T, C, spec.blocks[0]?.attention.body)).scratchBytes);
    if (spec.finalSoftcap > 0) s.softcapDeriv = f32('bwd.softcap_deriv', f.rowChunk * V);

    // Zero every gradient at the start of an optimizer step; every gradient kernel accumulates.
    this.zeroItems.push(...this.optimizer.zeroGradDispatches());

    for (let micro = 0; micro < shape.accum; micro++) {
      const items: StepItem[] = [...f.items];
      const push = (d: Dispatch | Dispatch[]) => items.push(...(Array.isArray(d) ? d : [d]));
      // --- LM head + [soft-cap] + cross-entropy + head backward, in row chunks through one logits buffer.
      const scale = 1 / (rows * shape.accum);
      for (let r0 = 0; r0 < rows; r0 += f.rowChunk) {
        const r = Math.min(f.rowChunk, rows - r0);
        const logits = f.logitsRange(0, r);
        push(await f.headChunk(r0, r));
        if (spec.finalSoftcap > 0) push(await softcapForward(rt, { logits, rows: r, V, ld: f.ldLogits, cap: spec.finalSoftcap, deriv: s.softcapDeriv }));
        push(await crossEntropyFused(rt, { logits, targets: f.targets, losses: f.losses, rowOff: r0, rows: r, V, ld: f.ldLogits, scale }));
        if (spec.finalSoftcap > 0) push(await softcapBackward(rt, { dlogits: logits, rows: r, V, ld: f.ldLogits, cap: spec.finalSoftcap, deriv: s.softcapDeriv }));
        for (let v0 = 0; v0 < V; v0 += f.headRows) {
          const vc = Math.min(f.headRows, V - v0);
          const headRange = range(this.weights.head, v0 * C * 4, vc * C * 4);
          // dlnf[rows] (+)= dlogits[:, v0:v0+vc] · head[v0:v0+vc]
          push(await matmul(rt, { form: 'nn', M: r, N: C, K: vc, a: logits, lda: f.ldLogits, aOff: v0, b: headRange, c: range(s.dln, r0 * C * 4, r * C * 4), accumulate: v0 > 0 }));
          if (headTrains) {
            const dhead = cfg.tiedHead ? this.grad(spec.embedding.tokens) : this.grad('lm_head.weight');
            // dhead[v0:v0+vc] += dlogits[:, v0:v0+vc]ᵀ · lnf[rows]
            push(await matmul(rt, { form: 'tn', M: vc, N: C, K: r, a: logits, lda: f.ldLogits, aOff: v0, b: range(f.lnf, r0 * C * 4, r * C * 4), c: range(dhead, v0 * C * 4, vc * C * 4), accumulate: true }));
          }
        }
      }
      push(await crossEntropyLossSum(rt, { losses: f.losses, n: rows, total: this.stepLosses, outIdx: micro, scale: 1 / rows }));

      // --- Final norm backward: dres = norm'(dlnf).
      push(await this.normBackward(spec.finalNorm, s.dln, f.residualAfter(N - 1), f.lnfStats, s.dres, false));

      // --- Blocks N−1 … K, each sublayer in reverse: [post-norm], output projection, body, projections, norm.
      for (let l = N - 1; l >= K; l--) {
        const a = f.acts[l - K]!;
        const bl = spec.blocks[l]!;
        const at = bl.attention;
        const ml = bl.mlp;
        // Truncation: the boundary block's input gradient is never computed.
        const needInputGrad = l > K || embeddingsTrain;
        // LoRA at block K: only what the block's own adapters need. The first norm does not train, so
        // nothing needs dln1; the attention backward only feeds q/k/v adapters; the MLP's input
        // gradient only feeds the attention half's adapters (see loraChainNeeds).
        const need = lora && !needInputGrad ? loraChainNeeds((w) => lora.get(w) !== undefined, bl) : { qkv: true, attn: true, up: true };
        // MLP half: resOut = res2 + [post](down(act(up(norm(res2))))).
        let dy = s.dres;
        if (ml.postNorm) {
          push(await this.normBackward(ml.postNorm, s.dres, a.mlpOut!, a.mlpPostStats!, s.dproj!, false));
          dy = s.dproj!;
        }
        push(await this.projBackward(ml.body.down, a.act, dy, C, need.up ? s.dact : null, false));
        if (need.up) {
          if (ml.body.kind === 'gelu') push(await geluBackward(rt, { n: rows * H, dout: s.dact, inp: a.up, dinp: s.dup }));
          else push(await gluBackward(rt, { act: ml.body.kind === 'swiglu' ? 'silu' : 'gelu_tanh', rows, H, inp: { fused: a.up }, dout: s.dact, grad: { fused: s.dup } }));
          for (const [i, p] of ml.body.up.entries()) push(await this.projBackward(p, a.ln2, s.dup, spec.upWidth, need.attn ? s.dln : null, i > 0));
        }
        // The residual stream's gradient gains the MLP norm's input gradient.
        if (need.attn) push(await this.normBackward(ml.norm, s.dln, a.res2, a.ln2Stats, s.dres, true));

        // Attention half: res2 = resIn + [post](o(attention(rope(qkv(norm(resIn)))))).
        if (need.attn) {
          dy = s.dres;
          if (at.postNorm) {
            push(await this.normBackward(at.postNorm, s.dres, a.attnOut!, a.attnPostStats!, s.dproj!, false));
            dy = s.dproj!;
          }
          push(await this.projBackward(at.body.o, a.att, dy, C, need.qkv ? s.datt : null, false));
        }
        if (need.qkv) {
          push(await attentionBackward(rt, { ...attentionShape(B, T, C, at.body), dout: s.datt, qkv: a.qkv, stats: a.attStats, out: a.att, dqkv: s.dqkv, scratch: s.attScratch }));
          if (at.body.rope) push(await ropeBackward(rt, { dqkv: s.dqkv, invFreq: f.invFreq!, B, T, nHead: at.body.nHead, nKvHead: at.body.nKvHead, headDim: at.body.headDim }));
          // The norm's weight gradients need dln1 even in the lowest trainable block (LoRA: nothing does).
          const dln1 = lora && !needInputGrad ? null : s.dln;
          for (const [i, p] of at.body.qkv.entries()) push(await this.projBackward(p, a.ln1, s.dqkv, spec.qkvWidth, dln1, i > 0));
        }
        push(await this.normBackward(at.norm, s.dln, a.resIn, a.ln1Stats, needInputGrad ? s.dres : null, true));
      }

      // --- Embeddings (full fine-tuning only).
      if (embeddingsTrain) {
        const e = spec.embedding;
        if (e.positions) push(await embeddingBackwardWpe(rt, { B, T, C, dout: s.dres, dwpe: this.grad(e.positions), accumulate: true }));
        const dwte = this.grad(e.tokens);
        const parts = f.wteParts();
        push(await embeddingBackwardWte(rt, { C, index: this.tokenIndex!, dout: s.dres, dwte: parts.wte.map((b) => ('buffer' in b ? { ...b, buffer: dwte } : dwte)), partRows: parts.partRows, scale: e.scale }));
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

  /** With a cached boundary: the micro-batch's boundary hidden states [B·T, C] (block K's input). */
  setBoundary(states: Float32Array): void {
    if (!this.shape.cachedBoundary) throw new Error('this training graph computes its own boundary (built without cachedBoundary)');
    if (states.length !== this.shape.B * this.shape.T * this.cfg.nEmbd) throw new Error(`boundary states: expected ${this.shape.B * this.shape.T * this.cfg.nEmbd} floats, got ${states.length}`);
    this.rt.memory.write(this.forward.x, states);
  }

  /** Per-step GPU memory the training graph holds, grouped by kind (param, grad, optim, act, bwd). */
  memoryBreakdown(): Record<string, number> {
    return this.rt.memory.breakdown();
  }
}
