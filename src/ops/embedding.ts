// Embedding program (kernels/embedding.wgsl): out = wte[ids] + wpe[t]; backward dwpe (+)= Σ_b dout
// and a deterministic, atomics-free scatter-add dwte[id] += Σ dout[positions of id] driven by a CSR
// index of the batch's token ids that the host builds on the CPU (it knows the ids: it uploads them)
// and writes into a buffer allocated once with capacity B·T.
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup of the dwpe kernel (one element each). */
export const EMBEDDING_WG = 256;

/**
 * Invocations per workgroup of the per-row kernels (forward: one row; dwte: one unique id), strided
 * over C. lavapipe runs a workgroup on one thread 8 lanes wide: 8 is ~4x faster than 64 there.
 */
export function embeddingRowWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, rt.gpu.info.isSoftware ? 8 : 64);
}
/** Most workgroups the dwte scatter launches; each loops over unique ids u ≡ its index (mod count). */
export const EMBEDDING_WTE_WORKGROUPS = 512;
/** wte parts bound by one forward dispatch (a wte in more parts takes one dispatch per 4). */
export const EMBEDDING_PARTS_PER_DISPATCH = 4;
const NO_LIMIT = 0xffffffff;

// ---------------------------------------------------------------------------------------------
// CSR index of token ids (host side)
// ---------------------------------------------------------------------------------------------

/** The batch's token ids grouped: unique ids ascending; for each, its positions (b·T + t) ascending. */
export interface TokenIndex {
  /** Number of unique ids. */
  count: number;
  /** [count] unique ids, ascending. */
  unique: Uint32Array;
  /** [count + 1]: positions of unique[u] are positions[offsets[u] .. offsets[u+1]). */
  offsets: Uint32Array;
  /** [ids.length] positions grouped by id, ascending within each id. */
  positions: Uint32Array;
}

/** Group token ids by value (CPU). Throws on an id that is not an integer in [0, vocab). */
export function buildTokenIndex(ids: ArrayLike<number>, vocab = NO_LIMIT): TokenIndex {
  const n = ids.length;
  // Sort (id, position) pairs as exact float64 keys id·n + position.
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new Error(`token id ${id} at position ${i} outside [0, ${vocab})`);
    keys[i] = id * n + i;
  }
  keys.sort();
  const unique = new Uint32Array(n);
  const offsets = new Uint32Array(n + 1);
  const positions = new Uint32Array(n);
  let count = 0;
  let prev = -1;
  for (let k = 0; k < n; k++) {
    const key = keys[k]!;
    const id = Math.floor(key / n);
    positions[k] = key - id * n;
    if (id !== prev) {
      unique[count] = id;
      offsets[count] = k;
      count++;
      prev = id;
    }
  }
  offsets[count] = n;
  return { count, unique: unique.subarray(0, count), offsets: offsets.subarray(0, count + 1), positions };
}

/** u32 words of the packed index for `capacity` positions: count, unique[cap], offsets[cap+1], positions[cap]. */
export function tokenIndexWords(capacity: number): number {
  return 2 + 3 * capacity;
}

/** Pack an index into the kernel's layout (into `into` when given, reused between batches). */
export function packTokenIndex(index: TokenIndex, capacity: number, into?: Uint32Array): Uint32Array {
  if (index.positions.length > capacity) throw new Error(`token index: ${index.positions.length} positions over capacity ${capacity}`);
  const words = tokenIndexWords(capacity);
  const out = into ?? new Uint32Array(words);
  if (out.length < words) throw new Error(`token index: buffer of ${out.length} words, needs ${words}`);
  out[0] = index.count;
  out.set(index.unique, 1);
  out.set(index.offsets, 1 + capacity);
  out.set(index.positions, 2 + 2 * capacity);
  return out;
}

/**
 * The GPU buffer holding a batch's token index: allocated once for `capacity` = B·T positions;
 * `upload(ids)` builds the index on the CPU and writes it into the same buffer every batch (no
 * buffer or bind group is created per step). The dwte kernel reads the count from the buffer.
 */
export class TokenIndexBuffer {
  readonly buffer: GPUBuffer;
  private readonly host: Uint32Array;

  constructor(private readonly rt: Runtime, readonly capacity: number, name = 'emb.tokenIndex') {
    if (!(Number.isInteger(capacity) && capacity > 0)) throw new Error(`TokenIndexBuffer: capacity must be a positive integer (${capacity})`);
    this.host = new Uint32Array(tokenIndexWords(capacity));
    this.buffer = rt.memory.storage(name, this.host.byteLength);
    rt.memory.write(this.buffer, this.host); // count 0 until the first upload
  }

  /** Build the index of this batch's ids (row-major [B, T]) and write it; returns the index. */
  upload(ids: ArrayLike<number>, vocab?: number): TokenIndex {
    if (ids.length > this.capacity) throw new Error(`TokenIndexBuffer: ${ids.length} ids over capacity ${this.capacity}`);
    const index = buildTokenIndex(ids, vocab);
    packTokenIndex(index, this.capacity, this.host);
    this.rt.memory.write(this.buffer, this.host);
    return index;
  }

