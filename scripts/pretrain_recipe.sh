#!/usr/bin/env bash
# Pretraining settings compared at an equal token budget: one `pretrain` run per recipe from the
# same initial model (same data order, masks and held-out set), then scripts/pretrain_recipe_table.py
# prints the held-out MLM loss curve of each and its tokens/s.
#   scripts/pretrain_recipe.sh [EXP_DIR]
# env: MB=build/minibridge, CONFIG=mini, STEPS=500, BATCH=32, SEQ=128, EVAL_STEPS=100,
# EVAL_SEQUENCES=256, THREADS=2, CORPUS=$MINIBRIDGE_DATA/corpus, RECIPES: "name:flags;..." (flags
# separated by commas), default:
#   "old-defaults:--dropout,--lr,1e-4;dropout-lr5e-4:--dropout,--lr,5e-4;lr5e-4:--lr,5e-4;
#    lr1e-3:--lr,1e-3;one-cycle-lr1e-3:--lr,1e-3,--warmup-steps,HALF;lr2e-3:--lr,2e-3"
#   (HALF: STEPS / 2; one-cycle: the triangular schedule of "Cramming", peak at mid-run)
# Rerunning skips the recipes already finished (delete EXP_DIR/NAME to redo one).
set -euo pipefail
exp=${1:-build/exp/pretrain_recipe}
MB=${MB:-build/minibridge}
config=${CONFIG:-mini}
steps=${STEPS:-500}
data=${MINIBRIDGE_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
corpus=${CORPUS:-$data/corpus}
recipes=${RECIPES:-"old-defaults:--dropout,--lr,1e-4;dropout-lr5e-4:--dropout,--lr,5e-4;lr5e-4:--lr,5e-4;lr1e-3:--lr,1e-3;one-cycle-lr1e-3:--lr,1e-3,--warmup-steps,HALF;lr2e-3:--lr,2e-3"}
mkdir -p "$exp"
init="$exp/init-$config"
[ -f "$init/model.safetensors" ] || "$MB" init --config "$config" --out "$init" --seed 0 >&2
names=()
IFS=';' read -r -a list <<< "$recipes"
for recipe in "${list[@]}"; do
  name=${recipe%%:*}
  IFS=',' read -r -a flags <<< "${recipe#*:}"
  flags=("${flags[@]/HALF/$((steps / 2))}")
  names+=("$name")
  run="$exp/$name"
  if [ -f "$run/train_log.jsonl" ] && grep -q '"event":"done"' "$run/train_log.jsonl"; then continue; fi
  resume=()
  { [ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ]; } && resume=(--resume)
  echo "pretrain_recipe: $name (${flags[*]})" >&2
  "$MB" pretrain --model "$init" --corpus "$corpus" --out "$run" --max-steps "$steps" \
    --batch-size "${BATCH:-32}" --seq-len "${SEQ:-128}" --eval-steps "${EVAL_STEPS:-100}" \
    --eval-sequences "${EVAL_SEQUENCES:-256}" --save-steps 100 --threads "${THREADS:-2}" "${flags[@]}" "${resume[@]}" >/dev/null
done
/usr/bin/python3 "$(dirname "$0")/pretrain_recipe_table.py" "$exp" "${names[@]}"
