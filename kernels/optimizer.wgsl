// Optimizer kernels: AdamW and SGD updates, gradient sum of squares for global-norm clipping, the
// clipping scale, and buffer zeroing. Host side: src/train/optimizer.ts.
//
// Per-step values (learning rate, bias corrections, decay factor, clipping threshold) live in ONE
// small storage buffer `hp` shared by every optimizer dispatch, written with queue.writeBuffer
// before each step's submit: nothing is rebound or created per step. It is storage, not uniform,
// because the registry gives each bound kernel its own uniform buffer. Everything derived from
// the hyper-parameters (1−β, the bias corrections, 1−lr·λ) is computed on the host in float64 and
// rounded once to f32, as torch does with its Python-float scalars.
//
// The gradient actually used is g·gradScale, gradScale = scale[0], a storage float that the
// `clip_scale` entry writes on the GPU (global-norm clipping without a host round trip) or the
// host writes (1/accumulation when clipping is off). Gradient accumulation over micro-batches is
// folded into gradScale: hp.invAccum = 1/count; clip_scale measures the norm of the averaged
// gradient, sqrt(sumsq)·invAccum, and writes gradScale = coef·invAccum.
//
// AdamW follows torch.optim.AdamW(foreach=False) (torch/optim/adam.py, _single_tensor_adam with
// decoupled weight decay) op by op, in f32, with the same rounding points:
//   θ ← θ·f32(1 − lr·λ)                                  param.mul_(1 - lr*wd)
//   m ← fma(f32(1−β1), g − m, m)                          exp_avg.lerp_(g, 1-β1)  (ATen's vectorised lerp)
//   v ← v·f32(β2);  v ← v + (f32(1−β2)·g)·g               exp_avg_sq.mul_(β2).addcmul_(g, g, value=1-β2)
//   d ← sqrt(v) / f32(sqrt(1−β2^t)) + ε                   (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
//   θ ← θ + (f32(−lr/(1−β1^t))·m) / d                     param.addcdiv_(m, d, value=-step_size)
// SGD follows torch.optim.SGD(momentum=0, foreach=False): g' = fma(θ, λ, g) (grad.add(param,
// alpha=wd), coupled L2 decay, only when DECAY), θ ← fma(g', −lr, θ) (param.add_(g', alpha=-lr)).
// fma() is where ATen's AVX2 kernels use _mm256_fmadd_ps. Measured on lavapipe: every step is
// bit-identical to an f32 emulation of the ops above except the fma()s, which lavapipe evaluates
// as a multiply then an add (so ~1/3 of the m values and ~0.5% of the parameters differ by an ulp
// from torch's vectorised path; they equal torch's scalar-tail path). No other contraction seen.

override WG: u32 = 256;          // invocations per workgroup (power of two for the reductions)
override V4: u32 = 4;            // vec4 entry points: vec4s per invocation, WG apart (coalesced)
override DECAY: bool = false;    // apply weight decay to this tensor (matrices: yes; biases, LN: no)

// Field order is mirrored by HP_* in src/train/optimizer.ts.
struct Hyper {
  negLr: f32,          // −lr (SGD)
  negStepSize: f32,    // −lr / (1 − β1^t)        (f64 on the host)
  bc2Sqrt: f32,        // sqrt(1 − β2^t)          (f64 on the host)
  decayMul: f32,       // AdamW: 1 − lr·λ; SGD: λ
  oneMinusBeta1: f32,  // 1 − β1
  beta2: f32,
  oneMinusBeta2: f32,  // 1 − β2
  eps: f32,
  maxNorm: f32,        // global-norm clipping threshold; 0 = no clipping
  invAccum: f32,       // 1 / accumulation count
  _p0: f32, _p1: f32,
}

// Per dispatch (fixed at build time): the element count of this tensor (or binding range), and the
// first element (the scalar entry points; they take the last n mod 4 elements after the vec4 ones).
// adamw4 / sgd4 count n in vec4s and start at vec4 0 (off is not read).
struct Params {
  n: u32,
  off: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> hp: Hyper;
@group(0) @binding(5) var<storage, read> scale: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v4: array<vec4<f32>>;

// Linear element index over a 1-D or 2-D grid of workgroups (grid() in src/gpu/step.ts).
fn linear(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + lid.x;
}

// One AdamW update of up to four elements (component-wise: the scalar kernel passes its element as
// x and keeps x). Returns the new θ, m and v.
struct Adam { theta: vec4<f32>, m: vec4<f32>, v: vec4<f32> }

fn adamw_update(g: vec4<f32>, theta0: vec4<f32>, mo: vec4<f32>, vo: vec4<f32>) -> Adam {
  var theta = theta0;
  if (DECAY) { theta = theta * hp.decayMul; }
  let mi = fma(vec4<f32>(hp.oneMinusBeta1), g - mo, mo);
  var vi = vo * hp.beta2;
  vi = vi + (hp.oneMinusBeta2 * g) * g;
  let d = sqrt(vi) / hp.bc2Sqrt + hp.eps;
  theta = theta + (hp.negStepSize * mi) / d;
  return Adam(theta, mi, vi);
}

fn sgd_update(g0: vec4<f32>, theta: vec4<f32>) -> vec4<f32> {
  var g = g0;
  if (DECAY) { g = fma(theta, vec4<f32>(hp.decayMul), g); }
  return fma(g, vec4<f32>(hp.negLr), theta);
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = p.off + linear(wg, nwg, lid);
  if (i >= p.off + p.n) { return; }
  let r = adamw_update(vec4<f32>(grad[i] * scale[0]), vec4<f32>(param[i]), vec4<f32>(m[i]), vec4<f32>(v[i]));
  m[i] = r.m.x;
  v[i] = r.v.x;
  param[i] = r.theta.x;
}

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = p.off + linear(wg, nwg, lid);
  if (i >= p.off + p.n) { return; }
  param[i] = sgd_update(vec4<f32>(grad[i] * scale[0]), vec4<f32>(param[i])).x;
}

