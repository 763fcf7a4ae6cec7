// The one seam between the core and where it runs. Everything in src/ except src/platform/node.ts
// and src/platform/browser.ts is platform-free: it gets a GPU object and reads bytes through this.

export interface Platform {
  /** 'node' (Dawn via the `webgpu` package) or 'browser' (navigator.gpu). */
  readonly name: 'node' | 'browser';
  /** The WebGPU entry point (navigator.gpu or Dawn's GPU object). */
  gpu(): GPU;
  /** WGSL source of kernels/<name>.wgsl. */
  kernelSource(name: string): Promise<string>;
  /** Bytes of a user file (a path in Node, a URL in the browser). */
  readBytes(path: string): Promise<Uint8Array>;
  /** Ranged reads of a user file too large to hold in one buffer (model weights can exceed 2 GiB). */
  openFile(path: string): Promise<RandomAccessFile>;
  /**
   * Write a whole file so that no reader ever sees half of it (Node: temp file + rename; a browser:
   * kept in memory under `path` for the page to offer as a download).
   */
  writeFile(path: string, data: Uint8Array | string | Uint8Array[]): Promise<void>;
  /** A monotonic clock in milliseconds (timings, progress rates, ETAs). */
  now(): number;
  /**
   * Measured tuning choices kept per user across runs, by key (Node: one JSON file in
   * $SEMFREEZE_CACHE_DIR, else $XDG_CACHE_HOME/semfreeze, else ~/.cache/semfreeze; a browser:
   * localStorage). A missing or unreadable store reads as null and a failed write is dropped: the
   * choice is measured again next time.
   */
  readonly tuning: TuningStore;
  /** How to fix a missing adapter on this platform, shown in the error. */
  adapterHelp(): string;
}

export interface RandomAccessFile {
  /** Size in bytes. */
  readonly size: number;
  /** Fill `into` with the file's bytes from `position` on; fewer bytes than asked is an error. */
  read(position: number, into: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface TuningStore {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
}

/** A TuningStore that lives as long as the process (tests; a browser without localStorage). */
export function memoryTuningStore(): TuningStore & { readonly entries: Map<string, string> } {
  const entries = new Map<string, string>();
  return {
    entries,
    async get(key) {
      return entries.get(key) ?? null;
    },
    async set(key, value) {
      entries.set(key, value);
    },
  };
}
