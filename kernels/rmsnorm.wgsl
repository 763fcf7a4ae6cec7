// RMSNorm over the last dimension of a [rows, C] tensor, as Hugging Face computes it (no mean
// subtraction, no bias, eps inside the sqrt), forward and backward.
//   g = weight            (LlamaRMSNorm, Qwen2RMSNorm: weight initialised to 1)
//   g = 1 + weight        (Gemma2RMSNorm: weight initialised to 0), override PLUS_ONE
//   forward            out = x·rstd·g, rstd = 1/sqrt(mean(x²) + eps), and saves rstd[row]
//   forward_nostats    the same without saving rstd (frozen prefix, traces)
//   backward_dx        dx (+)= rstd·(g⊙dout − n·mean(g⊙dout⊙n)), n = x·rstd
//   backward_params_partial / backward_params_final
//                      dweight (+)= Σ_rows dout⊙n (the same for both variants: d(1 + w)/dw = 1),
//                      two-pass and deterministic: per-row-chunk partials into scratch [nChunks, C],
//                      then a fixed-order sum (layernorm's scheme, one tensor instead of two).
// Row kernels: one workgroup of WG invocations per row, strided loops over C and a workgroup-memory
// tree reduction (no subgroup size assumed). Rows are linearized wg.x + wg.y·nwg.x (2-D grids).

override WG: u32 = 64;          // invocations per row (power of two, at most 256)
override CW: u32 = 64;          // columns per workgroup in the dweight kernels
override ACCUMULATE: bool = false;
override PLUS_ONE: bool = false; // Gemma: scale by (1 + weight)

struct Params { rows: u32, C: u32, eps: f32 }
struct GradParams { rows: u32, C: u32, rowChunk: u32, nChunks: u32 }

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(8) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(9) var<uniform> q: GradParams;

var<workgroup> red: array<f32, 256>;

// Deterministic sum over the workgroup (fixed tree); every invocation gets the result.
fn reduce_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier(); // red is reused by the next reduction
  return r;
}

// The scale applied after normalization: weight, or (1 + weight) as Gemma computes it in f32.
fn gain(i: u32) -> f32 {
  if (PLUS_ONE) { return 1.0 + weight[i]; }
  return weight[i];
}

// Normalizes one row into `out`; returns rstd. One pass for mean(x²) (no cancellation to avoid).
fn normalize_row(row: u32, lid: u32) -> f32 {
  let base = row * p.C;
  var s = 0.0;
  for (var i = lid; i < p.C; i += WG) {
    let x = inp[base + i];
    s += x * x;
  }
  let rs = 1.0 / sqrt(reduce_sum(lid, s) / f32(p.C) + p.eps);
  for (var i = lid; i < p.C; i += WG) {
    out[base + i] = inp[base + i] * rs * gain(i); // HF's order: (x·rstd)·g
  }
  return rs;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  let rs = normalize_row(row, lid);
  if (lid == 0u) { rstd[row] = rs; }
}

@compute @workgroup_size(WG)
fn forward_nostats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  _ = normalize_row(row, lid);
}

@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let rs = rstd[row];
  var acc = 0.0;
  for (var i = lid; i < p.C; i += WG) {
    acc += dout[base + i] * gain(i) * inp[base + i];
  }
  // mean(g⊙dout⊙n) = rstd·mean(g⊙dout⊙x)
  let m = reduce_sum(lid, acc) * rs / f32(p.C);
  for (var i = lid; i < p.C; i += WG) {
    let n = inp[base + i] * rs;
    var v = rs * (dout[base + i] * gain(i) - n * m);
    if (ACCUMULATE) { v += dx[base + i]; }
    dx[base + i] = v;
  }
}

