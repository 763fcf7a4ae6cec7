// The forward pass as one list of dispatches, built once per (model, B, T) from the model's spec
// (src/model/spec.ts: GPT-2 and the Llama family share this builder):
// embeddings → N blocks → final norm → LM head (in row chunks) → [soft-cap] → cross-entropy, with the
// residual stream after every block captured into the trace buffer on the way (no extra pass).
// A block is two sublayers, each norm → body → [post-norm] → residual add; the body is attention
// (projections into one fused qkv row, [rotary], attention, output projection) or the MLP
// (projections into one row, gelu or a gated activation, down projection).
//
// Blocks below `saveFrom` run forward-only through one set of scratch buffers (the frozen prefix,
// or everything for inference); blocks from `saveFrom` up keep their activations for a backward
// (src/train/backward.ts reads `acts`). The residual stream of saved blocks is one buffer per
// latent space; the frozen prefix updates a single buffer in place, which then holds the boundary
// hidden state.
import type { Runtime } from '../gpu/runtime.ts';
import type { BufferBinding } from '../gpu/kernels.ts';
import type { Dispatch, StepItem } from '../gpu/step.ts';
import { matmul } from '../ops/matmul.ts';
import { attentionBufferBytes, attentionForward } from '../ops/attention.ts';
import { layernormForward } from '../ops/layernorm.ts';
import { rmsnormForward } from '../ops/rmsnorm.ts';
import { geluForward } from '../ops/gelu.ts';
import { gluForward } from '../ops/glu.ts';
import { ropeForward, ropeInvFreq } from '../ops/rope.ts';
import { residualAccumulate, residualAdd } from '../ops/residual.ts';
import { softcapForward } from '../ops/softcap.ts';
import { embeddingForward } from '../ops/embedding.ts';
import { crossEntropyForward, crossEntropyLossSum } from '../ops/crossentropy.ts';
import { traceGather } from '../ops/trace.ts';
import type { ModelConfig } from './config.ts';
import { modelSpec, type AttentionSpec, type ModelSpec, type NormSpec, type ProjSpec } from './spec.ts';
import type { GpuWeights } from './weights.ts';
import type { LoraAdapters } from './lora.ts';
import { loraForward } from '../ops/lora.ts';

export interface ForwardOptions {
  B: number;
  T: number;
  /** Blocks ≥ saveFrom keep activations for a backward; N (or more) = forward only. */
  saveFrom: number;
  /**
   * Start at block `startBlock` with its input already in `x` (written by the caller: a cached
   * boundary hidden state); the embedding and blocks below are not run. Default 0 (from the tokens).
   */
  startBlock?: number;
  /**
   * Stop after blocks 0..endBlock−1, leaving their output in `x` (the boundary hidden state); no final
   * norm, head or loss. Default N (the whole model).
   */
  endBlock?: number;
  /** Which positions the trace captures: none, every position, or a per-batch list (capacity given). */
  trace: { kind: 'none' } | { kind: 'all' } | { kind: 'rows'; capacity: number };
  /** Compute the loss against uploaded targets. */
  loss: boolean;
  /** Keep logits for every row (trace/generate) instead of streaming them through a chunk buffer. */
  keepLogits: boolean;
  /** Bytes of head weight per head product (default HEAD_CHUNK_BYTES; tests make it small). */
  headChunkBytes?: number;
  /**
   * LoRA adapters (src/model/lora.ts): every adapted projection adds (alpha/r)·(x·Aᵀ)·Bᵀ to its
   * output, keeping the scaled rank-r intermediate in `loraU` for the backward.
   */
  lora?: LoraAdapters;
}

/** A norm's saved statistics: mean (LayerNorm only) and 1/σ per row. */
export interface NormStats {
  mean: GPUBuffer | null;
  rstd: GPUBuffer;
}

