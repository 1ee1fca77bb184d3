#!/usr/bin/env bash
# Pretraining objectives compared where it matters: each objective pretrains the same initial
# model for the same wall time, then every task is fine-tuned from each result and scored on dev.
# The wall time is turned into a step count per objective by short probe runs (steps per second,
# evaluation and saving excluded), so the runs themselves stay resumable and reproducible; an
# OBJECTIVE.steps file already in EXP_DIR is used as it is (to rerun at a recorded budget).
#   scripts/pretrain_compare.sh [EXP_DIR]
# env: MB=build/minibridge, CONFIG=mini, MINUTES=20 (pretraining per objective),
# OBJECTIVES="mlm electra", TASKS="SST-2 STS-B MRPC CoLA", PRETRAIN_FLAGS (added to every
# pretrain run), FT_FLAGS="--epochs 3 --lr 1e-4", THREADS=2, CORPUS=$MINIBRIDGE_DATA/corpus,
# GLUE=$MINIBRIDGE_DATA/glue. Rerunning resumes or skips what is already there.
set -euo pipefail
exp=${1:-build/exp/pretrain_compare}
MB=${MB:-build/minibridge}
config=${CONFIG:-mini}
minutes=${MINUTES:-20}
objectives=${OBJECTIVES:-mlm electra}
tasks=${TASKS:-SST-2 STS-B MRPC CoLA}
threads=${THREADS:-2}
data=${MINIBRIDGE_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
corpus=${CORPUS:-$data/corpus}
glue=${GLUE:-$data/glue}
read -r -a pretrain_flags <<< "${PRETRAIN_FLAGS:-}"
read -r -a ft_flags <<< "${FT_FLAGS:---epochs 3 --lr 1e-4}"
mkdir -p "$exp"
init="$exp/init-$config"
[ -f "$init/model.safetensors" ] || "$MB" init --config "$config" --out "$init" --seed 0 >&2
common=(--model "$init" --corpus "$corpus" --threads "$threads" --no-progress "${pretrain_flags[@]}")

# Each objective's wall time becomes a step count by probes (scripts/pretrain_probe.sh), taken in
# turns, three rounds, the median per objective: the machine's speed drifts between phases, and
# probing the objectives side by side keeps their ratio honest.
need=()
for objective in $objectives; do [ -s "$exp/$objective.steps" ] || need+=("$objective"); done
if ((${#need[@]})); then
  for round in 1 2 3; do
    for objective in "${need[@]}"; do
      [ "$round" = 1 ] && : > "$exp/$objective.rates"
      bash "$(dirname "$0")/pretrain_probe.sh" "$exp/$objective.probe" "$MB" "${common[@]}" \
        --objective "$objective" >> "$exp/$objective.rates"
    done
  done
  for objective in "${need[@]}"; do
    bash "$(dirname "$0")/pretrain_steps.sh" --rates "$exp/$objective.rates" "$minutes" > "$exp/$objective.steps.tmp"
    mv "$exp/$objective.steps.tmp" "$exp/$objective.steps"
  done
fi

for objective in $objectives; do
  run="$exp/$objective"
  steps=$(cat "$run.steps")
  if ! grep -q '"event":"done"' "$run/train_log.jsonl" 2> /dev/null; then
    resume=()
    { [ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ]; } && resume=(--resume)
    echo "pretrain_compare: $objective, $steps steps (~$minutes min)" >&2
    "$MB" pretrain "${common[@]}" --objective "$objective" --out "$run" --max-steps "$steps" "${resume[@]}" > /dev/null
  fi
  for task in $tasks; do
    out="$exp/$objective-$task"
    [ -s "$out.json" ] && continue
    rm -rf "$out"
    echo "pretrain_compare: fine-tune $task from $objective" >&2
    "$MB" finetune --model "$run" --task "$task" --data "$glue" --out "$out" --threads "$threads" \
      "${ft_flags[@]}" > "$out.json.tmp"
    mv "$out.json.tmp" "$out.json"
  done
done
/usr/bin/python3 - "$exp" "$tasks" $objectives <<'PY'
import json, os, sys
exp, tasks, objectives = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
def metric(d):
    for k in ("mcc", "pearson", "f1", "accuracy"):
        if k in d: return k, d[k]
    return "?", float("nan")
print("| objective | steps | " + " | ".join(tasks) + " |")
print("|---|---:|" + "---:|" * len(tasks))
for o in objectives:
    cells = []
    for t in tasks:
        k, v = metric(json.load(open(os.path.join(exp, f"{o}-{t}.json"))))
        cells.append(f"{k} {v:.4f}")
    steps = open(os.path.join(exp, o + ".steps")).read().strip()
    print(f"| {o} | {steps} | " + " | ".join(cells) + " |")
PY
