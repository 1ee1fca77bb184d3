#!/bin/bash
# K-prune experiment (docs/KPRUNE.md): prune fine-tuned teachers at several FLOPs constraints and
# time the pruned models against the unpruned one.
#   scripts/kprune_experiment.sh BIN EXP_DIR NUM_TOKENS TASK...
# expects EXP_DIR/teacher-<TASK>/ (made with `minibridge finetune`); writes EXP_DIR/prune-<TASK>-<c>/,
# EXP_DIR/bench-*.json and EXP_DIR/summary.jsonl. One thread, passive OpenMP waits (shared machine).
set -euo pipefail
BIN=$1; EXP=$2; TOKENS=$3; shift 3
export OMP_WAIT_POLICY=PASSIVE
for task in "$@"; do
  "$BIN" bench --model "$EXP/teacher-$task" --batch 8 --seq 128 --threads 1 > "$EXP/bench-$task-dense.json"
  for c in 0.4 0.5 0.6 0.7 0.8; do
    out="$EXP/prune-$task-$c-t$TOKENS"
    "$BIN" compress kprune --teacher "$EXP/teacher-$task" --task "$task" --out "$out" --constraint $c \
      --num-tokens "$TOKENS" --threads 1 > "$out.json" 2> "$out.err"
    "$BIN" bench --model "$out" --batch 8 --seq 128 --threads 1 > "$EXP/bench-$task-$c-t$TOKENS.json"
    python3 - "$out/results.json" "$EXP/bench-$task-dense.json" "$EXP/bench-$task-$c-t$TOKENS.json" >> "$EXP/summary.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
dense = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
pruned = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
r["bench_dense"] = dense
r["bench_pruned"] = pruned
print(json.dumps(r))
PY
  done
done
