// LayerNorm over the last dimension of a [rows, C] tensor (torch.nn.LayerNorm: biased variance,
// eps inside the sqrt), forward and backward.
//   forward            out = (x − mean)·rstd·gamma + beta, and saves mean[row], rstd[row]
//   forward_nostats    the same without saving the statistics (frozen prefix, traces)
//   backward_dx        dx (+)= rstd·(g − mean(g) − n·mean(g⊙n)), g = dout⊙gamma, n = (x − mean)·rstd
//   backward_params_partial / backward_params_final
//                      dgamma (+)= Σ_rows dout⊙n, dbeta (+)= Σ_rows dout, two-pass and deterministic:
//                      per-row-chunk partials into scratch [nChunks, 2, C], then a fixed-order sum.
// Row kernels: one workgroup of WG invocations per row, strided loops over C and a workgroup-memory
// tree reduction (no subgroup size assumed). Rows are linearized wg.x + wg.y·nwg.x (2-D grids).

override WG: u32 = 64;          // invocations per row (power of two, at most 256)
override CW: u32 = 64;          // columns per workgroup in the dgamma/dbeta kernels
override ACCUMULATE: bool = false;

struct Params { rows: u32, C: u32, eps: f32 }
struct GradParams { rows: u32, C: u32, rowChunk: u32, nChunks: u32 }

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
@group(0) @binding(7) var<storage, read> dout: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(10) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(11) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(12) var<uniform> q: GradParams;

var<workgroup> red: array<vec2<f32>, 256>;

// Deterministic sum over the workgroup (fixed tree); every invocation gets the result.
fn reduce_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
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

// Normalizes one row into `out`; returns (mean, rstd). Two passes over x (mean, then centred
// variance) for accuracy.
fn normalize_row(row: u32, lid: u32) -> vec2<f32> {
  let base = row * p.C;
  let fc = f32(p.C);
  var s = 0.0;
  for (var i = lid; i < p.C; i += WG) { s += inp[base + i]; }
  let m = reduce_sum2(lid, vec2<f32>(s, 0.0)).x / fc;
  var v = 0.0;
  for (var i = lid; i < p.C; i += WG) {
    let d = inp[base + i] - m;
    v += d * d;
  }
  let rs = 1.0 / sqrt(reduce_sum2(lid, vec2<f32>(v, 0.0)).x / fc + p.eps);
  for (var i = lid; i < p.C; i += WG) {
    out[base + i] = (inp[base + i] - m) * rs * gamma[i] + beta[i];
  }
  return vec2<f32>(m, rs);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  let st = normalize_row(row, lid);
  if (lid == 0u) {
    mean[row] = st.x;
    rstd[row] = st.y;
  }
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
  let m = mean[row];
  let rs = rstd[row];
  var acc = vec2<f32>(0.0);
  for (var i = lid; i < p.C; i += WG) {
    let n = (inp[base + i] - m) * rs;
    let g = dout[base + i] * gamma[i];
    acc += vec2<f32>(g, g * n);
  }
  let sums = reduce_sum2(lid, acc) / f32(p.C); // (mean(g), mean(g⊙n))
  for (var i = lid; i < p.C; i += WG) {
    let n = (inp[base + i] - m) * rs;
    let g = dout[base + i] * gamma[i];
    var v = rs * (g - sums.x - n * sums.y);
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
  var sg = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * q.C + col;
    let d = dout[i];
    sg += d * (inp[i] - mean[r]) * rstd[r];
    sb += d;
  }
  scratch[chunk * 2u * q.C + col] = sg;
  scratch[chunk * 2u * q.C + q.C + col] = sb;
}

// Pass 2: one invocation per column sums the chunks in order.
@compute @workgroup_size(CW)
fn backward_params_final(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  if (col >= q.C) { return; }
  var sg = 0.0;
  var sb = 0.0;
  for (var k = 0u; k < q.nChunks; k++) {
    sg += scratch[k * 2u * q.C + col];
    sb += scratch[k * 2u * q.C + q.C + col];
  }
  if (ACCUMULATE) {
    sg += dgamma[col];
    sb += dbeta[col];
  }
  dgamma[col] = sg;
  dbeta[col] = sb;
}

