// LoRA adapters on the linear layers of the trainable suffix (blocks K..N−1), laid out as Hugging
// Face PEFT lays them out, so that an adapter semfreeze trains loads with
// `peft.PeftModel.from_pretrained(base, dir)` and a merged model loads in transformers:
//   - one pair per Hugging Face module: GPT-2's fused `attn.c_attn` gets one pair over its fused
//     width 3C; the Llama family's q/k/v (and gate/up) are separate modules, so each gets its own
//     pair although semfreeze fuses their outputs into one row;
//   - A [r, in] (`lora_A.weight`), B [out, r] (`lora_B.weight`), y = x·W + b + (alpha/r)·(x·Aᵀ)·Bᵀ;
//     GPT-2's Conv1D (W stored [in, out]) has the same A and B (PEFT's fan_in_fan_out only changes
//     how it merges: ΔW = (B·A)ᵀ there);
//   - A initialised as PEFT's default (kaiming_uniform_(a=√5): U(−1/√in, 1/√in), here from a seeded
//     mulberry32 stream, not torch's), B = 0, so training starts at the base model;
//   - names `base_model.model.<HF module>.lora_{A,B}.weight`; adapter_config.json lists the full
//     module names (so only blocks K..N−1 get adapters when PEFT loads it).
// Only A and B train in LoRA mode: base weights, norms and the head stay frozen (PEFT's default).
import { serializeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { mulberry32 } from '../util/random.ts';
import { UserError } from '../util/errors.ts';
import type { ModelConfig } from './config.ts';
import { hfPrefix } from './params.ts';
import { modelSpec, type BlockSpec, type ProjSpec } from './spec.ts';

export interface LoraSettings {
  /** Rank r ≥ 1. */
  r: number;
  /** lora_alpha; the update is scaled by alpha / r. */
  alpha: number;
  /** Targeted modules, relative to a block (`attn.c_attn`, `self_attn.q_proj`, …), resolved by resolveLoraTargets. */
  targets: string[];
}

/** One adapted linear layer. */
export interface LoraModule {
  /** The base weight's canonical name (ProjSpec.weight), e.g. `h.3.attn.c_attn.weight`. */
  weight: string;
  /** Hugging Face module name in the *ForCausalLM, e.g. `transformer.h.3.attn.c_attn`. */
  module: string;
  /** The module relative to its block, e.g. `attn.c_attn`. */
  target: string;
  block: number;
  proj: ProjSpec;
  inputs: number;
  outputs: number;
  /** PEFT's tensor names in adapter_model.safetensors. */
  aName: string;
  bName: string;
}

/** The linear layers of one block, in the block's order, with their names relative to the block. */
function blockProjections(cfg: ModelConfig, l: number): { target: string; proj: ProjSpec }[] {
  const bl = modelSpec(cfg).blocks[l]!;
  const ps = [...bl.attention.body.qkv, bl.attention.body.o, ...bl.mlp.body.up, bl.mlp.body.down];
  return ps.map((proj) => ({ target: proj.weight.slice(bl.prefix.length + 1, -'.weight'.length), proj }));
}

/** Every LoRA target name of a block of this family (the default: all of them). */
export function loraTargetNames(cfg: ModelConfig): string[] {
  if (cfg.nLayer === 0) return [];
  return blockProjections(cfg, 0).map((p) => p.target);
}

/**
 * `--lora-targets` text: a comma list of module names as PEFT's target_modules matches them (a name
 * matches a block's module when it is that module's path within the block or a dotted suffix of it:
 * `c_proj` is GPT-2's attn.c_proj and mlp.c_proj), or `attn`, `mlp`, `all`. Unknown names are refused.
 */
export function resolveLoraTargets(text: string | undefined, cfg: ModelConfig): string[] {
  const all = loraTargetNames(cfg);
  if (text === undefined || text.trim() === '' || text.trim() === 'all') return all;
  const chosen = new Set<string>();
  for (const raw of text.split(',')) {
    const t = raw.trim();
    if (t === '') continue;
    const hit = t === 'attn' ? all.filter((n) => n.startsWith('attn.') || n.startsWith('self_attn.'))
      : t === 'mlp' ? all.filter((n) => n.startsWith('mlp.'))
        : t === 'all' ? all
          : all.filter((n) => n === t || n.endsWith(`.${t}`));
    if (hit.length === 0) throw new UserError(`--lora-targets: '${t}' names no linear layer of a ${cfg.modelType} block; the layers are ${all.join(', ')} (or attn, mlp, all)`);
    for (const h of hit) chosen.add(h);
  }
  if (chosen.size === 0) throw new UserError('--lora-targets: no layer named');
  return all.filter((n) => chosen.has(n));
}

/** The adapted modules of blocks `fromBlock`..N−1, in block order. */
export function loraModules(cfg: ModelConfig, settings: LoraSettings, fromBlock: number): LoraModule[] {
  const out: LoraModule[] = [];
  const want = new Set(settings.targets);
  for (let l = fromBlock; l < cfg.nLayer; l++) {
    for (const { target, proj } of blockProjections(cfg, l)) {
      if (!want.has(target)) continue;
      const module = `${hfPrefix(cfg)}${proj.weight.slice(0, -'.weight'.length)}`;
      out.push({ weight: proj.weight, module, target, block: l, proj, inputs: proj.inputs, outputs: proj.outputs, aName: `base_model.model.${module}.lora_A.weight`, bName: `base_model.model.${module}.lora_B.weight` });
    }
  }
  return out;
}

/**
 * LoRA at the lowest trainable block (nothing below needs its input gradient): which parts of its dX
 * chain its own adapters need. `qkv`: the output projection's dX, the attention and rotary backward
 * (d of the q/k/v row), only for q/k/v adapters; `attn`: the gradient reaching the attention half
 * (the MLP's up-projection dX and norm dX), for any attention adapter; `up`: the MLP's hidden
 * gradient (down's dX and the activation backward), for gate/up adapters or the attention half.
 * The training graph builds, and the cost model counts, exactly these.
 */
export function loraChainNeeds(adapted: (weight: string) => boolean, bl: BlockSpec): { qkv: boolean; attn: boolean; up: boolean } {
  const has = (ps: ProjSpec[]) => ps.some((p) => adapted(p.weight));
  const qkv = has(bl.attention.body.qkv);
  const attn = qkv || has([bl.attention.body.o]);
  const up = attn || has(bl.mlp.body.up);
  return { qkv, attn, up };
}

/** Checks r and alpha (CLI text already parsed to numbers). */
export function checkLoraSettings(s: LoraSettings): void {
  if (!(Number.isInteger(s.r) && s.r >= 1)) throw new UserError(`--lora must be a positive integer rank, got ${s.r}`);
  if (!(Number.isFinite(s.alpha) && s.alpha > 0)) throw new UserError(`--lora-alpha must be a positive number, got ${s.alpha}`);
}

/** A [r, in] as PEFT's default init (U(−1/√in, 1/√in)), B = 0, from a seeded stream; by PEFT name. */
export function initialLoraTensors(modules: LoraModule[], r: number, seed: number): Map<string, Float32Array> {
  const next = mulberry32(seed ^ 0x4c6f5241);
  const out = new Map<string, Float32Array>();
  for (const m of modules) {
    const bound = 1 / Math.sqrt(m.inputs);
    const a = new Float32Array(r * m.inputs);
    for (let i = 0; i < a.length; i++) a[i] = (2 * next() - 1) * bound;
    out.set(m.aName, a);
    out.set(m.bName, new Float32Array(m.outputs * r));
  }
  return out;
}

/** One adapter pair on the GPU. */
export interface GpuLoraModule extends LoraModule {
  A: GPUBuffer;
  B: GPUBuffer;
}

/** The adapters of one run on the GPU, looked up by the base weight they adapt. */
export class LoraAdapters {
  readonly scale: number;
  private readonly byWeight = new Map<string, GpuLoraModule>();

  private constructor(readonly cfg: ModelConfig, readonly settings: LoraSettings, readonly fromBlock: number, readonly modules: GpuLoraModule[]) {
    this.scale = settings.alpha / settings.r;
    for (const m of modules) this.byWeight.set(m.weight, m);
  }

  get r(): number {
    return this.settings.r;
  }

  /** Upload `tensors` (by PEFT name; every one present, with its shape) for blocks fromBlock..N−1. */
  static upload(rt: Runtime, cfg: ModelConfig, settings: LoraSettings, fromBlock: number, tensors: Map<string, Float32Array>): LoraAdapters {
    checkLoraSettings(settings);
    const mods = loraModules(cfg, settings, fromBlock);
    if (mods.length === 0) throw new UserError(`LoRA: no layer to adapt (blocks ${fromBlock}..${cfg.nLayer - 1}${fromBlock >= cfg.nLayer ? ': none, the whole model is frozen' : ''})`);
    const r = settings.r;
    const gpu = mods.map((m) => {
      const a = tensors.get(m.aName);
      const b = tensors.get(m.bName);
      if (!a || a.length !== r * m.inputs) throw new UserError(`LoRA: '${m.aName}' missing or not [${r}, ${m.inputs}]`);
      if (!b || b.length !== m.outputs * r) throw new UserError(`LoRA: '${m.bName}' missing or not [${m.outputs}, ${r}]`);
      return { ...m, A: rt.memory.upload(`lora.${m.module}.lora_A`, a), B: rt.memory.upload(`lora.${m.module}.lora_B`, b) };
    });
    return new LoraAdapters(cfg, settings, fromBlock, gpu);
  }

  /** The adapter on base weight `weight` (canonical name), if any. */
  get(weight: string): GpuLoraModule | undefined {
    return this.byWeight.get(weight);
  }

  /** Trainable parameters: r·(in + out) per module. */
  get parameterCount(): number {
    return this.modules.reduce((s, m) => s + this.r * (m.inputs + m.outputs), 0);
  }

  /** Every A and B read back, by PEFT name. */
  async download(rt: Runtime): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const m of this.modules) {
      out.set(m.aName, await rt.memory.readFloat32(m.A, 0, this.r * m.inputs));
      out.set(m.bName, await rt.memory.readFloat32(m.B, 0, m.outputs * this.r));
    }
    return out;
  }

  /** Overwrite A and B with saved values (a resumed run). */
  write(rt: Runtime, tensors: Map<string, Float32Array>): void {
    for (const m of this.modules) {
      for (const [name, buf, n] of [[m.aName, m.A, this.r * m.inputs], [m.bName, m.B, m.outputs * this.r]] as const) {
        const d = tensors.get(name);
        if (!d || d.length !== n) throw new UserError(`LoRA state: '${name}' missing or not ${n} values`);
        rt.memory.write(buf, d);
      }
    }
  }

  destroy(rt: Runtime): void {
    for (const m of this.modules) {
      rt.memory.destroy(m.A);
      rt.memory.destroy(m.B);
    }
  }
}

