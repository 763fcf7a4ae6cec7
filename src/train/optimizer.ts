// Optimizer program: AdamW (torch.optim.AdamW semantics) or plain SGD over a fixed list of
// trainable tensors, with global gradient-norm clipping computed on the GPU. Built once; a
// training step records `clipDispatches()` (optional) then `dispatches()`, after `setStep(t, lr)`
// has written the one per-step buffer that every optimizer dispatch reads. Kernels:
// kernels/optimizer.wgsl (its header documents the exact arithmetic).
import type { TensorToWrite } from '../io/safetensors.ts';
import type { BufferBinding, BoundKernel } from '../gpu/kernels.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { grid, type Dispatch } from '../gpu/step.ts';

export type OptimizerKind = 'adamw' | 'sgd';

/** One trainable tensor: its parameter and gradient bindings and its element count. */
export interface TrainableTensor {
  /** Unique name; state buffers are `optim.m.<name>` / `optim.v.<name>`. */
  name: string;
  param: BufferBinding;
  grad: BufferBinding;
  /** Elements (f32) of param and grad, starting at each binding's offset. */
  n: number;
  /** Apply the optimizer's weight decay λ (true for matrices and embeddings; false for biases and layer-norm gains/biases). */
  weightDecay: boolean;
}

export interface OptimizerOptions {
  kind: OptimizerKind;
  /** AdamW β1, default 0.9. */
  beta1?: number;
  /** AdamW β2, default 0.999. */
  beta2?: number;
  /** AdamW ε, default 1e-8. */
  eps?: number;
  /**
   * λ for the tensors with `weightDecay: true`. AdamW: decoupled (θ ← θ·(1 − lr·λ)), default 0.01
   * as torch; SGD: coupled L2 (g ← g + λ·θ), default 0.
   */
  weightDecay?: number;
  /** Global-norm clipping threshold used by clipDispatches(); 0 (default) = no clipping. */
  maxGradNorm?: number;
  /** Invocations per workgroup, a power of two ≤ 256 (default 256). Tests use small ones to reach 2-D grids. */
  workgroupSize?: number;
  /** Elements each invocation sums in the sum-of-squares pass (default 16). */
  sumElementsPerThread?: number;
  /** Largest element count bound at once (default: the device's maxStorageBufferBindingSize); a multiple of 64. */
  maxBindingElements?: number;
  /** Run the vec4 kernels over each tensor's ⌊n/4⌋·4 leading elements (default true); false: scalar kernels only (tests, benchmarks). */
  vec4?: boolean;
}

export class OptimizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OptimizerError';
  }
}

/** Layout of the per-step buffer (struct Hyper in kernels/optimizer.wgsl), in f32 slots. */
const HP = {
  negLr: 0,
  negStepSize: 1,
  bc2Sqrt: 2,
  decayMul: 3,
  oneMinusBeta1: 4,
  beta2: 5,
  oneMinusBeta2: 6,
  eps: 7,
  maxNorm: 8,
  invAccum: 9,
} as const;
const HP_FLOATS = 12;

/** The scale buffer: [gradScale, norm, sumsq, clipCoef]. */
export interface ClipState {
  /** Factor applied to every gradient by the update kernels (clipCoef / accumulation). */
  gradScale: number;
  /** Global L2 norm of the (accumulation-averaged) gradients before clipping. */
  norm: number;
  /** Sum of squares of the raw gradient buffers. */
  sumsq: number;
  /** min(1, maxNorm / (norm + 1e-6)); 1 without clipping. */
  clipCoef: number;
}

interface Piece {
  tensor: number;
  param: BufferBinding;
  grad: BufferBinding;
  m: BufferBinding | null;
  v: BufferBinding | null;
  n: number;
  /** vec4s the vec4 kernels take (⌊n/4⌋, or 0 with opts.vec4 false); the scalar ones take n − 4·n4 from 4·n4. */
  n4: number;
}

