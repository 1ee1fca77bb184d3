#!/usr/bin/env bash
# Pretraining objectives compared where it matters: each objective pretrains the same initial
# model for the same wall time, then every task is fine-tuned from each result and scored on dev.
# The wall time is turned into a step count per objective by a short probe run (steps per second,
# evaluation and saving excluded), so the runs themselves stay resumable and reproducible.
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

for objective in $objectives; do
  run="$exp/$objective"
  if [ ! -f "$run.steps" ]; then
    rm -rf "$run.probe"
    "$MB" pretrain "${common[@]}" --objective "$objective" --out "$run.probe" --max-steps 30 --eval-steps 0 \
      --save-steps 0 > "$run.probe.json"
    /usr/bin/python3 - "$run.probe/train_log.jsonl" "$minutes" > "$run.steps" <<'PY'
import json, sys
start = done = None
for line in open(sys.argv[1]):
    j = json.loads(line)
    if j.get("event") == "start": start = j
    if j.get("event") == "done": done = j
o = start["options"]
steps_per_s = done["tokens_per_s"] / (o["batch_size"] * o["seq_len"])
print(max(1, int(float(sys.argv[2]) * 60 * steps_per_s)))
PY
    rm -rf "$run.probe"
  fi
  steps=$(cat "$run.steps")
  resume=()
  [ -d "$run/checkpoint" ] && resume=(--resume)
  echo "pretrain_compare: $objective, $steps steps (~$minutes min)" >&2
  "$MB" pretrain "${common[@]}" --objective "$objective" --out "$run" --max-steps "$steps" "${resume[@]}" > /dev/null
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
