// C = op(A) · op(B) (+ bias over columns) (+ C when ACCUMULATE), row-major, any M, N, K.
//   nn: A [M,K], B [K,N]     (forward: x · W for HF Conv1D weights stored [in, out])
//   nt: A [M,K], B [N,K]     (backward dX = dY · Wᵀ; tied LM head: x · wteᵀ)
//   tn: A [K,M], B [K,N]     (backward dW = Xᵀ · dY)
// Tuned for lavapipe (see kernels/README.md): no workgroup memory; each invocation
// owns a 4×8 block of C held in registers; vec4 loads; k unrolled by 4. The vec4 entry points need
// the vectorised dimensions (and leading dims and offsets) to be multiples of 4; `generic` takes
// anything, with the transposes chosen by override constants.
// Leading dims (lda, ldb, ldc) and element offsets let a caller address a slice of a larger
// tensor (a row chunk of logits, one head's block), and bind huge tensors as ranges.

override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override TRANS_A: bool = false; // generic only
override TRANS_B: bool = false; // generic only
override WG_X: u32 = 8;         // invocations along N (each does 8 columns)
override WG_Y: u32 = 8;         // invocations along M (each does 4 rows)

struct Params {
  M: u32, N: u32, K: u32,
  lda: u32, ldb: u32, ldc: u32,
  aOff: u32, bOff: u32, cOff: u32, biasOff: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;

// Write one row of the invocation's 4×8 block: bias, accumulate, and the edges of C.
fn store_row(m: u32, n0: u32, v0: vec4<f32>, v1: vec4<f32>) {
  if (m >= p.M) { return; }
  let base = p.cOff + m * p.ldc;
  for (var j = 0u; j < 8u; j++) {
    let n = n0 + j;
    if (n < p.N) {
      var v = select(v1[j - 4u], v0[min(j, 3u)], j < 4u);
      if (HAS_BIAS) { v += bias[p.biasOff + n]; }
      if (ACCUMULATE) { v += c[base + n]; }
      c[base + n] = v;
    }
  }
}

// Rows m0..m0+3 and columns n0..n0+7 owned by this invocation.
fn tile_origin(wg: vec3<u32>, lid: vec3<u32>) -> vec2<u32> {
  return vec2<u32>((wg.y * WG_Y + lid.y) * 4u, (wg.x * WG_X + lid.x) * 8u);
}

// Registers are named, not arrays: lavapipe spills dynamically indexed private arrays to memory.
// Each k4 step loads A once (4 rows × 4 k) and walks B one row at a time: fewer live registers than
// loading a 4×8 block of B up front (measured ~15% faster on lavapipe).
@compute @workgroup_size(WG_X, WG_Y)
fn nn(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let o = tile_origin(wg, lid);
  let m0 = o.x; let n0 = o.y;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let r0 = (p.aOff + min(m0, p.M - 1u) * p.lda) / 4u;
  let r1 = (p.aOff + min(m0 + 1u, p.M - 1u) * p.lda) / 4u;
  let r2 = (p.aOff + min(m0 + 2u, p.M - 1u) * p.lda) / 4u;
  let r3 = (p.aOff + min(m0 + 3u, p.M - 1u) * p.lda) / 4u;
  let ldb4 = p.ldb / 4u;
  var bi0 = (p.bOff + n0) / 4u;
  var bi1 = (p.bOff + min(n0 + 4u, (p.N - 1u) & ~3u)) / 4u;
  var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  for (var k4 = 0u; k4 < p.K / 4u; k4++) {
    let a0 = a4[r0 + k4]; let a1 = a4[r1 + k4]; let a2 = a4[r2 + k4]; let a3 = a4[r3 + k4];
    var b0 = b4[bi0]; var b1 = b4[bi1];
    c00 += a0.x * b0; c01 += a0.x * b1; c10 += a1.x * b0; c11 += a1.x * b1;
    c20 += a2.x * b0; c21 += a2.x * b1; c30 += a3.x * b0; c31 += a3.x * b1;
    b0 = b4[bi0 + ldb4]; b1 = b4[bi1 + ldb4];
    c00 += a0.y * b0; c01 += a0.y * b1; c10 += a1.y * b0; c11 += a1.y * b1;
    c20 += a2.y * b0; c21 += a2.y * b1; c30 += a3.y * b0; c31 += a3.y * b1;
    b0 = b4[bi0 + 2u * ldb4]; b1 = b4[bi1 + 2u * ldb4];
    c00 += a0.z * b0; c01 += a0.z * b1; c10 += a1.z * b0; c11 += a1.z * b1;
    c20 += a2.z * b0; c21 += a2.z * b1; c30 += a3.z * b0; c31 += a3.z * b1;
    b0 = b4[bi0 + 3u * ldb4]; b1 = b4[bi1 + 3u * ldb4];
    c00 += a0.w * b0; c01 += a0.w * b1; c10 += a1.w * b0; c11 += a1.w * b1;
    c20 += a2.w * b0; c21 += a2.w * b1; c30 += a3.w * b0; c31 += a3.w * b1;
    bi0 += 4u * ldb4; bi1 += 4u * ldb4;
  }
  store_row(m0, n0, c00, c01);
  store_row(m0 + 1u, n0, c10, c11);
  store_row(m0 + 2u, n0, c20, c21);
  store_row(m0 + 3u, n0, c30, c31);
}

@compute @workgroup_size(WG_X, WG_Y)
fn nt(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let o = tile_origin(wg, lid);
  let m0 = o.x; let n0 = o.y;
  if (m0 >= p.M || n0 >= p.N) { return; }
  var ar: array<u32, 4>;
  for (var i = 0u; i < 4u; i++) { ar[i] = (p.aOff + min(m0 + i, p.M - 1u) * p.lda) / 4u; }
  var br: array<u32, 8>;
  for (var j = 0u; j < 8u; j++) { br[j] = (p.bOff + min(n0 + j, p.N - 1u) * p.ldb) / 4u; }
  var acc0: array<vec4<f32>, 4>;
  var acc1: array<vec4<f32>, 4>;
  for (var k4 = 0u; k4 < p.K / 4u; k4++) {
    let b0 = b4[br[0] + k4]; let b1 = b4[br[1] + k4]; let b2 = b4[br[2] + k4]; let b3 = b4[br[3] + k4];
    let b4_ = b4[br[4] + k4]; let b5 = b4[br[5] + k4]; let b6 = b4[br[6] + k4]; let b7 = b4[br[7] + k4];
    for (var i = 0u; i < 4u; i++) {
      let av = a4[ar[i] + k4];
      acc0[i] += vec4<f32>(dot(av, b0), dot(av, b1), dot(av, b2), dot(av, b3));
      acc1[i] += vec4<f32>(dot(av, b4_), dot(av, b5), dot(av, b6), dot(av, b7));
    }
  }
  for (var i = 0u; i < 4u; i++) { store_row(m0 + i, n0, acc0[i], acc1[i]); }
}

// tn owns an 8×8 block of C per invocation (16 vec4 accumulators). Run with WG_Y = 1: then the
// A loads depend on the workgroup id alone, lavapipe sees them as uniform and loads once for all
// lanes, and only B's two vec4 per k vary across lanes. Measured ~1.4× the 4×8 layout.
@compute @workgroup_size(WG_X, WG_Y)
fn tn(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = (wg.y * WG_Y + lid.y) * 8u;
  let n0 = (wg.x * WG_X + lid.x) * 8u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let lda4 = p.lda / 4u;
  let ldb4 = p.ldb / 4u;
  let ma0 = (p.aOff + m0) / 4u;
  let ma1 = (p.aOff + min(m0 + 4u, (p.M - 1u) & ~3u)) / 4u;
  let nb0 = (p.bOff + n0) / 4u;
  let nb1 = (p.bOff + min(n0 + 4u, (p.N - 1u) & ~3u)) / 4u;
  var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
  var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
  var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
  var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k++) {
    let a0 = a4[ma0 + k * lda4];
    let a1 = a4[ma1 + k * lda4];
    let b0 = b4[nb0 + k * ldb4];
    let b1 = b4[nb1 + k * ldb4];
    c00 += a0.x * b0; c01 += a0.x * b1; c10 += a0.y * b0; c11 += a0.y * b1;
    c20 += a0.z * b0; c21 += a0.z * b1; c30 += a0.w * b0; c31 += a0.w * b1;
    c40 += a1.x * b0; c41 += a1.x * b1; c50 += a1.y * b0; c51 += a1.y * b1;
    c60 += a1.z * b0; c61 += a1.z * b1; c70 += a1.w * b0; c71 += a1.w * b1;
  }
  store_row(m0, n0, c00, c01); store_row(m0 + 1u, n0, c10, c11);
  store_row(m0 + 2u, n0, c20, c21); store_row(m0 + 3u, n0, c30, c31);
  store_row(m0 + 4u, n0, c40, c41); store_row(m0 + 5u, n0, c50, c51);
  store_row(m0 + 6u, n0, c60, c61); store_row(m0 + 7u, n0, c70, c71);
}