function bindingParts(b: BufferBinding): { buffer: GPUBuffer; offset: number; size: number | undefined } {
  if ('buffer' in b) return { buffer: b.buffer, offset: b.offset ?? 0, size: b.size };
  return { buffer: b, offset: 0, size: undefined };
}

/** Elements [start, start+n) of a binding, as a byte range of its buffer. */
function subRange(b: BufferBinding, start: number, n: number): BufferBinding {
  const { buffer, offset } = bindingParts(b);
  return { buffer, offset: offset + start * 4, size: n * 4 };
}

function checkPow2(name: string, x: number, max: number): void {
  if (!Number.isInteger(x) || x < 1 || x > max || (x & (x - 1)) !== 0) throw new OptimizerError(`${name} must be a power of two in 1..${max}, got ${x}`);
}

/** vec4s per invocation in the vec4 entry points (V4 in kernels/optimizer.wgsl). */
const V4 = 4;

/**
 * Dispatches that write 0 to elements [off, off+n) of a binding: the vec4 kernel for the aligned
 * bulk (when off is a multiple of 4), the scalar one for what is left.
 */
export async function zeroDispatches(rt: Runtime, target: BufferBinding, n: number, opts: { off?: number; workgroupSize?: number; vec4?: boolean } = {}): Promise<Dispatch[]> {
  const wg = opts.workgroupSize ?? 256;
  checkPow2('workgroupSize', wg, 256);
  if (!(Number.isInteger(n) && n > 0)) throw new OptimizerError(`zero: element count must be a positive integer, got ${n}`);
  const off = opts.off ?? 0;
  const out: Dispatch[] = [];
  const n4 = off % 4 === 0 && (opts.vec4 ?? true) ? Math.floor(n / 4) : 0;
  if (n4 > 0) {
    const kernel = await rt.kernels.kernel('optimizer', 'zero4', { WG: wg, V4 });
    out.push({ bound: rt.kernels.bind(kernel, { dst4: target }, { n: n4, off: off / 4 }), workgroups: grid(Math.ceil(n4 / (wg * V4))) });
  }
  const rest = n - 4 * n4;
  if (rest > 0) {
    const kernel = await rt.kernels.kernel('optimizer', 'zero', { WG: wg });
    out.push({ bound: rt.kernels.bind(kernel, { dst: target }, { n: rest, off: off + 4 * n4 }), workgroups: grid(Math.ceil(rest / wg)) });
  }
  return out;
}

export class Optimizer {
  private t = 0;
  private lrNow = 0;
  private accum = 1;
  private maxNorm: number;
  private readonly hpData = new Float32Array(HP_FLOATS);
  private readonly owned: GPUBuffer[] = [];
  private readonly bounds: BoundKernel[] = [];

  private constructor(
    private readonly rt: Runtime,
    readonly kind: OptimizerKind,
    readonly tensors: readonly TrainableTensor[],
    readonly beta1: number,
    readonly beta2: number,
    readonly eps: number,
    readonly weightDecay: number,
    maxGradNorm: number,
    /** Per-step values shared by all optimizer dispatches (struct Hyper). */
    readonly hyperBuffer: GPUBuffer,
    /** [gradScale, norm, sumsq, clipCoef]; gradScale is what the updates multiply gradients by. */
    readonly scaleBuffer: GPUBuffer,
    private readonly m: (GPUBuffer | null)[],
    private readonly v: (GPUBuffer | null)[],
    private readonly updates: Dispatch[],
    private readonly clips: Dispatch[],
    private readonly zeros: Dispatch[],
  ) {
    this.maxNorm = maxGradNorm;
  }

