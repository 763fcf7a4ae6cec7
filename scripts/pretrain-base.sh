#!/usr/bin/env bash
# The shipped base model's pretraining run (resumable: rerun this script to continue).
cd "$(dirname "$0")/.."
# Data and tokenizer first: npx semfreeze data build prose --out data && npx semfreeze tokenizer train --vocab 4096 --data data/prose/train.txt --out models/tokenizer-4096.json
exec npx tsx bin/semfreeze.ts pretrain --config base --tokenizer models/tokenizer-4096.json \
  --data data/prose/train.txt --eval-data data/prose/heldout-sotu.txt --out runs/base \
  --steps 3000 --batch 8 --seq 128 --lr 2e-3 --warmup 200 --weight-decay 0.1 --clip 1 --seed 1 \
  --eval-every 250 --eval-windows 64 --save-every 100 --log-every 10 --resume
