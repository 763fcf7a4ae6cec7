// Causal self-attention (GPT-2, Llama, Qwen2, Gemma2), forward and backward.
//
// Layout: one fused row per token, qkv [B, T, W] with W = (nHead + 2·nKv)·HS: nHead query heads,
// then nKv key heads, then nKv value heads, HS columns each (GPT-2: nKv = nHead, HS = C/nHead, i.e.
// HF's c_attn output q | k | v). out / dout [B, T, Cq], Cq = nHead·HS, heads concatenated; dqkv
// like qkv.
// Grouped-query attention: query head h uses kv head h / (nHead/nKv) (HF's repeat_kv); nKv = nHead
// is multi-head, nKv = 1 multi-query.
// s_ij = softcap(scale · q_i·k_j) for the keys j the mask lets row i see, p_ij = softmax_j(s_ij),
// out_i = Σ_j p_ij v_j, with:
//   scale   given by the host (GPT-2, Llama: 1/√HS; Gemma2: query_pre_attn_scalar^−½);
//   softcap s = c·tanh(s_raw/c) before the mask (Gemma2's attn_logit_softcapping; SOFTCAP);
//   mask    causal j ≤ i and, with a sliding window w > 0 (WINDOWED), i − w < j, i.e. at most w
//           keys, row i seeing keys i−w+1..i: transformers' sliding_window_overlay
//           (masking_utils.py: kv_idx > q_idx − sliding_window, and'ed with kv_idx ≤ q_idx;
//           checked against Gemma2 in transformers 5.18 with sliding_window = 3).
//
// Design choice: flash-style (no T×T buffer). The forward streams the keys with an online
// softmax (running max, rescaled sum and output) and saves only the per-row logsumexp
// `stats` [B, nHead, T]: L_i = ln Σ_j exp(s_ij) (SAVE_STATS). The forward-only variant
// (SAVE_STATS = false: frozen prefix, inference, traces) writes `out` and nothing else.
// The backward recomputes p_ij = exp(s_ij − L_i) in two deterministic passes (no atomics; every
// sum runs in a fixed order):
//   backward_q : per query row i: D_i = dO_i·O_i, saved to `dsum` [B, nHead, T] (scratch),
//                dq_i = scale·Σ_j p_ij (dO_i·v_j − D_i) σ'_ij k_j         (writes dqkv's q columns)
//   backward_kv: per key row j of a kv head, after backward_q, over the query heads of its group
//                (in order) and their rows i that see j:
//                dv_j = Σ p_ij dO_i,  dk_j = scale·Σ p_ij (dO_i·v_j − D_i) σ'_ij q_i   (k and v columns)
//   where σ'_ij = 1 − tanh²(s_raw/c) = 1 − (s_ij/c)² with the softcap, 1 without.
// Without the forward output (HAS_OUT = false) backward_q gets D_i = Σ_j p_ij (dO_i·v_j) from
// one extra sweep over the keys instead.
// Memory besides inputs/outputs: stats and dsum, B·nHead·T floats each, instead of B·nHead·T² for
// stored probabilities (96 KiB vs 12 MiB per layer at B=4, T=256, 12 heads).
// Short sequences (STORE_P, chosen by the host when the squares are small): backward_q also writes
// p_ij and dS_ij = p_ij (dO_i·v_j − D_i) σ'_ij into the scratch after D, two B·nHead·T² squares
// shared by all layers (the backward runs one layer at a time), and backward_kv_stored reads them
// instead of recomputing scores, exponentials and dO_i·v_j: about half of backward_kv's work.
//
// Tuned for lavapipe (kernels/README.md; bench/attention.ts):
// - A workgroup is WG = 8 lanes (one lavapipe SIMD vector; the host runs 32, a warp, on hardware
//   GPUs: src/ops/attention.ts attentionLanes) owning a tile of rows of one
//   (batch, head); a lane owns rows r0 + r·WG + lid for r < R. Loop bounds are workgroup-uniform,
//   so every streamed load (k, v in forward / backward_q; q, dO, L, D in backward_kv) has a uniform
//   address: one scalar load broadcast to the 8 lanes, where a matmul needs gathers. R rows per
//   lane reuse each streamed value R times (R = 8, 4, 4 below; 1 row per lane was 2.5× slower).
// - Per-row vectors live in private vec4 arrays indexed only by loop counters whose trip count is a
//   pipeline constant (HS is an override); named per-row arrays: a 2-D array indexed in loops was 3×
//   slower, fully named registers 2× slower.
// - Keys (queries in backward_kv) are taken in blocks of KB = 4 (2 in backward_kv): one running-max
//   update per block. Scores are kept in log2 units (q pre-scaled by scale·log2 e) for exp2; with
//   the softcap q is pre-scaled by scale/c and the score is c·log2 e·tanh(q·k).
// - Tiles with the most work go first (last query tiles; first key tiles in backward_kv).
// - Grouped queries, the sliding window and the softcap are override constants (GQA, WINDOWED,
//   SOFTCAP): off, they compile away and GPT-2 gets its plain causal multi-head kernels (measured:
//   backward_kv's loop over a group's query heads cost GPT-2 5–8% until GQA took it out). With a
//   window, a tile streams only the keys (queries in backward_kv) its rows can see: O(T·w), not O(T²).
// - backward_kv of a kv head walks the query heads of its group one after the other, each over
//   the query rows that see the tile's keys: the group's dk, dv sum in registers, without atomics.
// - Any HS ≤ 256 (4·MAXD4): rows are read as vec4 chunks of scalar loads, zero-padded past HS.
//   MAXD4 was 32 (HS ≤ 128). 64 is the one change GPT-2 cannot compile away (private array
//   sizes must be const-expressions, not overrides): WGSL zero-initializes the larger arrays
//   once per workgroup and the stack layout changes. Measured interleaved on GPT-2's shapes, the
//   previous kernel with only MAXD4 = 64 and this one both run the forward ~1–3% slower than
//   before and the backward within noise; MAXD4 = 32 gives that back and limits HS to 128.
//   Large HS compile fast (the chunk loops stay loops: ~4 s per entry point at HS 128 or 256
//   on 2 cores vs ~5–40 s at HS 24–64 with a cold cache) and run at GPT-2's flops per second.
// - Compile cost: these bodies are large. lavapipe compiles on first dispatch, so each new
//   (entry, overrides) costs seconds to minutes of LLVM time with a cold Mesa shader cache (grows
//   with HS; see src/ops/attention.ts), and nothing once the on-disk cache has it.

override HS: u32 = 64;          // head size, 1..4·MAXD4
override WG: u32 = 8;           // lanes per workgroup
override SAVE_STATS: bool = true;
override HAS_OUT: bool = true;  // backward_q: D_i from the forward output (else one extra sweep)
override WINDOWED: bool = false; // sliding window p.window (0 < window < T)
override SOFTCAP: bool = false;  // logit soft-capping with c = p.capL / log2 e
override GQA: bool = false;      // nKv < nHead (else kv head = query head, one query head per kv head)
override STORE_P: bool = false;  // backward_q also stores p_ij and dS_ij for backward_kv_stored

const MAXD4: u32 = 64u;         // vec4 chunks per private row: HS ≤ 256
const NEG: f32 = -3.0e38;       // masked score: exp2(NEG − m) = 0 for any running max m ≥ MINIT
const MINIT: f32 = -1.0e38;     // initial running max: rows whose first keys are all masked keep l = 0
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

struct Params {
  B: u32, T: u32, nHead: u32, nKv: u32,
  W: u32,                       // qkv row width (nHead + 2·nKv)·HS
  Cq: u32,                      // out row width nHead·HS
  scale: f32,                   // scores' scale (default 1/√HS)
  qscale: f32,                  // q's pre-scale: scale·log2 e, or scale/c with the softcap
  capL: f32,                    // SOFTCAP: c·log2 e
  window: u32,                  // WINDOWED: keys per row
}

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // forward: [B, T, Cq]
@group(0) @binding(1) var<storage, read> dout: array<f32>;        // backward: [B, T, Cq]
@group(0) @binding(2) var<storage, read_write> stats: array<f32>; // forward: L [B, nHead, T]
@group(0) @binding(2) var<storage, read> lse: array<f32>;         // backward: the same L
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> fout: array<f32>;        // backward_q: forward output [B, T, Cq]
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;  // backward: [B, T, W]
@group(0) @binding(6) var<storage, read_write> dsum: array<f32>;  // backward scratch: D [B, nHead, T]

