#!/usr/bin/env bash
# Data-parallel pretraining throughput (docs/TRAINING.md, "Several processes (MPI)"): tokens/s of
# `minibridge pretrain` for BERT-base and a 12 × 256 model at one process × 1 and × all threads and
# at mpirun -np 2 … × threads, with the gradient all-reduce's time and size per step from the
# run's log. Prints a Markdown table.
# Usage: bench/mpi_scaling.sh [WORK_DIR]   env: MB (the binary, default build/minibridge),
#   STEPS (default 8), SHAPES (default "base 12x256"), LAYOUTS (default "1x1 1x2 2x1"; RANKSxTHREADS)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mb=${MB:-$here/build/minibridge}
work=${1:-/tmp/mb_mpi_scaling}
data=${MINIBRIDGE_DATA:-$here/../shared/data}
steps=${STEPS:-8}
shapes=${SHAPES:-base 12x256}
layouts=${LAYOUTS:-1x1 1x2 2x1}
mkdir -p "$work" && cd "$work"
export OMP_WAIT_POLICY=PASSIVE

# A corpus of a few files of the shared one (the whole corpus is read at start).
if [[ ! -d corpus ]]; then
  mkdir -p corpus
  find "$data/corpus" -name '*.txt' | sort | head -8 | while read -r f; do cp "$f" corpus/; done
fi

echo "| model | ranks × threads | batch × seq | tokens/s | s/step | all-reduce s/step | wait s/step | gradient MB/step |"
echo "|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
  case $shape in
    base) config=base batch=8 ;;
    12x256) /usr/bin/python3 -c "
import json, sys
c = json.loads(open('$here/configs/bert-mini.json').read())
c.update(num_hidden_layers=12)
json.dump(c, open('config-12x256.json', 'w'))"
            config=config-12x256.json batch=32 ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
  [[ -d init-$shape ]] || "$mb" init --config "$config" --out "init-$shape" --vocab "$data/vocab/bert-base-uncased" >/dev/null 2>&1
  for layout in $layouts; do
    ranks=${layout%x*} threads=${layout#*x}
    out=run-$shape-$layout
    rm -rf "$out"
    args=(pretrain --model "init-$shape" --corpus corpus --out "$out" --max-steps "$steps" --batch-size "$batch"
          --seq-len 128 --log-steps 1 --eval-steps 0 --eval-sequences 8 --save-steps 0 --dropout --threads "$threads" --no-progress)
    if ((ranks == 1)); then
      "$mb" "${args[@]}" >/dev/null 2>"$out.err"
    else
      mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" "$mb" "${args[@]}" >/dev/null 2>"$out.err"
    fi
    /usr/bin/python3 - "$out/train_log.jsonl" "$shape" "$ranks" "$threads" "$batch" <<'EOF'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "loss" in l and "step" in l][1:]  # the first step warms up
done = next(l for l in lines if l.get("event") == "done")
# Medians over the steps after the first: tokens/s of the step (training only, no evaluation).
tokens = statistics.median(l["tokens_per_s"] for l in steps)
step_s = statistics.median(l["elapsed_s"] - p["elapsed_s"] for p, l in zip(steps, steps[1:]))
name = {"base": "BERT-base", "12x256": "12 × 256"}[sys.argv[2]]
row = f"| {name} | {sys.argv[3]} × {sys.argv[4]} | {sys.argv[5]} × 128 | {tokens:,.0f} | {step_s:.2f} | "
if "allreduce_s" in steps[0]:
    ar = statistics.median(l["allreduce_s"] for l in steps)
    wait = statistics.median(l["allreduce_wait_s"] for l in steps)
    row += f"{ar:.3f} | {wait:.3f} | {done['gradient_bytes_per_step'] / 1e6:.0f} |"
else:
    row += "— | — | — |"
print(row)
EOF
  done
done
