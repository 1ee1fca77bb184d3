#!/usr/bin/env bash
# Dev metric of fine-tuned models as f32 files and as quantized files (`minibridge quantize`): int8,
# int8 with int8 word embeddings, and bf16. Prints a markdown table (docs/QUANTIZE.md has it).
#   scripts/quantize_accuracy.sh TASK MODEL_DIR [MODEL_DIR...]     (env: MB=build/minibridge, WORK=tmp dir)
# Each MODEL_DIR is a model fine-tuned on TASK (a teacher, or a K-pruned / MB-BERT student of it).
set -euo pipefail
task=$1
shift
mb=${MB:-build/minibridge}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
metric() {  # the task's main metric from `eval`'s JSON line
  "$mb" eval --model "$1" --task "$task" | python3 -c '
import json, sys
j = json.loads(sys.stdin.readlines()[-1])
key = next(k for k in ("mcc", "accuracy", "f1", "pearson") if k in j)
print(f"{key} {j[key]:.4f}")'
}
echo "commit $(git -C "$(dirname "$0")" rev-parse --short HEAD); $task dev; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| model | metric | f32 | int8 | int8, int8 embeddings | bf16 | file MB: f32 / int8 / int8 + int8 embeddings / bf16 |"
echo "|---|---|---:|---:|---:|---:|---:|"
for m in "$@"; do
  name=$(basename "$m")
  f32_metric=$(metric "$m")
  row="| $name | ${f32_metric% *} | ${f32_metric#* }"
  for q in "int8:--dtype int8" "int8e:--dtype int8 --embeddings int8" "bf16:--dtype bf16"; do
    out="$work/$name-${q%%:*}"
    rm -rf "$out"
    # shellcheck disable=SC2086
    "$mb" quantize --model "$m" --out "$out" ${q#*:} 2>/dev/null
    row+=" | $(metric "$out" | cut -d' ' -f2)"
  done
  sizes=""
  for f in "$m" "$work/$name-int8" "$work/$name-int8e" "$work/$name-bf16"; do
    sizes+="${sizes:+ / }$(stat -c %s "$f/model.safetensors" | awk '{printf "%.0f", $1 / 1e6}')"
  done
  row+=" | $sizes |"
  echo "$row"
done
