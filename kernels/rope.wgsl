// Rotary position embeddings in Hugging Face's rotate-half layout (apply_rotary_pos_emb), applied in
// place to the q and k heads of a fused qkv buffer, forward and backward.
//   layout     row r of [rows, (nHead + 2·nKvHead)·hd] = [q heads | k heads | v heads], hd = headDim;
//              rows = B·T, row r at position pos = r % T; v is never touched.
//   forward    per head, for i < h = hd/2, θ = pos·inv_freq[i] (f32, as HF's float32 freqs):
//              x[i]   ← x[i]·cos θ − x[i+h]·sin θ
//              x[i+h] ← x[i+h]·cos θ + x[i]·sin θ
//   backward   the transpose, i.e. the rotation by −θ, in place over dq and dk:
//              d[i]   ← d[i]·cos θ + d[i+h]·sin θ
//              d[i+h] ← d[i+h]·cos θ − d[i]·sin θ
// inv_freq [h] is uploaded by the host (src/ops/rope.ts ropeInvFreq: default and llama3 scaling).
// One invocation per (row, i): it computes cos/sin once and rotates pair (i, i+h) of every q and k
// head of its row. Invocations are linearized (wg.x + wg.y·nwg.x)·WG + local index (2-D grids).
//
// cos/sin of a large argument: the builtins are only accurate near [−π, π] on many GPUs (WGSL
// promises nothing outside it), so θ is first reduced by 2π in three parts (Cody–Waite): k·TWO_PI_A
// and k·TWO_PI_B are exact for k < 2^15 (the constants have 8 and 9 significant bits), θ − k·TWO_PI_A
// is exact (Sterbenz), and TWO_PI_A + TWO_PI_B + TWO_PI_C equals 2π to 2e-14. The reduced argument is
// then within two f32 roundings of θ mod 2π for θ < 2^15·2π ≈ 205887 (position·inv_freq; inv_freq ≤ 1).
// On lavapipe, positions 0..8191: ‖out − ref‖/‖ref‖ ≈ 5e-8 against HF's float32 angles (test/rope.test.ts).

override WG: u32 = 64;

struct Params { rows: u32, T: u32, nHead: u32, nKvHead: u32, headDim: u32 }

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const INV_TWO_PI: f32 = 0.15915494309189535;
const TWO_PI_A: f32 = 6.28125;                 // 0x1.92p+2
const TWO_PI_B: f32 = 0.001934051513671875;    // 0x1.fbp-10
const TWO_PI_C: f32 = 0x1.5110b4p-20;          // 1.2556659e-6

// (cos θ, sin θ) for θ = f32(pos)·inv_freq[i], the f32 product HF's rotary embedding computes.
fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
  let theta = f32(pos) * inv_freq[i];
  let k = round(theta * INV_TWO_PI);
  let r = ((theta - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
  return vec2<f32>(cos(r), sin(r));
}

struct Pair { row: u32, i: u32, valid: bool }

fn pair_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Pair {
  let h = p.headDim / 2u;
  let g = (wg.x + wg.y * nwg.x) * WG + lid;
  return Pair(g / h, g % h, g < p.rows * h);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let pr = pair_of(wg, nwg, lid);
  if (!pr.valid) { return; }
  let h = p.headDim / 2u;
  let cs = cos_sin(pr.row % p.T, pr.i);
  var at = pr.row * (p.nHead + 2u * p.nKvHead) * p.headDim + pr.i;
  for (var head = 0u; head < p.nHead + p.nKvHead; head++) {
    let x1 = qkv[at];
    let x2 = qkv[at + h];
    qkv[at] = x1 * cs.x - x2 * cs.y;
    qkv[at + h] = x2 * cs.x + x1 * cs.y;
    at += p.headDim;
  }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let pr = pair_of(wg, nwg, lid);
  if (!pr.valid) { return; }
  let h = p.headDim / 2u;
  let cs = cos_sin(pr.row % p.T, pr.i);
  var at = pr.row * (p.nHead + 2u * p.nKvHead) * p.headDim + pr.i;
  for (var head = 0u; head < p.nHead + p.nKvHead; head++) {
    let d1 = dqkv[at];
    let d2 = dqkv[at + h];
    dqkv[at] = d1 * cs.x + d2 * cs.y;
    dqkv[at + h] = d2 * cs.x - d1 * cs.y;
    at += p.headDim;
  }
}
