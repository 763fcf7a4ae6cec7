// Browser platform: navigator.gpu, files and kernels over fetch (or from Blobs the page already holds,
// e.g. files the user picked, registered under a name in `files`).
import type { Platform, RandomAccessFile } from './types.ts';

export function browserPlatform(kernelBaseUrl = './kernels/', files: ReadonlyMap<string, Blob> = new Map()): Platform {
  const fetchBytes = async (url: string) => {
    const blob = files.get(url);
    if (blob) return new Uint8Array(await blob.arrayBuffer());
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  return {
    name: 'browser',
    gpu() {
      const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
      if (!gpu) throw new Error('This browser has no WebGPU (navigator.gpu is missing).');
      return gpu;
    },
    async kernelSource(name: string) {
      return new TextDecoder().decode(await fetchBytes(`${kernelBaseUrl}${name}.wgsl`));
    },
    readBytes: fetchBytes,
    async openFile(url: string) {
      const blob = files.get(url);
      return blob ? blobFile(url, blob) : rangeFile(url);
    },
    adapterHelp() {
      return 'No WebGPU adapter: enable WebGPU in this browser (Chromium: --enable-unsafe-webgpu).';
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
    const r = await fetch(url, { headers: { Range: `bytes=${first}-${last}` } });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    if (r.status !== 206) throw new Error(`${url}: the server ignores HTTP Range requests (needed to read large model files in parts)`);
    return r;
  };
  const probe = await ranged(0, 0);
  const size = Number(/\/(\d+)$/.exec(probe.headers.get('Content-Range') ?? '')?.[1]);
  await probe.arrayBuffer();
  if (!Number.isSafeInteger(size)) throw new Error(`${url}: the server's Content-Range gives no file size`);
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
