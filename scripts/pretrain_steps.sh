#!/usr/bin/env bash
# Turns a pretraining wall-time budget into a step count. A 30-step probe of the same pretraining
# command (evaluation and saving off) measures this machine's steps per second; the budget is that
# rate times the minutes. A step count rather than a time limit keeps the run's learning-rate
# schedule fixed from its start and lets a killed run resume to the same end.
#   scripts/pretrain_steps.sh MINUTES PROBE_DIR MINIBRIDGE PRETRAIN_ARGS...
# PRETRAIN_ARGS: the run's arguments but --out and --max-steps (an --eval-steps or --save-steps
# among them is dropped for the probe). Prints the step count on stdout; PROBE_DIR is removed.
set -euo pipefail
minutes=$1 probe=$2 mb=$3
shift 3
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --eval-steps|--save-steps) shift 2 ;;
    --eval-steps=*|--save-steps=*) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
rm -rf "$probe"
"$mb" pretrain "${args[@]}" --out "$probe" --max-steps 30 --eval-steps 0 --save-steps 0 --no-progress > /dev/null
/usr/bin/python3 - "$probe/train_log.jsonl" "$minutes" <<'PY'
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
rm -rf "$probe"
