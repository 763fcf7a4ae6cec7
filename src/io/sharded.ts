// Sharded checkpoints, Hugging Face's layout: model.safetensors.index.json
// ({"metadata": {...}, "weight_map": {tensor: shard file}}) beside the shard files. The index and the
// shards must agree exactly: every tensor in exactly one shard, the one the index names.
import { decodeText } from '../util/utf8.ts';
import { SafetensorsError, type TensorInfo, type TensorSource } from './safetensors.ts';

/** Open every shard `indexBytes` names (through `openShard`, given the shard's file name) as one source. */
export async function openSharded(
  indexPath: string,
  indexBytes: Uint8Array,
  openShard: (file: string) => Promise<TensorSource>,
): Promise<TensorSource> {
  const fail = (problem: string): never => { throw new SafetensorsError(indexPath, problem); };
  const weightMap = parseIndex(decodeText(indexBytes), fail);
  const shards = new Map<string, TensorSource>();
  try {
    for (const file of [...new Set(weightMap.values())].sort()) {
      try {
        shards.set(file, await openShard(file));
      } catch (e) {
        // Both files named: the index that asks for the shard, and the shard's own problem.
        fail(`weight_map names ${file}: ${(e as Error).message}`);
      }
    }
    return new ShardedSource(indexPath, weightMap, shards, fail);
  } catch (e) {
    await Promise.all([...shards.values()].map((s) => s.close()));
    throw e;
  }
}

function parseIndex(text: string, fail: (problem: string) => never): Map<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (e) {
    fail(`not valid JSON (${(e as Error).message})`);
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(index) || !isObject(index.weight_map)) return fail(`expected {"weight_map": {tensor: shard file, ...}}`);
  const map = new Map<string, string>();
  for (const [tensor, file] of Object.entries(index.weight_map)) {
    // Shards sit beside the index: a path elsewhere (../x, /etc/x) is not a shard of this model.
    if (typeof file !== 'string' || !/^[^/\\]+$/.test(file) || file === '.' || file === '..') {
      fail(`weight_map entry '${tensor}' names ${JSON.stringify(file)}, not a file name in the model directory`);
    }
    map.set(tensor, file as string);
  }
  if (map.size === 0) fail('weight_map is empty');
  return map;
}

class ShardedSource implements TensorSource {
  readonly tensors = new Map<string, TensorInfo>();
  private readonly owner = new Map<string, string>();

  constructor(
    readonly source: string,
    weightMap: Map<string, string>,
    private readonly shards: Map<string, TensorSource>,
    fail: (problem: string) => never,
  ) {
    for (const [file, shard] of shards) {
      for (const [name, info] of shard.tensors) {
        const other = this.owner.get(name);
        if (other !== undefined) fail(`tensor '${name}' is in two shards, ${shard.fileOf(name)} and ${shards.get(other)!.fileOf(name)}`);
        const listed = weightMap.get(name);
        if (listed === undefined) fail(`${shard.fileOf(name)} holds tensor '${name}', which weight_map does not list`);
        if (listed !== file) fail(`weight_map puts tensor '${name}' in ${listed}, but it is in ${shard.fileOf(name)}`);
        this.owner.set(name, file);
        this.tensors.set(name, info);
      }
    }
    for (const [name, file] of weightMap) {
      if (!this.owner.has(name)) fail(`weight_map puts tensor '${name}' in ${file}, but no shard holds it (${shards.get(file)!.source} has ${shards.get(file)!.tensors.size} tensors)`);
    }
  }

  fileOf(name: string): string {
    return this.shard(name).fileOf(name);
  }

  readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    return this.shard(name).readFloat32(name, into);
  }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].map((s) => s.close()));
  }

  private shard(name: string): TensorSource {
    const file = this.owner.get(name);
    if (file === undefined) throw new SafetensorsError(this.source, `no tensor named '${name}' in any shard`);
    return this.shards.get(file)!;
  }
}
