// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON header, then the raw tensor data. Checkpoints can be ~500 MB, so tensors are read
// lazily from the caller's bytes and float32 data is returned as a view whenever alignment allows.
// Like every web platform we support, this assumes a little-endian host.

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
  /** Offset of the tensor's first byte in the `bytes` given to parseSafetensors (not in the data section). */
  byteOffset: number;
  byteLength: number;
}

export class SafetensorsError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

export class SafetensorsFile {
  constructor(
    readonly source: string,
    readonly bytes: Uint8Array,
    /** In header order. */
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}

  /** F32 (a view when 4-byte aligned, else a copy), F16, BF16 or F64 converted to float32. */
  getFloat32(name: string): Float32Array {
    const t = this.info(name);
    switch (t.dtype) {
      case 'F32': return new Float32Array(...this.aligned(t, 4));
      case 'F16': return halfToFloat32(new Uint16Array(...this.aligned(t, 2)));
      case 'BF16': return bfloat16ToFloat32(new Uint16Array(...this.aligned(t, 2)));
      case 'F64': return Float32Array.from(new Float64Array(...this.aligned(t, 8)));
      default: throw this.error(`tensor '${name}' has dtype ${t.dtype}; getFloat32 reads F32, F16, BF16 or F64`);
    }
  }

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

  private info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t) return t;
    const some = [...this.tensors.keys()].slice(0, 5).map((k) => `'${k}'`).join(', ');
    const more = this.tensors.size > 5 ? `, … (${this.tensors.size} in all)` : '';
    throw this.error(`no tensor named '${name}' (it has ${some || 'no tensors'}${more})`);
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

  private error(problem: string): SafetensorsError {
    return new SafetensorsError(this.source, problem);
  }
}

/** Parse and validate a safetensors file; tensor data stays in `bytes` until read. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const fail = (problem: string): never => { throw new SafetensorsError(source, problem); };
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (headerLength > bytes.length - 8) fail(`header length ${headerLength} extends beyond the file (${bytes.length} bytes)`);
  const dataStart = 8 + headerLength;
  const header = parseHeaderJson(bytes.subarray(8, dataStart), fail);

  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(entry, fail);
      continue;
    }
    const { dtype, shape, begin, end } = parseEntry(name, entry, fail);
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      fail(`tensor '${name}': shape [${shape}] of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    if (end > bytes.length - dataStart) {
      fail(`tensor '${name}': data_offsets [${begin}, ${end}] lie outside the data section (${bytes.length - dataStart} bytes)`);
    }
    tensors.set(name, { dtype, shape, byteOffset: dataStart + begin, byteLength: end - begin });
    spans.push({ name, begin, end });
  }
  checkNoOverlap(spans, fail);
  return new SafetensorsFile(source, bytes, tensors, metadata);
}

function parseHeaderJson(headerBytes: Uint8Array, fail: (problem: string) => never): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  return header as Record<string, unknown>;
}

function parseMetadata(entry: unknown, fail: (problem: string) => never): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`'__metadata__' is not an object`);
  for (const [k, v] of Object.entries(entry as object)) {
    if (typeof v !== 'string') fail(`'__metadata__' value for '${k}' is not a string`);
  }
  return entry as Record<string, string>;
}

function parseEntry(name: string, entry: unknown, fail: (problem: string) => never) {
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

function checkNoOverlap(spans: { name: string; begin: number; end: number }[], fail: (problem: string) => never): void {
  const sorted = [...spans].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < sorted.length; i++) {
    const [prev, cur] = [sorted[i - 1]!, sorted[i]!];
    if (cur.begin < prev.end) {
      fail(`tensors '${prev.name}' [${prev.begin}, ${prev.end}] and '${cur.name}' [${cur.begin}, ${cur.end}] overlap in the data section`);
    }
  }
}

// IEEE half → float32 through a 64K-entry table: one lookup per element for large F16 checkpoints.
let halfTable: Float32Array | undefined;

function halfToFloat32(halves: Uint16Array): Float32Array {
  const table = (halfTable ??= buildHalfTable());
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]!]!;
  return out;
}

function buildHalfTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24; // subnormal
    else if (exponent === 31) table[h] = mantissa ? NaN : sign * Infinity;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return table;
}

/** bfloat16 is the top half of a float32. */
function bfloat16ToFloat32(halves: Uint16Array): Float32Array {
  const bits = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
  return new Float32Array(bits.buffer);
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