/** Activations a block keeps for its backward (llm.c's list). */
export interface BlockActs {
  /** Block input: the residual stream before the block. */
  resIn: GPUBuffer;
  ln1: GPUBuffer;
  ln1Stats: NormStats;
  /** The attention's input [rows, qkvWidth] (after the rotary embedding). */
  qkv: GPUBuffer;
  att: GPUBuffer;
  attStats: GPUBuffer;
  /** Post-norm models: the output projection's result (the post-norm's input) and its statistics. */
  attnOut: GPUBuffer | null;
  attnPostStats: NormStats | null;
  /** Residual after the attention half. */
  res2: GPUBuffer;
  ln2: GPUBuffer;
  ln2Stats: NormStats;
  /** The MLP's projection row (GPT-2: the pre-activation [rows, H]; gated: [gate | up], [rows, 2H]) and its activation [rows, H]. */
  up: GPUBuffer;
  act: GPUBuffer;
  mlpOut: GPUBuffer | null;
  mlpPostStats: NormStats | null;
  /** Block output (the next block's resIn). */
  resOut: GPUBuffer;
}

/**
 * Smallest row count whose byte offset is a multiple of 256 (the binding offset alignment) for
 * every given row size: a power of two ≤ 64.
 */
export function rowAlign(...bytesPerRow: number[]): number {
  let a = 1;
  for (const b of bytesPerRow) while ((a * b) % 256 !== 0 && a < 64) a *= 2;
  return a;
}

/** Chunk of rows under `limitBytes`: a multiple of 64 rows when one fits, else of `align` rows (≥ align). */
function rowChunkUnder(limitBytes: number, bytesPerRow: number, total: number, align: number): number {
  const r = Math.floor(limitBytes / bytesPerRow);
  if (r >= total) return total;
  const step = r >= 64 ? 64 : align;
  return Math.min(total, Math.max(align, Math.floor(r / step) * step));
}

/** Row stride of the logits: V when kept for the caller, V rounded up to 4 when streamed (see Gpt2Forward.ldLogits). */
export function logitsStride(cfg: ModelConfig, keepLogits: boolean): number {
  return keepLogits ? cfg.vocabSize : Math.ceil(cfg.vocabSize / 4) * 4;
}

/**
 * Row chunk of the LM head: logits [rows, ld] must fit one binding and a memory cap. Chunk offsets
 * into lnf (and into the kept logits) stay 256-byte aligned.
 */
export function headRowChunk(cfg: ModelConfig, rows: number, maxBinding: number, capBytes = 64 * 2 ** 20, keepLogits = false): number {
  const perRow = logitsStride(cfg, keepLogits) * 4;
  const align = keepLogits ? rowAlign(cfg.nEmbd * 4, perRow) : rowAlign(cfg.nEmbd * 4);
  return rowChunkUnder(Math.min(maxBinding, capBytes), perRow, rows, align);
}

/**
 * Head products run over vocabulary chunks of at most this many bytes of the head weight: each
 * chunk's nt product transposes it into the matmul workspace, so the chunk sets that workspace's
 * size (16 MiB instead of a 128 MiB binding for GPT-2) at no cost in speed (each product is still
 * thousands of rows).
 */
export const HEAD_CHUNK_BYTES = 16 * 2 ** 20;

/** Vocabulary chunk of the head weight [V, C] so each chunk fits one binding (GPT-2's wte is 154 MB). */
export function headVocabChunk(cfg: ModelConfig, maxBinding: number, capBytes = Number.POSITIVE_INFINITY): number {
  const perRow = cfg.nEmbd * 4;
  return rowChunkUnder(Math.min(maxBinding, capBytes), perRow, cfg.vocabSize, rowAlign(perRow));
}