fn nchunks() -> u32 { return (HS + 3u) / 4u; }

// Chunk c (elements 4c..4c+3) of the HS-element row starting at `base`; zero past HS.
fn ld_qkv(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  if (HS % 4u == 0u || d + 3u < HS) {
    return vec4<f32>(qkv[base + d], qkv[base + d + 1u], qkv[base + d + 2u], qkv[base + d + 3u]);
  }
  return vec4<f32>(qkv[base + d],
                   select(0.0, qkv[base + min(d + 1u, HS - 1u)], d + 1u < HS),
                   select(0.0, qkv[base + min(d + 2u, HS - 1u)], d + 2u < HS), 0.0);
}

fn ld_dout(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  if (HS % 4u == 0u || d + 3u < HS) {
    return vec4<f32>(dout[base + d], dout[base + d + 1u], dout[base + d + 2u], dout[base + d + 3u]);
  }
  return vec4<f32>(dout[base + d],
                   select(0.0, dout[base + min(d + 1u, HS - 1u)], d + 1u < HS),
                   select(0.0, dout[base + min(d + 2u, HS - 1u)], d + 2u < HS), 0.0);
}

fn ld_fout(base: u32, c: u32) -> vec4<f32> {
  let d = 4u * c;
  if (HS % 4u == 0u || d + 3u < HS) {
    return vec4<f32>(fout[base + d], fout[base + d + 1u], fout[base + d + 2u], fout[base + d + 3u]);
  }
  return vec4<f32>(fout[base + d],
                   select(0.0, fout[base + min(d + 1u, HS - 1u)], d + 1u < HS),
                   select(0.0, fout[base + min(d + 2u, HS - 1u)], d + 2u < HS), 0.0);
}

fn st_out(base: u32, c: u32, v: vec4<f32>) {
  let d = 4u * c;
  out[base + d] = v.x;
  if (d + 1u < HS) { out[base + d + 1u] = v.y; }
  if (d + 2u < HS) { out[base + d + 2u] = v.z; }
  if (d + 3u < HS) { out[base + d + 3u] = v.w; }
}

fn st_dqkv(base: u32, c: u32, v: vec4<f32>) {
  let d = 4u * c;
  dqkv[base + d] = v.x;
  if (d + 1u < HS) { dqkv[base + d + 1u] = v.y; }
  if (d + 2u < HS) { dqkv[base + d + 2u] = v.z; }
  if (d + 3u < HS) { dqkv[base + d + 3u] = v.w; }
}

// The (batch·head, first row) of a workgroup's tile of `rows` rows, over nh heads (nHead query
// heads, or nKv kv heads in backward_kv). Linearized 2-D grid (grid() on the host): workgroup w
// takes head w % (B·nh) and tile w / (B·nh), counted from the end if latestFirst.
struct Tile { ok: bool, bh: u32, b: u32, h: u32, r0: u32 }

fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, rows: u32, latestFirst: bool, nh: u32) -> Tile {
  let BH = p.B * nh;
  let nt = (p.T + rows - 1u) / rows;
  let w = wg.x + wg.y * nwg.x;
  var t: Tile;
  t.ok = w < BH * nt;
  t.bh = w % BH;
  t.b = t.bh / nh;
  t.h = t.bh % nh;
  let ti = w / BH;
  t.r0 = select(ti, nt - 1u - ti, latestFirst) * rows;
  return t;
}

// The kv head of query head h (HF's repeat_kv), and where its k columns start in batch b's rows.
fn kv_of(h: u32) -> u32 {
  if (GQA) { return h / (p.nHead / p.nKv); }
  return h;
}
fn kv_base(b: u32, kh: u32) -> u32 { return b * p.T * p.W + (p.nHead + kh) * HS; }

// Whether query row i sees key j: causal, and inside the sliding window when WINDOWED.
fn vis(j: u32, i: u32) -> bool {
  if (WINDOWED) { return j <= i && i < j + p.window; }
  return j <= i;
}

// STORE_P: the scratch holds, after D [B·nHead·T], p_ij then dS_ij as [B·nHead, T, T] squares.
fn pd_span() -> u32 { return p.B * p.nHead * p.T * p.T; }
fn pd_row(bh: u32, i: u32) -> u32 { return p.B * p.nHead * p.T + (bh * p.T + i) * p.T; }

// backward_q, STORE_P: p and dS of row i (< T) for keys j..j+3, those below jEnd.
fn st_pd(bh: u32, i: u32, j: u32, jEnd: u32, pv: vec4<f32>, dv: vec4<f32>) {
  if (i >= p.T) { return; }
  let a = pd_row(bh, i) + j;
  let sp = pd_span();
  dsum[a] = pv.x; dsum[a + sp] = dv.x;  // j < jEnd: the loop's condition
  if (j + 1u < jEnd) { dsum[a + 1u] = pv.y; dsum[a + sp + 1u] = dv.y; }
  if (j + 2u < jEnd) { dsum[a + 2u] = pv.z; dsum[a + sp + 2u] = dv.z; }
  if (j + 3u < jEnd) { dsum[a + 3u] = pv.w; dsum[a + sp + 3u] = dv.w; }
}

// First key a tile whose first query row is r0 can see; last query row (exclusive bound) that key
// rows up to jLast are seen from.
fn key_begin(r0: u32) -> u32 {
  if (WINDOWED && r0 + 1u > p.window) { return r0 + 1u - p.window; }
  return 0u;
}
fn query_end(jLast: u32) -> u32 {
  if (WINDOWED) { return min(p.T, jLast + p.window); }
  return p.T;
}

// tanh(x) = 1 − 2/(e^{2x} + 1): exact ±1 limits for large |x| (no inf/inf), absolute error ~1e-7.
fn tanh_(x: f32) -> f32 { return 1.0 - 2.0 / (exp2(x * (2.0 * LOG2E)) + 1.0); }

// The score in log2 units from the pre-scaled dot product x = q·k·qscale, and its derivative
// factor ∂s/∂s_raw (s_raw = scale·q·k): c·log2 e·tanh(x) and 1 − tanh²(x) with the softcap.
fn logit(x: f32) -> f32 {
  if (SOFTCAP) { return p.capL * tanh_(x); }
  return x;
}
fn dlogit(x: f32) -> f32 {
  if (SOFTCAP) { let t = tanh_(x); return 1.0 - t * t; }
  return 1.0;
}

// Forward, row i done: save L_i = ln Σ exp(s) from the log2-unit running max m and sum l.
fn finish_row(tl: Tile, i: u32, m: f32, l: f32) {
  if (SAVE_STATS) { stats[tl.bh * p.T + i] = (m + log2(l)) * LN2; }
}

