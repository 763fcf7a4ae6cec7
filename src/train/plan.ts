// The sizes a forward or a training step will bind, computed from (config, B, T, kind) before any
// weight is read or buffer allocated, and checked against the adapter's limits. Tensors that do
// not grow with B·T and exceed one binding are already split by the kernels (wte into parts, the
// LM head by vocabulary and rows, the optimizer into pieces, products past 65535 workgroups into
// row blocks); what remains bound whole is listed here. A shape that does not fit fails with one
// line naming the limit, what was asked and what would fit; a training batch that does not fit is
// split into micro-batches instead (same windows, same mean-loss gradient).
import type { ModelConfig } from '../model/config.ts';
import { HEAD_CHUNK_BYTES, headRowChunk, headVocabChunk, logitsStride } from '../model/forward.ts';
import { modelSpec } from '../model/spec.ts';

export interface ShapeLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

/** train: forward + backward; forward: streamed logits (eval, analyze); logits: every row's logits kept (trace, generate). */
export type StepKind = 'train' | 'forward' | 'logits';

export interface ShapeRequest {
  B: number;
  T: number;
  kind: StepKind;
  /** Training only: the freeze boundary (null = full fine-tuning, which also needs the token index). */
  freeze?: number | null;
}

export interface BufferNeed {
  what: string;
  bytes: number;
  limit: keyof ShapeLimits;
  /** Grows with B·T (a smaller batch helps). */
  perRow: boolean;
}

/** The flags a message names (commands that take the sequence from a prompt say so). */
export interface ShapeFlags {
  batch: string;
  seq: string;
}

export class ShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShapeError';
  }
}

const roundUp4 = (x: number) => Math.ceil(x / 4) * 4;

/** Every buffer of the step that is bound (or allocated) whole, with the limit it must fit. */
export function bufferNeeds(cfg: ModelConfig, req: ShapeRequest, limits: ShapeLimits): BufferNeed[] {
  const { nEmbd: C, nInner: H, vocabSize: V, nLayer: N } = cfg;
  const spec = modelSpec(cfg);
  const Q = spec.qkvWidth;
  const U = spec.upWidth;
  const rows = req.B * req.T;
  const binding = 'maxStorageBufferBindingSize' as const;
  const buffer = 'maxBufferSize' as const;
  const maxBinding = limits.maxStorageBufferBindingSize;
  const keep = req.kind === 'logits';
  const ld = logitsStride(cfg, keep);
  const headRows = headVocabChunk(cfg, maxBinding, HEAD_CHUNK_BYTES);
  const wteRows = headVocabChunk(cfg, maxBinding);
  const logitRows = keep ? headRowChunk(cfg, rows, maxBinding, Number.POSITIVE_INFINITY, true) : headRowChunk(cfg, rows, maxBinding);
  // Activations: each is a buffer and a binding; nn/nt products also transpose their [rows, K]
  // operand into a workspace of roundUp4(rows)·K floats.
  const needs: BufferNeed[] = [
    { what: `the MLP activations [${rows} × ${U}]`, bytes: roundUp4(rows) * U * 4, limit: binding, perRow: true },
    { what: `the attention input qkv [${rows} × ${Q}]`, bytes: roundUp4(rows) * Q * 4, limit: binding, perRow: true },
    { what: `the attention output [${rows} × ${spec.attnWidth}]`, bytes: roundUp4(rows) * spec.attnWidth * 4, limit: binding, perRow: true },
    { what: `the residual stream [${rows} × ${C}]`, bytes: roundUp4(rows) * C * 4, limit: binding, perRow: true },
    { what: `a row chunk of the logits [${logitRows} × ${ld}]`, bytes: logitRows * ld * 4, limit: binding, perRow: false },
    { what: `a vocabulary chunk of the LM head [${headRows} × ${C}]`, bytes: roundUp4(headRows) * C * 4, limit: binding, perRow: false },
    { what: `a part of the token embedding [${wteRows} × ${C}]`, bytes: wteRows * C * 4, limit: binding, perRow: false },
    { what: `the token embedding [${V} × ${C}]`, bytes: V * C * 4, limit: buffer, perRow: false },
    ...(spec.embedding.positions ? [{ what: `the position embedding [${cfg.nPositions} × ${C}]`, bytes: cfg.nPositions * C * 4, limit: binding, perRow: false }] : []),
    { what: `the MLP weight [${C} × ${H}]`, bytes: C * H * 4, limit: binding, perRow: false },
    // GPT-2's fused c_attn [C, 3C]; the Llama family's largest of q/k/v/o is [nHead·hd, C].
    { what: cfg.arch ? `the attention weight [${spec.attnWidth} × ${C}]` : `the attention weight [${C} × ${3 * C}]`, bytes: (cfg.arch ? spec.attnWidth : 3 * C) * C * 4, limit: binding, perRow: false },
  ];
  if (spec.finalSoftcap > 0 && req.kind === 'train') needs.push({ what: `the soft-cap derivative [${logitRows} × ${V}]`, bytes: logitRows * V * 4, limit: binding, perRow: false });
  if (keep) {
    needs.push({ what: `the logits [${rows} × ${V}]`, bytes: rows * V * 4, limit: buffer, perRow: true });
    needs.push({ what: `the trace [${N + 1} × ${rows} × ${C}]`, bytes: (N + 1) * Math.ceil((rows * C) / 64) * 64 * 4, limit: buffer, perRow: true });
  }
  if (req.kind === 'train') {
    needs.push({ what: `the attention statistics [${req.B} × ${cfg.nHead} × ${req.T}]`, bytes: rows * cfg.nHead * 4, limit: binding, perRow: true });
    if (req.freeze === null || req.freeze === undefined) needs.push({ what: `the token index of ${rows} positions`, bytes: (2 + 3 * rows) * 4, limit: binding, perRow: true });
  }
  return needs;
}