export class ModelForward {
  readonly cfg: ModelConfig;
  /** The description every dispatch is built from. */
  readonly spec: ModelSpec;
  /** Rotary inverse frequencies [headDim/2] (the Llama family). */
  readonly invFreq: GPUBuffer | null;
  readonly rows: number;
  /** Token ids [B·T] (u32), written per batch. */
  readonly ids: GPUBuffer;
  /** Targets [B·T] (u32), written per batch when computing a loss. */
  readonly targets: GPUBuffer;
  /** Residual stream buffer used in place by forward-only blocks; holds the boundary hidden state. */
  readonly x: GPUBuffer;
  readonly acts: BlockActs[] = [];
  /** Final norm output [B·T, C] and its statistics (for the backward). */
  readonly lnf: GPUBuffer;
  readonly lnfStats: NormStats;
  /** Logits: [B·T, V] when keepLogits, else one row chunk [rowChunk, ldLogits] reused. */
  readonly logits: GPUBuffer;
  /**
   * Row stride of the logits: V when kept for the caller; V rounded up to 4 when streamed, so the
   * head's weight gradient (tn over dlogits columns) takes the vec4 path even for GPT-2's 50257.
   * The padding columns are never written by the head and are zero in dlogits.
   */
  readonly ldLogits: number;
  readonly rowChunk: number;
  /** Rows of wte per binding range (the embedding gather's parts). */
  readonly vocabChunk: number;
  /** Rows of the head weight per head product (HEAD_CHUNK_BYTES). */
  readonly headRows: number;
  /** Per-row losses [B·T] and their mean [1]. */
  readonly losses: GPUBuffer;
  readonly loss: GPUBuffer;
  /** Trace [N+1, P, C]: the raw residual stream after the embeddings and after each block. */
  readonly trace: GPUBuffer | null;
  readonly traceRows: GPUBuffer | null;
  readonly tracePositions: number;
  /** Elements per latent space in the trace: positions·C rounded up to 64 (slots start 256-byte aligned). */
  readonly traceSlotElems: number;
  readonly items: StepItem[] = [];
  /** LoRA: the scaled rank-r intermediate s·x·Aᵀ [rows, r] of each adapted projection, by base weight name. */
  readonly loraU = new Map<string, GPUBuffer>();
  private readonly scratch: Record<string, GPUBuffer> = {};
  /** Every buffer this forward allocated (destroy() frees them). */
  private readonly owned: GPUBuffer[] = [];