  /** Allocate state (AdamW: m and v per tensor, zero) and build every dispatch, once. */
  static async create(rt: Runtime, tensors: readonly TrainableTensor[], opts: OptimizerOptions): Promise<Optimizer> {
    const kind = opts.kind;
    if (kind !== 'adamw' && kind !== 'sgd') throw new OptimizerError(`unknown optimizer '${String(kind)}' (expected adamw or sgd)`);
    if (tensors.length === 0) throw new OptimizerError('no trainable tensors');
    const beta1 = opts.beta1 ?? 0.9;
    const beta2 = opts.beta2 ?? 0.999;
    const eps = opts.eps ?? 1e-8;
    const lambda = opts.weightDecay ?? (kind === 'adamw' ? 0.01 : 0);
    const maxGradNorm = opts.maxGradNorm ?? 0;
    for (const [k, x] of [['beta1', beta1], ['beta2', beta2]] as const) {
      if (!(x >= 0 && x < 1)) throw new OptimizerError(`${k} must be in [0, 1), got ${x}`);
    }
    if (!(eps >= 0 && Number.isFinite(eps))) throw new OptimizerError(`eps must be finite and ≥ 0, got ${eps}`);
    if (!(lambda >= 0 && Number.isFinite(lambda))) throw new OptimizerError(`weightDecay must be finite and ≥ 0, got ${lambda}`);
    if (!(maxGradNorm >= 0 && Number.isFinite(maxGradNorm))) throw new OptimizerError(`maxGradNorm must be finite and ≥ 0 (0 = no clipping), got ${maxGradNorm}`);
    const wg = opts.workgroupSize ?? 256;
    checkPow2('workgroupSize', wg, 256);
    const ept = opts.sumElementsPerThread ?? 16;
    if (!(Number.isInteger(ept) && ept >= 1)) throw new OptimizerError(`sumElementsPerThread must be a positive integer, got ${ept}`);
    const limit = Math.floor(rt.gpu.limits.maxStorageBufferBindingSize! / 4 / 64) * 64;
    const maxElems = opts.maxBindingElements ?? limit;
    if (!(Number.isInteger(maxElems) && maxElems >= 64 && maxElems % 64 === 0 && maxElems <= limit)) {
      throw new OptimizerError(`maxBindingElements must be a multiple of 64 in 64..${limit}, got ${maxElems}`);
    }
    const names = new Set<string>();
    for (const t of tensors) {
      if (names.has(t.name)) throw new OptimizerError(`tensor '${t.name}' is listed twice`);
      names.add(t.name);
      if (!(Number.isInteger(t.n) && t.n > 0)) throw new OptimizerError(`tensor '${t.name}': element count must be a positive integer, got ${t.n}`);
      for (const [what, b] of [['param', t.param], ['grad', t.grad]] as const) {
        const { buffer, offset, size } = bindingParts(b);
        if (offset % 256 !== 0 && t.n > maxElems) throw new OptimizerError(`tensor '${t.name}': ${what} offset ${offset} must be a multiple of 256 bytes to be bound in ranges`);
        const avail = size ?? buffer.size - offset;
        if (avail < t.n * 4) throw new OptimizerError(`tensor '${t.name}': ${what} binding holds ${avail} bytes, needs ${t.n * 4}`);
      }
    }

    const mem = rt.memory;
    const owned: GPUBuffer[] = [];
    const hyperBuffer = mem.storage('optim.hp', HP_FLOATS * 4);
    const scaleBuffer = mem.upload('optim.scale', new Float32Array([1, 0, 0, 1]));
    owned.push(hyperBuffer, scaleBuffer);
    const m: (GPUBuffer | null)[] = [];
    const v: (GPUBuffer | null)[] = [];
    for (const t of tensors) {
      if (kind === 'adamw') {
        // New buffers are zero-filled by WebGPU: m = v = 0 as torch's lazily created state.
        const mb = mem.storage(`optim.m.${t.name}`, t.n * 4);
        const vb = mem.storage(`optim.v.${t.name}`, t.n * 4);
        m.push(mb);
        v.push(vb);
        owned.push(mb, vb);
      } else {
        m.push(null);
        v.push(null);
      }
    }

    // Split each tensor into pieces that fit one storage binding.
    const useVec4 = opts.vec4 ?? true;
    const pieces: Piece[] = [];
    tensors.forEach((t, i) => {
      for (let s = 0; s < t.n; s += maxElems) {
        const n = Math.min(maxElems, t.n - s);
        const whole = s === 0 && n === t.n;
        pieces.push({
          tensor: i,
          param: whole ? t.param : subRange(t.param, s, n),
          grad: whole ? t.grad : subRange(t.grad, s, n),
          m: m[i] ? (whole ? m[i]! : subRange(m[i]!, s, n)) : null,
          v: v[i] ? (whole ? v[i]! : subRange(v[i]!, s, n)) : null,
          n,
          n4: useVec4 ? Math.floor(n / 4) : 0,
        });
      }
    });

    const K = rt.kernels;
    const bounds: BoundKernel[] = [];
    const updates: Dispatch[] = [];
    // Each piece: the vec4 kernel over its first n4 vec4s, the scalar one over the rest.
    for (const pc of pieces) {
      const decay = tensors[pc.tensor]!.weightDecay && lambda > 0;
      const { n4 } = pc;
      const rest = pc.n - 4 * n4;
      if (n4 > 0) {
        const kernel = await K.kernel('optimizer', `${kind}4`, { WG: wg, DECAY: decay, V4 });
        const buffers: Record<string, BufferBinding> = { param4: pc.param, grad4: pc.grad, hp: hyperBuffer, scale: scaleBuffer };
        if (kind === 'adamw') Object.assign(buffers, { m4: pc.m!, v4: pc.v! });
        const bound = K.bind(kernel, buffers, { n: n4, off: 0 });
        bounds.push(bound);
        updates.push({ bound, workgroups: grid(Math.ceil(n4 / (wg * V4))) });
      }
      if (rest > 0) {
        const kernel = await K.kernel('optimizer', kind, { WG: wg, DECAY: decay });
        const buffers: Record<string, BufferBinding> = { param: pc.param, grad: pc.grad, hp: hyperBuffer, scale: scaleBuffer };
        if (kind === 'adamw') Object.assign(buffers, { m: pc.m!, v: pc.v! });
        const bound = K.bind(kernel, buffers, { n: rest, off: 4 * n4 });
        bounds.push(bound);
        updates.push({ bound, workgroups: grid(Math.ceil(rest / wg)) });
      }
    }

    // Global norm: per-piece partial sums into consecutive slots, one final fixed-order sum, the scale.
    // Per piece, the vec4 kernel over ⌊n/4⌋ vec4s (chunk4 per workgroup), then the scalar one over the rest.
    const chunk = wg * ept;
    const chunk4 = wg * Math.ceil(ept / 4);
    const parts = pieces.map((pc) => {
      const rest = pc.n - 4 * pc.n4;
      return { pc, n4: pc.n4, rest, slots4: Math.ceil(pc.n4 / chunk4), slotsRest: Math.ceil(rest / chunk) };
    });
    const nSlots = parts.reduce((a, x) => a + x.slots4 + x.slotsRest, 0);
    const partials = mem.storage('optim.partials', nSlots * 4);
    const total = mem.storage('optim.sumsq', 4);
    owned.push(partials, total);
    const clips: Dispatch[] = [];
    const partialKernel = await K.kernel('optimizer', 'sumsq_partial', { WG: wg });
    const partialKernel4 = await K.kernel('optimizer', 'sumsq_partial4', { WG: wg });
    let slot = 0;
    for (const x of parts) {
      if (x.n4 > 0) {
        const bound = K.bind(partialKernel4, { x4: x.pc.grad, partials }, { n: x.n4, chunk: chunk4, slot, count: 0, off: 0 });
        bounds.push(bound);
        clips.push({ bound, workgroups: grid(x.slots4) });
        slot += x.slots4;
      }
      if (x.rest > 0) {
        const bound = K.bind(partialKernel, { x: x.pc.grad, partials }, { n: x.rest, chunk, slot, count: 0, off: 4 * x.n4 });
        bounds.push(bound);
        clips.push({ bound, workgroups: grid(x.slotsRest) });
        slot += x.slotsRest;
      }
    }
    const finalKernel = await K.kernel('optimizer', 'sumsq_final', { WG: wg });
    const finalBound = K.bind(finalKernel, { parts: partials, total }, { n: 0, chunk: 0, slot: 0, count: nSlots, off: 0 });
    bounds.push(finalBound);
    clips.push({ bound: finalBound, workgroups: [1] });
    const scaleKernel = await K.kernel('optimizer', 'clip_scale');
    const scaleBound = K.bind(scaleKernel, { sumsq: total, scaleOut: scaleBuffer, hpc: hyperBuffer });
    bounds.push(scaleBound);
    clips.push({ bound: scaleBound, workgroups: [1] });

    const zeros: Dispatch[] = [];
    for (const pc of pieces) {
      for (const d of await zeroDispatches(rt, pc.grad, pc.n, { workgroupSize: wg, vec4: useVec4 })) {
        bounds.push(d.bound);
        zeros.push(d);
      }
    }

    const opt = new Optimizer(rt, kind, [...tensors], beta1, beta2, eps, lambda, maxGradNorm, hyperBuffer, scaleBuffer, m, v, updates, clips, zeros);
    opt.owned.push(...owned);
    opt.bounds.push(...bounds);
    return opt;
  }