// The entry points below are written out per row (q0..q7, s0_0..s7_3, ...): lavapipe keeps these
// in registers / stack slots, where loops over a row index would index private arrays dynamically.

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let tl = tile_of(wg, nwg, 8u * WG, true, p.nHead);
  if (!tl.ok) { return; }
  let T = p.T;
  let W = p.W;                          // qkv row width
  let VO = p.nKv * HS;                  // v of a kv head: VO after its k
  let base = tl.b * T * W + tl.h * HS;  // q of (b, t = 0, h)
  let kb = kv_base(tl.b, kv_of(tl.h));  // k of (b, t = 0, h's kv head)
  let qs = p.qscale;                    // scores in log2 units (exp2), or the softcap's argument
  let n4 = nchunks();
  let jBeg = key_begin(tl.r0);          // workgroup-uniform: keys from the first one the tile's first row sees
  let jEnd = min(T, tl.r0 + 8u * WG);   // ... up to the tile's last row
  // Lane rows r0 + r·WG + lid (r < 8); rows past T compute row T−1 and store nothing.
  let i0 = tl.r0 + 0u * WG + lid.x; let iq0 = min(i0, T - 1u);
  let i1 = tl.r0 + 1u * WG + lid.x; let iq1 = min(i1, T - 1u);
  let i2 = tl.r0 + 2u * WG + lid.x; let iq2 = min(i2, T - 1u);
  let i3 = tl.r0 + 3u * WG + lid.x; let iq3 = min(i3, T - 1u);
  let i4 = tl.r0 + 4u * WG + lid.x; let iq4 = min(i4, T - 1u);
  let i5 = tl.r0 + 5u * WG + lid.x; let iq5 = min(i5, T - 1u);
  let i6 = tl.r0 + 6u * WG + lid.x; let iq6 = min(i6, T - 1u);
  let i7 = tl.r0 + 7u * WG + lid.x; let iq7 = min(i7, T - 1u);
  var q0: array<vec4<f32>, MAXD4>; var o0: array<vec4<f32>, MAXD4>; var m0 = MINIT; var l0 = 0.0;
  var q1: array<vec4<f32>, MAXD4>; var o1: array<vec4<f32>, MAXD4>; var m1 = MINIT; var l1 = 0.0;
  var q2: array<vec4<f32>, MAXD4>; var o2: array<vec4<f32>, MAXD4>; var m2 = MINIT; var l2 = 0.0;
  var q3: array<vec4<f32>, MAXD4>; var o3: array<vec4<f32>, MAXD4>; var m3 = MINIT; var l3 = 0.0;
  var q4: array<vec4<f32>, MAXD4>; var o4: array<vec4<f32>, MAXD4>; var m4 = MINIT; var l4 = 0.0;
  var q5: array<vec4<f32>, MAXD4>; var o5: array<vec4<f32>, MAXD4>; var m5 = MINIT; var l5 = 0.0;
  var q6: array<vec4<f32>, MAXD4>; var o6: array<vec4<f32>, MAXD4>; var m6 = MINIT; var l6 = 0.0;
  var q7: array<vec4<f32>, MAXD4>; var o7: array<vec4<f32>, MAXD4>; var m7 = MINIT; var l7 = 0.0;
  for (var c = 0u; c < n4; c++) {
    q0[c] = ld_qkv(base + iq0 * W, c) * qs; o0[c] = vec4<f32>(0.0);
    q1[c] = ld_qkv(base + iq1 * W, c) * qs; o1[c] = vec4<f32>(0.0);
    q2[c] = ld_qkv(base + iq2 * W, c) * qs; o2[c] = vec4<f32>(0.0);
    q3[c] = ld_qkv(base + iq3 * W, c) * qs; o3[c] = vec4<f32>(0.0);
    q4[c] = ld_qkv(base + iq4 * W, c) * qs; o4[c] = vec4<f32>(0.0);
    q5[c] = ld_qkv(base + iq5 * W, c) * qs; o5[c] = vec4<f32>(0.0);
    q6[c] = ld_qkv(base + iq6 * W, c) * qs; o6[c] = vec4<f32>(0.0);
    q7[c] = ld_qkv(base + iq7 * W, c) * qs; o7[c] = vec4<f32>(0.0);
  }
  for (var j = jBeg; j < jEnd; j += 4u) {
    // scores of keys j..j+3 (clamped to jEnd−1, then masked) for every row
    let a0 = kb + min(j + 0u, jEnd - 1u) * W;
    let a1 = kb + min(j + 1u, jEnd - 1u) * W;
    let a2 = kb + min(j + 2u, jEnd - 1u) * W;
    let a3 = kb + min(j + 3u, jEnd - 1u) * W;
    var s0_0 = 0.0; var s0_1 = 0.0; var s0_2 = 0.0; var s0_3 = 0.0;
    var s1_0 = 0.0; var s1_1 = 0.0; var s1_2 = 0.0; var s1_3 = 0.0;
    var s2_0 = 0.0; var s2_1 = 0.0; var s2_2 = 0.0; var s2_3 = 0.0;
    var s3_0 = 0.0; var s3_1 = 0.0; var s3_2 = 0.0; var s3_3 = 0.0;
    var s4_0 = 0.0; var s4_1 = 0.0; var s4_2 = 0.0; var s4_3 = 0.0;
    var s5_0 = 0.0; var s5_1 = 0.0; var s5_2 = 0.0; var s5_3 = 0.0;
    var s6_0 = 0.0; var s6_1 = 0.0; var s6_2 = 0.0; var s6_3 = 0.0;
    var s7_0 = 0.0; var s7_1 = 0.0; var s7_2 = 0.0; var s7_3 = 0.0;
    for (var c = 0u; c < n4; c++) {
      let x0 = q0[c]; let x1 = q1[c]; let x2 = q2[c]; let x3 = q3[c]; let x4 = q4[c]; let x5 = q5[c]; let x6 = q6[c]; let x7 = q7[c];
      let k0 = ld_qkv(a0, c);
      s0_0 += dot(x0, k0); s1_0 += dot(x1, k0); s2_0 += dot(x2, k0); s3_0 += dot(x3, k0); s4_0 += dot(x4, k0); s5_0 += dot(x5, k0); s6_0 += dot(x6, k0); s7_0 += dot(x7, k0);
      let k1 = ld_qkv(a1, c);
      s0_1 += dot(x0, k1); s1_1 += dot(x1, k1); s2_1 += dot(x2, k1); s3_1 += dot(x3, k1); s4_1 += dot(x4, k1); s5_1 += dot(x5, k1); s6_1 += dot(x6, k1); s7_1 += dot(x7, k1);
      let k2 = ld_qkv(a2, c);
      s0_2 += dot(x0, k2); s1_2 += dot(x1, k2); s2_2 += dot(x2, k2); s3_2 += dot(x3, k2); s4_2 += dot(x4, k2); s5_2 += dot(x5, k2); s6_2 += dot(x6, k2); s7_2 += dot(x7, k2);
      let k3 = ld_qkv(a3, c);
      s0_3 += dot(x0, k3); s1_3 += dot(x1, k3); s2_3 += dot(x2, k3); s3_3 += dot(x3, k3); s4_3 += dot(x4, k3); s5_3 += dot(x5, k3); s6_3 += dot(x6, k3); s7_3 += dot(x7, k3);
    }
    // softcap, mask; online softmax: new running max, rescale of the old sum and output
    s0_0 = select(NEG, logit(s0_0), vis(j + 0u, iq0)); s0_1 = select(NEG, logit(s0_1), vis(j + 1u, iq0)); s0_2 = select(NEG, logit(s0_2), vis(j + 2u, iq0)); s0_3 = select(NEG, logit(s0_3), vis(j + 3u, iq0));
    let mn0 = max(max(max(max(m0, s0_0), s0_1), s0_2), s0_3);
    let al0 = exp2(m0 - mn0); m0 = mn0;
    let p0_0 = exp2(s0_0 - mn0); let p0_1 = exp2(s0_1 - mn0); let p0_2 = exp2(s0_2 - mn0); let p0_3 = exp2(s0_3 - mn0);
    l0 = l0 * al0 + (p0_0 + p0_1 + p0_2 + p0_3);
    s1_0 = select(NEG, logit(s1_0), vis(j + 0u, iq1)); s1_1 = select(NEG, logit(s1_1), vis(j + 1u, iq1)); s1_2 = select(NEG, logit(s1_2), vis(j + 2u, iq1)); s1_3 = select(NEG, logit(s1_3), vis(j + 3u, iq1));
    let mn1 = max(max(max(max(m1, s1_0), s1_1), s1_2), s1_3);
    let al1 = exp2(m1 - mn1); m1 = mn1;
    let p1_0 = exp2(s1_0 - mn1); let p1_1 = exp2(s1_1 - mn1); let p1_2 = exp2(s1_2 - mn1); let p1_3 = exp2(s1_3 - mn1);
    l1 = l1 * al1 + (p1_0 + p1_1 + p1_2 + p1_3);
    s2_0 = select(NEG, logit(s2_0), vis(j + 0u, iq2)); s2_1 = select(NEG, logit(s2_1), vis(j + 1u, iq2)); s2_2 = select(NEG, logit(s2_2), vis(j + 2u, iq2)); s2_3 = select(NEG, logit(s2_3), vis(j + 3u, iq2));
    let mn2 = max(max(max(max(m2, s2_0), s2_1), s2_2), s2_3);
    let al2 = exp2(m2 - mn2); m2 = mn2;
    let p2_0 = exp2(s2_0 - mn2); let p2_1 = exp2(s2_1 - mn2); let p2_2 = exp2(s2_2 - mn2); let p2_3 = exp2(s2_3 - mn2);
    l2 = l2 * al2 + (p2_0 + p2_1 + p2_2 + p2_3);
    s3_0 = select(NEG, logit(s3_0), vis(j + 0u, iq3)); s3_1 = select(NEG, logit(s3_1), vis(j + 1u, iq3)); s3_2 = select(NEG, logit(s3_2), vis(j + 2u, iq3)); s3_3 = select(NEG, logit(s3_3), vis(j + 3u, iq3));
    let mn3 = max(max(max(max(m3, s3_0), s3_1), s3_2), s3_3);
    let al3 = exp2(m3 - mn3); m3 = mn3;
    let p3_0 = exp2(s3_0 - mn3); let p3_1 = exp2(s3_1 - mn3); let p3_2 = exp2(s3_2 - mn3); let p3_3 = exp2(s3_3 - mn3);
    l3 = l3 * al3 + (p3_0 + p3_1 + p3_2 + p3_3);
    s4_0 = select(NEG, logit(s4_0), vis(j + 0u, iq4)); s4_1 = select(NEG, logit(s4_1), vis(j + 1u, iq4)); s4_2 = select(NEG, logit(s4_2), vis(j + 2u, iq4)); s4_3 = select(NEG, logit(s4_3), vis(j + 3u, iq4));
    let mn4 = max(max(max(max(m4, s4_0), s4_1), s4_2), s4_3);
    let al4 = exp2(m4 - mn4); m4 = mn4;
    let p4_0 = exp2(s4_0 - mn4); let p4_1 = exp2(s4_1 - mn4); let p4_2 = exp2(s4_2 - mn4); let p4_3 = exp2(s4_3 - mn4);
    l4 = l4 * al4 + (p4_0 + p4_1 + p4_2 + p4_3);
    s5_0 = select(NEG, logit(s5_0), vis(j + 0u, iq5)); s5_1 = select(NEG, logit(s5_1), vis(j + 1u, iq5)); s5_2 = select(NEG, logit(s5_2), vis(j + 2u, iq5)); s5_3 = select(NEG, logit(s5_3), vis(j + 3u, iq5));
    let mn5 = max(max(max(max(m5, s5_0), s5_1), s5_2), s5_3);
    let al5 = exp2(m5 - mn5); m5 = mn5;
    let p5_0 = exp2(s5_0 - mn5); let p5_1 = exp2(s5_1 - mn5); let p5_2 = exp2(s5_2 - mn5); let p5_3 = exp2(s5_3 - mn5);
    l5 = l5 * al5 + (p5_0 + p5_1 + p5_2 + p5_3);
    s6_0 = select(NEG, logit(s6_0), vis(j + 0u, iq6)); s6_1 = select(NEG, logit(s6_1), vis(j + 1u, iq6)); s6_2 = select(NEG, logit(s6_2), vis(j + 2u, iq6)); s6_3 = select(NEG, logit(s6_3), vis(j + 3u, iq6));
    let mn6 = max(max(max(max(m6, s6_0), s6_1), s6_2), s6_3);
    let al6 = exp2(m6 - mn6); m6 = mn6;
    let p6_0 = exp2(s6_0 - mn6); let p6_1 = exp2(s6_1 - mn6); let p6_2 = exp2(s6_2 - mn6); let p6_3 = exp2(s6_3 - mn6);
    l6 = l6 * al6 + (p6_0 + p6_1 + p6_2 + p6_3);
    s7_0 = select(NEG, logit(s7_0), vis(j + 0u, iq7)); s7_1 = select(NEG, logit(s7_1), vis(j + 1u, iq7)); s7_2 = select(NEG, logit(s7_2), vis(j + 2u, iq7)); s7_3 = select(NEG, logit(s7_3), vis(j + 3u, iq7));
    let mn7 = max(max(max(max(m7, s7_0), s7_1), s7_2), s7_3);
    let al7 = exp2(m7 - mn7); m7 = mn7;
    let p7_0 = exp2(s7_0 - mn7); let p7_1 = exp2(s7_1 - mn7); let p7_2 = exp2(s7_2 - mn7); let p7_3 = exp2(s7_3 - mn7);
    l7 = l7 * al7 + (p7_0 + p7_1 + p7_2 + p7_3);
    for (var c = 0u; c < n4; c++) {
      let v0 = ld_qkv(a0 + VO, c); let v1 = ld_qkv(a1 + VO, c); let v2 = ld_qkv(a2 + VO, c); let v3 = ld_qkv(a3 + VO, c);
      o0[c] = o0[c] * al0 + p0_0 * v0 + p0_1 * v1 + p0_2 * v2 + p0_3 * v3;
      o1[c] = o1[c] * al1 + p1_0 * v0 + p1_1 * v1 + p1_2 * v2 + p1_3 * v3;
      o2[c] = o2[c] * al2 + p2_0 * v0 + p2_1 * v1 + p2_2 * v2 + p2_3 * v3;
      o3[c] = o3[c] * al3 + p3_0 * v0 + p3_1 * v1 + p3_2 * v2 + p3_3 * v3;
      o4[c] = o4[c] * al4 + p4_0 * v0 + p4_1 * v1 + p4_2 * v2 + p4_3 * v3;
      o5[c] = o5[c] * al5 + p5_0 * v0 + p5_1 * v1 + p5_2 * v2 + p5_3 * v3;
      o6[c] = o6[c] * al6 + p6_0 * v0 + p6_1 * v1 + p6_2 * v2 + p6_3 * v3;
      o7[c] = o7[c] * al7 + p7_0 * v0 + p7_1 * v1 + p7_2 * v2 + p7_3 * v3;
    }
  }
  if (i0 < T) { finish_row(tl, i0, m0, l0); let inv = 1.0 / l0; let ob = (tl.b * T + i0) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o0[c] * inv); } }
  if (i1 < T) { finish_row(tl, i1, m1, l1); let inv = 1.0 / l1; let ob = (tl.b * T + i1) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o1[c] * inv); } }
  if (i2 < T) { finish_row(tl, i2, m2, l2); let inv = 1.0 / l2; let ob = (tl.b * T + i2) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o2[c] * inv); } }
  if (i3 < T) { finish_row(tl, i3, m3, l3); let inv = 1.0 / l3; let ob = (tl.b * T + i3) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o3[c] * inv); } }
  if (i4 < T) { finish_row(tl, i4, m4, l4); let inv = 1.0 / l4; let ob = (tl.b * T + i4) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o4[c] * inv); } }
  if (i5 < T) { finish_row(tl, i5, m5, l5); let inv = 1.0 / l5; let ob = (tl.b * T + i5) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o5[c] * inv); } }
  if (i6 < T) { finish_row(tl, i6, m6, l6); let inv = 1.0 / l6; let ob = (tl.b * T + i6) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o6[c] * inv); } }
  if (i7 < T) { finish_row(tl, i7, m7, l7); let inv = 1.0 / l7; let ob = (tl.b * T + i7) * p.Cq + tl.h * HS; for (var c = 0u; c < n4; c++) { st_out(ob, c, o7[c] * inv); } }
}

