#!/bin/bash
# Latency of unpruned and pruned models (docs/KPRUNE.md), interleaved over several rounds so that a
# busy moment of a shared machine hits every model alike:
#   scripts/kprune_bench.sh BIN EXP_DIR ROUNDS [MODEL_DIR...] >> EXP_DIR/bench.jsonl
# Each round runs `BIN bench --model M $BENCH_FLAGS` once per model, in the order given, and prints
# its JSON line. Models: the MODEL_DIRs, or by default EXP_DIR/teacher-* and EXP_DIR/prune-*-t*
# (a K-prune sweep, scripts/kprune_experiment.sh). BENCH_FLAGS: default
# "--batch 8 --seq 128 --threads 1 --iters 10".
#   scripts/kprune_bench.sh --summary BENCH.jsonl
# prints a markdown table of such lines, one row per model in order of first appearance: rounds,
# best min_ms, the median of the rounds' median_ms, the largest peak_rss_mb, and the speed-up
# against the first model (ratio of the medians of medians).
set -euo pipefail
if [ "${1:-}" = --summary ]; then
  exec "${PYTHON:-python3}" - "$2" <<'PY'
import json, statistics, sys
runs = {}
for l in open(sys.argv[1]):
    if l.strip():
        b = json.loads(l)
        runs.setdefault(b["model"], []).append(b)
print("| model | rounds | min ms | median ms | peak RSS MiB | speed-up (median) |")
print("|---|---:|---:|---:|---:|---:|")
base = None
for m, v in runs.items():
    med = statistics.median(b["median_ms"] for b in v)
    base = base or med
    print(f"| {m} | {len(v)} | {min(b['min_ms'] for b in v):.1f} | {med:.1f} | "
          f"{max(b['peak_rss_mb'] for b in v):.0f} | {base / med:.2f}x |")
PY
fi
BIN=$1; EXP=$2; ROUNDS=$3; shift 3
if [ $# -gt 0 ]; then models=("$@"); else models=("$EXP"/teacher-* "$EXP"/prune-*-t*); fi
read -r -a flags <<< "${BENCH_FLAGS:---batch 8 --seq 128 --threads 1 --iters 10}"
export OMP_WAIT_POLICY=PASSIVE
for r in $(seq "$ROUNDS"); do
  for m in "${models[@]}"; do
    [ -f "$m/config.json" ] || continue
    "$BIN" bench --model "$m" "${flags[@]}" | tail -1
  done
done
