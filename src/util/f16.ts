// IEEE 754 half precision ↔ float32 on the host (F16 checkpoints, the f16 boundary cache).

// half → float32 through a 64K-entry table: one lookup per element.
let halfTable: Float32Array | undefined;

export function halfToFloat32(halves: Uint16Array, out: Float32Array): void {
  const table = (halfTable ??= buildHalfTable());
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]!]!;
}

function buildHalfTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24; // subnormal
    else if (exponent === 31) table[h] = mantissa ? NaN : sign * Infinity;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return table;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → half, rounded to nearest even; overflow to ±Infinity, NaN kept NaN. */
export function float32ToHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  // Unbiased exponent e: normal halves have e in −14..15.
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // 10 mantissa bits kept; round the 13 dropped bits to nearest even (a carry may bump the exponent).
    let h = ((e + 15) << 10) | (man >>> 13);
    const rest = man & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
    return sign | h;
  }
  if (e < -25) return sign; // below half the smallest subnormal: ±0
  // Subnormal: value = m · 2^−24 with m = (1.man) · 2^(e+24), rounded to nearest even.
  const full = man | 0x800000;
  const shift = -e - 1; // 14..24 bits dropped
  let m = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (m & 1))) m++;
  return sign | m;
}

export function float32ToHalf(values: Float32Array, out: Uint16Array): void {
  for (let i = 0; i < values.length; i++) out[i] = float32ToHalfBits(values[i]!);
}