  private constructor(readonly rt: Runtime, readonly weights: GpuWeights, readonly opts: ForwardOptions) {
    const cfg = (this.cfg = weights.cfg);
    const spec = (this.spec = modelSpec(cfg));
    const { B, T } = opts;
    if (T > cfg.nPositions) throw new Error(`sequence length ${T} exceeds n_positions ${cfg.nPositions}`);
    const start = opts.startBlock ?? 0;
    const end = opts.endBlock ?? cfg.nLayer;
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= cfg.nLayer)) throw new Error(`forward blocks ${start}..${end} outside 0..${cfg.nLayer}`);
    if (start > 0 && opts.saveFrom < start) throw new Error(`saveFrom ${opts.saveFrom} is below startBlock ${start}: blocks below the start do not run`);
    if (start > 0 && opts.trace.kind !== 'none') throw new Error('a forward from a cached boundary has no trace of the blocks below it');
    if (end < cfg.nLayer && (opts.saveFrom < end || opts.loss || opts.keepLogits)) throw new Error('a prefix forward (endBlock < N) is forward-only and has no head');
    const C = cfg.nEmbd;
    const H = cfg.nInner;
    const rows = (this.rows = B * T);
    const mem = rt.memory;
    const own = (b: GPUBuffer) => (this.owned.push(b), b);
    const f32 = (name: string, n: number) => own(mem.storage(name, n * 4));
    const layerNorm = spec.finalNorm.kind === 'layernorm';
    const stats = (name: string): NormStats => ({ mean: layerNorm ? f32(`${name}_mean`, rows) : null, rstd: f32(`${name}_rstd`, rows) });
    this.ids = f32('input.ids', rows);
    this.targets = f32('input.targets', rows);
    this.x = f32('act.x', rows * C);
    for (const m of opts.lora?.modules ?? []) if (m.block >= start && m.block < end) this.loraU.set(m.weight, f32(`act.lora.${m.module}`, rows * opts.lora!.r));
    const maxBinding = rt.gpu.limits.maxStorageBufferBindingSize ?? 128 * 2 ** 20;
    this.rowChunk = opts.keepLogits ? headRowChunk(cfg, rows, maxBinding, Number.POSITIVE_INFINITY, true) : headRowChunk(cfg, rows, maxBinding);
    this.vocabChunk = headVocabChunk(cfg, maxBinding);
    this.headRows = headVocabChunk(cfg, maxBinding, opts.headChunkBytes ?? HEAD_CHUNK_BYTES);
    this.ldLogits = logitsStride(cfg, opts.keepLogits);
    this.logits = f32('act.logits', (opts.keepLogits ? rows : this.rowChunk) * this.ldLogits);
    this.losses = f32('act.losses', rows);
    this.loss = f32('act.loss', 4);
    this.lnf = f32('act.lnf', rows * C);
    this.lnfStats = stats('act.lnf');
    this.invFreq = cfg.arch ? own(mem.upload('rope.inv_freq', ropeInvFreq(ropeConfig(cfg)))) : null;
    const block0 = spec.blocks[0]?.attention.body;
    const { statsBytes } = attentionBufferBytes(attentionShape(B, T, C, block0));
    const postNorms = spec.blocks.some((bl) => bl.attention.postNorm || bl.mlp.postNorm);
    // Scratch for forward-only blocks (shared by all of them), and the post-norms' outputs.
    if (Math.min(opts.saveFrom, end) > start) {
      this.scratch.ln = f32('act.scratch.ln', rows * C);
      this.scratch.qkv = f32('act.scratch.qkv', rows * spec.qkvWidth);
      this.scratch.att = f32('act.scratch.att', rows * spec.attnWidth);
      this.scratch.up = f32('act.scratch.up', rows * spec.upWidth);
      this.scratch.act = f32('act.scratch.act', rows * H);
      if (postNorms) this.scratch.proj = f32('act.scratch.proj', rows * C);
    }
    if (postNorms) this.scratch.normed = f32('act.scratch.normed', rows * C);
    let resIn = this.x;
    for (let l = Math.max(start, opts.saveFrom); l < end; l++) {
      const a = `act.h${l}`;
      const bl = spec.blocks[l]!;
      const acts: BlockActs = {
        resIn,
        ln1: f32(`${a}.ln1`, rows * C),
        ln1Stats: stats(`${a}.ln1`),
        qkv: f32(`${a}.qkv`, rows * spec.qkvWidth),
        att: f32(`${a}.att`, rows * spec.attnWidth),
        attStats: own(mem.storage(`${a}.att_stats`, statsBytes)),
        attnOut: bl.attention.postNorm ? f32(`${a}.attn_out`, rows * C) : null,
        attnPostStats: bl.attention.postNorm ? stats(`${a}.attn_post`) : null,
        res2: f32(`${a}.res2`, rows * C),
        ln2: f32(`${a}.ln2`, rows * C),
        ln2Stats: stats(`${a}.ln2`),
        up: f32(`${a}.up`, rows * spec.upWidth),
        act: f32(`${a}.act`, rows * H),
        mlpOut: bl.mlp.postNorm ? f32(`${a}.mlp_out`, rows * C) : null,
        mlpPostStats: bl.mlp.postNorm ? stats(`${a}.mlp_post`) : null,
        resOut: f32(`${a}.res3`, rows * C),
      };
      this.acts.push(acts);
      resIn = acts.resOut;
    }
    const t = opts.trace;
    this.tracePositions = t.kind === 'all' ? rows : t.kind === 'rows' ? t.capacity : 0;
    this.traceSlotElems = Math.ceil((this.tracePositions * C) / 64) * 64;
    this.trace = t.kind === 'none' ? null : f32('trace', (cfg.nLayer + 1) * this.traceSlotElems);
    this.traceRows = t.kind === 'rows' ? own(mem.storage('trace.rows', 4 * (1 + t.capacity))) : null;
  }

  static async build(rt: Runtime, weights: GpuWeights, opts: ForwardOptions): Promise<ModelForward> {
    const f = new ModelForward(rt, weights, opts);
    await f.buildItems();
    return f;
  }

  /** The residual stream after block l (l = −1: after the embeddings). */
  residualAfter(l: number): GPUBuffer {
    const first = this.cfg.nLayer - this.acts.length;
    return l < first ? this.x : this.acts[l - first]!.resOut;
  }

  /** Byte offset of latent space k's slot in the trace buffer. */
  traceSlotOffset(k: number): number {
    return k * this.traceSlotElems * 4;
  }

  private async capture(k: number, src: GPUBuffer): Promise<void> {
    if (!this.trace) return;
    const C = this.cfg.nEmbd;
    if (this.opts.trace.kind === 'all') {
      this.items.push({ copy: { src, srcOffset: 0, dst: this.trace, dstOffset: this.traceSlotOffset(k), bytes: this.rows * C * 4 } });
    } else {
      // Only this latent space's slot is bound: the whole trace may exceed one binding.
      const slot = range(this.trace, this.traceSlotOffset(k), this.traceSlotElems * 4);
      this.items.push(await traceGather(this.rt, { x: src, rows: this.traceRows!, trace: slot, C, slotOffset: 0, capacity: this.tracePositions }));
    }
  }

  /** Dispatches of one norm: LayerNorm (GPT-2) or RMSNorm (w or 1 + w); statistics saved when given. */
  async norm(spec: NormSpec, inp: BufferBinding, out: BufferBinding, stats?: NormStats | null): Promise<Dispatch[]> {
    const { rt, rows } = this;
    const C = this.cfg.nEmbd;
    const w = this.weights;
    const eps = this.spec.eps;
    if (spec.kind === 'layernorm') return [await layernormForward(rt, { inp, gamma: w.get(spec.weight), beta: w.get(spec.bias!), out, mean: stats?.mean ?? undefined, rstd: stats?.rstd, rows, C, eps })];
    return [await rmsnormForward(rt, { inp, weight: w.get(spec.weight), out, rstd: stats?.rstd, rows, C, eps, plusOne: spec.kind === 'rmsnorm1p' })];
  }

  /** out[:, p.outOffset ..] (+)= inp·W (+ b) [+ LoRA]: one projection into its columns of a row of width ldOut. */
  async proj(p: ProjSpec, inp: BufferBinding, out: BufferBinding, ldOut: number, accumulate = false): Promise<Dispatch[]> {
    const w = this.weights;
    const common = { M: this.rows, N: p.outputs, K: p.inputs, a: inp, c: out, ldc: ldOut, cOff: p.outOffset, bias: p.bias ? w.get(p.bias) : undefined, accumulate };
    const base = await matmul(this.rt, { ...common, form: p.layout === 'in_out' ? 'nn' : 'nt', b: w.get(p.weight) });
    const lora = this.opts.lora;
    const m = lora?.get(p.weight);
    const u = this.loraU.get(p.weight);
    if (!lora || !m || !u) return base;
    return [...base, ...await loraForward(this.rt, { rows: this.rows, inputs: p.inputs, outputs: p.outputs, r: lora.r, scale: lora.scale, x: inp, A: m.A, B: m.B, u, y: out, ldy: ldOut, yOff: p.outOffset })];
  }

  private async buildItems(): Promise<void> {
    const { rt, cfg, weights: w, opts, spec } = this;
    const { B, T } = opts;
    const C = cfg.nEmbd;
    const H = cfg.nInner;
    const rows = this.rows;
    const push = (d: Dispatch | Dispatch[]) => this.items.push(...(Array.isArray(d) ? d : [d]));
    const copy = (src: GPUBuffer, dst: GPUBuffer) => this.items.push({ copy: { src, srcOffset: 0, dst, dstOffset: 0, bytes: rows * C * 4 } });

    const start = opts.startBlock ?? 0;
    const end = opts.endBlock ?? cfg.nLayer;
    const e = spec.embedding;
    if (start === 0) {
      push(await embeddingForward(rt, { ids: this.ids, ...this.wteParts(), wpe: e.positions ? w.get(e.positions) : undefined, scale: e.scale, out: this.x, B, T, C }));
      await this.capture(0, this.x);
    }

    const first = end - this.acts.length;
    for (let l = start; l < end; l++) {
      const bl = spec.blocks[l]!;
      const saved = l >= first ? this.acts[l - first]! : null;
      const s = this.scratch;
      const resIn = saved ? saved.resIn : this.x;
      const ln1 = saved?.ln1 ?? s.ln!;
      const qkv = saved?.qkv ?? s.qkv!;
      const att = saved?.att ?? s.att!;
      const res2 = saved?.res2 ?? this.x;
      const ln2 = saved?.ln2 ?? s.ln!;
      const up = saved?.up ?? s.up!;
      const act = saved?.act ?? s.act!;
      const resOut = saved?.resOut ?? this.x;

      // Attention half: res2 = resIn + [post-norm](o(attention(rope(qkv(norm(resIn)))))).
      const at = bl.attention;
      push(await this.norm(at.norm, resIn, ln1, saved?.ln1Stats));
      for (const p of at.body.qkv) push(await this.proj(p, ln1, qkv, spec.qkvWidth));
      if (at.body.rope) push(await ropeForward(rt, { qkv, invFreq: this.invFreq!, B, T, nHead: at.body.nHead, nKvHead: at.body.nKvHead, headDim: at.body.headDim }));
      push(await attentionForward(rt, { ...attentionShape(B, T, C, at.body), qkv, out: att, stats: saved?.attStats, save: !!saved }));
      await this.residual(at.body.o, att, at.postNorm, resIn, res2, saved?.attnOut ?? s.proj, saved?.attnPostStats, copy, push);

      // MLP half: resOut = res2 + [post-norm](down(act(up(norm(res2))))).
      const ml = bl.mlp;
      push(await this.norm(ml.norm, res2, ln2, saved?.ln2Stats));
      for (const p of ml.body.up) push(await this.proj(p, ln2, up, spec.upWidth));
      if (ml.body.kind === 'gelu') push(await geluForward(rt, { inp: up, out: act, n: rows * H }));
      else push(await gluForward(rt, { act: ml.body.kind === 'swiglu' ? 'silu' : 'gelu_tanh', rows, H, inp: { fused: up }, out: act }));
      await this.residual(ml.body.down, act, ml.postNorm, res2, resOut, saved?.mlpOut ?? s.proj, saved?.mlpPostStats, copy, push);
      await this.capture(l + 1, resOut);
    }
    if (end < cfg.nLayer) return;

    const last = this.residualAfter(cfg.nLayer - 1);
    push(await this.norm(spec.finalNorm, last, this.lnf, this.lnfStats));
    if (this.opts.keepLogits || this.opts.loss) {
      for (let r0 = 0; r0 < rows; r0 += this.rowChunk) {
        const r = Math.min(this.rowChunk, rows - r0);
        push(await this.headChunk(r0, r));
        const lo = this.opts.keepLogits ? r0 : 0;
        if (spec.finalSoftcap > 0) push(await softcapForward(rt, { logits: this.logitsRange(lo, r), rows: r, V: cfg.vocabSize, ld: this.ldLogits, cap: spec.finalSoftcap }));
        if (this.opts.loss) {
          push(await crossEntropyForward(rt, { logits: this.logitsRange(lo, r), targets: this.targets, losses: this.losses, rowOff: r0, rows: r, V: cfg.vocabSize, ld: this.ldLogits }));
        }
      }
      if (this.opts.loss) push(await crossEntropyLossSum(rt, { losses: this.losses, n: rows, total: this.loss, scale: 1 / rows }));
    }
  }

  /**
   * A sublayer's output projection and residual add: out = resIn + [postNorm](inp·W + b).
   * Without a post-norm the add is fused into the projection (copy resIn, then accumulate); with one,
   * the projection goes to `projOut` (kept for the backward when saved), is normalised, then added.
   */
  private async residual(o: ProjSpec, inp: GPUBuffer, postNorm: NormSpec | undefined, resIn: GPUBuffer, out: GPUBuffer, projOut: GPUBuffer | null | undefined, stats: NormStats | null | undefined, copy: (src: GPUBuffer, dst: GPUBuffer) => void, push: (d: Dispatch | Dispatch[]) => void): Promise<void> {
    const n = this.rows * this.cfg.nEmbd;
    if (!postNorm) {
      if (out !== resIn) copy(resIn, out);
      push(await this.proj(o, inp, out, this.cfg.nEmbd, true));
      return;
    }
    push(await this.proj(o, inp, projOut!, this.cfg.nEmbd));
    const normed = this.scratch.normed!;
    push(await this.norm(postNorm, projOut!, normed, stats));
    push(out === resIn ? await residualAccumulate(this.rt, { n, acc: out, b: normed }) : await residualAdd(this.rt, { n, a: resIn, b: normed, out }));
  }

  /** The token embedding as row ranges that each fit one binding (GPT-2's f32 wte is 154 MB). */
  wteParts(): { wte: BufferBinding[]; partRows: number } {
    const V = this.cfg.vocabSize;
    const C = this.cfg.nEmbd;
    const wte = this.weights.get(this.spec.embedding.tokens);
    const parts: BufferBinding[] = [];
    for (let v0 = 0; v0 < V; v0 += this.vocabChunk) parts.push(range(wte, v0 * C * 4, Math.min(this.vocabChunk, V - v0) * C * 4));
    return { wte: parts, partRows: this.vocabChunk };
  }

  /** The logits rows [r0, r0+r) as a binding (whole-buffer chunks when streaming). */
  logitsRange(r0: number, r: number): BufferBinding {
    const ld = this.ldLogits;
    return range(this.logits, r0 * ld * 4, r * ld * 4);
  }

  /** logits[rows r0..r0+r) = lnf[rows] · headᵀ, over vocabulary chunks that each fit one binding. */
  async headChunk(r0: number, r: number): Promise<Dispatch[]> {
    const { cfg, rt } = this;
    const C = cfg.nEmbd;
    const V = cfg.vocabSize;
    const out: Dispatch[] = [];
    const lo = this.opts.keepLogits ? r0 : 0;
    for (let v0 = 0; v0 < V; v0 += this.headRows) {
      const vc = Math.min(this.headRows, V - v0);
      out.push(...await matmul(rt, {
        form: 'nt', M: r, N: vc, K: C,
        a: range(this.lnf, r0 * C * 4, r * C * 4),
        b: range(this.weights.head, v0 * C * 4, vc * C * 4),
        c: this.logitsRange(lo, r), ldc: this.ldLogits, cOff: v0,
      }));
    }
    return out;
  }

  /** Upload a batch: ids and (optionally) targets, each B·T token ids. */
  setBatch(ids: ArrayLike<number>, targets?: ArrayLike<number>): void {
    const V = this.cfg.vocabSize;
    // A target of −1 (IGNORE, 0xFFFFFFFF on the GPU) adds no loss and no gradient: label-only training.
    const put = (buf: GPUBuffer, xs: ArrayLike<number>, what: string, ignorable = false) => {
      if (xs.length !== this.rows) throw new Error(`${what}: expected ${this.rows} tokens (B·T), got ${xs.length}`);
      const u = new Uint32Array(this.rows);
      for (let i = 0; i < this.rows; i++) {
        const id = xs[i]!;
        if (ignorable && (id === -1 || id === 0xffffffff)) {
          u[i] = 0xffffffff;
          continue;
        }
        if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`${what}: token id ${id} at position ${i} is outside the vocabulary (size ${V})`);
        u[i] = id;
      }
      this.rt.memory.write(buf, u);
    };
    put(this.ids, ids, 'input');
    if (targets) put(this.targets, targets, 'targets', true);
  }

  /** Positions the trace captures (kind 'rows'): row indices into the B·T batch. */
  setTraceRows(rowsIdx: ArrayLike<number>): void {
    if (!this.traceRows) throw new Error('this forward was built without a row trace');
    if (rowsIdx.length > this.tracePositions) throw new Error(`${rowsIdx.length} trace positions exceed the capacity ${this.tracePositions}`);
    const u = new Uint32Array(1 + rowsIdx.length);
    u[0] = rowsIdx.length;
    for (let i = 0; i < rowsIdx.length; i++) u[1 + i] = rowsIdx[i]!;
    this.rt.memory.write(this.traceRows, u);
  }

  /** Free every buffer this forward allocated (the weights are not its). */
  destroy(): void {
    for (const b of this.owned.splice(0)) this.rt.memory.destroy(b);
  }

  async run(label = 'forward'): Promise<void> {
    await this.rt.steps.run(label, this.items);
  }

  async readLoss(): Promise<number> {
    return (await this.rt.memory.readFloat32(this.loss, 0, 1))[0]!;
  }
}