fn load_a(m: u32, k: u32) -> f32 {
  if (TRANS_A) { return a[p.aOff + k * p.lda + m]; }
  return a[p.aOff + m * p.lda + k];
}

fn load_b(k: u32, n: u32) -> f32 {
  if (TRANS_B) { return b[p.bOff + n * p.ldb + k]; }
  return b[p.bOff + k * p.ldb + n];
}

// Any shape, alignment and transpose; scalar loads.
@compute @workgroup_size(WG_X, WG_Y)
fn generic(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let o = tile_origin(wg, lid);
  let m0 = o.x; let n0 = o.y;
  if (m0 >= p.M || n0 >= p.N) { return; }
  var mi: array<u32, 4>;
  for (var i = 0u; i < 4u; i++) { mi[i] = min(m0 + i, p.M - 1u); }
  var nj: array<u32, 8>;
  for (var j = 0u; j < 8u; j++) { nj[j] = min(n0 + j, p.N - 1u); }
  var acc0: array<vec4<f32>, 4>;
  var acc1: array<vec4<f32>, 4>;
  for (var k = 0u; k < p.K; k++) {
    let bv0 = vec4<f32>(load_b(k, nj[0]), load_b(k, nj[1]), load_b(k, nj[2]), load_b(k, nj[3]));
    let bv1 = vec4<f32>(load_b(k, nj[4]), load_b(k, nj[5]), load_b(k, nj[6]), load_b(k, nj[7]));
    for (var i = 0u; i < 4u; i++) {
      let av = load_a(mi[i], k);
      acc0[i] += av * bv0;
      acc1[i] += av * bv1;
    }
  }
  for (var i = 0u; i < 4u; i++) { store_row(m0 + i, n0, acc0[i], acc1[i]); }
}