// The same updates four elements at a time (component-wise, so every element gets exactly the scalar
// kernel's arithmetic), V4 vec4s per invocation. Elementwise kernels that move one f32 per invocation
// run at ~1 GB/s on lavapipe; these reach ~6 GB/s.
fn first4(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG * V4 + lid.x;
}

@compute @workgroup_size(WG)
fn adamw4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i0 = first4(wg, nwg, lid);
  let s = scale[0];
  for (var k = 0u; k < V4; k++) {
    let i = i0 + k * WG;
    if (i < p.n) {
      let r = adamw_update(grad4[i] * s, param4[i], m4[i], v4[i]);
      m4[i] = r.m;
      v4[i] = r.v;
      param4[i] = r.theta;
    }
  }
}

@compute @workgroup_size(WG)
fn sgd4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i0 = first4(wg, nwg, lid);
  let s = scale[0];
  for (var k = 0u; k < V4; k++) {
    let i = i0 + k * WG;
    if (i < p.n) { param4[i] = sgd_update(grad4[i] * s, param4[i]); }
  }
}

// ---- global gradient norm ------------------------------------------------------------------
// Two passes, fixed order, no atomics: sumsq_partial writes one partial sum of squares per
// workgroup (chunk of CHUNK elements) into partials[slot + workgroup]; sumsq_final adds all the
// partials of all tensors in slot order into total[0]; clip_scale turns it into gradScale.

struct SumParams {
  n: u32,      // elements in this tensor (range) from off (sumsq_partial4: vec4s)
  chunk: u32,  // elements per workgroup (sumsq_partial4: vec4s)
  slot: u32,   // first output slot in partials
  count: u32,  // sumsq_final: number of partials
  off: u32,    // sumsq_partial: first element (the n mod 4 left after sumsq_partial4)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(0) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> sp: SumParams;
@group(0) @binding(0) var<storage, read> parts: array<f32>;
@group(0) @binding(1) var<storage, read_write> total: array<f32>;

var<workgroup> red: array<f32, WG>;

// Tree sum of red[0..WG) into red[0] (fixed order).
fn reduce_workgroup(l: u32) {
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    workgroupBarrier();
    if (l < s) { red[l] = red[l] + red[l + s]; }
  }
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn sumsq_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let w = wg.x + wg.y * nwg.x;
  let start = w * sp.chunk;
  let end = min(start + sp.chunk, sp.n);
  var s = 0.0;
  for (var k = start + lid.x; k < end; k += WG) {
    let g = x[sp.off + k];
    s = fma(g, g, s);
  }
  red[lid.x] = s;
  reduce_workgroup(lid.x);
  if (lid.x == 0u) { partials[sp.slot + w] = red[0]; }
}

// The same over vec4s: four running sums per invocation, added at the end (fixed order).
@compute @workgroup_size(WG)
fn sumsq_partial4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let w = wg.x + wg.y * nwg.x;
  let start = w * sp.chunk;
  let end = min(start + sp.chunk, sp.n);
  var s = vec4<f32>(0.0);
  for (var k = start + lid.x; k < end; k += WG) {
    let g = x4[k];
    s = fma(g, g, s);
  }
  red[lid.x] = (s.x + s.y) + (s.z + s.w);
  reduce_workgroup(lid.x);
  if (lid.x == 0u) { partials[sp.slot + w] = red[0]; }
}

@compute @workgroup_size(WG)
fn sumsq_final(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  for (var k = lid.x; k < sp.count; k += WG) { s += parts[k]; }
  red[lid.x] = s;
  reduce_workgroup(lid.x);
  if (lid.x == 0u) { total[0] = red[0]; }
}

// scale = [gradScale, norm, sumsq, clipCoef]. torch.nn.utils.clip_grad_norm_:
//   clip_coef = max_norm / (total_norm + 1e-6), clamped to at most 1.
// maxNorm 0 means no clipping (coef 1); a non-finite norm propagates (torch's default,
// error_if_nonfinite=False).
@group(0) @binding(0) var<storage, read> sumsq: array<f32>;
@group(0) @binding(1) var<storage, read_write> scaleOut: array<f32>;
@group(0) @binding(2) var<storage, read> hpc: Hyper;

@compute @workgroup_size(1)
fn clip_scale() {
  let ss = sumsq[0];
  let norm = sqrt(ss) * hpc.invAccum;
  var coef = 1.0;
  if (hpc.maxNorm > 0.0) { coef = min(hpc.maxNorm / (norm + 1e-6), 1.0); }
  scaleOut[0] = coef * hpc.invAccum;
  scaleOut[1] = norm;
  scaleOut[2] = ss;
  scaleOut[3] = coef;
}

// ---- zeroing ---------------------------------------------------------------------------------
struct ZeroParams {
  n: u32,
  off: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(0) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> zp: ZeroParams;

@compute @workgroup_size(WG)
fn zero(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wg, nwg, lid);
  if (i < zp.n) { dst[zp.off + i] = 0.0; }
}

// vec4s [off, off + n) (both in vec4s), V4 per invocation.
@compute @workgroup_size(WG)
fn zero4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i0 = first4(wg, nwg, lid);
  for (var r = 0u; r < V4; r++) {
    let i = i0 + r * WG;
    if (i < zp.n) { dst4[zp.off + i] = vec4<f32>(0.0); }
  }
}
