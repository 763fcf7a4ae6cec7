// Pacing dawn.node's event polling. While any WebGPU promise is pending (onSubmittedWorkDone,
// mapAsync, pipeline creation), dawn.node polls for finished work by re-queuing a native callback
// with the global `setImmediate`: a hot loop that takes a whole core from lavapipe's worker threads
// (35–45% of the software GPU's speed on 2 cores). It looks the global up on every tick, so a wrapper
// can pace it: the first ticks of a wait run at once (a short wait stays short), later ones every
// `pollMs` through `setTimeout`. A wait then costs at most ~pollMs more than the GPU work, whatever
// its length, with no estimate to learn (the old sleep-then-await scheme overslept or spun for many
// steps whenever a step's time changed). Only native callbacks are paced: JavaScript's own
// setImmediate calls pass through untouched.

export interface DawnPollPacing {
  /** Ticks within this many ms of a burst's start run immediately. */
  immediateMs: number;
  /** Then one tick per this many ms. */
  pollMs: number;
}

export const DEFAULT_PACING: DawnPollPacing = { immediateMs: 0.25, pollMs: 1 };

type Immediate = typeof globalThis.setImmediate;

let original: Immediate | null = null;

const isNative = (fn: unknown) => typeof fn === 'function' && Function.prototype.toString.call(fn).endsWith('{ [native code] }');

/** Install the pacing wrapper (idempotent; `pacing` replaces the previous settings). */
export function paceDawnPolling(pacing: DawnPollPacing = DEFAULT_PACING): void {
  const base = original ?? globalThis.setImmediate;
  let burstStart = -Infinity;
  let lastScheduled = -Infinity;
  const paced = ((fn: (...args: unknown[]) => void, ...args: unknown[]) => {
    if (!isNative(fn)) return base(fn, ...args);
    const now = performance.now();
    // A gap longer than a few poll periods means this tick starts a new wait.
    if (now - lastScheduled > 4 * pacing.pollMs) burstStart = now;
    lastScheduled = now;
    if (now - burstStart < pacing.immediateMs) return base(fn, ...args);
    return setTimeout(fn, pacing.pollMs, ...args) as unknown as ReturnType<Immediate>;
  }) as Immediate;
  Object.assign(paced, base); // keeps util.promisify's hook
  original = base;
  globalThis.setImmediate = paced;
}

/** Restore Dawn's hot polling (for measurements and tests). */
export function unpaceDawnPolling(): void {
  if (original) globalThis.setImmediate = original;
  original = null;
}
