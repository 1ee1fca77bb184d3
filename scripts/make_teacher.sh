#!/usr/bin/env bash
# The best teachers a wall-time budget allows (docs/TRAINING.md, "Teachers"): pretrain a model from
# `init` for a fixed time on this machine, then fine-tune a teacher for each GLUE task from it at
# every learning rate of a small grid and keep the one with the best dev score (BERT's and Turc et
# al.'s model selection).
#   scripts/make_teacher.sh [--hours H] [OUT]          (default: 2 hours, OUT=build/exp/teacher)
# The hours become a step count by a short probe (scripts/pretrain_steps.sh), kept in
# OUT/pretrain.steps, so a rerun resumes a stopped run towards the same end and skips what is done.
# env: MB=build/minibridge, CONFIG=mini, OBJECTIVE=mlm, PRETRAIN_FLAGS (added to pretrain),
# TASKS="SST-2 MRPC STS-B RTE CoLA", LRS="1e-4 3e-4" (fine-tuning grid), FT_FLAGS="--epochs 4",
# THREADS=2, SEED=0 (init), CORPUS=$MINIBRIDGE_DATA/corpus, GLUE=$MINIBRIDGE_DATA/glue.
# Writes OUT/init-CONFIG, OUT/pretrained (the model; train_log.jsonl is the curve),
# OUT/ft/TASK-lrLR (every fine-tune, with TASK-lrLR.json its best dev metrics),
# OUT/teacher-TASK (a link to the best of them), and OUT/teachers.md + OUT/curve.png
# (scripts/teacher_report.py), which it prints.
set -euo pipefail
hours=2
exp=build/exp/teacher
while [ $# -gt 0 ]; do
  case $1 in
    --hours) hours=$2; shift 2 ;;
    --hours=*) hours=${1#--hours=}; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "make_teacher.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) exp=$1; shift ;;
  esac
done
if ! /usr/bin/python3 -c 'import sys; h = float(sys.argv[1]); sys.exit(not 0 < h <= 1000)' "$hours" 2> /dev/null; then
  echo "make_teacher.sh: --hours must be a number of hours in (0, 1000], got '$hours'" >&2
  exit 2
fi
MB=${MB:-build/minibridge}
config=${CONFIG:-mini}
objective=${OBJECTIVE:-mlm}
tasks=${TASKS:-SST-2 MRPC STS-B RTE CoLA}
lrs=${LRS:-1e-4 3e-4}
threads=${THREADS:-2}
data=${MINIBRIDGE_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
corpus=${CORPUS:-$data/corpus}
glue=${GLUE:-$data/glue}
read -r -a pretrain_flags <<< "${PRETRAIN_FLAGS:-}"
read -r -a ft_flags <<< "${FT_FLAGS:---epochs 4}"
mkdir -p "$exp/ft"

init="$exp/init-$config"
[ -f "$init/model.safetensors" ] || "$MB" init --config "$config" --out "$init" --seed "${SEED:-0}" >&2
pretrain=(pretrain --model "$init" --corpus "$corpus" --threads "$threads" --objective "$objective"
  "${pretrain_flags[@]}")
if [ ! -s "$exp/pretrain.steps" ]; then
  minutes=$(/usr/bin/python3 -c 'import sys; print(float(sys.argv[1]) * 60)' "$hours")
  "$(dirname "$0")/pretrain_steps.sh" "$minutes" "$exp/pretrain.probe" "$MB" "${pretrain[@]:1}" > "$exp/pretrain.steps.tmp"
  mv "$exp/pretrain.steps.tmp" "$exp/pretrain.steps"
fi
steps=$(cat "$exp/pretrain.steps")
if ! grep -q '"event":"done"' "$exp/pretrained/train_log.jsonl" 2> /dev/null; then
  resume=()
  { [ -d "$exp/pretrained/checkpoint" ] || [ -d "$exp/pretrained/checkpoint.old" ]; } && resume=(--resume)
  echo "make_teacher: pretraining $config ($objective) for $steps steps (~$hours h)" >&2
  "$MB" "${pretrain[@]}" --out "$exp/pretrained" --max-steps "$steps" "${resume[@]}" > /dev/null
fi

for task in $tasks; do
  for lr in $lrs; do
    out="$exp/ft/$task-lr$lr"
    [ -s "$out.json" ] && continue
    resume=()
    { [ -d "$out/checkpoint" ] || [ -d "$out/checkpoint.old" ]; } && resume=(--resume)
    echo "make_teacher: fine-tune $task at lr $lr" >&2
    "$MB" finetune --model "$exp/pretrained" --task "$task" --data "$glue" --out "$out" --threads "$threads" \
      --lr "$lr" "${ft_flags[@]}" "${resume[@]}" > "$out.json.tmp"
    mv "$out.json.tmp" "$out.json"
  done
done
/usr/bin/python3 "$(dirname "$0")/teacher_report.py" "$exp" $tasks
