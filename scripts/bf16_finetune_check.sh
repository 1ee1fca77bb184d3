#!/usr/bin/env bash
# bf16 mixed precision against f32 on the same fine-tune: SEEDS × {f32, bf16} runs of `finetune
# --max-steps STEPS`, then scripts/bf16_finetune_table.py prints each run's dev metric and the loss
# curves' distance, and fails (exit 1) unless bf16 is within the seeds' noise:
#   - the mean dev metric of the bf16 runs is within the f32 runs' range across seeds (at least
#     ±TOL) of theirs;
#   - every logged loss of a bf16 run is nearer its f32 twin (same seed) than the f32 runs of
#     different seeds are to each other, on average over the curve.
#   scripts/bf16_finetune_check.sh [EXP_DIR]
# env: MB=build/minibridge, MODEL (a model directory; default: `init --config CONFIG` with random
# weights), CONFIG=mini, TASK=SST-2, STEPS=300, SEEDS="1 2 3", BATCH=32, LR=1e-4, MAX_LEN=64,
# THREADS=2, TOL=0.01. Rerunning skips the runs already made (delete EXP_DIR to redo them).
set -euo pipefail
exp=${1:-build/exp/bf16_finetune}
MB=${MB:-build/minibridge}
config=${CONFIG:-mini}
task=${TASK:-SST-2}
steps=${STEPS:-300}
seeds=${SEEDS:-1 2 3}
threads=${THREADS:-2}
mkdir -p "$exp"
model=${MODEL:-}
if [[ -z $model ]]; then
  model="$exp/init-$config"
  [ -f "$model/model.safetensors" ] || "$MB" init --config "$config" --out "$model" --seed 0 >&2
fi
for seed in $seeds; do
  for precision in f32 bf16; do
    run="$exp/seed$seed-$precision"
    [ -s "$run/metrics.json" ] && continue
    rm -rf "$run"
    flag=()
    [[ $precision == bf16 ]] && flag=(--bf16)
    echo "bf16_finetune_check: $task, seed $seed, $precision" >&2
    "$MB" finetune --model "$model" --task "$task" --out "$run" --max-steps "$steps" --seed "$seed" \
      --batch-size "${BATCH:-32}" --lr "${LR:-1e-4}" --max-len "${MAX_LEN:-64}" --log-steps 10 \
      --threads "$threads" "${flag[@]}" > "$run.metrics.tmp"
    mv "$run.metrics.tmp" "$run/metrics.json"
  done
done
/usr/bin/python3 "$(dirname "$0")/bf16_finetune_table.py" "$exp" --seeds $seeds --tol "${TOL:-0.01}"
