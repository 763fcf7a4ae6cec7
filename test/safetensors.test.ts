import { describe, expect, it } from 'vitest';
import { parseSafetensors, serializeSafetensors, SafetensorsError } from '../src/io/safetensors.ts';

const SRC = 'model.safetensors';

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A safetensors file from a header object and data bytes, with no validation (to build bad files). */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, json.length, true);
  return concat([head, json, data]);
}

/** A safetensors file whose header is exactly `json` (to build headers JSON.stringify cannot). */
function rawText(json: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const text = new TextEncoder().encode(json);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, text.length, true);
  return concat([head, text, data]);
}

function u16le(values: number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 2);
  values.forEach((v, i) => new DataView(bytes.buffer).setUint16(2 * i, v, true));
  return bytes;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(SafetensorsError);
  const message = (error as Error).message;
  expect(message.startsWith(`${SRC}: `)).toBe(true);
  for (const p of parts) expect(message).toMatch(p);
}

describe('serialize → parse round trip', () => {
  const weight = Float32Array.from([1.5, -2.25, 3e-8, 65504, -0, Infinity]);
  const ids = Int32Array.from([0, 7, -3, 2147483647]);
  const chunks = serializeSafetensors(
    [
      { name: 'z.weight', dtype: 'F32', shape: [2, 3], data: weight },
      { name: 'a.ids', dtype: 'I32', shape: [4], data: ids },
      { name: 'empty', dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
    ],
    { format: 'pt', step: '10' },
  );
  const bytes = concat(chunks);
  const file = parseSafetensors(bytes, SRC);

  it('restores values, shapes, dtypes and metadata', () => {
    expect([...file.getFloat32('z.weight')]).toEqual([...weight]);
    expect([...file.getInt32('a.ids')]).toEqual([...ids]);
    expect(file.getFloat32('empty').length).toBe(0);
    expect(file.tensors.get('z.weight')).toMatchObject({ dtype: 'F32', shape: [2, 3], byteLength: 24 });
    expect(file.metadata).toEqual({ format: 'pt', step: '10' });
  });

  it('pads the header with spaces to 8-byte alignment and sorts tensors by name', () => {
    const n = new DataView(bytes.buffer).getUint32(0, true);
    expect(n % 8).toBe(0);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    const padding = header.slice(header.lastIndexOf('}') + 1);
    expect(padding).toMatch(/^ {0,7}$/);
    expect(JSON.parse(header).__metadata__).toEqual({ format: 'pt', step: '10' });
    const order = [...file.tensors.entries()].sort((a, b) => a[1].byteOffset - b[1].byteOffset).map(([k]) => k);
    expect(order).toEqual(['a.ids', 'empty', 'z.weight']);
  });

  it('hands the tensors back as views, not copies, in the chunks', () => {
    expect(chunks[chunks.length - 1]!.buffer).toBe(weight.buffer);
  });

  it('returns aligned F32 tensors as views of the input bytes', () => {
    const view = file.getFloat32('z.weight');
    expect(view.buffer).toBe(bytes.buffer);
  });

  it('copies F32 tensors that sit at an unaligned address', () => {
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const unaligned = parseSafetensors(shifted.subarray(1), SRC);
    const values = unaligned.getFloat32('z.weight');
    expect(values.buffer).not.toBe(shifted.buffer);
    expect([...values]).toEqual([...weight]);
  });
});

describe('dtype conversion', () => {
  // Hand-computed: F16 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x7BFF = 65504,
  // 0x0001 = 2^-24 (smallest subnormal), 0x8000 = -0, 0x7C00 = +inf, 0xFC00 = -inf, 0x7E00 = NaN.
  const f16Bits = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x7e00];
  const f16Values = [1, -2, 0.333251953125, 65504, 2 ** -24, -0, Infinity, -Infinity, NaN];
  // BF16 is float32's top half: 0x3F80 = 1, 0xC040 = -3, 0x3EAA = 0.33203125, 0x4049 = 3.140625, 0x0001 = 2^-133.
  const bf16Bits = [0x3f80, 0xc040, 0x3eaa, 0x4049, 0x0001, 0x7f80];
  const bf16Values = [1, -3, 0.33203125, 3.140625, 2 ** -133, Infinity];

  it('converts F16 and BF16 to float32', () => {
    const f16 = u16le(f16Bits);
    const bf16 = u16le(bf16Bits);
    const file = parseSafetensors(rawFile({
      h: { dtype: 'F16', shape: [9], data_offsets: [0, 18] },
      b: { dtype: 'BF16', shape: [2, 3], data_offsets: [18, 30] },
    }, concat([f16, bf16])), SRC);
    expect([...file.getFloat32('h')]).toEqual(f16Values);
    expect([...file.getFloat32('b')]).toEqual(bf16Values);
  });

  it('converts F64 to float32 and reads I64/U16/U8 as int32', () => {
    const data = new Uint8Array(8 * 2 + 8 * 2 + 2 * 2 + 2);
    const view = new DataView(data.buffer);
    view.setFloat64(0, 0.1, true);
    view.setFloat64(8, -1e300, true);
    view.setBigInt64(16, -5n, true);
    view.setBigInt64(24, 123456789n, true);
    view.setUint16(32, 65535, true);
    view.setUint16(34, 1, true);
    data[36] = 255;
    data[37] = 0;
    const file = parseSafetensors(rawFile({
      d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] },
      l: { dtype: 'I64', shape: [2], data_offsets: [16, 32] },
      s: { dtype: 'U16', shape: [2], data_offsets: [32, 36] },
      c: { dtype: 'U8', shape: [2], data_offsets: [36, 38] },
    }, data), SRC);
    expect([...file.getFloat32('d')]).toEqual([Math.fround(0.1), -Infinity]);
    expect([...file.getInt32('l')]).toEqual([-5, 123456789]);
    expect([...file.getInt32('s')]).toEqual([65535, 1]);
    expect([...file.getInt32('c')]).toEqual([255, 0]);
  });

  it('rejects I64 values outside int32 and reading across kinds', () => {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigInt64(0, 2n ** 40n, true);
    const file = parseSafetensors(rawFile({ big: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, data), SRC);
    expectError(() => file.getInt32('big'), "'big'", /does not fit in int32/);
    expectError(() => file.getFloat32('big'), "'big'", /dtype I64/);
  });
});

