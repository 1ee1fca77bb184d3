#!/usr/bin/env bash
# Installs dependencies (Debian packages + test oracles), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh
cd build
ctest --output-on-failure -j 2 "$@"

# The whole suite again at each lower CPU level this machine has (engine/cpu.h), forced with MB_CPU:
# the kernels a CPU without AVX-512 (or AVX2) runs, natively. The build and emulation checks ran above.
best=$(./minibridge --version | sed -n 's/^cpu:.*kernels \([a-z0-9]*\) .*/\1/p')
for level in avx2 baseline; do
  [[ $level == "$best" ]] && continue
  MB_CPU=$level ./minibridge --version >/dev/null 2>&1 || continue
  echo "== MB_CPU=$level"
  MB_CPU=$level ctest --output-on-failure -j 2 \
    -E "^(fixture_.*|static_build|aarch64_build|install_consumer|kernel_objects_self_contained|emulated_.*|sanitize_build|sanitized_tests|fuzz_smoke|tsan_threads|mpi_data_parallel)$" "$@"
done
