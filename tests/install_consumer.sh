#!/usr/bin/env bash
# Installs the built project into a scratch prefix, builds examples/library against it with
# find_package(minibridge), and runs both programs on a model directory.
# Usage: install_consumer.sh SOURCE_DIR BUILD_DIR MODEL_DIR
set -euo pipefail
src=$1 build=$2 model=$3
prefix=$build/install_test/prefix
rm -rf "$build/install_test"
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$src/examples/library" -B "$build/install_test/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build/install_test/build" -j 2 >/dev/null
out=$("$build/install_test/build/embed" "$model" "a first sentence" "a second one")
echo "$out"
grep -q "cosine(0, 1)" <<<"$out"
printf 'great movie\nA pair?\tYes.\n' | "$build/install_test/build/classify" "$model" | tee /dev/stderr | wc -l | grep -qx 2
test -x "$prefix/bin/minibridge"
test -f "$prefix/share/minibridge/configs/bert-base.json"
echo "install + find_package consumer: OK"