// ---- one row per invocation (CPU adapters) ----------------------------------------------------
// lavapipe runs a workgroup's invocations as 8-wide SIMD on one thread; the tree reductions above cost
// a barrier per level. Here lane l of a workgroup of RW owns row wg·RW + l and walks it serially:
// no workgroup memory, no barriers (measured 3x faster at 512×128 and 4096×768 with the vec4 forms).
// The *_lane4 forms read rows as vec4 (C % 4 = 0): four running sums per row, added at the end.
override RW: u32 = 8;            // rows (invocations) per workgroup in the lane kernels

@group(0) @binding(0) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dx4: array<vec4<f32>>;

fn lane_row(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 { return (wg.x + wg.y * nwg.x) * RW + lid; }
fn hsum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }

// Normalizes row `row` into out; returns (mean, rstd).
fn lane_norm(row: u32) -> vec2<f32> {
  let base = row * p.C;
  let fc = f32(p.C);
  var s = 0.0;
  for (var i = 0u; i < p.C; i++) { s += inp[base + i]; }
  let m = s / fc;
  var v = 0.0;
  for (var i = 0u; i < p.C; i++) {
    let d = inp[base + i] - m;
    v += d * d;
  }
  let rs = 1.0 / sqrt(v / fc + p.eps);
  for (var i = 0u; i < p.C; i++) { out[base + i] = (inp[base + i] - m) * rs * gamma[i] + beta[i]; }
  return vec2<f32>(m, rs);
}

fn lane_norm4(row: u32) -> vec2<f32> {
  let C4 = p.C / 4u;
  let base = row * C4;
  let fc = f32(p.C);
  var s = vec4<f32>(0.0);
  for (var i = 0u; i < C4; i++) { s += inp4[base + i]; }
  let m = hsum(s) / fc;
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < C4; i++) {
    let d = inp4[base + i] - m;
    v += d * d;
  }
  let rs = 1.0 / sqrt(hsum(v) / fc + p.eps);
  for (var i = 0u; i < C4; i++) { out4[base + i] = (inp4[base + i] - m) * rs * gamma4[i] + beta4[i]; }
  return vec2<f32>(m, rs);
}

@compute @workgroup_size(RW)
fn forward_lane(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let row = lane_row(wg, nwg, lid);
  if (row >= p.rows) { return; }
  let st = lane_norm(row);
  mean[row] = st.x;
  rstd[row] = st.y;
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
  let st = lane_norm4(row);
  mean[row] = st.x;
  rstd[row] = st.y;
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
  let m = mean[row];
  let rs = rstd[row];
  var sg = 0.0;
  var sgn = 0.0;
  for (var i = 0u; i < p.C; i++) {
    let n = (inp[base + i] - m) * rs;
    let g = dout[base + i] * gamma[i];
    sg += g;
    sgn += g * n;
  }
  let mg = sg / f32(p.C);
  let mgn = sgn / f32(p.C);
  for (var i = 0u; i < p.C; i++) {
    let n = (inp[base + i] - m) * rs;
    let g = dout[base + i] * gamma[i];
    var v = rs * (g - mg - n * mgn);
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
  let m = mean[row];
  let rs = rstd[row];
  var sg = vec4<f32>(0.0);
  var sgn = vec4<f32>(0.0);
  for (var i = 0u; i < C4; i++) {
    let n = (inp4[base + i] - m) * rs;
    let g = dout4[base + i] * gamma4[i];
    sg += g;
    sgn += g * n;
  }
  let mg = hsum(sg) / f32(p.C);
  let mgn = hsum(sgn) / f32(p.C);
  for (var i = 0u; i < C4; i++) {
    let n = (inp4[base + i] - m) * rs;
    let g = dout4[base + i] * gamma4[i];
    var v = rs * (g - mg - n * mgn);
    if (ACCUMULATE) { v += dx4[base + i]; }
    dx4[base + i] = v;
  }
}
