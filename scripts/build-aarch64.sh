#!/usr/bin/env bash
# Cross-compiles the static minibridge for 64-bit Arm Linux (aarch64) on Debian 12 x86-64, with
# Debian's g++-aarch64-linux-gnu and arm64 multiarch packages (OpenBLAS, utf8proc). The binary runs on
# any ARMv8-A CPU with Linux (Raspberry Pi 4/5, Graviton, Jetson, phones); here under
# qemu-aarch64-static. Usage: scripts/build-aarch64.sh [BUILD_DIR [TARGET...]]
#   BUILD_DIR defaults to build-aarch64; TARGETs (e.g. test_attention) are built besides minibridge.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-aarch64}
extra=("${@:2}")
scripts/install-deps.sh --aarch64
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  -DMB_STATIC=ON -DMB_BUILD_TESTS=$( ((${#extra[@]})) && echo ON || echo OFF) -DMB_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target minibridge_cli "${extra[@]}" -j "$(nproc)"
file "$build/minibridge" | grep -q "ARM aarch64.*statically linked"
echo "aarch64 static binary: $build/minibridge ($(du -h "$build/minibridge" | cut -f1))"
