// The shape plan (src/train/plan.ts) against a runtime: the adapter's limits, a too-large batch
// reduced (forward) or split into micro-batches (training) with a note, and anything that cannot
// fit reported as one user-facing line before the step is built.
import type { Runtime } from '../gpu/runtime.ts';
import type { ModelConfig } from '../model/config.ts';
import { UserError } from '../util/errors.ts';
import { ShapeError, checkShape, fitTrainingBatch, maxBatch, type ShapeFlags, type ShapeLimits, type ShapeRequest } from './plan.ts';

/**
 * Where notes for the user go (the CLI: stderr; the page: its log). `important` ones (a changed batch,
 * a warning) are shown even where routine progress is not (the CLI's --json).
 */
export type NoteSink = (line: string, important?: boolean) => void;

export function shapeLimits(rt: Runtime): ShapeLimits {
  const l = rt.gpu.limits;
  return { maxStorageBufferBindingSize: l.maxStorageBufferBindingSize ?? 128 * 2 ** 20, maxBufferSize: l.maxBufferSize ?? 256 * 2 ** 20 };
}

function userFacing<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof ShapeError) throw new UserError(e.message);
    throw e;
  }
}

/** The batch a forward-only command runs with: req.B, or the largest that fits (said once). */
export function fitForwardBatch(rt: Runtime, cfg: ModelConfig, req: ShapeRequest, flags?: ShapeFlags, note: NoteSink = () => {}): number {
  const limits = shapeLimits(rt);
  const B = maxBatch(cfg, req, limits);
  if (B < 1) userFacing(() => checkShape(cfg, req, limits, flags));
  if (B < req.B) note(`note: ${flags?.batch ?? '--batch'} ${req.B} does not fit this adapter at ${flags?.seq ?? '--seq'} ${req.T}; running batches of ${B}`, true);
  return B;
}

/** The micro-batch size and accumulation a training run builds with (see fitTrainingBatch). */
export function fitTraining(rt: Runtime, cfg: ModelConfig, req: { B: number; T: number; accum: number; freeze: number | null }, note: NoteSink = () => {}): { B: number; accum: number } {
  const fit = userFacing(() => fitTrainingBatch(cfg, req, shapeLimits(rt)));
  if (fit.note) note(`note: ${fit.note}`, true);
  return fit;
}
