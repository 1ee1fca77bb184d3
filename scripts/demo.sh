#!/usr/bin/env bash
# The mission end to end on a small default, in a few minutes on two cores: make a BERT (BERT-mini,
# `init`), teach it SST-2 (a step-bounded fine-tuning run), make it smaller (K-prune to half the
# FLOPs) and smaller on disk (int8 file), then measure each: parameters, FLOPs, disk, SST-2 dev
# accuracy, latency at batch 1 and 8. Prints one table and writes OUT/results.md and
# OUT/results.png (gnuplot).
#
#   scripts/demo.sh        (scripts/run.sh runs it after installing and building)
#   MODEL=DIR   start from your own BERT directory (a pretrained checkpoint) instead of `init`
#   OUT=DIR     where the models and results go (default build/demo; each step is skipped when its
#               model is already there: delete OUT to start over)
#   STEPS=N     fine-tuning steps (default 700, batch 32)
#   CONFIG=S    the shape `init` makes (default mini; tests/CMakeLists.txt runs tiny with few steps)
#   MB=PATH     the minibridge binary (default build/minibridge)
# Without GLUE data ($MINIBRIDGE_DATA/glue) it says so, skips what needs it (fine-tuning,
# K-prune, accuracy) and measures the model and its int8 file.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${MB:-build/minibridge}
out=${OUT:-build/demo}
steps=${STEPS:-700}
data=${MINIBRIDGE_DATA:-../shared/data}
mkdir -p "$out"
start=${MODEL:-$out/init}
if [[ -z "${MODEL:-}" && ! -f "$start/config.json" ]]; then
  "$mb" init --config "${CONFIG:-mini}" --out "$start" --seed 0 --num-labels 2
fi

if [[ -f "$data/glue/SST-2/train.tsv" && -f "$data/glue/SST-2/dev.tsv" ]]; then
  if [[ ! -f "$out/teacher/model.safetensors" ]]; then
    echo "== 1/4 fine-tune on SST-2: $steps steps of 32 sentences"
    "$mb" finetune --model "$start" --task SST-2 --data "$data/glue" --out "$out/teacher" --max-steps "$steps" \
      --lr 1e-4 --max-len 64 --log-steps 50
  fi
  if [[ ! -f "$out/pruned/model.safetensors" ]]; then
    echo "== 2/4 K-prune: heads and neurons removed down to half the FLOPs, no retraining"
    "$mb" compress kprune --teacher "$out/teacher" --task SST-2 --data "$data/glue" --out "$out/pruned" \
      --constraint 0.5 --max-len 64
  fi
  if [[ ! -f "$out/pruned-int8/model.safetensors" ]]; then
    echo "== 3/4 quantize: int8 weights and word embeddings on disk"
    "$mb" quantize --model "$out/pruned" --out "$out/pruned-int8" --dtype int8 --embeddings int8
  fi
  models=("$out/teacher" "$out/pruned" "$out/pruned-int8")
  task=(--task SST-2 --data "$data/glue")
else
  echo "No GLUE data at $data/glue (set MINIBRIDGE_DATA): fine-tuning, K-prune and accuracy need it."
  echo "Measuring the model and its int8 file only."
  if [[ ! -f "$out/start-int8/model.safetensors" ]]; then
    "$mb" quantize --model "$start" --out "$out/start-int8" --dtype int8 --embeddings int8
  fi
  models=("$start" "$out/start-int8")
  task=()
fi
echo "== 4/4 measure"
python3 scripts/demo_table.py --mb "$mb" --out "$out" "${task[@]}" "${models[@]}"