@compute @workgroup_size(WG)
fn backward_q(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let tl = tile_of(wg, nwg, 4u * WG, true, p.nHead);
  if (!tl.ok) { return; }
  let T = p.T;
  let W = p.W;
  let VO = p.nKv * HS;
  let base = tl.b * T * W + tl.h * HS;  // q of (b, t = 0, h)
  let kb = kv_base(tl.b, kv_of(tl.h));  // k of (b, t = 0, h's kv head); v at +VO
  let qs = p.qscale;
  let n4 = nchunks();
  let jBeg = key_begin(tl.r0);
  let jEnd = min(T, tl.r0 + 4u * WG);
  let i0 = tl.r0 + 0u * WG + lid.x; let iq0 = min(i0, T - 1u); let ob0 = (tl.b * T + iq0) * p.Cq + tl.h * HS;
  let i1 = tl.r0 + 1u * WG + lid.x; let iq1 = min(i1, T - 1u); let ob1 = (tl.b * T + iq1) * p.Cq + tl.h * HS;
  let i2 = tl.r0 + 2u * WG + lid.x; let iq2 = min(i2, T - 1u); let ob2 = (tl.b * T + iq2) * p.Cq + tl.h * HS;
  let i3 = tl.r0 + 3u * WG + lid.x; let iq3 = min(i3, T - 1u); let ob3 = (tl.b * T + iq3) * p.Cq + tl.h * HS;
  // per row: q (scaled), dO, dq accumulator, L (log2 units) and D
  var q0: array<vec4<f32>, MAXD4>; var g0: array<vec4<f32>, MAXD4>; var dq0: array<vec4<f32>, MAXD4>;
  let L0 = lse[tl.bh * T + iq0] * LOG2E; var D0 = 0.0;
  var q1: array<vec4<f32>, MAXD4>; var g1: array<vec4<f32>, MAXD4>; var dq1: array<vec4<f32>, MAXD4>;
  let L1 = lse[tl.bh * T + iq1] * LOG2E; var D1 = 0.0;
  var q2: array<vec4<f32>, MAXD4>; var g2: array<vec4<f32>, MAXD4>; var dq2: array<vec4<f32>, MAXD4>;
  let L2 = lse[tl.bh * T + iq2] * LOG2E; var D2 = 0.0;
  var q3: array<vec4<f32>, MAXD4>; var g3: array<vec4<f32>, MAXD4>; var dq3: array<vec4<f32>, MAXD4>;
  let L3 = lse[tl.bh * T + iq3] * LOG2E; var D3 = 0.0;
  for (var c = 0u; c < n4; c++) {
    q0[c] = ld_qkv(base + iq0 * W, c) * qs; g0[c] = ld_dout(ob0, c); dq0[c] = vec4<f32>(0.0);
    q1[c] = ld_qkv(base + iq1 * W, c) * qs; g1[c] = ld_dout(ob1, c); dq1[c] = vec4<f32>(0.0);
    q2[c] = ld_qkv(base + iq2 * W, c) * qs; g2[c] = ld_dout(ob2, c); dq2[c] = vec4<f32>(0.0);
    q3[c] = ld_qkv(base + iq3 * W, c) * qs; g3[c] = ld_dout(ob3, c); dq3[c] = vec4<f32>(0.0);
    if (HAS_OUT) {
      D0 += dot(g0[c], ld_fout(ob0, c));
      D1 += dot(g1[c], ld_fout(ob1, c));
      D2 += dot(g2[c], ld_fout(ob2, c));
      D3 += dot(g3[c], ld_fout(ob3, c));
    }
  }
  if (!HAS_OUT) {  // D_i = Σ_j p_ij (dO_i·v_j)
    for (var j = jBeg; j < jEnd; j += 4u) {
      let a0 = kb + min(j + 0u, jEnd - 1u) * W;
      let a1 = kb + min(j + 1u, jEnd - 1u) * W;
      let a2 = kb + min(j + 2u, jEnd - 1u) * W;
      let a3 = kb + min(j + 3u, jEnd - 1u) * W;
      var s0_0 = 0.0; var e0_0 = 0.0; var s0_1 = 0.0; var e0_1 = 0.0; var s0_2 = 0.0; var e0_2 = 0.0; var s0_3 = 0.0; var e0_3 = 0.0;
      var s1_0 = 0.0; var e1_0 = 0.0; var s1_1 = 0.0; var e1_1 = 0.0; var s1_2 = 0.0; var e1_2 = 0.0; var s1_3 = 0.0; var e1_3 = 0.0;
      var s2_0 = 0.0; var e2_0 = 0.0; var s2_1 = 0.0; var e2_1 = 0.0; var s2_2 = 0.0; var e2_2 = 0.0; var s2_3 = 0.0; var e2_3 = 0.0;
      var s3_0 = 0.0; var e3_0 = 0.0; var s3_1 = 0.0; var e3_1 = 0.0; var s3_2 = 0.0; var e3_2 = 0.0; var s3_3 = 0.0; var e3_3 = 0.0;
      for (var c = 0u; c < n4; c++) {
        let x0 = q0[c]; let y0 = g0[c]; let x1 = q1[c]; let y1 = g1[c]; let x2 = q2[c]; let y2 = g2[c]; let x3 = q3[c]; let y3 = g3[c];
        let k0 = ld_qkv(a0, c); let v0 = ld_qkv(a0 + VO, c);
        s0_0 += dot(x0, k0); e0_0 += dot(y0, v0); s1_0 += dot(x1, k0); e1_0 += dot(y1, v0); s2_0 += dot(x2, k0); e2_0 += dot(y2, v0); s3_0 += dot(x3, k0); e3_0 += dot(y3, v0);
        let k1 = ld_qkv(a1, c); let v1 = ld_qkv(a1 + VO, c);
        s0_1 += dot(x0, k1); e0_1 += dot(y0, v1); s1_1 += dot(x1, k1); e1_1 += dot(y1, v1); s2_1 += dot(x2, k1); e2_1 += dot(y2, v1); s3_1 += dot(x3, k1); e3_1 += dot(y3, v1);
        let k2 = ld_qkv(a2, c); let v2 = ld_qkv(a2 + VO, c);
        s0_2 += dot(x0, k2); e0_2 += dot(y0, v2); s1_2 += dot(x1, k2); e1_2 += dot(y1, v2); s2_2 += dot(x2, k2); e2_2 += dot(y2, v2); s3_2 += dot(x3, k2); e3_2 += dot(y3, v2);
        let k3 = ld_qkv(a3, c); let v3 = ld_qkv(a3 + VO, c);
        s0_3 += dot(x0, k3); e0_3 += dot(y0, v3); s1_3 += dot(x1, k3); e1_3 += dot(y1, v3); s2_3 += dot(x2, k3); e2_3 += dot(y2, v3); s3_3 += dot(x3, k3); e3_3 += dot(y3, v3);
      }
      // p_ij = exp(s_ij − L_i) (s softcapped), 0 where masked; e = dO_i·v_j
      let p0_0 = select(0.0, exp2(logit(s0_0) - L0), vis(j + 0u, iq0)); let p0_1 = select(0.0, exp2(logit(s0_1) - L0), vis(j + 1u, iq0)); let p0_2 = select(0.0, exp2(logit(s0_2) - L0), vis(j + 2u, iq0)); let p0_3 = select(0.0, exp2(logit(s0_3) - L0), vis(j + 3u, iq0));
      let p1_0 = select(0.0, exp2(logit(s1_0) - L1), vis(j + 0u, iq1)); let p1_1 = select(0.0, exp2(logit(s1_1) - L1), vis(j + 1u, iq1)); let p1_2 = select(0.0, exp2(logit(s1_2) - L1), vis(j + 2u, iq1)); let p1_3 = select(0.0, exp2(logit(s1_3) - L1), vis(j + 3u, iq1));
      let p2_0 = select(0.0, exp2(logit(s2_0) - L2), vis(j + 0u, iq2)); let p2_1 = select(0.0, exp2(logit(s2_1) - L2), vis(j + 1u, iq2)); let p2_2 = select(0.0, exp2(logit(s2_2) - L2), vis(j + 2u, iq2)); let p2_3 = select(0.0, exp2(logit(s2_3) - L2), vis(j + 3u, iq2));
      let p3_0 = select(0.0, exp2(logit(s3_0) - L3), vis(j + 0u, iq3)); let p3_1 = select(0.0, exp2(logit(s3_1) - L3), vis(j + 1u, iq3)); let p3_2 = select(0.0, exp2(logit(s3_2) - L3), vis(j + 2u, iq3)); let p3_3 = select(0.0, exp2(logit(s3_3) - L3), vis(j + 3u, iq3));
      D0 += p0_0 * e0_0 + p0_1 * e0_1 + p0_2 * e0_2 + p0_3 * e0_3;
      D1 += p1_0 * e1_0 + p1_1 * e1_1 + p1_2 * e1_2 + p1_3 * e1_3;
      D2 += p2_0 * e2_0 + p2_1 * e2_1 + p2_2 * e2_2 + p2_3 * e2_3;
      D3 += p3_0 * e3_0 + p3_1 * e3_1 + p3_2 * e3_2 + p3_3 * e3_3;
    }
  }
  if (i0 < T) { dsum[tl.bh * T + i0] = D0; } if (i1 < T) { dsum[tl.bh * T + i1] = D1; } if (i2 < T) { dsum[tl.bh * T + i2] = D2; } if (i3 < T) { dsum[tl.bh * T + i3] = D3; }
  for (var j = jBeg; j < jEnd; j += 4u) {
    let a0 = kb + min(j + 0u, jEnd - 1u) * W;
    let a1 = kb + min(j + 1u, jEnd - 1u) * W;
    let a2 = kb + min(j + 2u, jEnd - 1u) * W;
    let a3 = kb + min(j + 3u, jEnd - 1u) * W;
    var s0_0 = 0.0; var e0_0 = 0.0; var s0_1 = 0.0; var e0_1 = 0.0; var s0_2 = 0.0; var e0_2 = 0.0; var s0_3 = 0.0; var e0_3 = 0.0;
    var s1_0 = 0.0; var e1_0 = 0.0; var s1_1 = 0.0; var e1_1 = 0.0; var s1_2 = 0.0; var e1_2 = 0.0; var s1_3 = 0.0; var e1_3 = 0.0;
    var s2_0 = 0.0; var e2_0 = 0.0; var s2_1 = 0.0; var e2_1 = 0.0; var s2_2 = 0.0; var e2_2 = 0.0; var s2_3 = 0.0; var e2_3 = 0.0;
    var s3_0 = 0.0; var e3_0 = 0.0; var s3_1 = 0.0; var e3_1 = 0.0; var s3_2 = 0.0; var e3_2 = 0.0; var s3_3 = 0.0; var e3_3 = 0.0;
    for (var c = 0u; c < n4; c++) {
      let x0 = q0[c]; let y0 = g0[c]; let x1 = q1[c]; let y1 = g1[c]; let x2 = q2[c]; let y2 = g2[c]; let x3 = q3[c]; let y3 = g3[c];
      let k0 = ld_qkv(a0, c); let v0 = ld_qkv(a0 + VO, c);
      s0_0 += dot(x0, k0); e0_0 += dot(y0, v0); s1_0 += dot(x1, k0); e1_0 += dot(y1, v0); s2_0 += dot(x2, k0); e2_0 += dot(y2, v0); s3_0 += dot(x3, k0); e3_0 += dot(y3, v0);
      let k1 = ld_qkv(a1, c); let v1 = ld_qkv(a1 + VO, c);
      s0_1 += dot(x0, k1); e0_1 += dot(y0, v1); s1_1 += dot(x1, k1); e1_1 += dot(y1, v1); s2_1 += dot(x2, k1); e2_1 += dot(y2, v1); s3_1 += dot(x3, k1); e3_1 += dot(y3, v1);
      let k2 = ld_qkv(a2, c); let v2 = ld_qkv(a2 + VO, c);
      s0_2 += dot(x0, k2); e0_2 += dot(y0, v2); s1_2 += dot(x1, k2); e1_2 += dot(y1, v2); s2_2 += dot(x2, k2); e2_2 += dot(y2, v2); s3_2 += dot(x3, k2); e3_2 += dot(y3, v2);
      let k3 = ld_qkv(a3, c); let v3 = ld_qkv(a3 + VO, c);
      s0_3 += dot(x0, k3); e0_3 += dot(y0, v3); s1_3 += dot(x1, k3); e1_3 += dot(y1, v3); s2_3 += dot(x2, k3); e2_3 += dot(y2, v3); s3_3 += dot(x3, k3); e3_3 += dot(y3, v3);
    }
    // p_ij = exp(s_ij − L_i) (s softcapped), 0 where masked; e = dO_i·v_j
    let p0_0 = select(0.0, exp2(logit(s0_0) - L0), vis(j + 0u, iq0)); let p0_1 = select(0.0, exp2(logit(s0_1) - L0), vis(j + 1u, iq0)); let p0_2 = select(0.0, exp2(logit(s0_2) - L0), vis(j + 2u, iq0)); let p0_3 = select(0.0, exp2(logit(s0_3) - L0), vis(j + 3u, iq0));
    let p1_0 = select(0.0, exp2(logit(s1_0) - L1), vis(j + 0u, iq1)); let p1_1 = select(0.0, exp2(logit(s1_1) - L1), vis(j + 1u, iq1)); let p1_2 = select(0.0, exp2(logit(s1_2) - L1), vis(j + 2u, iq1)); let p1_3 = select(0.0, exp2(logit(s1_3) - L1), vis(j + 3u, iq1));
    let p2_0 = select(0.0, exp2(logit(s2_0) - L2), vis(j + 0u, iq2)); let p2_1 = select(0.0, exp2(logit(s2_1) - L2), vis(j + 1u, iq2)); let p2_2 = select(0.0, exp2(logit(s2_2) - L2), vis(j + 2u, iq2)); let p2_3 = select(0.0, exp2(logit(s2_3) - L2), vis(j + 3u, iq2));
    let p3_0 = select(0.0, exp2(logit(s3_0) - L3), vis(j + 0u, iq3)); let p3_1 = select(0.0, exp2(logit(s3_1) - L3), vis(j + 1u, iq3)); let p3_2 = select(0.0, exp2(logit(s3_2) - L3), vis(j + 2u, iq3)); let p3_3 = select(0.0, exp2(logit(s3_3) - L3), vis(j + 3u, iq3));
    // dS_ij = p_ij (dO_i·v_j − D_i), times the softcap's derivative 1 − tanh²
    let d0_0 = p0_0 * (e0_0 - D0) * dlogit(s0_0); let d0_1 = p0_1 * (e0_1 - D0) * dlogit(s0_1); let d0_2 = p0_2 * (e0_2 - D0) * dlogit(s0_2); let d0_3 = p0_3 * (e0_3 - D0) * dlogit(s0_3);
    let d1_0 = p1_0 * (e1_0 - D1) * dlogit(s1_0); let d1_1 = p1_1 * (e1_1 - D1) * dlogit(s1_1); let d1_2 = p1_2 * (e1_2 - D1) * dlogit(s1_2); let d1_3 = p1_3 * (e1_3 - D1) * dlogit(s1_3);
    let d2_0 = p2_0 * (e2_0 - D2) * dlogit(s2_0); let d2_1 = p2_1 * (e2_1 - D2) * dlogit(s2_1); let d2_2 = p2_2 * (e2_2 - D2) * dlogit(s2_2); let d2_3 = p2_3 * (e2_3 - D2) * dlogit(s2_3);
    let d3_0 = p3_0 * (e3_0 - D3) * dlogit(s3_0); let d3_1 = p3_1 * (e3_1 - D3) * dlogit(s3_1); let d3_2 = p3_2 * (e3_2 - D3) * dlogit(s3_2); let d3_3 = p3_3 * (e3_3 - D3) * dlogit(s3_3);
    if (STORE_P) {
      st_pd(tl.bh, i0, j, jEnd, vec4<f32>(p0_0, p0_1, p0_2, p0_3), vec4<f32>(d0_0, d0_1, d0_2, d0_3));
      st_pd(tl.bh, i1, j, jEnd, vec4<f32>(p1_0, p1_1, p1_2, p1_3), vec4<f32>(d1_0, d1_1, d1_2, d1_3));
      st_pd(tl.bh, i2, j, jEnd, vec4<f32>(p2_0, p2_1, p2_2, p2_3), vec4<f32>(d2_0, d2_1, d2_2, d2_3));
      st_pd(tl.bh, i3, j, jEnd, vec4<f32>(p3_0, p3_1, p3_2, p3_3), vec4<f32>(d3_0, d3_1, d3_2, d3_3));
    }
    for (var c = 0u; c < n4; c++) {
      let k0 = ld_qkv(a0, c); let k1 = ld_qkv(a1, c); let k2 = ld_qkv(a2, c); let k3 = ld_qkv(a3, c);
      dq0[c] += d0_0 * k0 + d0_1 * k1 + d0_2 * k2 + d0_3 * k3;
      dq1[c] += d1_0 * k0 + d1_1 * k1 + d1_2 * k2 + d1_3 * k3;
      dq2[c] += d2_0 * k0 + d2_1 * k1 + d2_2 * k2 + d2_3 * k3;
      dq3[c] += d3_0 * k0 + d3_1 * k1 + d3_2 * k2 + d3_3 * k3;
    }
  }
  if (i0 < T) { let db = (tl.b * T + i0) * W + tl.h * HS; for (var c = 0u; c < n4; c++) { st_dqkv(db, c, dq0[c] * p.scale); } }
  if (i1 < T) { let db = (tl.b * T + i1) * W + tl.h * HS; for (var c = 0u; c < n4; c++) { st_dqkv(db, c, dq1[c] * p.scale); } }
  if (i2 < T) { let db = (tl.b * T + i2) * W + tl.h * HS; for (var c = 0u; c < n4; c++) { st_dqkv(db, c, dq2[c] * p.scale); } }
  if (i3 < T) { let db = (tl.b * T + i3) * W + tl.h * HS; for (var c = 0u; c < n4; c++) { st_dqkv(db, c, dq3[c] * p.scale); } }
}