/** The attention kernel's shape for one block's attention spec (GPT-2: nKvHead = nHead, hd = C/nHead). */
export function attentionShape(B: number, T: number, C: number, a: AttentionSpec | undefined) {
  return a
    ? { B, T, C, nHead: a.nHead, nKvHead: a.nKvHead, headDim: a.headDim, scale: a.scale, softcap: a.softcap, window: a.window }
    : { B, T, C, nHead: 1 };
}

/** The rotary settings of a Llama-family config, as ropeInvFreq takes them. */
export function ropeConfig(cfg: ModelConfig) {
  const a = cfg.arch!;
  const sc = a.ropeScaling;
  return {
    headDim: a.headDim,
    ropeTheta: a.ropeTheta,
    ropeScaling: sc ? { rope_type: 'llama3' as const, factor: sc.factor, low_freq_factor: sc.lowFreqFactor, high_freq_factor: sc.highFreqFactor, original_max_position_embeddings: sc.originalMaxPositionEmbeddings } : null,
  };
}

/** Compatibility name: the forward was GPT-2's alone before the Llama family joined. */
export { ModelForward as Gpt2Forward };

export function range(buffer: GPUBuffer, offset: number, size: number): BufferBinding {
  return offset === 0 && size === buffer.size ? buffer : { buffer, offset, size };
}
