#!/bin/bash
# minibridge's training step beside PyTorch's, both at once on one thread each, so that both see the
# same phase of a machine whose speed swings (compare.py alternates the engines instead). Each is
# pinned to a core, and the cores swap every round, so that a slower core slows both alike:
#   bench/train_side_by_side.sh [ROUNDS]      (default 3; bf16 against CPU autocast, then f32)
# Runs on the BERT-base model and batch-8 inputs that `compare.py --train-shapes base` wrote under
# build/bench_compare. Prints one line a round and the median ratio minibridge / PyTorch.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$ROOT/build/bench_compare}
MB=${MB:-$ROOT/build/minibridge}
ROUNDS=${1:-3}
MODEL=$WORK/base INPUTS=$WORK/io/base_train_8_1.json
for f in "$MODEL/config.json" "$INPUTS" "$MB"; do
  [ -e "$f" ] || { echo "train_side_by_side.sh: $f is missing (run bench/compare.py --train-shapes base first)" >&2; exit 1; }
done
export OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
median_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median_ms"])' "$1"; }
for prec in bf16 f32; do
  ratios=()
  for r in $(seq "$ROUNDS"); do
    flag=()
    [ "$prec" = bf16 ] && flag=(--bf16)
    a=$((r % 2)) b=$(((r + 1) % 2))
    taskset -c "$a" "$MB" bench --model "$MODEL" --inputs "$INPUTS" --threads 1 --warmup 1 --iters 5 --train "${flag[@]}" > "$OUT/mb.json" &
    mb_pid=$!
    taskset -c "$b" /usr/bin/python3 "$ROOT/bench/compare.py" torch-worker --model "$MODEL" --inputs "$INPUTS" --threads 1 --mode train \
      --warmup 1 --iters 5 --seed 0 --precision "$prec" > "$OUT/pt.json" &
    pt_pid=$!
    wait "$mb_pid"
    wait "$pt_pid"
    mb=$(median_of "$OUT/mb.json") pt=$(median_of "$OUT/pt.json")
    ratio=$(python3 -c "print(f'{$mb / $pt:.2f}')")
    ratios+=("$ratio")
    printf '%s round %d: minibridge %.0f ms, PyTorch %.0f ms, ratio %s\n' "$prec" "$r" "$mb" "$pt" "$ratio"
  done
  printf '%s: median ratio %s\n' "$prec" "$(printf '%s\n' "${ratios[@]}" | python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.stdin):.2f}")')"
done
