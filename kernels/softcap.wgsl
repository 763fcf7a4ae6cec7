// Logit soft-capping (Gemma2's final_logit_softcapping), in place over the first V columns of a
// [rows, ld] matrix (ld ≥ V; the padding columns V ≤ j < ld are neither read nor written):
//   forward          x ← y = c·tanh(x/c)
//   forward_deriv    the same, and deriv[r·V + j] = dy/dx = 1 − tanh²(x/c) = sech²(x/c)   ([rows, V], dense)
//   backward         dlogits ← dlogits · deriv                    (in place; deriv from forward_deriv)
//   backward_from_y  dlogits ← dlogits · (1 − (y/c)²)             (in place; y = the capped logits)
//
// Why the backward needs `deriv`: the fused cross-entropy (crossentropy.wgsl, INPLACE) overwrites the
// capped logits y with dlogits, so nothing is left to read y from after it. forward_deriv saves the
// derivative while x is at hand (rows·V floats, the size of the logits themselves: the LM head runs
// in row chunks, so this is one chunk's worth, reused by every chunk). backward_from_y serves a
// caller that keeps y (cross-entropy writing dlogits into a separate buffer) and needs no extra
// buffer beyond that.
//
// backward_from_y is exact, not an approximation: y/c = tanh(x/c), and
//   d/dx [c·tanh(x/c)] = c·(1/c)·(1 − tanh²(x/c)) = 1 − (y/c)².
// It inherits only the float32 rounding of t = y/c (y's own, and the division's: ≈ 2·2⁻²⁴·|t|).
// Computed as (1 − t)(1 + t), not 1 − t², the factor near 0 is exact (Sterbenz) and the other
// rounds by 2⁻²⁴, so the absolute error is ≲ 2⁻²² (~2.4e-7) against a derivative of at most 1.
// Where |x/c| is large the true value is far below that error; there forward_deriv's value,
// computed from x, is the accurate one. The result is clamped at 0 (t can round to just above 1).
//
// tanh and sech² for any finite u = x/c (|x| = 1e4 included), without overflow or cancellation:
//   |u| < 0.4: Taylor series of tanh to u¹³ (truncation < 1e-8 relative), sech² = 1 − t² (t² < 0.16);
//   |u| ≥ 0.4: e = exp(−2 min(|u|, 50)) ∈ [0, 0.45): tanh = sign(u)·(1 − e)/(1 + e), sech² = 4e/(1 + e)².
// (The builtin tanh is not used: lavapipe computes it as (e²ᵘ − 1)/(e²ᵘ + 1), which loses the relative
// precision of small arguments, where most logits/c lie.)
// One element per invocation; workgroups linearized wg.x + wg.y·nwg.x for 2-D grids (rows·V < 2³²).

override WG: u32 = 256;

struct Params { rows: u32, V: u32, ld: u32, c: f32 }

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> deriv: array<f32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// tanh is exactly ±1 in f32 from |u| ≈ 9, and sech²(50) ≈ 1.5e-43 is a denormal (0 where flushed):
// clamping |u| at 50 changes nothing representable and keeps an infinite x/c out of exp.
const U_MAX: f32 = 50.0;

// (tanh(u), sech²(u)).
fn tanh_sech2(u: f32) -> vec2<f32> {
  let a = abs(u);
  if (a < 0.4) {
    let s = u * u;
    let t = u * (1.0 + s * (-0.3333333333333333 + s * (0.13333333333333333 + s * (-0.05396825396825397
      + s * (0.021869488536155203 + s * (-0.008863235529902197 + s * 0.003592128036572481))))));
    return vec2<f32>(t, 1.0 - t * t);
  }
  let e = exp(-2.0 * min(a, U_MAX));
  let q = 1.0 + e;
  return vec2<f32>(sign(u) * (1.0 - e) / q, 4.0 * e / (q * q));
}

fn elem_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + lid;
}

// Address in the [rows, ld] matrix of dense element i of [rows, V].
fn strided(i: u32) -> u32 {
  let r = i / p.V;
  return r * p.ld + (i - r * p.V);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.V) { return; }
  let a = strided(i);
  logits[a] = p.c * tanh_sech2(logits[a] / p.c).x;
}

@compute @workgroup_size(WG)
fn forward_deriv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.V) { return; }
  let a = strided(i);
  let ts = tanh_sech2(logits[a] / p.c);
  logits[a] = p.c * ts.x;
  deriv[i] = ts.y;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.V) { return; }
  let a = strided(i);
  dlogits[a] = dlogits[a] * deriv[i];
}

@compute @workgroup_size(WG)
fn backward_from_y(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let i = elem_index(wg, nwg, lid);
  if (i >= p.rows * p.V) { return; }
  let a = strided(i);
  let t = y[a] / p.c;
  dlogits[a] = dlogits[a] * max((1.0 - t) * (1.0 + t), 0.0);
}