/** The first need over its limit, or null when the shape fits. */
export function firstOverLimit(cfg: ModelConfig, req: ShapeRequest, limits: ShapeLimits): BufferNeed | null {
  return bufferNeeds(cfg, req, limits).find((n) => n.bytes > limits[n.limit]) ?? null;
}

/** Largest x in [1, hi] with fits(x) (monotone: fits(x) implies fits(x − 1)); 0 when none. */
function largestFitting(hi: number, fits: (x: number) => boolean): number {
  let lo = 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Largest batch ≤ req.B that fits at req.T (0: not even one sequence). */
export function maxBatch(cfg: ModelConfig, req: ShapeRequest, limits: ShapeLimits): number {
  return largestFitting(req.B, (B) => firstOverLimit(cfg, { ...req, B }, limits) === null);
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)} MiB`;

/** One line: which limit, what was asked, what would fit. */
export function shapeMessage(cfg: ModelConfig, req: ShapeRequest, limits: ShapeLimits, flags: ShapeFlags = { batch: '--batch', seq: '--seq' }): string | null {
  const over = firstOverLimit(cfg, req, limits);
  if (!over) return null;
  const kind = over.limit === 'maxBufferSize' ? 'one buffer' : 'one storage binding';
  const head = `${flags.batch} ${req.B} ${flags.seq} ${req.T}: ${over.what} needs ${mib(over.bytes)} in ${kind}, over this adapter's ${over.limit} (${mib(limits[over.limit])})`;
  if (!over.perRow) return `${head}: this model cannot run on this adapter`;
  const b = maxBatch(cfg, req, limits);
  if (b >= 1) return `${head}; use ${flags.batch} ≤ ${b} at ${flags.seq} ${req.T} on this adapter`;
  const t = largestFitting(req.T, (T) => firstOverLimit(cfg, { ...req, B: 1, T }, limits) === null);
  if (t >= 1) return `${head}; use ${flags.seq} ≤ ${t} at ${flags.batch} 1 on this adapter`;
  return `${head}: this model cannot run on this adapter`;
}

/** Throws ShapeError (one line) unless the shape fits the adapter. */
export function checkShape(cfg: ModelConfig, req: ShapeRequest, limits: ShapeLimits, flags?: ShapeFlags): void {
  const msg = shapeMessage(cfg, req, limits, flags);
  if (msg) throw new ShapeError(msg);
}

/**
 * The training shape to build for `--batch B --accum A`: as asked when it fits; otherwise B split
 * into micro-batches of its largest divisor that fits, with A·(B/b) accumulation steps, so each
 * optimizer step sees the same windows in the same order and the same mean-loss gradient.
 * `note` says so; throws ShapeError when not even one sequence fits.
 */
export function fitTrainingBatch(cfg: ModelConfig, req: { B: number; T: number; accum: number; freeze: number | null }, limits: ShapeLimits): { B: number; accum: number; note: string | null } {
  const ask: ShapeRequest = { B: req.B, T: req.T, kind: 'train', freeze: req.freeze };
  const over = firstOverLimit(cfg, ask, limits);
  if (!over) return { B: req.B, accum: req.accum, note: null };
  const fit = maxBatch(cfg, ask, limits);
  if (!over.perRow || fit < 1) throw new ShapeError(shapeMessage(cfg, ask, limits)!);
  let b = fit;
  while (req.B % b !== 0) b--;
  const split = req.B / b;
  return { B: b, accum: req.accum * split, note: `--batch ${req.B} at --seq ${req.T}: ${over.what} would need ${mib(over.bytes)} in one storage binding (this adapter's ${over.limit} is ${mib(limits[over.limit])}); running ${split} micro-batches of ${b} per step instead (same windows, same gradient)` };
}
