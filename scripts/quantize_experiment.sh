#!/usr/bin/env bash
# docs/QUANTIZE.md "Accuracy", end to end: makes the three SST-2 models (a BERT-mini fine-tuned
# from random initialisation, it K-pruned at c = 0.5, its MB-BERT student with both even blocks
# bridged), then prints scripts/quantize_accuracy.sh's table for them.
#   scripts/quantize_experiment.sh [EXP_DIR]     (env: MB=build/minibridge, THREADS=2)
# Rerunning skips the models already made.
set -euo pipefail
exp=${1:-build/exp/quantize}
export MB=${MB:-build/minibridge}
threads=${THREADS:-2}
mkdir -p "$exp"
[ -f "$exp/mini-init/model.safetensors" ] || "$MB" init --config mini --out "$exp/mini-init" --seed 0 >&2
[ -f "$exp/mini-sst2/model.safetensors" ] ||
  "$MB" finetune --model "$exp/mini-init" --task SST-2 --out "$exp/mini-sst2" --epochs 1 --lr 1e-4 --max-len 64 \
    --threads "$threads" >&2
[ -f "$exp/mini-kprune-c0.5/results.json" ] ||
  "$MB" compress kprune --teacher "$exp/mini-sst2" --task SST-2 --out "$exp/mini-kprune-c0.5" --constraint 0.5 \
    --threads "$threads" > /dev/null
[ -f "$exp/mbbert/step_2/model.safetensors" ] ||
  "$MB" compress mbbert --teacher "$exp/mini-sst2" --task SST-2 --out "$exp/mbbert" --steps 2 --rank 64 \
    --max-train-examples 8000 --max-len 64 --lr 1e-4 --latency-examples 0 --threads "$threads" --no-progress > /dev/null
ln -sfn mbbert/step_2 "$exp/mini-mbbert-2"
WORK="$exp/quantized" "$(dirname "$0")/quantize_accuracy.sh" SST-2 "$exp/mini-sst2" "$exp/mini-kprune-c0.5" \
  "$exp/mini-mbbert-2"