/** PEFT's adapter_config.json for these settings (LoraConfig fields; PEFT fills the rest with its defaults). */
export function adapterConfig(cfg: ModelConfig, settings: LoraSettings, fromBlock: number, baseModel: string | null): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: settings.r,
    lora_alpha: settings.alpha,
    lora_dropout: 0.0,
    bias: 'none',
    fan_in_fan_out: !cfg.arch,
    target_modules: loraModules(cfg, settings, fromBlock).map((m) => m.module),
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
  };
}

/** adapter_config.json and adapter_model.safetensors (F32 tensors, PEFT names). */
export function peftAdapterFiles(cfg: ModelConfig, settings: LoraSettings, fromBlock: number, tensors: Map<string, Float32Array>, baseModel: string | null = null): { name: 'adapter_config.json' | 'adapter_model.safetensors'; data: string | Uint8Array | Uint8Array[] }[] {
  const out: TensorToWrite[] = [];
  for (const m of loraModules(cfg, settings, fromBlock)) {
    out.push({ name: m.aName, dtype: 'F32', shape: [settings.r, m.inputs], data: tensors.get(m.aName)! });
    out.push({ name: m.bName, dtype: 'F32', shape: [m.outputs, settings.r], data: tensors.get(m.bName)! });
  }
  return [
    { name: 'adapter_config.json', data: `${JSON.stringify(adapterConfig(cfg, settings, fromBlock, baseModel), null, 2)}\n` },
    { name: 'adapter_model.safetensors', data: serializeSafetensors(out, { format: 'pt' }) },
  ];
}

