// Node platform: Dawn through the `webgpu` package, files through fs.
import { create, globals } from 'webgpu';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { open, readFile, writeFile, rename, mkdir, unlink } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeText } from '../util/utf8.ts';
import type { Platform, RandomAccessFile, TuningStore } from './types.ts';
import { paceDawnPolling } from './dawn-poll.ts';

/** Repository / package root (kernels/ lives here). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

// Dawn crashes the process (segfault, futex aborts) if the object from create() is collected:
// keep it in a module-level binding for the whole process lifetime (quietGpu's closures hold it).
let quietGpu: GPU | null = null;

/**
 * What Dawn and the Vulkan stack print to fd 2 on every start, not meant for the user: Dawn's
 * "artificially reduced" limit warnings (printed while enumerating adapters, whatever limits are
 * requested later), the Vulkan loader's messages and lavapipe's conformance warning.
 */
export const NATIVE_NOISE = [
  /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced/,
  /^(ERROR|WARNING|INFO|DEBUG|PERF)?:? ?\[Loader Message\]/,
  /^WARNING: lavapipe is not a conformant [Vv]ulkan implementation/,
];

/**
 * Run `fn` with fd 2 pointed at a temp file, then print what it captured minus NATIVE_NOISE (all of it
 * when `keepAll` says so, e.g. no adapter was found). Native code writes to fd 2 directly, so this is
 * the one place it can be filtered: fd 2 is closed and the lowest free descriptor (2) reopened on the
 * file, then reopened on the original terminal or pipe through /proc/self/fd. Only for a terminal or a
 * pipe on Linux: a regular file would be reopened at the wrong offset, so output to a file is left as is.
 */
async function filterNativeStderr<T>(fn: () => T | Promise<T>, keepAll: (r: T) => boolean = () => false): Promise<T> {
  let saved = -1;
  try {
    const st = fstatSync(2);
    if (process.platform === 'linux' && (st.isFIFO() || st.isCharacterDevice())) saved = openSync('/proc/self/fd/2', 'a');
  } catch {
    saved = -1;
  }
  if (saved < 0) return fn();
  const capture = join(xdgRuntimeDir(), `stderr-${process.pid}-${Date.now()}`);
  let redirected = false;
  try {
    closeSync(2);
    const fd = openSync(capture, 'w');
    redirected = true;
    if (fd !== 2) closeSync(fd); // fd 2 was taken meanwhile: nothing is captured, nothing lost
  } catch {
    // fd 2 stays closed only if the reopen below fails too.
  }
  let result: T | undefined;
  let failed = false;
  try {
    result = await fn();
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    closeSync(2);
    const back = openSync(`/proc/self/fd/${saved}`, 'a');
    if (back !== 2) closeSync(back);
    closeSync(saved);
    if (redirected) {
      const text = readFileSync(capture, 'utf8');
      unlinkSync(capture);
      const keep = failed || keepAll(result as T);
      const lines = text.split('\n').filter((l) => l.length > 0 && (keep || !NATIVE_NOISE.some((re) => re.test(l))));
      if (lines.length > 0) writeSync(2, `${lines.join('\n')}\n`);
    }
  }
  return result as T;
}

function xdgRuntimeDir(): string {
  // Mesa prints errors on every start without a runtime dir.
  if (!process.env.XDG_RUNTIME_DIR) {
    // One directory per user, reused by every process (not a new temp dir each run).
    const dir = join(tmpdir(), `semfreeze-xdg-${process.getuid?.() ?? 'user'}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env.XDG_RUNTIME_DIR = dir;
  }
  return process.env.XDG_RUNTIME_DIR;
}

function dawn(): GPU {
  if (quietGpu) return quietGpu;
  xdgRuntimeDir();
  Object.assign(globalThis, globals);
  paceDawnPolling();
  const gpu = create([]) as unknown as GPU;
  // Only adapter enumeration prints the noise; the adapter and device are Dawn's own objects.
  quietGpu = {
    __brand: 'GPU',
    requestAdapter: (o?: GPURequestAdapterOptions) => filterNativeStderr(() => gpu.requestAdapter(o), (a) => a === null),
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat(),
    get wgslLanguageFeatures() {
      return gpu.wgslLanguageFeatures;
    },
  } as GPU;
  return quietGpu;
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
    throw readError(path, e);
  }
}

function readError(path: string, e: unknown): FileError {
  const code = (e as NodeJS.ErrnoException).code;
  return new FileError(path, code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, expected a file' : `cannot read (${(e as Error).message})`);
}

// One read() moves at most 2 GiB − 1 bytes in Node; larger ranges take several.
const MAX_READ = 1 << 30;

/** A file read by ranges, never whole: readFile fails on files over 2 GiB. */
export async function openFile(path: string): Promise<RandomAccessFile> {
  let handle;
  let size: number;
  try {
    handle = await open(path, 'r');
    const stat = await handle.stat();
    if (stat.isDirectory()) throw Object.assign(new Error('directory'), { code: 'EISDIR' });
    size = stat.size;
  } catch (e) {
    await handle?.close();
    throw readError(path, e);
  }
  const fh = handle;
  return {
    size,
    async read(position, into) {
      for (let done = 0; done < into.length;) {
        let n: number;
        try {
          ({ bytesRead: n } = await fh.read(into, done, Math.min(into.length - done, MAX_READ), position + done));
        } catch (e) {
          throw readError(path, e);
        }
        if (n === 0) throw new FileError(path, `ends at byte ${position + done}, before the ${into.length} bytes asked for at ${position} (was it truncated while reading?)`);
        done += n;
      }
    },
    close: () => fh.close(),
  };
}

/** A user's text file, decoded as every text input is (src/util/utf8.ts: invalid UTF-8 → U+FFFD). */
export async function readText(path: string): Promise<string> {
  return decodeText(await readBytes(path));
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

/** Where nodeTuningStore keeps its file: $SEMFREEZE_CACHE_DIR, $XDG_CACHE_HOME/semfreeze or ~/.cache/semfreeze. */
export function tuningFilePath(): string {
  const dir = process.env.SEMFREEZE_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'semfreeze');
  return join(dir, 'tuning.json');
}

/** One JSON object of key → value in tuningFilePath(), rewritten whole (atomically) on each set. */
export const nodeTuningStore: TuningStore = {
  async get(key) {
    const v = readTuningFile()[key];
    return typeof v === 'string' ? v : null;
  },
  async set(key, value) {
    try {
      await writeFileAtomic(tuningFilePath(), `${JSON.stringify({ ...readTuningFile(), [key]: value }, null, 2)}\n`);
    } catch {
      // A read-only home or a full disk costs a re-measurement next run, nothing else.
    }
  },
};

function readTuningFile(): Record<string, unknown> {
  try {
    const data: unknown = JSON.parse(readFileSync(tuningFilePath(), 'utf8'));
    return data && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, unknown>) : {};
  } catch {
    return {};
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
  openFile,
  writeFile: writeFileAtomic,
  now: () => performance.now(),
  tuning: nodeTuningStore,
  adapterHelp() {
    return 'No WebGPU adapter. Run `npm run setup` (as root on Debian/Ubuntu it installs the software Vulkan driver, Mesa lavapipe); it prints the exact command otherwise.';
  },
};
