// Browser platform: navigator.gpu; files over fetch (model and data URLs, HTTP Range for weights) or
// from Blobs the page already holds (files the user picked, registered under a name in `files`);
// kernels from the bundle (`kernels`, see scripts/build-web.mjs) or else fetched from `kernelBaseUrl`.
// Files written (a fine-tuned model) are kept in `written`, for the page to offer as downloads.
import { memoryTuningStore, type Platform, type RandomAccessFile, type TuningStore } from './types.ts';

export interface BrowserPlatformOptions {
  /** WGSL sources by kernel name (the library bundle carries them all). */
  kernels?: Readonly<Record<string, string>>;
  /** Where to fetch kernels/<name>.wgsl when `kernels` lacks one. */
  kernelBaseUrl?: string;
  /** Blobs (e.g. File objects the user picked) by the name the core will ask for. */
  files?: ReadonlyMap<string, Blob>;
}

export interface BrowserPlatform extends Platform {
  /** What writeFile produced, by path. */
  readonly written: Map<string, Blob>;
}

export function browserPlatform(o: BrowserPlatformOptions = {}): BrowserPlatform {
  const files = o.files ?? new Map<string, Blob>();
  const kernelBaseUrl = o.kernelBaseUrl ?? './kernels/';
  const written = new Map<string, Blob>();
  const fetchBytes = async (url: string) => {
    const blob = files.get(url) ?? written.get(url);
    if (blob) return new Uint8Array(await blob.arrayBuffer());
    let r: Response;
    try {
      r = await fetch(url);
    } catch (e) {
      throw new Error(`${url}: cannot fetch (${(e as Error).message}; is the address right, and does its server allow this page's origin?)`);
    }
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  return {
    name: 'browser',
    written,
    gpu() {
      const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
      if (!gpu) throw new Error('This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled, on a page served over https or from localhost.');
      return gpu;
    },
    async kernelSource(name: string) {
      const bundled = o.kernels?.[name];
      if (bundled !== undefined) return bundled;
      return new TextDecoder().decode(await fetchBytes(`${kernelBaseUrl}${name}.wgsl`));
    },
    readBytes: fetchBytes,
    async openFile(url: string) {
      const blob = files.get(url) ?? written.get(url);
      return blob ? blobFile(url, blob) : rangeFile(url);
    },
    async writeFile(path, data) {
      const parts = Array.isArray(data) ? data : [data];
      written.set(path, new Blob(parts as BlobPart[]));
    },
    now: () => performance.now(),
    tuning: browserTuningStore(),
    adapterHelp() {
      return 'No WebGPU adapter: this browser has WebGPU but gives no adapter (Chromium: enable it with --enable-unsafe-webgpu, or check chrome://gpu).';
    },
  };
}

/** Blob.slice reads only the range asked for, so a multi-GiB File never sits in memory whole. */
function blobFile(name: string, blob: Blob): RandomAccessFile {
  return {
    size: blob.size,
    async read(position, into) {
      const bytes = new Uint8Array(await blob.slice(position, position + into.length).arrayBuffer());
      if (bytes.length !== into.length) throw new Error(`${name}: ends at byte ${position + bytes.length}, before the ${into.length} bytes asked for at ${position}`);
      into.set(bytes);
    },
    close: async () => {},
  };
}

/** HTTP Range requests; the size comes from the first probe's Content-Range. */
async function rangeFile(url: string): Promise<RandomAccessFile> {
  const ranged = async (first: number, last: number) => {
    let r: Response;
    try {
      r = await fetch(url, { headers: { Range: `bytes=${first}-${last}` } });
    } catch (e) {
      throw new Error(`${url}: cannot fetch (${(e as Error).message}; is the address right, and does its server allow this page's origin?)`);
    }
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    if (r.status !== 206) throw new Error(`${url}: the server ignores HTTP Range requests (needed to read large model files in parts)`);
    return r;
  };
  const probe = await ranged(0, 0);
  const size = Number(/\/(\d+)$/.exec(probe.headers.get('Content-Range') ?? '')?.[1]);
  await probe.arrayBuffer();
  if (!Number.isSafeInteger(size)) throw new Error(`${url}: the server's Content-Range gives no file size (a server on another origin must list Content-Range in Access-Control-Expose-Headers)`);
  return {
    size,
    async read(position, into) {
      if (into.length === 0) return;
      const bytes = new Uint8Array(await (await ranged(position, position + into.length - 1)).arrayBuffer());
      if (bytes.length !== into.length) throw new Error(`${url}: got ${bytes.length} bytes at ${position}, asked for ${into.length}`);
      into.set(bytes);
    },
    close: async () => {},
  };
}

/** localStorage under `semfreeze.tuning.<key>` where the page may use it; else kept for the page's life. */
function browserTuningStore(): TuningStore {
  const memory = memoryTuningStore();
  const storage = (): Storage | null => {
    try {
      return (globalThis as { localStorage?: Storage }).localStorage ?? null;
    } catch {
      return null; // sandboxed frames throw on access
    }
  };
  return {
    async get(key) {
      try {
        const v = storage()?.getItem(`semfreeze.tuning.${key}`);
        if (v !== null && v !== undefined) return v;
      } catch {
        // storage disabled: fall through to memory
      }
      return memory.get(key);
    },
    async set(key, value) {
      await memory.set(key, value);
      try {
        storage()?.setItem(`semfreeze.tuning.${key}`, value);
      } catch {
        // quota or privacy mode: memory only
      }
    },
  };
}
