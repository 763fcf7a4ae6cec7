// Gated MLP activation (GLU) over rows × H elements, the middle of a Llama/Qwen2/Gemma2 MLP
// (h = act(x·W_gateᵀ) ⊙ (x·W_upᵀ), then h·W_downᵀ):
//   forward    out[r,j]   = act(gate[r,j]) · up[r,j]
//   backward   dgate[r,j] = dout[r,j] · up[r,j] · act'(gate[r,j])
//              dup[r,j]   = dout[r,j] · act(gate[r,j])
// ACT = 0: SiLU (Llama, Qwen2: SwiGLU)   silu(x) = x·σ(x),  silu'(x) = σ(x)·(1 + x·(1 − σ(x)))
// ACT = 1: GPT-2's tanh GELU (Gemma2 GeGLU, HF hidden_activation 'gelu_pytorch_tanh'), the formula of
//          gelu.wgsl: gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³). Computed through the
//          identity 0.5·(1 + tanh(u)) = σ(2u), so gelu(x) = x·σ(2u) and
//          gelu'(x) = σ(2u) + 2·x·σ(2u)·(1 − σ(2u))·du/dx   (1 − tanh²(u) = 4·σ(2u)·(1 − σ(2u))):
//          no 1 + tanh(u) cancellation in the negative tail, no tanh overflow.
// σ is evaluated stably for any x: with e = exp(−|x|) ∈ (0, 1], σ(x) = 1/(1+e) for x ≥ 0 and e/(1+e)
// for x < 0, and 1 − σ(x) = σ(−x) likewise, so exp never overflows and neither σ nor 1 − σ cancels
// (at x = ±100 or ±1e4: σ ∈ {0, 1}, silu(−1e4) = −0, silu'(±1e4) ∈ {0, 1}, all finite).
//
// Layout: every tensor is addressed as buf[off + r·ld + j] with element offsets and row strides
// from the uniforms, so gate and up may be two separate [rows, H] buffers (off 0, ld H) or the two
// column halves of one fused [rows, 2H] buffer (bind it as both `gate` and `up`, read-only aliasing
// is allowed: gate off 0, up off H, ld 2H). The backward writes dgate and dup into two buffers, or
// with FUSED_D both into `dgate` (one [rows, 2H] buffer; WebGPU forbids binding one buffer to two
// writable bindings), `dup` then gets any small buffer.
// One element per invocation; workgroups linearized wg.x + wg.y·nwg.x for 2-D grids (rows·H < 2³²).

override WG: u32 = 256;
override ACT: u32 = 0;          // 0 SiLU, 1 tanh GELU
override FUSED_D: bool = false; // backward: dup goes into the `dgate` binding at duOff/duLd

struct Params {
  rows: u32, H: u32,
  gOff: u32, gLd: u32,   // gate
  uOff: u32, uLd: u32,   // up
  oOff: u32, oLd: u32,   // out (forward) or dout (backward)
  dgOff: u32, dgLd: u32, // dgate (backward)
  duOff: u32, duLd: u32, // dup (backward; in `dgate` with FUSED_D)
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

const GELU_K: f32 = 0.7978845608028654; // √(2/π)
const GELU_A: f32 = 0.044715;
// For |x| ≥ 20, |2u| > 1200: σ(2u) is exactly 0 or 1 in f32 and σ(1 − σ) is 0. Clamping x inside u
// keeps x³ and du/dx finite for any finite x (x³ overflows f32 from |x| ≈ 7e12).
const GELU_X_MAX: f32 = 20.0;

// (σ(x), 1 − σ(x)), both without cancellation or overflow.
fn sigmoid2(x: f32) -> vec2<f32> {
  let e = exp(-abs(x));
  let a = 1.0 / (1.0 + e);
  let b = e / (1.0 + e);
  if (x >= 0.0) { return vec2<f32>(a, b); }
  return vec2<f32>(b, a);
}

// (act(x), act'(x)).
fn act(x: f32) -> vec2<f32> {
  if (ACT == 0u) {
    let s = sigmoid2(x);
    return vec2<f32>(x * s.x, s.x * (1.0 + x * s.y));
  }
  let xc = clamp(x, -GELU_X_MAX, GELU_X_MAX);
  let u = GELU_K * (xc + GELU_A * xc * xc * xc);
  let du = GELU_K * (1.0 + 3.0 * GELU_A * xc * xc);
  let s = sigmoid2(2.0 * u);
  return vec2<f32>(x * s.x, s.x + 2.0 * x * s.x * s.y * du);
}

fn elem_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.H) { return; }
  let r = i / p.H;
  let j = i - r * p.H;
  let g = gate[p.gOff + r * p.gLd + j];
  let v = up[p.uOff + r * p.uLd + j];
  out[p.oOff + r * p.oLd + j] = act(g).x * v;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.H) { return; }
  let r = i / p.H;
  let j = i - r * p.H;
  let g = gate[p.gOff + r * p.gLd + j];
  let v = up[p.uOff + r * p.uLd + j];
  let d = dout[p.oOff + r * p.oLd + j];
  let a = act(g);
  dgate[p.dgOff + r * p.dgLd + j] = d * v * a.y;
  if (FUSED_D) {
    dgate[p.duOff + r * p.duLd + j] = d * a.x;
  } else {
    dup[p.duOff + r * p.duLd + j] = d * a.x;
  }
}