  /** The parameter updates for one step (after setStep; after clipDispatches when clipping). */
  dispatches(): Dispatch[] {
    return [...this.updates];
  }

  /**
   * Global gradient norm and clipping scale: sum of squares of every trainable gradient (per-piece
   * partials in tensor order, then one fixed-order sum), then gradScale = min(1, maxNorm/(norm + 1e-6))
   * / accumulation into scaleBuffer. Record before dispatches(). Also useful with maxGradNorm 0, to log the norm.
   */
  clipDispatches(): Dispatch[] {
    return [...this.clips];
  }

  /** Write 0 to every trainable gradient (between steps, before accumulating a new one). */
  zeroGradDispatches(): Dispatch[] {
    return [...this.zeros];
  }

  /**
   * Set the values of update number t (1-based, as torch's state['step'] after its increment) at
   * learning rate lr: one writeBuffer of the per-step buffer, plus gradScale = 1/accumulation (the
   * value used when clipDispatches() is not recorded; clip_scale overwrites it when it is).
   * Bias corrections and decay factors are computed here in float64.
   */
  setStep(t: number, lr: number, opts: { accumulation?: number; maxGradNorm?: number } = {}): void {
    if (!(Number.isInteger(t) && t >= 1)) throw new OptimizerError(`step must be an integer ≥ 1, got ${t}`);
    if (!(Number.isFinite(lr) && lr >= 0)) throw new OptimizerError(`learning rate must be finite and ≥ 0, got ${lr}`);
    const accum = opts.accumulation ?? this.accum;
    if (!(Number.isInteger(accum) && accum >= 1)) throw new OptimizerError(`accumulation count must be an integer ≥ 1, got ${accum}`);
    const maxNorm = opts.maxGradNorm ?? this.maxNorm;
    if (!(maxNorm >= 0 && Number.isFinite(maxNorm))) throw new OptimizerError(`maxGradNorm must be finite and ≥ 0, got ${maxNorm}`);
    this.t = t;
    this.lrNow = lr;
    this.accum = accum;
    this.maxNorm = maxNorm;
    const h = this.hpData;
    const bc1 = 1 - Math.pow(this.beta1, t);
    const bc2 = 1 - Math.pow(this.beta2, t);
    h[HP.negLr] = -lr;
    h[HP.negStepSize] = -(lr / bc1);
    h[HP.bc2Sqrt] = Math.sqrt(bc2);
    h[HP.decayMul] = this.kind === 'adamw' ? 1 - lr * this.weightDecay : this.weightDecay;
    h[HP.oneMinusBeta1] = 1 - this.beta1;
    h[HP.beta2] = this.beta2;
    h[HP.oneMinusBeta2] = 1 - this.beta2;
    h[HP.eps] = this.eps;
    h[HP.maxNorm] = maxNorm;
    h[HP.invAccum] = 1 / accum;
    const q = this.rt.device.queue;
    q.writeBuffer(this.hyperBuffer, 0, h);
    q.writeBuffer(this.scaleBuffer, 0, new Float32Array([1 / accum]));
  }

