// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON header, then the raw tensor data. Model files can exceed 2 GiB, so they are read by
// ranges (SafetensorsReader); small files (fixtures, optimizer state) are parsed from memory
// (SafetensorsFile), with float32 data returned as a view whenever alignment allows.
// Like every web platform we support, this assumes a little-endian host.

import { halfToFloat32 } from '../util/f16.ts';
import { decodeUtf8Strict } from '../util/utf8.ts';

export type SafetensorsDtype =
  | 'BOOL' | 'U8' | 'I8' | 'F8_E5M2' | 'F8_E4M3'
  | 'I16' | 'U16' | 'F16' | 'BF16'
  | 'I32' | 'U32' | 'F32'
  | 'F64' | 'I64' | 'U64';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  F64: 8, I64: 8, U64: 8,
};

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Offset of the tensor's first byte in its file (not in the data section). */
  byteOffset: number;
  byteLength: number;
}

/** The reference implementation's cap (Hugging Face's safetensors crate, MAX_HEADER_SIZE). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Tensors read by name as float32, from one file in memory, one file read by ranges, or shards. */
export interface TensorSource {
  /** What errors name: the file, or a sharded checkpoint's index. */
  readonly source: string;
  /** In header order (shard by shard). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The file that holds `name` (a shard for sharded checkpoints). */
  fileOf(name: string): string;
  /** F32/F16/BF16/F64 converted to float32, into `into` when given (its length must be the tensor's). */
  readFloat32(name: string, into?: Float32Array): Promise<Float32Array>;
  /** Release open files; a later read opens them again. */
  close(): Promise<void>;
}

export class SafetensorsError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

type Fail = (problem: string) => never;
const failer = (source: string): Fail => (problem) => { throw new SafetensorsError(source, problem); };

/** What the two kinds of file share: tensor lookup, dtype checks and errors. */
abstract class TensorTable {
  constructor(
    readonly source: string,
    /** In header order. */
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}

  fileOf(name: string): string {
    this.info(name);
    return this.source;
  }

  protected info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t) return t;
    const some = [...this.tensors.keys()].slice(0, 5).map((k) => `'${k}'`).join(', ');
    const more = this.tensors.size > 5 ? `, … (${this.tensors.size} in all)` : '';
    throw this.error(`no tensor named '${name}' (it has ${some || 'no tensors'}${more})`);
  }

  /** The tensor's info, checked to be a float dtype, and a destination of its element count. */
  protected floatTarget(name: string, into?: Float32Array): { t: TensorInfo; dtype: FloatDtype; out: Float32Array } {
    const t = this.info(name);
    const dtype = t.dtype;
    if (!isFloatDtype(dtype)) throw this.error(`tensor '${name}' has dtype ${dtype}; float32 reading takes ${FLOAT_DTYPES.join(', ')}`);
    const count = t.byteLength / DTYPE_BYTES[dtype];
    if (into && into.length !== count) throw new RangeError(`${this.source}: tensor '${name}' has ${count} elements, the destination ${into.length}`);
    return { t, dtype, out: into ?? new Float32Array(count) };
  }

  protected error(problem: string): SafetensorsError {
    return new SafetensorsError(this.source, problem);
  }
}

/** A whole safetensors file in memory (fixtures, optimizer state); tensors are views where alignment allows. */
export class SafetensorsFile extends TensorTable implements TensorSource {
  constructor(source: string, readonly bytes: Uint8Array, tensors: Map<string, TensorInfo>, metadata: Record<string, string>) {
    super(source, tensors, metadata);
  }

  /** F32 (a view when 4-byte aligned, else a copy), F16, BF16 or F64 converted to float32. */
  getFloat32(name: string): Float32Array {
    const t = this.info(name);
    if (t.dtype === 'F32') return new Float32Array(...this.aligned(t, 4));
    const { dtype, out } = this.floatTarget(name);
    floatsInto(dtype, this.aligned(t, DTYPE_BYTES[dtype]), out);
    return out;
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const values = this.getFloat32(name);
    if (!into) return values;
    this.floatTarget(name, into);
    into.set(values);
    return into;
  }

  async close(): Promise<void> {}

