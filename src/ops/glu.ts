// Gated MLP activation program (kernels/glu.wgsl): out = act(gate) ⊙ up and its backward, for
// Llama/Qwen2 (SwiGLU, act = SiLU) and Gemma2 (GeGLU, act = GPT-2's tanh GELU). gate and up are two
// [rows, H] buffers or the two column halves of one fused [rows, 2H] buffer (one matmul computes
// both); the gradients likewise.
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup wanted (any power of two works: one element per invocation). */
export const GLU_WG = 256;

/** 'silu': SwiGLU (Llama, Qwen2). 'gelu_tanh': GeGLU with GPT-2's tanh GELU (Gemma2). */
export type GluActivation = 'silu' | 'gelu_tanh';

const ACT_CODE: Record<GluActivation, number> = { silu: 0, gelu_tanh: 1 };

/**
 * The GLU activation for a Hugging Face `hidden_act` / `hidden_activation` string. Throws for the
 * exact (erf) GELU and anything else this kernel does not compute.
 */
export function gluActivation(hfName: string): GluActivation {
  if (hfName === 'silu' || hfName === 'swish') return 'silu';
  if (hfName === 'gelu_pytorch_tanh' || hfName === 'gelu_new' || hfName === 'gelu_fast') return 'gelu_tanh';
  throw new Error(`glu: unsupported activation '${hfName}' (supported: silu, swish, gelu_pytorch_tanh, gelu_new, gelu_fast)`);
}

/** GLU_WG, lowered to what the device allows. */
export function gluWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, GLU_WG);
}

/** gate and up: two [rows, H] buffers, or one [rows, 2H] buffer (gate = columns 0..H, up = H..2H). */
export type GluPair = { gate: BufferBinding; up: BufferBinding } | { fused: BufferBinding };

export interface GluForwardArgs {
  act: GluActivation;
  rows: number;
  /** Intermediate (MLP hidden) size. */
  H: number;
  /** The forward's inputs: gate_proj and up_proj outputs. */
  inp: GluPair;
  /** [rows, H], distinct from the inputs. */
  out: BufferBinding;
}

export interface GluBackwardArgs {
  act: GluActivation;
  rows: number;
  H: number;
  /** The forward's inputs. */
  inp: GluPair;
  /** [rows, H]: gradient of the forward's output. */
  dout: BufferBinding;
  /** Where dgate and dup go (same layout choices as inp; distinct from inp and dout). Overwritten, not accumulated. */
  grad: GluPair;
}

/** A tensor's element offset and row stride inside its binding. */
interface View { buf: BufferBinding; off: number; ld: number }

function views(pair: GluPair, H: number): [View, View] {
  if ('fused' in pair) return [{ buf: pair.fused, off: 0, ld: 2 * H }, { buf: pair.fused, off: H, ld: 2 * H }];
  return [{ buf: pair.gate, off: 0, ld: H }, { buf: pair.up, off: 0, ld: H }];
}

/** Bytes a binding exposes to the shader. */
function bindingBytes(b: BufferBinding): number {
  if ('buffer' in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function checkShape(name: string, rows: number, H: number, act: GluActivation): void {
  for (const [k, v] of Object.entries({ rows, H })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
  if (rows * 2 * H > 0xffffffff) throw new Error(`${name}: rows·2H = ${rows * 2 * H} exceeds the kernel's u32 indexing`);
  if (!(act in ACT_CODE)) throw new Error(`${name}: unknown activation '${act}' (silu or gelu_tanh)`);
}

function checkView(rt: Runtime, name: string, what: string, v: View, rows: number, H: number): void {
  const need = (v.off + (rows - 1) * v.ld + H) * 4;
  const have = bindingBytes(v.buf);
  if (have < need) throw new Error(`${name}: ${what} binding has ${have} bytes, needs ${need} (rows=${rows}, H=${H}${v.ld !== H ? `, fused [rows, ${v.ld}]` : ''})`);
  const max = rt.gpu.limits.maxStorageBufferBindingSize;
  if (max !== undefined && have > max) throw new Error(`${name}: ${what} binding has ${have} bytes, over the device's maxStorageBufferBindingSize ${max} (bind a byte range, or dispatch in row chunks)`);
}

function sameBuffer(a: BufferBinding, b: BufferBinding): boolean {
  return ('buffer' in a ? a.buffer : a) === ('buffer' in b ? b.buffer : b);
}

/** out = act(gate) ⊙ up. */
export async function gluForward(rt: Runtime, args: GluForwardArgs): Promise<Dispatch[]> {
  const name = 'gluForward';
  const { rows, H } = args;
  checkShape(name, rows, H, args.act);
  const [g, u] = views(args.inp, H);
  const o: View = { buf: args.out, off: 0, ld: H };
  checkView(rt, name, 'gate', g, rows, H);
  checkView(rt, name, 'up', u, rows, H);
  checkView(rt, name, 'out', o, rows, H);
  if (sameBuffer(o.buf, g.buf) || sameBuffer(o.buf, u.buf)) throw new Error(`${name}: out must be distinct from gate and up`);
  const wg = gluWG(rt);
  const kernel = await rt.kernels.kernel('glu', 'forward', { WG: wg, ACT: ACT_CODE[args.act] });
  const bound = rt.kernels.bind(kernel, { gate: g.buf, up: u.buf, out: o.buf }, {
    rows, H, gOff: g.off, gLd: g.ld, uOff: u.off, uLd: u.ld, oOff: o.off, oLd: o.ld, dgOff: 0, dgLd: 0, duOff: 0, duLd: 0,
  });
  return [{ bound, workgroups: grid(Math.ceil((rows * H) / wg)) }];
}

/** dgate = dout ⊙ up ⊙ act'(gate), dup = dout ⊙ act(gate). */
export async function gluBackward(rt: Runtime, args: GluBackwardArgs): Promise<Dispatch[]> {
  const name = 'gluBackward';
  const { rows, H } = args;
  checkShape(name, rows, H, args.act);
  const [g, u] = views(args.inp, H);
  const [dg, du] = views(args.grad, H);
  const d: View = { buf: args.dout, off: 0, ld: H };
  checkView(rt, name, 'gate', g, rows, H);
  checkView(rt, name, 'up', u, rows, H);
  checkView(rt, name, 'dout', d, rows, H);
  checkView(rt, name, 'dgate', dg, rows, H);
  checkView(rt, name, 'dup', du, rows, H);
  const fusedD = 'fused' in args.grad;
  if (!fusedD && sameBuffer(dg.buf, du.buf)) throw new Error(`${name}: separate dgate and dup must be distinct buffers (use grad: { fused } for one [rows, 2H] buffer)`);
  for (const [k, v] of [['dgate', dg], ['dup', du]] as const) {
    if ([g.buf, u.buf, d.buf].some((x) => sameBuffer(x, v.buf))) throw new Error(`${name}: ${k} must be distinct from gate, up and dout`);
  }
  const wg = gluWG(rt);
  const kernel = await rt.kernels.kernel('glu', 'backward', { WG: wg, ACT: ACT_CODE[args.act], FUSED_D: fusedD });
  const bound = rt.kernels.bind(kernel, { gate: g.buf, up: u.buf, dout: d.buf, dgate: dg.buf, dup: fusedD ? rt.dummy : du.buf }, {
    rows, H, gOff: g.off, gLd: g.ld, uOff: u.off, uLd: u.ld, oOff: d.off, oLd: d.ld, dgOff: dg.off, dgLd: dg.ld, duOff: du.off, duLd: du.ld,
  });
  return [{ bound, workgroups: grid(Math.ceil((rows * H) / wg)) }];
}
