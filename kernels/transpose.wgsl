// Transpose: out[outOff + c·ldo + r] = inp[inOff + r·ldi + c] for r < rows, c < cols. Each invocation moves a
// 4×4 block. Used to turn nn and nt products into tn, the fastest form on lavapipe (A's 4 rows of a
// k-step are one vec4 load shared by the SIMD lanes).
struct TParams { rows: u32, cols: u32, ldi: u32, ldo: u32, inOff: u32, outOff: u32 }
@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: TParams;

@compute @workgroup_size(8, 8)
fn transpose(@builtin(global_invocation_id) g: vec3<u32>) {
  let c0 = g.x * 4u;
  let r0 = g.y * 4u;
  if (r0 >= p.rows || c0 >= p.cols) { return; }
  for (var i = 0u; i < 4u; i++) {
    let r = r0 + i;
    if (r < p.rows) {
      let src = p.inOff + r * p.ldi;
      for (var j = 0u; j < 4u; j++) {
        let c = c0 + j;
        if (c < p.cols) { out[p.outOff + c * p.ldo + r] = inp[src + c]; }
      }
    }
  }
}

// The same with vec4 loads and stores: a 4×4 block is 4 row loads and 4 column stores, 1.2-5x the
// scalar kernel's speed on lavapipe. Needs rows, cols, ldi, ldo, inOff and outOff multiples of 4
// (src/ops/matmul.ts picks it only then).
@group(0) @binding(0) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(8, 8)
fn transpose4(@builtin(global_invocation_id) g: vec3<u32>) {
  let c0 = g.x * 4u;
  let r0 = g.y * 4u;
  if (r0 >= p.rows || c0 >= p.cols) { return; }
  let i = (p.inOff + r0 * p.ldi + c0) / 4u;
  let l4i = p.ldi / 4u;
  let a = inp4[i];
  let b = inp4[i + l4i];
  let c = inp4[i + 2u * l4i];
  let d = inp4[i + 3u * l4i];
  let o = (p.outOff + c0 * p.ldo + r0) / 4u;
  let l4 = p.ldo / 4u;
  out4[o] = vec4<f32>(a.x, b.x, c.x, d.x);
  out4[o + l4] = vec4<f32>(a.y, b.y, c.y, d.y);
  out4[o + 2u * l4] = vec4<f32>(a.z, b.z, c.z, d.z);
  out4[o + 3u * l4] = vec4<f32>(a.w, b.w, c.w, d.w);
}
