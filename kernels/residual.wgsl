// Elementwise sums over n elements: the residual connection's forward, and the accumulation of
// gradients (the backward of a residual is a copy/accumulate of dout into both branches).
//   add            out = a + b          (ACCUMULATE: out += a + b)
//   add_inplace    out += b             (acc += b: add a gradient into an accumulator)
// The *4 entry points read vec4s and need n % 4 == 0 (and 16-byte-aligned bindings).
// One element (or vec4) per invocation; workgroups linearized wg.x + wg.y·nwg.x for 2-D grids.

override WG: u32 = 256;
override ACCUMULATE: bool = false;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;

fn elem_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  var v = a[i] + b[i];
  if (ACCUMULATE) { v += out[i]; }
  out[i] = v;
}

@compute @workgroup_size(WG)
fn add4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n / 4u) { return; }
  var v = a4[i] + b4[i];
  if (ACCUMULATE) { v += out4[i]; }
  out4[i] = v;
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = out[i] + b[i];
}

@compute @workgroup_size(WG)
fn add_inplace4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n / 4u) { return; }
  out4[i] = out4[i] + b4[i];
}