// Pass 1: workgroup (column group wg.x, row chunk wg.y); one invocation per column sums its chunk's
// rows in order.
@compute @workgroup_size(CW)
fn backward_params_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let col = wg.x * CW + lid;
  let chunk = wg.y;
  if (col >= q.C || chunk >= q.nChunks) { return; }
  let r0 = chunk * q.rowChunk;
  let r1 = min(r0 + q.rowChunk, q.rows);
  var sw = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * q.C + col;
    sw += dout[i] * (inp[i] * rstd[r]);
  }
  scratch[chunk * q.C + col] = sw;
}

// Pass 2: one invocation per column sums the chunks in order.
@compute @workgroup_size(CW)
fn backward_params_final(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  if (col >= q.C) { return; }
  var sw = 0.0;
  for (var k = 0u; k < q.nChunks; k++) {
    sw += scratch[k * q.C + col];
  }
  if (ACCUMULATE) { sw += dweight[col]; }
  dweight[col] = sw;
}

// ---- one row per invocation (CPU adapters) ----------------------------------------------------
// As in layernorm.wgsl: lane l of a workgroup of RW owns row wg·RW + l and walks it serially, no
// workgroup memory or barriers; the *_lane4 forms read rows as vec4 (C % 4 = 0).
override RW: u32 = 8;

@group(0) @binding(0) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> weight4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx4: array<vec4<f32>>;

fn lane_row(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wg.x + wg.y * nwg.x) * RW + lid; }
fn hsum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn gain4(i: u32) -> vec4<f32> {
  if (PLUS_ONE) { return 1.0 + weight4[i]; }
  return weight4[i];
}

fn lane_norm(row: u32) -> f32 {
  let base = row * p.C;
  var s = 0.0;
  for (var i = 0u; i < p.C; i++) {
    let x = inp[base + i];
    s += x * x;
  }
  let rs = 1.0 / sqrt(s / f32(p.C) + p.eps);
  for (var i = 0u; i < p.C; i++) { out[base + i] = inp[base + i] * rs * gain(i); }
  return rs;
}

fn lane_norm4(row: u32) -> f32 {
  let C4 = p.C / 4u;
  let base = row * C4;
  var s = vec4<f32>(0.0);
  for (var i = 0u; i < C4; i++) {
    let x = inp4[base + i];
    s += x * x;
  }
  let rs = 1.0 / sqrt(hsum(s) / f32(p.C) + p.eps);
  for (var i = 0u; i < C4; i++) { out4[base + i] = inp4[base + i] * rs * gain4(i); }
  return rs;
}

@compute @workgroup_size(RW)
fn forward_lane(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  rstd[row] = lane_norm(row);
}

@compute @workgroup_size(RW)
fn forward_lane_nostats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  _ = lane_norm(row);
}

@compute @workgroup_size(RW)
fn forward_lane4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  rstd[row] = lane_norm4(row);
}

@compute @workgroup_size(RW)
fn forward_lane4_nostats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  _ = lane_norm4(row);
}

@compute @workgroup_size(RW)
fn backward_dx_lane(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  let base = row * p.C;
  let rs = rstd[row];
  var acc = 0.0;
  for (var i = 0u; i < p.C; i++) { acc += dout[base + i] * gain(i) * inp[base + i]; }
  let m = acc * rs / f32(p.C);
  for (var i = 0u; i < p.C; i++) {
    let n = inp[base + i] * rs;
    var v = rs * (dout[base + i] * gain(i) - n * m);
    if (ACCUMULATE) { v += dx[base + i]; }
    dx[base + i] = v;
  }
}

@compute @workgroup_size(RW)
fn backward_dx_lane4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  let C4 = p.C / 4u;
  let base = row * C4;
  let rs = rstd[row];
  var acc = vec4<f32>(0.0);
  for (var i = 0u; i < C4; i++) { acc += dout4[base + i] * gain4(i) * inp4[base + i]; }
  let m = hsum(acc) * rs / f32(p.C);
  for (var i = 0u; i < C4; i++) {
    let n = inp4[base + i] * rs;
    var v = rs * (dout4[base + i] * gain4(i) - n * m);
    if (ACCUMULATE) { v += dx4[base + i]; }
    dx4[base + i] = v;
  }
}