describe('errors name the file and the problem', () => {
  const tensor = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  it('file shorter than 8 bytes', () => {
    expectError(() => parseSafetensors(new Uint8Array(5), SRC), /5 bytes, shorter than the 8-byte header length/);
  });

  it('header length beyond the file', () => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setUint32(0, 100, true);
    expectError(() => parseSafetensors(bytes, SRC), /header length 100 extends beyond the file \(16 bytes\)/);
  });

  it('header not JSON', () => {
    const bytes = concat([new Uint8Array([9, 0, 0, 0, 0, 0, 0, 0]), new TextEncoder().encode('{"a": nul')]);
    expectError(() => parseSafetensors(bytes, SRC), /header is not valid JSON/);
    expectError(() => parseSafetensors(rawFile([1, 2]), SRC), /header is not a JSON object/);
  });

  it('unknown dtype', () => {
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, dtype: 'F12' } }, new Uint8Array(8)), SRC), "'w'", /unknown dtype "F12"/);
  });

  it('shape / byte-length mismatch', () => {
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, shape: [3] } }, new Uint8Array(12)), SRC),
      "'w'", /shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] span 8/);
  });

  it('malformed shape or offsets', () => {
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, shape: [-2] } }, new Uint8Array(8)), SRC), "'w'", /shape \[-2\] is not a list/);
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, data_offsets: [0] } }, new Uint8Array(8)), SRC), "'w'", /data_offsets \[0\] is not a pair/);
  });

  it('data offsets outside the data section', () => {
    expectError(() => parseSafetensors(rawFile({ w: tensor }, new Uint8Array(4)), SRC), "'w'", /data_offsets \[0, 8\] lie outside the data section \(4 bytes\)/);
  });

  it('data offsets not ascending', () => {
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, data_offsets: [8, 0] } }, new Uint8Array(8)), SRC), "'w'", /not ascending/);
  });

  // The reference parser (Hugging Face's safetensors crate) caps the header at 100_000_000 bytes
  // (MAX_HEADER_SIZE) before reading it: a corrupt length must not make us allocate 4 GiB.
  it('header over 100 MB, checked before the header is read', () => {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, 100_000_001, true);
    expectError(() => parseSafetensors(bytes, SRC), /header length 100000001 is over the 100000000-byte limit/);
    view.setUint32(0, 100, true);
    view.setUint32(4, 1, true); // > 4 GiB: the high word counts
    expectError(() => parseSafetensors(bytes, SRC), /header length 4294967396 is over the 100000000-byte limit/);
    view.setUint32(0, 100_000_000, true); // at the limit: only "beyond the file"
    view.setUint32(4, 0, true);
    expectError(() => parseSafetensors(bytes, SRC), /header length 100000000 extends beyond the file/);
  });

  it('trailing bytes after the last tensor', () => {
    expectError(() => parseSafetensors(rawFile({ w: tensor }, new Uint8Array(12)), SRC), /4 trailing bytes after the last tensor \('w' ends at 8\): the data section is 12 bytes/);
    expectError(() => parseSafetensors(rawFile({}, new Uint8Array(3)), SRC), /3 trailing bytes after the last tensor: the data section is 3 bytes/);
    expectError(() => parseSafetensors(rawFile({ __metadata__: { a: 'b' } }, new Uint8Array(1)), SRC), /1 trailing bytes/);
  });

  it('gaps: tensors must be contiguous from the start of the data section', () => {
    const gap = { a: tensor, b: { ...tensor, data_offsets: [12, 20] } };
    expectError(() => parseSafetensors(rawFile(gap, new Uint8Array(20)), SRC), /bytes \[8, 12\) of the data section belong to no tensor \(before 'b'\)/);
    const late = { a: { ...tensor, data_offsets: [4, 12] } };
    expectError(() => parseSafetensors(rawFile(late, new Uint8Array(12)), SRC), /bytes \[0, 4\) of the data section belong to no tensor \(before 'a'\)/);
  });

  it('contiguous tensors in any header order, empty tensors included, parse', () => {
    const header = { z: { ...tensor, data_offsets: [8, 16] }, e: { dtype: 'F32', shape: [0, 3], data_offsets: [8, 8] }, a: tensor };
    const file = parseSafetensors(rawFile(header, new Uint8Array(16)), SRC);
    expect([...file.tensors.keys()]).toEqual(['z', 'e', 'a']);
    expect(file.getFloat32('e').length).toBe(0);
    expect(parseSafetensors(rawFile({}), SRC).tensors.size).toBe(0);
  });

  it('duplicate keys, at the top level, in an entry or in the metadata', () => {
    const entry = '{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}';
    expectError(() => parseSafetensors(rawText(`{"w": ${entry}, "w": ${entry}}`, new Uint8Array(8)), SRC), /header has the key 'w' twice/);
    // The same key spelled with an escape is the same key.
    expectError(() => parseSafetensors(rawText(`{"w": ${entry},\n "\\u0077" : ${entry}}`, new Uint8Array(8)), SRC), /key 'w' twice/);
    expectError(() => parseSafetensors(rawText('{"w": {"dtype": "F32", "shape": [2], "dtype": "F16", "data_offsets": [0, 8]}}', new Uint8Array(8)), SRC), /key 'dtype' twice/);
    expectError(() => parseSafetensors(rawText('{"__metadata__": {"a": "1", "a": "2"}}'), SRC), /key 'a' twice/);
    // Equal strings as values, or as keys of different objects, are not duplicates.
    const ok = parseSafetensors(rawText(`{"__metadata__": {"w": "w", "x": "w"}, "w": ${entry}}`, new Uint8Array(8)), SRC);
    expect(ok.metadata).toEqual({ w: 'w', x: 'w' });
  });

  it('header that is not UTF-8 names the byte', () => {
    const json = new TextEncoder().encode('{"w\u00e9": 1}');
    const bad = json.slice();
    bad[3] = 0xff; // the 'é' lead byte
    const head = new Uint8Array(8);
    new DataView(head.buffer).setUint32(0, bad.length, true);
    expectError(() => parseSafetensors(concat([head, bad]), SRC), /header is not valid UTF-8 \(byte 11 of the file\)/);
  });

  it('a shape too large to address', () => {
    expectError(() => parseSafetensors(rawFile({ w: { ...tensor, shape: [2 ** 40, 2 ** 40] } }, new Uint8Array(8)), SRC), "'w'", /too large to address/);
  });

  it('overlapping tensors', () => {
    const header = { a: tensor, b: { ...tensor, data_offsets: [4, 12] } };
    expectError(() => parseSafetensors(rawFile(header, new Uint8Array(12)), SRC), "'a' [0, 8]", "'b' [4, 12]", /overlap/);
  });

  it('metadata that is not string → string', () => {
    expectError(() => parseSafetensors(rawFile({ __metadata__: { step: 10 } }), SRC), /'__metadata__' value for 'step' is not a string/);
  });

  it('missing tensor lists some that exist', () => {
    const header = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`h.${i}.w`, { dtype: 'F32', shape: [1], data_offsets: [4 * i, 4 * i + 4] }]));
    const file = parseSafetensors(rawFile(header, new Uint8Array(32)), SRC);
    expectError(() => file.getFloat32('wte.weight'), "no tensor named 'wte.weight'", "'h.0.w'", "'h.4.w'", /8 in all/);
  });
});

describe('serializeSafetensors rejects inconsistent tensors', () => {
  it('shape / data length mismatch, wrong array type, duplicate names', () => {
    expect(() => serializeSafetensors([{ name: 'w', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/'w' has shape \[3\] \(3 elements\) but 2 values/);
    expect(() => serializeSafetensors([{ name: 'w', dtype: 'I32', shape: [2], data: new Float32Array(2) }])).toThrow(/'w' has dtype I32 but its data is a Float32Array/);
    const t = { name: 'w', dtype: 'F32' as const, shape: [1], data: new Float32Array(1) };
    expect(() => serializeSafetensors([t, t])).toThrow(/'w' is a duplicate/);
  });
});