// ---------------------------------------------------------------------------------------------
// tiled: the hardware-GPU kernel (chosen on adapters that are not software; lavapipe keeps tn).
// A workgroup of TILE_T × TILE_T = 256 invocations owns a 64×64 block of C; each k-step stages a
// 64×16 block of op(A) and a 16×64 block of op(B) in workgroup memory (8 KiB), loaded by all 256
// invocations with consecutive invocations on consecutive addresses of the stored layout
// (coalesced for nn, nt and tn alike), then each invocation accumulates a 4×4 sub-block whose rows
// and columns are 16 apart (conflict-free shared reads, coalesced stores). Scalar loads: any
// alignment, leading dimension and offset. Each C element sums k in ascending order, one product at
// a time, as the other kernels do.
const TILE_T: u32 = 16u;   // invocations per side
const TILE_MN: u32 = 64u;  // C rows / columns per workgroup: TILE_T × 4
const TILE_K: u32 = 16u;
var<workgroup> tileA: array<f32, 1024>;  // [TILE_K][TILE_MN]: op(A)ᵀ block, tileA[k·64 + m]
var<workgroup> tileB: array<f32, 1024>;  // [TILE_K][TILE_MN]: op(B) block, tileB[k·64 + n]

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
  let m0 = wg.y * TILE_MN;
  let n0 = wg.x * TILE_MN;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    for (var r = 0u; r < 4u; r++) {
      let l = li + 256u * r;
      // op(A)(m, k): A[m, k] (nn, nt) or A[k, m] (tn); consecutive l walk the stored rows.
      var am: u32; var ak: u32;
      if (TRANS_A) { am = l % TILE_MN; ak = l / TILE_MN; } else { ak = l % TILE_K; am = l / TILE_K; }
      let gm = m0 + am; let gk = k0 + ak;
      tileA[ak * TILE_MN + am] = select(0.0, load_a(min(gm, p.M - 1u), min(gk, p.K - 1u)), gm < p.M && gk < p.K);
      // op(B)(k, n): B[k, n] (nn, tn) or B[n, k] (nt).
      var bn: u32; var bk: u32;
      if (TRANS_B) { bk = l % TILE_K; bn = l / TILE_K; } else { bn = l % TILE_MN; bk = l / TILE_MN; }
      let gn = n0 + bn; let gk2 = k0 + bk;
      tileB[bk * TILE_MN + bn] = select(0.0, load_b(min(gk2, p.K - 1u), min(gn, p.N - 1u)), gn < p.N && gk2 < p.K);
    }
    workgroupBarrier();
    let kn = min(TILE_K, p.K - k0);
    for (var k = 0u; k < kn; k++) {
      var av: array<f32, 4>; var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) { av[i] = tileA[k * TILE_MN + lid.y + TILE_T * i]; bv[i] = tileB[k * TILE_MN + lid.x + TILE_T * i]; }
      for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] += av[i] * bv[j]; } }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + TILE_T * i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + TILE_T * j;
      if (n >= p.N) { continue; }
      var v = acc[i][j];
      if (HAS_BIAS) { v += bias[p.biasOff + n]; }
      if (ACCUMULATE) { v += c[p.cOff + m * p.ldc + n]; }
      c[p.cOff + m * p.ldc + n] = v;
    }
  }
}