  /** Integer tensors (I8/I16/I32/I64/U8/U16/U32) as int32; values outside int32 are an error. */
  getInt32(name: string): Int32Array {
    const t = this.info(name);
    switch (t.dtype) {
      case 'I32': return new Int32Array(...this.aligned(t, 4));
      case 'I16': return Int32Array.from(new Int16Array(...this.aligned(t, 2)));
      case 'U16': return Int32Array.from(new Uint16Array(...this.aligned(t, 2)));
      case 'I8': return Int32Array.from(new Int8Array(...this.aligned(t, 1)));
      case 'U8': return Int32Array.from(new Uint8Array(...this.aligned(t, 1)));
      case 'U32': return this.narrow(name, new Uint32Array(...this.aligned(t, 4)));
      case 'I64': return this.narrow(name, new BigInt64Array(...this.aligned(t, 8)));
      default: throw this.error(`tensor '${name}' has dtype ${t.dtype}; getInt32 reads I8, I16, I32, I64, U8, U16 or U32`);
    }
  }

  /** The tensor's raw bytes (a view). */
  getBytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength);
  }

  /** [buffer, byteOffset, length] for a typed-array view: the caller's memory when aligned, else an aligned copy. */
  private aligned(t: TensorInfo, elementBytes: number): [ArrayBufferLike, number, number] {
    const length = t.byteLength / elementBytes;
    const at = this.bytes.byteOffset + t.byteOffset;
    if (at % elementBytes === 0) return [this.bytes.buffer, at, length];
    return [this.bytes.slice(t.byteOffset, t.byteOffset + t.byteLength).buffer, 0, length];
  }

  private narrow(name: string, values: Uint32Array | BigInt64Array): Int32Array {
    const out = new Int32Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = Number(values[i]);
      if (v > 0x7fffffff || v < -0x80000000) throw this.error(`tensor '${name}' element ${i} = ${v} does not fit in int32`);
      out[i] = v;
    }
    return out;
  }
}

