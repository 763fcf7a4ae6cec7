// Node platform: Dawn through the `webgpu` package, files through fs.
import { create, globals } from 'webgpu';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { readFile, writeFile, rename, mkdir, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Platform } from './types.ts';

/** Repository / package root (kernels/ lives here). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

// Dawn crashes the process (segfault, futex aborts) if the object from create() is collected:
// keep it in a module-level binding for the whole process lifetime.
let dawnGpu: GPU | null = null;

function dawn(): GPU {
  if (dawnGpu) return dawnGpu;
  // Mesa prints errors on every start without a runtime dir.
  if (!process.env.XDG_RUNTIME_DIR) {
    // One directory per user, reused by every process (not a new temp dir each run).
    const dir = join(tmpdir(), `semfreeze-xdg-${process.getuid?.() ?? 'user'}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env.XDG_RUNTIME_DIR = dir;
  }
  Object.assign(globalThis, globals);
  dawnGpu = create([]) as unknown as GPU;
  return dawnGpu;
}

export class FileError extends Error {
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = 'FileError';
  }
}

export async function readBytes(path: string): Promise<Uint8Array> {
  try {
    const buf = await readFile(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileError(path, code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, expected a file' : `cannot read (${(e as Error).message})`);
  }
}

export async function readText(path: string): Promise<string> {
  return new TextDecoder('utf-8', { fatal: false }).decode(await readBytes(path));
}

/**
 * Write a file so that a reader (or a crash) never sees it half-written: write a temp file in the
 * same directory, then rename over the target.
 */
export async function writeFileAtomic(path: string, chunks: Uint8Array | string | Uint8Array[]): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    const parts = Array.isArray(chunks) ? chunks : [chunks];
    await writeFile(tmp, parts);
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw new FileError(path, `cannot write (${(e as Error).message})`);
  }
}

export const nodePlatform: Platform = {
  name: 'node',
  gpu: dawn,
  async kernelSource(name: string) {
    const path = join(packageRoot, 'kernels', `${name}.wgsl`);
    if (!existsSync(path)) throw new FileError(path, 'kernel source not found');
    return readFileSync(path, 'utf8');
  },
  readBytes,
  adapterHelp() {
    return 'No WebGPU adapter. Run `npm run setup` (as root on Debian/Ubuntu it installs the software Vulkan driver, Mesa lavapipe); it prints the exact command otherwise.';
  },
};
