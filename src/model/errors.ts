// Errors of loading a model directory (each names the file and the problem).
export class ModelLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelLoadError';
  }
}

/** The index of the first NaN or ±∞ in `x`, or −1. */
export function firstNonFinite(x: ArrayLike<number>): number {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
  return -1;
}

/** Weights with NaN or ±∞ give garbage (or a silent NaN) in every command: refuse them at load. */
export function checkFiniteTensor(source: string, name: string, x: ArrayLike<number>): void {
  const bad = firstNonFinite(x);
  if (bad >= 0) throw new ModelLoadError(`${source}: tensor '${name}' holds a non-finite value (${x[bad]} at index ${bad}); the model's weights are broken`);
}
