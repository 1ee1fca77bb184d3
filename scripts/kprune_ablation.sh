#!/bin/bash
# K-prune with and without weight tuning (KPWT) at several FLOPs constraints (docs/KPRUNE.md,
# "Ablation"): prunes EXP_DIR/teacher-<TASK> twice per constraint and appends both results.json
# to EXP_DIR/ablation.jsonl.
#   scripts/kprune_ablation.sh BIN EXP_DIR NUM_TOKENS TASK [CONSTRAINT...]
set -euo pipefail
BIN=$1; EXP=$2; TOKENS=$3; TASK=$4; shift 4
CONSTRAINTS=${*:-0.4 0.5 0.6 0.7 0.8}
for c in $CONSTRAINTS; do
  for mode in kpwt none; do
    out="$EXP/prune-$TASK-$c-$mode"
    flag=""; [ "$mode" = none ] && flag="--no-weight-tuning"
    [ -f "$out/results.json" ] || "$BIN" compress kprune --teacher "$EXP/teacher-$TASK" --task "$TASK" --out "$out" \
      --constraint "$c" --num-tokens "$TOKENS" $flag > /dev/null 2> "$out.err"
    python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$out/results.json" >> "$EXP/ablation.jsonl"
  done
done
