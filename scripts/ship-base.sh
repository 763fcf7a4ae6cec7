#!/usr/bin/env bash
# Copy the pretraining run's latest checkpoint into models/semfreeze-base (the Hugging Face files
# and the train log; not the optimizer state), then refresh what depends on it: the transformers
# reference fixture (needs .venv with torch, transformers, tokenizers, safetensors) and the report card.
#   scripts/ship-base.sh [runs/base] [python] [--no-report]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/base}
PY=${2:-.venv/bin/python}
OUT=models/semfreeze-base
mkdir -p "$OUT"
for f in config.json model.safetensors tokenizer.json train-log.json; do cp "$RUN/$f" "$OUT/$f.tmp" && mv "$OUT/$f.tmp" "$OUT/$f"; done
# transformers reads bos/eos from config.json; runs started before pretrain wrote them lack them.
node -e '
const fs = require("fs"); const p = process.argv[1]; const c = JSON.parse(fs.readFileSync(p, "utf8"));
const tok = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const eot = (tok.added_tokens || []).find((t) => t.content === "<|endoftext|>");
if (eot) { c.bos_token_id = eot.id; c.eos_token_id = eot.id; }
fs.writeFileSync(p, JSON.stringify(c, null, 2) + "\n");' "$OUT/config.json" "$OUT/tokenizer.json"
HF_HUB_OFFLINE=1 "$PY" test/fixtures/make_base_reference.py "$OUT"
[ "${3:-}" = --no-report ] || npx tsx scripts/base-report.ts --model "$OUT" --run "$OUT" > /dev/null
echo "shipped $(node -e 'const l=require("./'$OUT'/train-log.json"); const e=l[l.length-1]; console.log(`step ${e.step}, ${e.tokens} tokens`)') into $OUT"
