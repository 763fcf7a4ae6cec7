// Softmax cross-entropy over logits [rows, V] (row stride ld ≥ V) with u32 targets.
//   forward    losses[rowOff + r] = logsumexp(logits[r,:V]) − logits[r, target]   (max subtracted)
//   fused      the same, and dlogits[r,j] = scale·(softmax(logits[r,:])_j − [j == target]) for j < V,
//              0 for V ≤ j < ld (padded vocabulary). INPLACE writes dlogits over `logits` (bind the
//              logits buffer once, read_write; `dlogits` then gets any small buffer); otherwise into
//              `dlogits`. scale = dloss = 1/totalRows (the mean over every position of the batch,
//              across micro-batches).
//   loss_sum   total[outIdx] (+)= scale·Σ losses[off .. off+n)  (one workgroup, fixed order), so the
//              host reads back 4 bytes.
// Rows whose target is 0xFFFFFFFF are ignored: loss 0, gradient row 0. Any other target must be < V
// (the host validates them).
// One workgroup of WG invocations per row (rows linearized wg.x + wg.y·nwg.x). Each invocation keeps
// an online (max, Σexp) over a strided slice of the row, 4 elements per step; the pairs are combined
// by a fixed workgroup tree. Targets and losses are indexed from rowOff so that a row chunk of a
// larger batch (the LM head runs in chunks of rows) writes its own slots.

override WG: u32 = 64;          // power of two, at most 256
override INPLACE: bool = true;
override ACCUMULATE: bool = false; // loss_sum only

const IGNORE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.402823e38;

struct Params { rows: u32, V: u32, ld: u32, rowOff: u32, scale: f32 }
struct SumParams { n: u32, off: u32, outIdx: u32, scale: f32 }

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read_write> total: array<f32>;
@group(0) @binding(6) var<uniform> q: SumParams;

var<workgroup> red: array<vec2<f32>, 256>;

fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

fn load_or_lowest(base: u32, j: u32) -> f32 {
  if (j < p.V) { return logits[base + j]; }
  return LOWEST;
}

// (max, Σ exp(x − max)) of the row at `base`, the same in every invocation.
fn row_stats(base: u32, lid: u32) -> vec2<f32> {
  var m = LOWEST;
  var s = 0.0;
  for (var j = lid; j < p.V; j += 4u * WG) {
    let x0 = logits[base + j];
    let x1 = load_or_lowest(base, j + WG);
    let x2 = load_or_lowest(base, j + 2u * WG);
    let x3 = load_or_lowest(base, j + 3u * WG);
    let mn = max(max(m, x0), max(max(x1, x2), x3));
    s = s * exp(m - mn) + exp(x0 - mn) + exp(x1 - mn) + exp(x2 - mn) + exp(x3 - mn);
    m = mn;
  }
  red[lid] = vec2<f32>(m, s);
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] = combine(red[lid], red[lid + st]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.ld;
  let t = targets[p.rowOff + row];
  let st = row_stats(base, lid);
  if (lid == 0u) {
    var loss = 0.0;
    if (t != IGNORE) { loss = st.x + log(st.y) - logits[base + t]; }
    losses[p.rowOff + row] = loss;
  }
}

@compute @workgroup_size(WG)
fn fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.ld;
  let t = targets[p.rowOff + row];
  let ignored = t == IGNORE;
  // Read the target's logit before anyone overwrites the row (row_stats ends with barriers).
  var xt = 0.0;
  if (lid == 0u && !ignored) { xt = logits[base + t]; }
  let st = row_stats(base, lid);
  if (lid == 0u) {
    var loss = 0.0;
    if (!ignored) { loss = st.x + log(st.y) - xt; }
    losses[p.rowOff + row] = loss;
  }
  let m = st.x;
  let k = select(p.scale / st.y, 0.0, ignored); // scale / Σexp
  let kt = select(p.scale, 0.0, ignored);
  for (var j = lid; j < p.V; j += WG) {
    let g = exp(logits[base + j] - m) * k - select(0.0, kt, j == t);
    if (INPLACE) { logits[base + j] = g; } else { dlogits[base + j] = g; }
  }
  for (var j = p.V + lid; j < p.ld; j += WG) { // padded vocabulary columns
    if (INPLACE) { logits[base + j] = 0.0; } else { dlogits[base + j] = 0.0; }
  }
}

@compute @workgroup_size(WG)
fn loss_sum(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < q.n; i += WG) { s += losses[q.off + i]; }
  red[lid] = vec2<f32>(s, 0.0);
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid].x += red[lid + st].x; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var v = red[0].x * q.scale;
    if (ACCUMULATE) { v += total[q.outIdx]; }
    total[q.outIdx] = v;
  }
}