  /** The step number last given to setStep (or loaded); 0 before the first step. */
  get step(): number {
    return this.t;
  }

  get lr(): number {
    return this.lrNow;
  }

  get maxGradNorm(): number {
    return this.maxNorm;
  }

  /** Bytes of optimizer state (AdamW m and v; 0 for SGD). */
  get stateBytes(): number {
    return this.tensors.reduce((s, t) => s + (this.kind === 'adamw' ? 8 * t.n : 0), 0);
  }

  /** The clipping values left by the last clipDispatches() (read back; waits for the queue). */
  async readClip(): Promise<ClipState> {
    const [gradScale, norm, sumsq, clipCoef] = await this.rt.memory.readFloat32(this.scaleBuffer, 0, 4);
    return { gradScale: gradScale!, norm: norm!, sumsq: sumsq!, clipCoef: clipCoef! };
  }

  /** Global gradient norm (before clipping) from the last clipDispatches(). */
  async readGradNorm(): Promise<number> {
    return (await this.readClip()).norm;
  }

  /**
   * Optimizer state for a checkpoint: `optim.m.<name>` and `optim.v.<name>` (F32 [n], AdamW only)
   * and `optim.step` (I32 [1]), ready for serializeSafetensors.
   */
  async stateTensors(): Promise<TensorToWrite[]> {
    const out: TensorToWrite[] = [{ name: 'optim.step', dtype: 'I32', shape: [1], data: new Int32Array([this.t]) }];
    for (let i = 0; i < this.tensors.length; i++) {
      const t = this.tensors[i]!;
      if (!this.m[i]) continue;
      out.push({ name: `optim.m.${t.name}`, dtype: 'F32', shape: [t.n], data: await this.rt.memory.readFloat32(this.m[i]!, 0, t.n) });
      out.push({ name: `optim.v.${t.name}`, dtype: 'F32', shape: [t.n], data: await this.rt.memory.readFloat32(this.v[i]!, 0, t.n) });
    }
    return out;
  }