/**
 * The base weights with every adapter merged in (PEFT's merge_and_unload): W += s·B·A for nn.Linear
 * ([out, in]), W += s·(B·A)ᵀ for GPT-2's Conv1D ([in, out]); sums in float64, rounded once.
 * Returns a new map; tensors without an adapter are shared with `params`.
 */
export function mergeLora(cfg: ModelConfig, settings: LoraSettings, fromBlock: number, params: Map<string, Float32Array>, tensors: Map<string, Float32Array>): Map<string, Float32Array> {
  const out = new Map(params);
  const r = settings.r;
  const s = settings.alpha / settings.r;
  for (const m of loraModules(cfg, settings, fromBlock)) {
    const W = Float32Array.from(params.get(m.weight)!);
    const A = tensors.get(m.aName)!;
    const B = tensors.get(m.bName)!;
    const { inputs: nin, outputs: nout } = m;
    for (let o = 0; o < nout; o++) {
      for (let i = 0; i < nin; i++) {
        let d = 0;
        for (let j = 0; j < r; j++) d += B[o * r + j]! * A[j * nin + i]!;
        const at = m.proj.layout === 'out_in' ? o * nin + i : i * nout + o;
        W[at] = W[at]! + s * d;
      }
    }
    out.set(m.weight, W);
  }
  return out;
}
