#!/usr/bin/env bash
# tests/test_threads.cpp under ThreadSanitizer (docs/RELIABILITY.md, "Using the library from
# several threads"): builds the library and that test with clang -fsanitize=thread into BUILD_DIR
# and runs it. LLVM's OpenMP runtime (libomp) is linked and loads its Archer tool by itself, which
# tells TSan about OpenMP's synchronisation (libgomp cannot). ignore_noninstrumented_modules=1:
# without it TSan reports accesses inside libomp's own allocator and locks, which it cannot see
# synchronised. oneDNN and OpenBLAS are not instrumented, so races inside them are out of sight.
# Usage: tsan_threads.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
  -DMB_SANITIZE=thread -DMB_BUILD_BENCH=OFF -DMB_WITH_MPI=OFF >/dev/null
cmake --build "$build" -j 2 --target test_threads >/dev/null 2>&1 || cmake --build "$build" -j 1 --target test_threads
MB_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1" \
  "$build/tests/test_threads"