/** Random access to a file, as src/platform provides it (the platform's RandomAccessFile). */
export interface RangedFile {
  readonly size: number;
  read(position: number, into: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

// Converted tensors are read in parts of this size, so a 2-byte checkpoint never sits in memory
// beside its float32 copy.
const CHUNK_BYTES = 16 << 20;

/**
 * A safetensors file read by ranges: only the header is read at open; each tensor is read when asked,
 * F32 straight into its destination, other dtypes chunk by chunk. Files of any size (over 2 GiB too).
 */
export class SafetensorsReader extends TensorTable implements TensorSource {
  private file: RangedFile | null;
  private scratch: Uint8Array | null = null;

  private constructor(source: string, file: RangedFile, private readonly reopen: () => Promise<RangedFile>, tensors: Map<string, TensorInfo>, metadata: Record<string, string>) {
    super(source, tensors, metadata);
    this.file = file;
  }

  /** Read and validate the header of `file` (opened by `open`, which may be called again after close()). */
  static async open(source: string, open: () => Promise<RangedFile>): Promise<SafetensorsReader> {
    const file = await open();
    try {
      const fail = failer(source);
      const prefix = new Uint8Array(Math.min(8, file.size));
      await file.read(0, prefix);
      const n = headerLength(prefix, file.size, fail);
      const head = new Uint8Array(n);
      await file.read(8, head);
      const { tensors, metadata } = parseHeader(head, file.size - 8 - n, fail);
      return new SafetensorsReader(source, file, open, tensors, metadata);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const { t, dtype, out } = this.floatTarget(name, into);
    const file = await this.opened();
    if (dtype === 'F32') {
      await file.read(t.byteOffset, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
      return out;
    }
    const size = DTYPE_BYTES[dtype];
    const perChunk = CHUNK_BYTES / size;
    this.scratch ??= new Uint8Array(CHUNK_BYTES);
    for (let i = 0; i < out.length; i += perChunk) {
      const count = Math.min(perChunk, out.length - i);
      const bytes = this.scratch.subarray(0, count * size);
      await file.read(t.byteOffset + i * size, bytes);
      floatsInto(dtype, [bytes.buffer, 0, count], out.subarray(i, i + count));
    }
    return out;
  }

  async close(): Promise<void> {
    const file = this.file;
    this.file = null;
    this.scratch = null;
    await file?.close();
  }

  private async opened(): Promise<RangedFile> {
    if (this.file) return this.file;
    const file = await this.reopen();
    const size = [...this.tensors.values()].reduce((end, t) => Math.max(end, t.byteOffset + t.byteLength), 0);
    if (file.size < size) {
      await file.close();
      throw this.error(`is now ${file.size} bytes, shorter than when it was opened (changed while loading?)`);
    }
    return (this.file = file);
  }
}

/** Parse and validate a safetensors file held in memory; tensor data stays in `bytes` until read. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const fail = failer(source);
  const n = headerLength(bytes.subarray(0, 8), bytes.length, fail);
  const { tensors, metadata } = parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, fail);
  return new SafetensorsFile(source, bytes, tensors, metadata);
}

/** N from the 8-byte prefix, checked against the reference's cap and the file's size. */
function headerLength(prefix: Uint8Array, fileSize: number, fail: Fail): number {
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (n > MAX_HEADER_BYTES) fail(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit of the safetensors format (a corrupt file?)`);
  if (n > fileSize - 8) fail(`header length ${n} extends beyond the file (${fileSize} bytes)`);
  return n;
}

/**
 * The JSON header, validated as strictly as Hugging Face's reference parser: UTF-8, a JSON object,
 * no duplicate keys, each tensor's byte count matching its shape and dtype, and the tensors covering
 * the data section exactly (from byte 0, contiguous, nothing after the last one).
 */
function parseHeader(headerBytes: Uint8Array, dataLength: number, fail: Fail): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const dataStart = 8 + headerBytes.length;
  const header = parseHeaderJson(headerBytes, fail);
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: Span[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(entry, fail);
      continue;
    }
    const { dtype, shape, begin, end } = parseEntry(name, entry, fail);
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected)) fail(`tensor '${name}': shape [${shape}] of ${dtype} is too large to address`);
    if (end - begin !== expected) {
      fail(`tensor '${name}': shape [${shape}] of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    if (end > dataLength) {
      fail(`tensor '${name}': data_offsets [${begin}, ${end}] lie outside the data section (${dataLength} bytes)`);
    }
    tensors.set(name, { dtype, shape, byteOffset: dataStart + begin, byteLength: end - begin });
    spans.push({ name, begin, end });
  }
  checkCoverage(spans, dataLength, fail);
  return { tensors, metadata };
}

function parseHeaderJson(headerBytes: Uint8Array, fail: Fail): Record<string, unknown> {
  const text = decodeUtf8Strict(headerBytes, (byte) => fail(`header is not valid UTF-8 (byte ${8 + byte} of the file)`));
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const twice = duplicateKey(text);
  if (twice !== null) fail(`header has the key '${twice}' twice (JSON readers disagree on which one counts)`);
  return header as Record<string, unknown>;
}

/**
 * The first key that occurs twice in one object of valid JSON `text`, or null. JSON.parse silently
 * keeps the last; the reference parser rejects the file.
 */
function duplicateKey(text: string): string | null {
  const objects: (Set<string> | null)[] = []; // null: inside an array
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
      const keys = objects.at(-1);
      if (!keys) continue;
      let j = i + 1;
      while (text[j] === ' ' || text[j] === '\n' || text[j] === '\r' || text[j] === '\t') j++;
      if (text[j] !== ':') continue;
      const key = JSON.parse(text.slice(start, i + 1)) as string;
      if (keys.has(key)) return key;
      keys.add(key);
    } else if (c === '{') objects.push(new Set());
    else if (c === '[') objects.push(null);
    else if (c === '}' || c === ']') objects.pop();
  }
  return null;
}

function parseMetadata(entry: unknown, fail: Fail): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`'__metadata__' is not an object`);
  for (const [k, v] of Object.entries(entry as object)) {
    if (typeof v !== 'string') fail(`'__metadata__' value for '${k}' is not a string`);
  }
  return entry as Record<string, string>;
}

