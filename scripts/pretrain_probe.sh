#!/usr/bin/env bash
# One short probe of a pretraining command: 30 steps with evaluation and saving off, printing this
# machine's steps per second for it (the log's tokens/s over the batch's tokens). Used by
# scripts/pretrain_steps.sh and scripts/pretrain_compare.sh, which take the median of several.
#   scripts/pretrain_probe.sh PROBE_DIR MINIBRIDGE PRETRAIN_ARGS...
# PRETRAIN_ARGS: the run's arguments but --out and --max-steps (an --eval-steps, --save-steps or
# --no-progress among them is dropped). PROBE_DIR is removed afterwards.
set -euo pipefail
probe=$1 mb=$2
shift 2
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --eval-steps|--save-steps) shift 2 ;;
    --eval-steps=*|--save-steps=*|--no-progress) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
rm -rf "$probe"
"$mb" pretrain "${args[@]}" --out "$probe" --max-steps 30 --eval-steps 0 --save-steps 0 --no-progress > /dev/null
/usr/bin/python3 - "$probe/train_log.jsonl" <<'PY'
import json, sys
start = done = None
for line in open(sys.argv[1]):
    j = json.loads(line)
    if j.get("event") == "start": start = j
    if j.get("event") == "done": done = j
o = start["options"]
print(f'{done["tokens_per_s"] / (o["batch_size"] * o["seq_len"]):.6g}')
PY
rm -rf "$probe"
