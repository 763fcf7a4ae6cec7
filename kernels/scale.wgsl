// In-place scaling of n elements: x[off + i] *= s (LoRA's alpha/r on the rank-r intermediate,
// forward and backward; see src/ops/lora.ts). One element per invocation; workgroups linearized
// wg.x + wg.y·nwg.x for 2-D grids. s is a uniform, so one pipeline serves every scale.

override WG: u32 = 256;

struct Params { n: u32, off: u32, s: f32 }

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * nwg.x) * WG + lid;
  if (i >= p.n) { return; }
  x[p.off + i] = x[p.off + i] * p.s;
}
