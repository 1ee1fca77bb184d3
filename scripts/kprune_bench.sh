#!/bin/bash
# Latency of the unpruned and pruned models of a K-prune sweep, interleaved over several rounds so
# that a busy moment of a shared machine hits every model alike:
#   scripts/kprune_bench.sh BIN EXP_DIR ROUNDS >> EXP_DIR/bench.jsonl
set -euo pipefail
BIN=$1; EXP=$2; ROUNDS=$3
export OMP_WAIT_POLICY=PASSIVE
for r in $(seq "$ROUNDS"); do
  for m in "$EXP"/teacher-* "$EXP"/prune-*-t*; do
    [ -f "$m/config.json" ] || continue
    "$BIN" bench --model "$m" --batch 8 --seq 128 --threads 1 --iters 10 | tail -1
  done
done
