#!/usr/bin/env bash
# Builds the library, the CLI, the tests and the libFuzzer targets with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer (-DMB_SANITIZE=address,undefined -DMB_FUZZ=ON).
# Usage: sanitize_build.sh SOURCE_DIR BUILD_DIR
# -O1 -g: fast enough for the tests, with line numbers in the reports. No MPI: Open MPI's own
# allocations would be LeakSanitizer findings, and the data-parallel test runs in the release build.
set -euo pipefail
src=$1 build=$2
CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
  -DMB_SANITIZE=address,undefined -DMB_FUZZ=ON -DMB_BUILD_BENCH=OFF -DMB_WITH_MPI=OFF >/dev/null
cmake --build "$build" -j 2 >/dev/null 2>&1 || cmake --build "$build" -j 1
echo "sanitized build: OK"
