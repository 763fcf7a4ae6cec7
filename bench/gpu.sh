#!/usr/bin/env bash
# The benchmarks at GPU-sized shapes, in one go, for a machine with a real GPU (WebGPU through Dawn's
# Vulkan backend). Installs nothing beyond `npm ci` (when node_modules is missing) and writes JSON under
# $OUT (default bench/results/gpu/), one file per benchmark, plus a log. Each step has its own time
# limit (together 600 s, typically far less) so the whole script fits one 10-minute run; a step that fails or times out is recorded and the
# next one runs.
#   bench/gpu.sh                 # GPU shapes: GPT-2 small at B=8, T=512; SmolLM2-135M (Llama) at B=8, T=512
#   SMOKE=1 bench/gpu.sh         # tiny shapes, to check the script itself on a machine without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund >>"$LOG" 2>&1 || { echo "npm ci failed (see $LOG)"; exit 1; }; fi
if [ "${SMOKE:-0}" = 1 ]; then
  GPT2_SHAPE=1,32; LLAMA_SHAPE=1,16; SAVINGS=(--batch 2 --seq 32 --boundaries none,0,6,12 --rounds 2); REPS=1
  LIMIT_MATMUL=300; LIMIT_MODEL=400; LIMIT_OTHER=200
else
  GPT2_SHAPE=8,512; LLAMA_SHAPE=8,512; SAVINGS=(--batch 32 --seq 128 --boundaries all --rounds 5); REPS=5
  LIMIT_MATMUL=90; LIMIT_MODEL=150; LIMIT_OTHER=60
fi
status=0
step() { # name limit command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  if timeout "$limit" "$@" >>"$LOG" 2>&1; then echo "   ok in $((SECONDS - t0)) s" | tee -a "$LOG"
  else echo "   FAILED or timed out after $((SECONDS - t0)) s (exit $?)" | tee -a "$LOG"; status=1; fi
}
step doctor 60 npx tsx bin/semfreeze.ts doctor --json
step matmul "$LIMIT_MATMUL" npx tsx bench/matmul.ts --reps "$REPS" --json "$OUT/matmul.json"
step gpt2-small "$LIMIT_MODEL" npx tsx bench/model.ts --config gpt2 --shape "$GPT2_SHAPE" --reps "$REPS" --boundaries none,0,6,11 --json "$OUT/model-gpt2.json"
# The same step on the other matmul path (transposes into tn, lavapipe's choice), for the ratio.
step gpt2-small-transpose "$LIMIT_OTHER" npx tsx bench/model.ts --config gpt2 --shape "$GPT2_SHAPE" --reps "$REPS" --boundaries none --matmul transpose --json "$OUT/model-gpt2-transpose.json"
step smollm2 "$LIMIT_MODEL" npx tsx bench/model.ts --config smollm2 --shape "$LLAMA_SHAPE" --reps "$REPS" --boundaries none,0,15,29,30 --json "$OUT/model-smollm2.json"
step savings 90 bash -c "npx tsx bin/semfreeze.ts bench savings --model models/semfreeze-base ${SAVINGS[*]} --profile --json > '$OUT/savings-base.json'"
echo "results in $OUT (log: $LOG)"
exit $status
