// GPU buffers, allocated once per model and batch shape, each with a name, and the live byte count
// the memory benchmarks read. Readback goes through one reused MAP_READ staging buffer
// (a fresh 64 MB staging buffer costs ~6x a reused one on lavapipe).

export const STORAGE = 0x80 | 0x4 | 0x8; // STORAGE | COPY_SRC | COPY_DST

export interface TrackedBuffer {
  name: string;
  buffer: GPUBuffer;
  bytes: number;
  /** Allocation order, for releasing everything allocated after a mark. */
  serial: number;
}

export class GpuMemory {
  private readonly live = new Map<GPUBuffer, TrackedBuffer>();
  private liveBytesNow = 0;
  private peak = 0;
  private staging: GPUBuffer | null = null;
  private serial = 0;

  /** maxBufferSize: the device's, or a lower cap the runtime plans with. */
  constructor(readonly device: GPUDevice, private readonly maxBufferSize = device.limits.maxBufferSize) {}

  /** A storage buffer (also a copy source and destination). Size is rounded up to 4 bytes. */
  storage(name: string, bytes: number, usage = STORAGE): GPUBuffer {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const maxSize = this.maxBufferSize;
    if (size > maxSize) throw new Error(`buffer '${name}' needs ${size} bytes, over this device's maxBufferSize ${maxSize}`);
    const buffer = this.device.createBuffer({ label: name, size, usage });
    this.track(name, buffer, size);
    return buffer;
  }

  /** A storage buffer filled from host data. */
  upload(name: string, data: ArrayBufferView, usage = STORAGE): GPUBuffer {
    const buffer = this.storage(name, data.byteLength, usage);
    this.write(buffer, data);
    return buffer;
  }

  write(buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    // writeBuffer needs a multiple of 4 bytes.
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const whole = bytes.byteLength & ~3;
    if (whole > 0) this.device.queue.writeBuffer(buffer, byteOffset, bytes, 0, whole);
    if (whole < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(whole));
      this.device.queue.writeBuffer(buffer, byteOffset + whole, tail);
    }
  }

  /** A small uniform buffer with its initial contents. */
  uniform(name: string, data: ArrayBuffer): GPUBuffer {
    const buffer = this.device.createBuffer({ label: name, size: data.byteLength, usage: 0x40 | 0x8 }); // UNIFORM | COPY_DST
    this.device.queue.writeBuffer(buffer, 0, data);
    this.track(name, buffer, data.byteLength);
    return buffer;
  }

  private track(name: string, buffer: GPUBuffer, bytes: number): void {
    this.live.set(buffer, { name, buffer, bytes, serial: this.serial++ });
    this.liveBytesNow += bytes;
    this.peak = Math.max(this.peak, this.liveBytesNow);
  }

  destroy(buffer: GPUBuffer): void {
    const t = this.live.get(buffer);
    if (!t) return;
    this.live.delete(buffer);
    this.liveBytesNow -= t.bytes;
    buffer.destroy();
  }

  isLive(buffer: GPUBuffer): boolean {
    return this.live.has(buffer);
  }

  /** A mark: `releaseSince(mark)` destroys every buffer allocated after it (e.g. one model shape). */
  mark(): number {
    return this.serial;
  }

  releaseSince(mark: number): void {
    for (const t of [...this.live.values()]) if (t.serial >= mark) this.destroy(t.buffer);
  }

  /** Bytes of every live buffer this object allocated (staging excluded: it is host-side). */
  get liveBytes(): number {
    return this.liveBytesNow;
  }

  get peakBytes(): number {
    return this.peak;
  }

  resetPeak(): void {
    this.peak = this.liveBytesNow;
  }

  /** Name and size of every live buffer, in allocation order. */
  buffers(): { name: string; bytes: number }[] {
    return [...this.live.values()].sort((a, b) => a.serial - b.serial).map((t) => ({ name: t.name, bytes: t.bytes }));
  }

  /** Live bytes grouped by the part of the name before the first '.' or ':' (e.g. 'grad', 'act'). */
  breakdown(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.live.values()) {
      const k = t.name.split(/[.:]/)[0] ?? t.name;
      out[k] = (out[k] ?? 0) + t.bytes;
    }
    return out;
  }

  private stagingBuffer(bytes: number): GPUBuffer {
    if (!this.staging || this.staging.size < bytes) {
      this.staging?.destroy();
      this.staging = this.device.createBuffer({ label: 'staging', size: Math.ceil(bytes / 256) * 256, usage: 0x1 | 0x8 }); // MAP_READ | COPY_DST
    }
    return this.staging;
  }

  /** Copy bytes back to the host (through a reused MAP_READ staging buffer). */
  async read(buffer: GPUBuffer, byteOffset = 0, byteLength = buffer.size - byteOffset): Promise<ArrayBuffer> {
    const len = Math.ceil(byteLength / 4) * 4;
    const staging = this.stagingBuffer(len);
    const enc = this.device.createCommandEncoder({ label: 'readback' });
    enc.copyBufferToBuffer(buffer, byteOffset, staging, 0, len);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(1, 0, len); // GPUMapMode.READ
    const copy = staging.getMappedRange(0, len).slice(0, byteLength);
    staging.unmap();
    return copy;
  }

  async readFloat32(buffer: GPUBuffer, offsetElems = 0, count?: number): Promise<Float32Array> {
    const n = count ?? buffer.size / 4 - offsetElems;
    return new Float32Array(await this.read(buffer, offsetElems * 4, n * 4));
  }

  destroyAll(): void {
    for (const b of [...this.live.keys()]) this.destroy(b);
    this.staging?.destroy();
    this.staging = null;
  }
}
