#!/usr/bin/env bash
# Builds the fully static CLI (-DMB_STATIC=ON) and runs it on a model: the edge-device binary.
# Usage: static_build.sh SOURCE_DIR BUILD_DIR MODEL_DIR
set -euo pipefail
src=$1 build=$2/static_build model=$3
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMB_STATIC=ON -DMB_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target minibridge_cli -j 2 >/dev/null 2>&1 || cmake --build "$build" --target minibridge_cli -j 1
file "$build/minibridge" | grep -q "statically linked"
echo "static binary: $(du -h "$build/minibridge" | cut -f1)"
for gemm in openblas eigen; do
  echo "hello world" | "$build/minibridge" classify --model "$model" --gemm "$gemm" | grep -q '"label"'
done
# Without MPI, copies started by a launcher refuse to run (each would train alone, all writing OUT).
if OMPI_COMM_WORLD_SIZE=2 "$build/minibridge" info --model "$model" >/dev/null 2>"$build/mpi.err"; then
  echo "static build: 2 launched copies without MPI were not refused"; exit 1
fi
grep -q "built without MPI" "$build/mpi.err"
echo "static build: OK"