  destroy(): void {
    this.rt.memory.destroy(this.buffer);
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatches
// ---------------------------------------------------------------------------------------------

function checkPositive(name: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
}

/** wte given as one binding or as parts of partRows rows each (the last may be shorter). */
function parts(name: string, wte: BufferBinding | readonly BufferBinding[], partRows?: number): { list: BufferBinding[]; partRows: number } {
  const list = Array.isArray(wte) ? [...(wte as readonly BufferBinding[])] : [wte as BufferBinding];
  if (list.length < 1) throw new Error(`${name}: wte in no parts`);
  if (list.length > 1 && !(partRows && Number.isInteger(partRows) && partRows > 0)) throw new Error(`${name}: wte in ${list.length} parts needs partRows`);
  return { list, partRows: list.length > 1 ? partRows! : NO_LIMIT };
}

export interface EmbeddingForwardArgs {
  B: number;
  T: number;
  C: number;
  /** u32 [B·T] token ids (uploaded by the host each batch). */
  ids: BufferBinding;
  /** [V, C]: one binding, or row ranges of partRows rows each (for wte over one binding's limit). */
  wte: BufferBinding | readonly BufferBinding[];
  partRows?: number;
  /** [≥T, C]; absent for models without a position table (rotary positions). */
  wpe?: BufferBinding;
  /** The token embedding is multiplied by this (Gemma: √hidden); default 1. */
  scale?: number;
  /** [B·T, C] */
  out: BufferBinding;
  /** Invocations per row; default embeddingRowWG(rt). */
  wg?: number;
}

/** One dispatch per 4 parts of wte (one for any wte up to 4 bindings); each writes the rows whose ids it holds. */
export async function embeddingForward(rt: Runtime, args: EmbeddingForwardArgs): Promise<Dispatch[]> {
  const { B, T, C } = args;
  checkPositive('embeddingForward', { B, T, C });
  const { list, partRows } = parts('embeddingForward', args.wte, args.partRows);
  const kernel = await rt.kernels.kernel('embedding', 'forward', { RWG: args.wg ?? embeddingRowWG(rt), HAS_WPE: args.wpe !== undefined });
  const out: Dispatch[] = [];
  for (let partBase = 0; partBase < list.length; partBase += EMBEDDING_PARTS_PER_DISPATCH) {
    const buffers: Record<string, BufferBinding> = { ids: args.ids, wpe: args.wpe ?? rt.dummy, out: args.out };
    for (let k = 0; k < EMBEDDING_PARTS_PER_DISPATCH; k++) buffers[`wte${k}`] = list[partBase + k] ?? rt.dummy;
    const bound = rt.kernels.bind(kernel, buffers, { B, T, C, partRows, partBase, scale: args.scale ?? 1 });
    out.push({ bound, workgroups: grid(B * T) });
  }
  return out;
}

export interface EmbeddingBackwardWpeArgs {
  B: number;
  T: number;
  C: number;
  /** Gradient of the embedding output [B·T, C]. */
  dout: BufferBinding;
  /** [≥T, C]; rows ≥ T are not touched. */
  dwpe: BufferBinding;
  /** dwpe += … (micro-batches) instead of = … */
  accumulate?: boolean;
}

/** dwpe[t,:] (+)= Σ_b dout[b,t,:]. */
export async function embeddingBackwardWpe(rt: Runtime, args: EmbeddingBackwardWpeArgs): Promise<Dispatch> {
  const { B, T, C } = args;
  checkPositive('embeddingBackwardWpe', { B, T, C });
  const wg = fitWorkgroup(rt.gpu.limits, EMBEDDING_WG);
  const kernel = await rt.kernels.kernel('embedding', 'backward_wpe', { WG: wg, ACCUMULATE: !!args.accumulate });
  const bound = rt.kernels.bind(kernel, { dout: args.dout, dwpe: args.dwpe }, { B, T, C, partRows: 0, partBase: 0, scale: 1 });
  return { bound, workgroups: grid(Math.ceil((T * C) / wg)) };
}

export interface EmbeddingBackwardWteArgs {
  C: number;
  /** The batch's token index (upload each batch before running the step). */
  index: TokenIndexBuffer | { buffer: GPUBuffer; capacity: number };
  /** Gradient of the embedding output [B·T, C] (B·T ≤ capacity). */
  dout: BufferBinding;
  /** [V, C], accumulated into (+=): it also receives the tied LM head's gradient. One binding or parts. */
  dwte: BufferBinding | readonly BufferBinding[];
  partRows?: number;
  /** The forward's scale (the sum is multiplied by it); default 1. */
  scale?: number;
  /** Invocations per unique id; default embeddingRowWG(rt). */
  wg?: number;
}

/** dwte[id,:] += scale·Σ dout[positions of id,:]; one dispatch per dwte part. Always accumulates. */
export async function embeddingBackwardWte(rt: Runtime, args: EmbeddingBackwardWteArgs): Promise<Dispatch[]> {
  const { C } = args;
  const cap = args.index.capacity;
  checkPositive('embeddingBackwardWte', { C, capacity: cap });
  const { list, partRows } = parts('embeddingBackwardWte', args.dwte, args.partRows);
  const kernel = await rt.kernels.kernel('embedding', 'backward_wte', { SWG: args.wg ?? embeddingRowWG(rt) });
  const workgroups = grid(Math.min(cap, EMBEDDING_WTE_WORKGROUPS));
  return list.map((dwte, k) => {
    const rowStart = list.length > 1 ? k * partRows : 0;
    const rowEnd = list.length > 1 && k < list.length - 1 ? (k + 1) * partRows : NO_LIMIT;
    const bound = rt.kernels.bind(kernel, { index: args.index.buffer, dout: args.dout, dwte }, { C, cap, rowStart, rowEnd, scale: args.scale ?? 1 });
    return { bound, workgroups };
  });
}

export type EmbeddingBackwardArgs = EmbeddingBackwardWpeArgs & Omit<EmbeddingBackwardWteArgs, 'dout' | 'C'>;

/** dwpe (+)= … and dwte += … (wpe first, then one dispatch per dwte part). */
export async function embeddingBackward(rt: Runtime, args: EmbeddingBackwardArgs): Promise<Dispatch[]> {
  return [await embeddingBackwardWpe(rt, args), ...(await embeddingBackwardWte(rt, args))];
}
