#!/usr/bin/env bash
# Installs dependencies (Debian packages + test oracles), builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh
cd build
ctest --output-on-failure -j 2 "$@"
