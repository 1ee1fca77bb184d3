#!/usr/bin/env bash
# Installs dependencies, builds, and runs the main job on a default model: a mini-shaped BERT made
# by `minibridge init` (random weights, so the labels mean nothing yet: `finetune` trains them),
# then classifies and embeds a few sentences. Pass MODEL=DIR to use your own model directory.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
mb=build/minibridge
model="${MODEL:-build/demo-model}"
if [[ ! -f "$model/config.json" ]]; then
  "$mb" init --config mini --out "$model" --seed 0
fi
"$mb" info --model "$model" | head -n 12
sentences=$'the movie was a delight from start to finish.\nI would not recommend this restaurant.\nA man is playing a guitar.\tSomeone plays an instrument.'
echo "--- classify"
printf '%s\n' "$sentences" | "$mb" classify --model "$model"
echo "--- encode (mean pooling; first 6 of each embedding shown)"
printf '%s\n' "$sentences" | "$mb" encode --model "$model" --pooling mean |
  sed -E 's/^\{"embedding":\[(([^,]*,){6}).*/\1 .../'
