// Trace capture: copy chosen rows of the residual stream into one latent space's slot of the trace
// buffer, inside the forward's command buffer (no extra pass over the model).
//   gather   trace[slotOff + i·C + c] = x[rows[i]·C + c]  for i < count (count read from a buffer,
//            so a new batch's positions need no rebinding)
// Capturing every position needs no kernel: the forward copies whole buffers.

struct Params { C: u32, slotOff: u32, capacity: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> rows: array<u32>;   // [0] = count, then row indices
@group(0) @binding(2) var<storage, read_write> trace: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = wg.y + wg.z * nwg.y;        // one workgroup row per selected position (y, then z past 65535)
  if (i >= min(rows[0], p.capacity)) { return; }
  let src = rows[1u + i] * p.C;
  let dst = p.slotOff + i * p.C;
  for (var c = wg.x * 64u + lid.x; c < p.C; c += 64u * nwg.x) {
    trace[dst + c] = x[src + c];
  }
}
