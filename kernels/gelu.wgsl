// GPT-2's GELU, tanh approximation (HF 'gelu_new'), elementwise over n elements:
//   forward    out  = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//   backward   dinp = dout · gelu'(x)
//   backward_inplace   dinp = dinp · gelu'(x): the gradient overwrites dout (bind it as `dinp`)
// `forward`/`backward` take any n; `forward4`/`backward4` read vec4s and need n % 4 == 0 (and
// 16-byte-aligned bindings). One element (or vec4) per invocation; workgroups linearized
// wg.x + wg.y·nwg.x for 2-D grids.

override WG: u32 = 256;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dinp4: array<vec4<f32>>;

const GELU_K: f32 = 0.7978845608028654; // √(2/π)
const GELU_A: f32 = 0.044715;
// tanh(±10) is ±1 in f32; clamping keeps implementations that compute tanh through exp away from inf/inf.
const U_MAX: f32 = 10.0;

fn gelu(x: f32) -> f32 {
  let u = clamp(GELU_K * (x + GELU_A * x * x * x), -U_MAX, U_MAX);
  return 0.5 * x * (1.0 + tanh(u));
}

fn gelu4(x: vec4<f32>) -> vec4<f32> {
  let u = clamp(GELU_K * (x + GELU_A * x * x * x), vec4<f32>(-U_MAX), vec4<f32>(U_MAX));
  return 0.5 * x * (1.0 + tanh(u));
}

fn gelu_grad(x: f32) -> f32 {
  let u = clamp(GELU_K * (x + GELU_A * x * x * x), -U_MAX, U_MAX);
  let th = tanh(u);
  let du = GELU_K * (1.0 + 3.0 * GELU_A * x * x);
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
}

fn gelu_grad4(x: vec4<f32>) -> vec4<f32> {
  let u = clamp(GELU_K * (x + GELU_A * x * x * x), vec4<f32>(-U_MAX), vec4<f32>(U_MAX));
  let th = tanh(u);
  let du = GELU_K * (1.0 + 3.0 * GELU_A * x * x);
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
}

fn elem_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = gelu(inp[i]);
}

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n / 4u) { return; }
  out4[i] = gelu4(inp4[i]);
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  dinp[i] = dout[i] * gelu_grad(inp[i]);
}

@compute @workgroup_size(WG)
fn backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n / 4u) { return; }
  dinp4[i] = dout4[i] * gelu_grad4(inp4[i]);
}

@compute @workgroup_size(WG)
fn backward_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  dinp[i] = dinp[i] * gelu_grad(inp[i]);
}

@compute @workgroup_size(WG)
fn backward_inplace4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.n / 4u) { return; }
  dinp4[i] = dinp4[i] * gelu_grad4(inp4[i]);
}