// backward_kv*, key row j (< T) of kv head kvh in batch b done: write its dk (scaled) and dv.
fn st_kv_row(b: u32, kvh: u32, j: u32, dk: ptr<function, array<vec4<f32>, MAXD4>>, dv: ptr<function, array<vec4<f32>, MAXD4>>) {
  if (j >= p.T) { return; }
  let db = (b * p.T + j) * p.W + (p.nHead + kvh) * HS;  // k columns of this kv head; v at +nKv·HS
  let VO = p.nKv * HS;
  for (var c = 0u; c < nchunks(); c++) { st_dqkv(db, c, (*dk)[c] * p.scale); st_dqkv(db + VO, c, (*dv)[c]); }
}

@compute @workgroup_size(WG)
fn backward_kv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let tl = tile_of(wg, nwg, 4u * WG, false, p.nKv);  // tl.h: a kv head
  if (!tl.ok) { return; }
  let T = p.T;
  let W = p.W;
  let Cq = p.Cq;
  let VO = p.nKv * HS;
  let kb = kv_base(tl.b, tl.h);  // k of (b, t = 0, kv head); v at +VO
  let qs = p.qscale;
  let n4 = nchunks();
  let last = T - 1u;
  let grp = select(1u, p.nHead / p.nKv, GQA);  // 1 without GQA: the loop below runs once, compiled away
  let iEnd = query_end(tl.r0 + 4u * WG - 1u);  // workgroup-uniform: query rows the tile's keys are seen from
  let j0 = tl.r0 + 0u * WG + lid.x; let jq0 = min(j0, last);
  let j1 = tl.r0 + 1u * WG + lid.x; let jq1 = min(j1, last);
  let j2 = tl.r0 + 2u * WG + lid.x; let jq2 = min(j2, last);
  let j3 = tl.r0 + 3u * WG + lid.x; let jq3 = min(j3, last);
  // per key row: k (scaled), v, and the dk, dv accumulators
  var k0: array<vec4<f32>, MAXD4>; var v0: array<vec4<f32>, MAXD4>; var dk0: array<vec4<f32>, MAXD4>; var dv0: array<vec4<f32>, MAXD4>;
  var k1: array<vec4<f32>, MAXD4>; var v1: array<vec4<f32>, MAXD4>; var dk1: array<vec4<f32>, MAXD4>; var dv1: array<vec4<f32>, MAXD4>;
  var k2: array<vec4<f32>, MAXD4>; var v2: array<vec4<f32>, MAXD4>; var dk2: array<vec4<f32>, MAXD4>; var dv2: array<vec4<f32>, MAXD4>;
  var k3: array<vec4<f32>, MAXD4>; var v3: array<vec4<f32>, MAXD4>; var dk3: array<vec4<f32>, MAXD4>; var dv3: array<vec4<f32>, MAXD4>;
  for (var c = 0u; c < n4; c++) {
    k0[c] = ld_qkv(kb + jq0 * W, c) * qs; v0[c] = ld_qkv(kb + jq0 * W + VO, c);
    dk0[c] = vec4<f32>(0.0); dv0[c] = vec4<f32>(0.0);
    k1[c] = ld_qkv(kb + jq1 * W, c) * qs; v1[c] = ld_qkv(kb + jq1 * W + VO, c);
    dk1[c] = vec4<f32>(0.0); dv1[c] = vec4<f32>(0.0);
    k2[c] = ld_qkv(kb + jq2 * W, c) * qs; v2[c] = ld_qkv(kb + jq2 * W + VO, c);
    dk2[c] = vec4<f32>(0.0); dv2[c] = vec4<f32>(0.0);
    k3[c] = ld_qkv(kb + jq3 * W, c) * qs; v3[c] = ld_qkv(kb + jq3 * W + VO, c);
    dk3[c] = vec4<f32>(0.0); dv3[c] = vec4<f32>(0.0);
  }
  for (var g = 0u; g < grp; g++) {  // the group's query heads, in order (deterministic sum)
    let h = tl.h * grp + g;
    let base = tl.b * T * W + h * HS;      // q of (b, t = 0, h)
    let gb = tl.b * T * Cq + h * HS;       // dO of (b, t = 0, h)
    let sb = (tl.b * p.nHead + h) * T;     // L and D of (b, h)
    for (var i = tl.r0; i < iEnd; i += 2u) {  // workgroup-uniform: query rows from the tile's first key
      let i0 = min(i + 0u, last); let a0 = base + i0 * W; let g0 = gb + i0 * Cq;
      let L0 = lse[sb + i0] * LOG2E; let D0 = dsum[sb + i0]; let ok0 = i + 0u <= last;
      let i1 = min(i + 1u, last); let a1 = base + i1 * W; let g1 = gb + i1 * Cq;
      let L1 = lse[sb + i1] * LOG2E; let D1 = dsum[sb + i1]; let ok1 = i + 1u <= last;
      var s0_0 = 0.0; var e0_0 = 0.0; var s0_1 = 0.0; var e0_1 = 0.0;
      var s1_0 = 0.0; var e1_0 = 0.0; var s1_1 = 0.0; var e1_1 = 0.0;
      var s2_0 = 0.0; var e2_0 = 0.0; var s2_1 = 0.0; var e2_1 = 0.0;
      var s3_0 = 0.0; var e3_0 = 0.0; var s3_1 = 0.0; var e3_1 = 0.0;
      for (var c = 0u; c < n4; c++) {
        let x0 = k0[c]; let y0 = v0[c]; let x1 = k1[c]; let y1 = v1[c]; let x2 = k2[c]; let y2 = v2[c]; let x3 = k3[c]; let y3 = v3[c];
        let q0 = ld_qkv(a0, c); let o0 = ld_dout(g0, c);
        s0_0 += dot(x0, q0); e0_0 += dot(y0, o0); s1_0 += dot(x1, q0); e1_0 += dot(y1, o0); s2_0 += dot(x2, q0); e2_0 += dot(y2, o0); s3_0 += dot(x3, q0); e3_0 += dot(y3, o0);
        let q1 = ld_qkv(a1, c); let o1 = ld_dout(g1, c);
        s0_1 += dot(x0, q1); e0_1 += dot(y0, o1); s1_1 += dot(x1, q1); e1_1 += dot(y1, o1); s2_1 += dot(x2, q1); e2_1 += dot(y2, o1); s3_1 += dot(x3, q1); e3_1 += dot(y3, o1);
      }
      // p_ij for the rows i that see j (rows clamped past T are duplicates: masked),
      // dS_ij = p_ij (dO_i·v_j − D_i) σ'_ij
      let p0_0 = select(0.0, exp2(logit(s0_0) - L0), ok0 && vis(jq0, i + 0u)); let p0_1 = select(0.0, exp2(logit(s0_1) - L1), ok1 && vis(jq0, i + 1u));
      let d0_0 = p0_0 * (e0_0 - D0) * dlogit(s0_0); let d0_1 = p0_1 * (e0_1 - D1) * dlogit(s0_1);
      let p1_0 = select(0.0, exp2(logit(s1_0) - L0), ok0 && vis(jq1, i + 0u)); let p1_1 = select(0.0, exp2(logit(s1_1) - L1), ok1 && vis(jq1, i + 1u));
      let d1_0 = p1_0 * (e1_0 - D0) * dlogit(s1_0); let d1_1 = p1_1 * (e1_1 - D1) * dlogit(s1_1);
      let p2_0 = select(0.0, exp2(logit(s2_0) - L0), ok0 && vis(jq2, i + 0u)); let p2_1 = select(0.0, exp2(logit(s2_1) - L1), ok1 && vis(jq2, i + 1u));
      let d2_0 = p2_0 * (e2_0 - D0) * dlogit(s2_0); let d2_1 = p2_1 * (e2_1 - D1) * dlogit(s2_1);
      let p3_0 = select(0.0, exp2(logit(s3_0) - L0), ok0 && vis(jq3, i + 0u)); let p3_1 = select(0.0, exp2(logit(s3_1) - L1), ok1 && vis(jq3, i + 1u));
      let d3_0 = p3_0 * (e3_0 - D0) * dlogit(s3_0); let d3_1 = p3_1 * (e3_1 - D1) * dlogit(s3_1);
      for (var c = 0u; c < n4; c++) {
        let q0 = ld_qkv(a0, c); let o0 = ld_dout(g0, c); let q1 = ld_qkv(a1, c); let o1 = ld_dout(g1, c);
        dv0[c] += p0_0 * o0 + p0_1 * o1;
        dk0[c] += d0_0 * q0 + d0_1 * q1;
        dv1[c] += p1_0 * o0 + p1_1 * o1;
        dk1[c] += d1_0 * q0 + d1_1 * q1;
        dv2[c] += p2_0 * o0 + p2_1 * o1;
        dk2[c] += d2_0 * q0 + d2_1 * q1;
        dv3[c] += p3_0 * o0 + p3_1 * o1;
        dk3[c] += d3_0 * q0 + d3_1 * q1;
      }
    }
  }
  st_kv_row(tl.b, tl.h, j0, &dk0, &dv0); st_kv_row(tl.b, tl.h, j1, &dk1, &dv1);
  st_kv_row(tl.b, tl.h, j2, &dk2, &dv2); st_kv_row(tl.b, tl.h, j3, &dk3, &dv3);
}

