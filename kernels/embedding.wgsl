// Token + position embeddings, forward and backward.
//   forward        out[b,t,:] = scale·wte[ids[b,t], :] + wpe[t, :]   (GPT-2: scale 1, exact)
//                  HAS_WPE = false: no position table (rotary models); scale = Gemma's √hidden.
//                  wte may be split into parts of partRows rows each (the last may be shorter): one
//                  storage binding is capped at 128 MiB on lavapipe, GPT-2's f32 wte is ~154 MB.
//                  One dispatch binds up to 4 parts, partBase .. partBase+3, and writes only the
//                  rows whose id lies in them (a larger wte takes one dispatch per 4 parts). Unused
//                  parts are bound to any small buffer.
//   backward_wpe   dwpe[t,:] (+)= Σ_b dout[b,t,:]  (b in order)
//   backward_wte   dwte[id,:] += Σ_{positions p of id, ascending} dout[p,:], without atomics: the
//                  host builds a CSR index of the batch's token ids (unique ids ascending, each with
//                  its positions ascending) and uploads it into `index` (layout below). Each unique id
//                  is owned by exactly one workgroup (u = wgIndex, wgIndex + nWorkgroups, …), so
//                  the sums and their order are fixed. One dispatch per wte part: ids outside
//                  [rowStart, rowEnd) are skipped, dwte is that part's binding. The sum is
//                  multiplied by the forward's scale (once, after summing).
// index layout (u32): [0] count of unique ids, [1, 1+cap) unique ids, [1+cap, 2+2cap) offsets
// (count+1 used: positions of unique id u are pos[offsets[u] .. offsets[u+1])), [2+2cap, 2+3cap)
// positions (row numbers b·T + t).

override WG: u32 = 256;      // backward_wpe: one element per invocation
override RWG: u32 = 64;      // forward: invocations per row (strided over C)
override SWG: u32 = 64;      // backward_wte: invocations per workgroup (strided over C)
override ACCUMULATE: bool = false;
override HAS_WPE: bool = true;

struct Params { B: u32, T: u32, C: u32, partRows: u32, partBase: u32, scale: f32 }
struct WteParams { C: u32, cap: u32, rowStart: u32, rowEnd: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> wte0: array<f32>;
@group(0) @binding(2) var<storage, read> wte1: array<f32>;
@group(0) @binding(3) var<storage, read> wte2: array<f32>;
@group(0) @binding(4) var<storage, read> wte3: array<f32>;
@group(0) @binding(5) var<storage, read> wpe: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;
@group(0) @binding(8) var<storage, read> dout: array<f32>;
@group(0) @binding(9) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(10) var<storage, read> index: array<u32>;
@group(0) @binding(11) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(12) var<uniform> q: WteParams;

// One workgroup per row (b, t); its invocations stride over C. The wte part is chosen once per row.
@compute @workgroup_size(RWG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= p.B * p.T) { return; }
  let C = p.C;
  let id = ids[row];
  let part = id / p.partRows;
  if (part < p.partBase || part - p.partBase >= 4u) { return; } // another dispatch's parts
  let src = (id - part * p.partRows) * C;
  let pe = (row % p.T) * C;
  let dst = row * C;
  let local = part - p.partBase;
  for (var c = lid; c < C; c += RWG) {
    var e: f32;
    if (local == 0u) { e = wte0[src + c]; } else if (local == 1u) { e = wte1[src + c]; } else if (local == 2u) { e = wte2[src + c]; } else { e = wte3[src + c]; }
    var v = e * p.scale;
    if (HAS_WPE) { v += wpe[pe + c]; }
    out[dst + c] = v;
  }
}

@compute @workgroup_size(WG)
fn backward_wpe(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * nwg.x) * WG + lid; // t·C + c
  let TC = p.T * p.C;
  if (i >= TC) { return; }
  var s = 0.0;
  for (var b = 0u; b < p.B; b++) { s += dout[b * TC + i]; }
  if (ACCUMULATE) { s += dwpe[i]; }
  dwpe[i] = s;
}

@compute @workgroup_size(SWG)
fn backward_wte(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let count = min(index[0], q.cap);
  let nW = nwg.x * nwg.y;
  let offs = 1u + q.cap;
  let pos = 2u + 2u * q.cap;
  for (var u = wg.x + wg.y * nwg.x; u < count; u += nW) {
    let id = index[1u + u];
    if (id < q.rowStart || id >= q.rowEnd) { continue; }
    let k0 = index[offs + u];
    let k1 = index[offs + u + 1u];
    let dst = (id - q.rowStart) * q.C;
    for (var c = lid; c < q.C; c += SWG) {
      var s = 0.0;
      for (var k = k0; k < k1; k++) { s += dout[index[pos + k] * q.C + c]; }
      dwte[dst + c] += s * q.scale;
    }
  }
}
