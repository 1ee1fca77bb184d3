#!/usr/bin/env bash
# What can be known here about the aarch64 binary on each shipped shape without Arm hardware:
# parameters, FLOPs per 128-token sequence, model bytes, the binary's size, and the peak RSS of one
# `classify` (one sentence, 12 tokens) in f32, --bf16 and --int8 under qemu-aarch64-static (its
# default CPU has the dot product), read by /usr/bin/time (qemu's own resident set included), and
# the same natively with the x86-64 static binary (build/static_build/minibridge, which
# tests/static_build.sh builds; NATIVE=PATH for another), which runs the same code: qemu-user does
# not carry out madvise, so the f32 file's pages stay resident under it after packing. Speed under emulation means nothing and is not measured.
# Usage: bench/arm_footprint.sh [AARCH64_BINARY] [SHAPE|MODEL_DIR...]   (defaults:
#        build-aarch64/minibridge; tiny mini small medium base). A shape's model is made with
#        `minibridge init` in a scratch folder; a model directory (a compressed model, say) is used
#        as it is and named by its folder.
set -euo pipefail
cd "$(dirname "$0")/.."
arm=${1:-build-aarch64/minibridge}
shift || true
shapes=("$@")
((${#shapes[@]})) || shapes=(tiny mini small medium base)
host=build/minibridge
native=${NATIVE:-build/static_build/minibridge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "aarch64 binary: $arm, $(stat -c %s "$arm" | awk '{printf "%.1f MB", $1 / 1e6}') (static); $(git rev-parse --short HEAD)"
echo
echo "| model | parameters (M) | GFLOP per 128-token sequence | model MB (F32) | peak RSS MB under qemu-aarch64: f32 / bf16 / int8 | peak RSS MB native x86-64: f32 / bf16 / int8 |"
echo "|---|---:|---:|---:|---|---|"
# Peak RSS in MB of one classify of $model in f32, --bf16 and --int8 by the command given: "a / b / c".
peak_rss() {
  local out=() kb
  for flag in "" --bf16 --int8; do
    kb=$(echo "The quick brown fox jumps over the lazy dog." |
         /usr/bin/time -f %M "$@" classify --model "$model" --threads 2 $flag 2>&1 >/dev/null | tail -n1)
    out+=("$(awk -v k="$kb" 'BEGIN {printf "%.0f", k / 1024}')")
  done
  echo "${out[0]} / ${out[1]} / ${out[2]}"
}
for s in "${shapes[@]}"; do
  if [[ -d "$s" ]]; then
    model=$s
    s=$(basename "$s")
  else
    model=$work/$s
    "$host" init --config "$s" --out "$model" --seed 0 >/dev/null 2>&1
  fi
  info=$("$host" info --json --seq-len 128 --model "$model")
  params=$(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(f\"{j['params']['total'] / 1e6:.1f}\")" "$info")
  gflop=$(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(f\"{j['flops']['total'] / 1e9:.2f}\")" "$info")
  mb=$(stat -c %s "$model/model.safetensors" | awk '{printf "%.0f", $1 / 1e6}')
  emulated=$(peak_rss qemu-aarch64-static "$arm")
  natively=$([[ -x "$native" ]] && peak_rss "$native" || echo "—")
  echo "| $s | $params | $gflop | $mb | $emulated | $natively |"
  if [[ "$model" == "$work/"* ]]; then rm -rf "$model"; fi
done