// backward_kv from the p_ij and dS_ij backward_q stored (STORE_P; short sequences, where the two
// B·nHead·T² squares are cheap): per (i, j) two loads instead of recomputing q_i·k_j, dO_i·v_j and
// the exponential, and no private k, v rows. Same tiles, order of sums and outputs as backward_kv;
// its dk, dv loop is written out again rather than shared through pointers to the per-row arrays:
// this file's hot loops keep the form measured on lavapipe, and that one has not been.
// Entries backward_q did not write (keys before its tile's first, with a window) are never read:
// every p, dS is selected on vis.
@compute @workgroup_size(WG)
fn backward_kv_stored(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
  let tl = tile_of(wg, nwg, 4u * WG, false, p.nKv);  // tl.h: a kv head
  if (!tl.ok) { return; }
  let T = p.T;
  let W = p.W;
  let Cq = p.Cq;
  let VO = p.nKv * HS;
  let n4 = nchunks();
  let last = T - 1u;
  let sp = pd_span();
  let grp = select(1u, p.nHead / p.nKv, GQA);
  let iEnd = query_end(tl.r0 + 4u * WG - 1u);
  let j0 = tl.r0 + 0u * WG + lid.x; let jq0 = min(j0, last);
  let j1 = tl.r0 + 1u * WG + lid.x; let jq1 = min(j1, last);
  let j2 = tl.r0 + 2u * WG + lid.x; let jq2 = min(j2, last);
  let j3 = tl.r0 + 3u * WG + lid.x; let jq3 = min(j3, last);
  var dk0: array<vec4<f32>, MAXD4>; var dv0: array<vec4<f32>, MAXD4>;
  var dk1: array<vec4<f32>, MAXD4>; var dv1: array<vec4<f32>, MAXD4>;
  var dk2: array<vec4<f32>, MAXD4>; var dv2: array<vec4<f32>, MAXD4>;
  var dk3: array<vec4<f32>, MAXD4>; var dv3: array<vec4<f32>, MAXD4>;
  for (var c = 0u; c < n4; c++) {
    dk0[c] = vec4<f32>(0.0); dv0[c] = vec4<f32>(0.0); dk1[c] = vec4<f32>(0.0); dv1[c] = vec4<f32>(0.0);
    dk2[c] = vec4<f32>(0.0); dv2[c] = vec4<f32>(0.0); dk3[c] = vec4<f32>(0.0); dv3[c] = vec4<f32>(0.0);
  }
  for (var g = 0u; g < grp; g++) {
    let h = tl.h * grp + g;
    let base = tl.b * T * W + h * HS;
    let gb = tl.b * T * Cq + h * HS;
    let bh = tl.b * p.nHead + h;
    for (var i = tl.r0; i < iEnd; i += 2u) {
      let i0 = min(i + 0u, last); let a0 = base + i0 * W; let g0 = gb + i0 * Cq; let r0 = pd_row(bh, i0); let ok0 = i + 0u <= last;
      let i1 = min(i + 1u, last); let a1 = base + i1 * W; let g1 = gb + i1 * Cq; let r1 = pd_row(bh, i1); let ok1 = i + 1u <= last;
      let v0_0 = ok0 && vis(jq0, i + 0u); let v0_1 = ok1 && vis(jq0, i + 1u);
      let v1_0 = ok0 && vis(jq1, i + 0u); let v1_1 = ok1 && vis(jq1, i + 1u);
      let v2_0 = ok0 && vis(jq2, i + 0u); let v2_1 = ok1 && vis(jq2, i + 1u);
      let v3_0 = ok0 && vis(jq3, i + 0u); let v3_1 = ok1 && vis(jq3, i + 1u);
      let p0_0 = select(0.0, dsum[r0 + jq0], v0_0); let p0_1 = select(0.0, dsum[r1 + jq0], v0_1);
      let d0_0 = select(0.0, dsum[r0 + sp + jq0], v0_0); let d0_1 = select(0.0, dsum[r1 + sp + jq0], v0_1);
      let p1_0 = select(0.0, dsum[r0 + jq1], v1_0); let p1_1 = select(0.0, dsum[r1 + jq1], v1_1);
      let d1_0 = select(0.0, dsum[r0 + sp + jq1], v1_0); let d1_1 = select(0.0, dsum[r1 + sp + jq1], v1_1);
      let p2_0 = select(0.0, dsum[r0 + jq2], v2_0); let p2_1 = select(0.0, dsum[r1 + jq2], v2_1);
      let d2_0 = select(0.0, dsum[r0 + sp + jq2], v2_0); let d2_1 = select(0.0, dsum[r1 + sp + jq2], v2_1);
      let p3_0 = select(0.0, dsum[r0 + jq3], v3_0); let p3_1 = select(0.0, dsum[r1 + jq3], v3_1);
      let d3_0 = select(0.0, dsum[r0 + sp + jq3], v3_0); let d3_1 = select(0.0, dsum[r1 + sp + jq3], v3_1);
      for (var c = 0u; c < n4; c++) {
        let q0 = ld_qkv(a0, c); let o0 = ld_dout(g0, c); let q1 = ld_qkv(a1, c); let o1 = ld_dout(g1, c);
        dv0[c] += p0_0 * o0 + p0_1 * o1;
        dk0[c] += d0_0 * q0 + d0_1 * q1;
        dv1[c] += p1_0 * o0 + p1_1 * o1;
        dk1[c] += d1_0 * q0 + d1_1 * q1;
        dv2[c] += p2_0 * o0 + p2_1 * o1;
        dk2[c] += d2_0 * q0 + d2_1 * q1;
        dv3[c] += p3_0 * o0 + p3_1 * o1;
        dk3[c] += d3_0 * q0 + d3_1 * q1;
      }
    }
  }
  st_kv_row(tl.b, tl.h, j0, &dk0, &dv0); st_kv_row(tl.b, tl.h, j1, &dk1, &dv1);
  st_kv_row(tl.b, tl.h, j2, &dk2, &dv2); st_kv_row(tl.b, tl.h, j3, &dk3, &dv3);
}
