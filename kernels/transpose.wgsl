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
