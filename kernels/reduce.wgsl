// Deterministic reductions (fixed summation order, no atomics).
//   colsum_partial / colsum_final
//                  out[n] (+)= Σ_rows inp[off + row·ld + n] for a [rows, N] matrix (dbias = Σ_rows dy):
//                  pass 1 sums each chunk of rowChunk rows per column into scratch[chunk·N + n]
//                  (DIRECT: with a single chunk, straight into out); pass 2 sums the chunks in order.
//   sumsq_partial  partials[slotOff + w] = Σ x[off + i]² over workgroup w's block of SQ_BLOCK
//                  elements: each tensor of a global gradient norm writes its own slots.
//   sum_slots      total[outIdx] = Σ partials[off .. off+count) (SQRT: its square root), one
//                  workgroup, fixed order.
// Workgroups are linearized wg.x + wg.y·nwg.x where a kernel may need a 2-D grid.

override WG: u32 = 64;          // colsum: columns per workgroup
override ACCUMULATE: bool = false;
override DIRECT: bool = false;  // colsum_partial writes out (single chunk)
override SQRT: bool = false;    // sum_slots

override SQ_WG: u32 = 256;     // sumsq_partial / sum_slots: power of two, at most 256, divides SQ_BLOCK
const SQ_BLOCK: u32 = 4096;    // elements per workgroup of sumsq_partial (one slot), whatever SQ_WG

struct ColParams { rows: u32, N: u32, ld: u32, off: u32, rowChunk: u32, nChunks: u32 }
struct SqParams { n: u32, off: u32, slotOff: u32 }
struct SlotParams { count: u32, off: u32, outIdx: u32 }

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: ColParams;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<uniform> s: SqParams;
@group(0) @binding(7) var<storage, read_write> total: array<f32>;
@group(0) @binding(8) var<uniform> f: SlotParams;

var<workgroup> red: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var st = SQ_WG / 2u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  return red[0];
}

// Workgroup (column group wg.x, row chunk wg.y).
@compute @workgroup_size(WG)
fn colsum_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let col = wg.x * WG + lid;
  let chunk = wg.y;
  if (col >= p.N || chunk >= p.nChunks) { return; }
  let r0 = chunk * p.rowChunk;
  let r1 = min(r0 + p.rowChunk, p.rows);
  var acc = 0.0;
  var i = p.off + r0 * p.ld + col;
  for (var r = r0; r < r1; r++) {
    acc += inp[i];
    i += p.ld;
  }
  if (DIRECT) {
    if (ACCUMULATE) { acc += out[col]; }
    out[col] = acc;
  } else {
    scratch[chunk * p.N + col] = acc;
  }
}

@compute @workgroup_size(WG)
fn colsum_final(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  if (col >= p.N) { return; }
  var acc = 0.0;
  for (var k = 0u; k < p.nChunks; k++) { acc += scratch[k * p.N + col]; }
  if (ACCUMULATE) { acc += out[col]; }
  out[col] = acc;
}

@compute @workgroup_size(SQ_WG)
fn sumsq_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let w = wg.x + wg.y * nwg.x;
  let start = w * SQ_BLOCK;
  if (start >= s.n) { return; }
  var acc = 0.0;
  let end = min(start + SQ_BLOCK, s.n);
  for (var i = start + lid; i < end; i += SQ_WG) {
    let v = x[s.off + i];
    acc += v * v;
  }
  let r = tree_sum(lid, acc);
  if (lid == 0u) { partials[s.slotOff + w] = r; }
}

@compute @workgroup_size(SQ_WG)
fn sum_slots(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < f.count; i += SQ_WG) { acc += partials[f.off + i]; }
  let r = tree_sum(lid, acc);
  if (lid == 0u) { total[f.outIdx] = select(r, sqrt(r), SQRT); }
}