function parseEntry(name: string, entry: unknown, fail: Fail) {
  if (typeof entry !== 'object' || entry === null) return fail(`tensor '${name}': header entry is not an object`);
  const e = entry as Record<string, unknown>;
  if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) {
    fail(`tensor '${name}': unknown dtype ${JSON.stringify(e.dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!Array.isArray(e.shape) || !e.shape.every(isCount)) fail(`tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
  const offsets = e.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    fail(`tensor '${name}': data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) fail(`tensor '${name}': data_offsets [${begin}, ${end}] are not ascending`);
  return { dtype: e.dtype as SafetensorsDtype, shape: e.shape as number[], begin, end };
}

interface Span { name: string; begin: number; end: number }

/** In offset order the tensors must tile [0, dataLength): no overlap, no gap, no trailing bytes. */
function checkCoverage(spans: Span[], dataLength: number, fail: Fail): void {
  const sorted = [...spans].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let prev: Span | null = null;
  for (const cur of sorted) {
    const at = prev?.end ?? 0;
    if (cur.begin < at) fail(`tensors '${prev!.name}' [${prev!.begin}, ${prev!.end}] and '${cur.name}' [${cur.begin}, ${cur.end}] overlap in the data section`);
    if (cur.begin > at) {
      fail(`bytes [${at}, ${cur.begin}) of the data section belong to no tensor (before '${cur.name}'); tensors must be contiguous`);
    }
    prev = cur;
  }
  const end = prev?.end ?? 0;
  if (end !== dataLength) {
    fail(`${dataLength - end} trailing bytes after the last tensor${prev ? ` ('${prev.name}' ends at ${end})` : ''}: the data section is ${dataLength} bytes (a corrupt or concatenated file?)`);
  }
}

const FLOAT_DTYPES = ['F32', 'F16', 'BF16', 'F64'] as const;
type FloatDtype = (typeof FLOAT_DTYPES)[number];
export const isFloatDtype = (d: SafetensorsDtype): d is FloatDtype => (FLOAT_DTYPES as readonly string[]).includes(d);

/** Aligned float elements ([buffer, byteOffset, count]) of `dtype`, converted into `out` (count long). */
function floatsInto(dtype: FloatDtype, [buffer, at, count]: [ArrayBufferLike, number, number], out: Float32Array): void {
  switch (dtype) {
    case 'F32': out.set(new Float32Array(buffer, at, count)); return;
    case 'F64': out.set(new Float64Array(buffer, at, count)); return;
    case 'F16': halfToFloat32(new Uint16Array(buffer, at, count), out); return;
    case 'BF16': bfloat16ToFloat32(new Uint16Array(buffer, at, count), out); return;
  }
}

/** bfloat16 is the top half of a float32. */
function bfloat16ToFloat32(halves: Uint16Array, out: Float32Array): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
}

export interface TensorToWrite {
  name: string;
  dtype: 'F32' | 'I32';
  shape: number[];
  data: Float32Array | Int32Array;
}

/**
 * Serialize to safetensors as chunks (header, then each tensor's bytes as a view of its data) so a
 * large model is never copied into one buffer; write or concatenate them in order.
 * Tensors are laid out sorted by name; the header is space-padded to 8-byte alignment per the spec.
 */
export function serializeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Uint8Array[] {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of sorted) {
    checkTensorToWrite(t, header);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  const view = new DataView(head.buffer);
  view.setUint32(0, padded % 2 ** 32, true);
  view.setUint32(4, Math.floor(padded / 2 ** 32), true);
  head.set(json, 8);
  return [head, ...sorted.map((t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
}

function checkTensorToWrite(t: TensorToWrite, written: Record<string, unknown>): void {
  const fail = (problem: string): never => { throw new Error(`serializeSafetensors: tensor '${t.name}' ${problem}`); };
  if (t.name === '__metadata__' || t.name in written) fail('is a duplicate or reserved name');
  const expectedType = t.dtype === 'F32' ? Float32Array : Int32Array;
  if (!(t.data instanceof expectedType)) fail(`has dtype ${t.dtype} but its data is a ${t.data.constructor.name}`);
  const count = t.shape.reduce((a, b) => a * b, 1);
  if (count !== t.data.length) fail(`has shape [${t.shape}] (${count} elements) but ${t.data.length} values`);
}