  /** Restore what stateTensors() saved (all names must be present, with the right lengths). */
  loadStateTensors(tensors: Iterable<{ name: string; data: ArrayLike<number> & ArrayBufferView }>): void {
    const byName = new Map<string, ArrayLike<number> & ArrayBufferView>();
    for (const t of tensors) byName.set(t.name, t.data);
    const get = (name: string, n: number): ArrayLike<number> & ArrayBufferView => {
      const d = byName.get(name);
      if (!d) throw new OptimizerError(`optimizer state: missing tensor '${name}'`);
      if (d.length !== n) throw new OptimizerError(`optimizer state: '${name}' has ${d.length} values, expected ${n}`);
      return d;
    };
    const step = get('optim.step', 1)[0]!;
    if (!(Number.isInteger(step) && step >= 0)) throw new OptimizerError(`optimizer state: optim.step must be an integer ≥ 0, got ${step}`);
    const writes: [GPUBuffer, Float32Array][] = [];
    for (let i = 0; i < this.tensors.length; i++) {
      const t = this.tensors[i]!;
      if (!this.m[i]) continue;
      for (const [key, buf] of [['m', this.m[i]!], ['v', this.v[i]!]] as const) {
        const d = get(`optim.${key}.${t.name}`, t.n);
        if (!(d instanceof Float32Array)) throw new OptimizerError(`optimizer state: 'optim.${key}.${t.name}' must be float32`);
        writes.push([buf, d]);
      }
    }
    for (const [buf, d] of writes) this.rt.memory.write(buf, d);
    this.t = step;
  }

  /** Free the state, the per-step and scratch buffers and the dispatches' uniforms. */
  destroy(): void {
    for (const b of this.owned) this.rt.memory.destroy(b);
    for (const bk of this.bounds) for (const u of bk.uniformBuffers.values()) this.rt.memory.destroy(u.buffer);
    this.owned.length = 0;
    this.bounds.length = 0;
  }
}
