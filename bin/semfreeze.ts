#!/usr/bin/env -S npx tsx
// The semfreeze command line: where to fine-tune a language model, then fine-tune only there.
import { Command } from 'commander';
import { UserError } from '../src/cli/common.ts';
import { doctor } from '../src/cli/doctor.ts';
import { NoAdapterError } from '../src/gpu/device.ts';

const program = new Command();
program
  .name('semfreeze')
  .description('Semantic-aware layer freezing (SALF): find where to fine-tune a language model, then fine-tune only there, on WebGPU.')
  .showHelpAfterError();

program
  .command('doctor')
  .description('show the WebGPU adapter, its features and limits, and a quick matmul GFLOP/s figure')
  .option('--json', 'print one JSON object')
  .option('--size <n>', 'matmul size n for n×n×n', (v) => Number(v), 512)
  .action(async (o) => doctor({ json: o.json, size: o.size }));

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
    process.exit(0);
  } catch (e) {
    const err = e as Error;
    const known = err instanceof UserError || err instanceof NoAdapterError || /^(ConfigError|SafetensorsError|TokenizerError|TokenDataError|FileError|KernelCompileError)$/.test(err.name);
    process.stderr.write(`semfreeze: ${known ? '' : 'error: '}${err.message}\n`);
    if (!known || process.env.SEMFREEZE_DEBUG) process.stderr.write(`${err.stack ?? ''}\n`);
    process.exit(1);
  }
}

await main();
