// SALF deviations straight from the trace buffer (method.md §3). The trace holds N+1 latent spaces
// of P positions × C; each position has a target whose semantic basis s_y (a row of `bases`) the
// host solved once. With FINAL_NORM the model's ln_f is applied to every space first, so each space
// is measured where the LM head reads.
//   per_position   value[k, i] for space k = wg.y, position i = wg.x (+ 65535·wg.z):
//                    cosine:       1 − cos(h, s_y)
//                    contrastive:  max_{j∈labels} cos(h, s_j) − cos(h, s_y)
//   mean           dev[k] = Σ_i value[k, i] / P in a fixed order (deterministic), one workgroup per space
// A zero vector has cosine 0 with anything (matches src/analysis/deviation.ts).

override FINAL_NORM: bool = true;
override CONTRASTIVE: bool = false;
// The final norm's kind: 0 LayerNorm (GPT-2: γ, β), 1 RMSNorm (Llama, Qwen2: x·rstd·w),
// 2 Gemma's RMSNorm (x·rstd·(1 + w)). RMSNorm binds any buffer as beta (unused).
override NORM_KIND: u32 = 0u;
const WG = 64u;

// P positions analysed; `stride` positions per space in `values` (≥ P); `slotElems` elements per
// space in the trace (its capacity·C, padded).
struct Params { C: u32, P: u32, stride: u32, slotElems: u32, nLabels: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> trace: array<f32>;        // [N+1, slotElems]
@group(0) @binding(1) var<storage, read> bases: array<f32>;        // [U, C]
@group(0) @binding(2) var<storage, read> targetBase: array<u32>;   // [P] row of bases for each position's target
@group(0) @binding(3) var<storage, read> labelBase: array<u32>;    // [nLabels] rows of bases (contrastive)
@group(0) @binding(4) var<storage, read> gamma: array<f32>;        // final norm weight [C]
@group(0) @binding(5) var<storage, read> beta: array<f32>;         // ln_f bias [C] (LayerNorm only)
@group(0) @binding(6) var<storage, read_write> values: array<f32>; // [N+1, stride]
@group(0) @binding(7) var<uniform> p: Params;
@group(0) @binding(8) var<storage, read_write> dev: array<f32>;    // [N+1]

var<workgroup> red: array<f32, 64>;
var<workgroup> red2: array<f32, 64>;

// Tree reduction of two sums over the workgroup; every invocation gets the totals.
fn reduce2(a: f32, b: f32, lid: u32) -> vec2<f32> {
  red[lid] = a;
  red2[lid] = b;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] += red[lid + s];
      red2[lid] += red2[lid + s];
    }
    workgroupBarrier();
  }
  let out = vec2<f32>(red[0], red2[0]);
  workgroupBarrier();
  return out;
}

fn h_at(base: u32, c: u32, mean: f32, rstd: f32) -> f32 {
  let v = trace[base + c];
  if (FINAL_NORM) {
    if (NORM_KIND == 0u) { return (v - mean) * rstd * gamma[c] + beta[c]; }
    if (NORM_KIND == 1u) { return v * rstd * gamma[c]; }
    return v * rstd * (1.0 + gamma[c]);
  }
  return v;
}

fn cosine(dotv: f32, hh: f32, ss: f32) -> f32 {
  if (hh <= 0.0 || ss <= 0.0) { return 0.0; }
  return dotv / (sqrt(hh) * sqrt(ss));
}

@compute @workgroup_size(64)
fn per_position(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
  let lid = l.x;
  let i = wg.x + 65535u * wg.z;
  let k = wg.y;
  if (i >= p.P) { return; }
  let C = p.C;
  let base = k * p.slotElems + i * C;
  var mean = 0.0;
  var rstd = 1.0;
  if (FINAL_NORM && NORM_KIND != 0u) {
    // RMSNorm: no centring, rstd = 1/√(mean(x²) + eps).
    var s2 = 0.0;
    for (var c = lid; c < C; c += WG) { let v = trace[base + c]; s2 += v * v; }
    rstd = 1.0 / sqrt(reduce2(s2, 0.0, lid).x / f32(C) + p.eps);
  } else if (FINAL_NORM) {
    var s = 0.0;
    var s2 = 0.0;
    for (var c = lid; c < C; c += WG) { let v = trace[base + c]; s += v; }
    let tot = reduce2(s, 0.0, lid);
    mean = tot.x / f32(C);
    for (var c = lid; c < C; c += WG) { let d = trace[base + c] - mean; s2 += d * d; }
    let var_ = reduce2(s2, 0.0, lid).x / f32(C);
    rstd = 1.0 / sqrt(var_ + p.eps);
  }
  let sy = targetBase[i] * C;
  var hh = 0.0;
  var hs = 0.0;
  var ss = 0.0;
  for (var c = lid; c < C; c += WG) {
    let h = h_at(base, c, mean, rstd);
    let b = bases[sy + c];
    hh += h * h;
    hs += h * b;
    ss += b * b;
  }
  let r1 = reduce2(hh, hs, lid);
  let ss_tot = reduce2(ss, 0.0, lid).x;
  let cy = cosine(r1.y, r1.x, ss_tot);
  var value = 1.0 - cy;
  if (CONTRASTIVE) {
    var best = -2.0;
    for (var j = 0u; j < p.nLabels; j++) {
      let sj = labelBase[j] * C;
      var d = 0.0;
      var n = 0.0;
      for (var c = lid; c < C; c += WG) {
        let h = h_at(base, c, mean, rstd);
        let b = bases[sj + c];
        d += h * b;
        n += b * b;
      }
      let r = reduce2(d, n, lid);
      best = max(best, cosine(r.x, r1.x, r.y));
    }
    value = best - cy;
  }
  if (lid == 0u) { values[k * p.stride + i] = value; }
}

@compute @workgroup_size(64)
fn mean(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
  let k = wg.x;
  let lid = l.x;
  var s = 0.0;
  for (var i = lid; i < p.P; i += WG) { s += values[k * p.stride + i]; }
  let tot = reduce2(s, 0.0, lid);
  if (lid == 0u) { dev[k] = tot.x / f32(p.P); }
}
