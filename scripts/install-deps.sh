#!/usr/bin/env bash
# Installs everything minibridge needs to build and test, from Debian packages (Debian 12).
# Usage: scripts/install-deps.sh [--test | --aarch64]
#   --aarch64  adds the aarch64 cross build's needs (scripts/build-aarch64.sh): the cross compiler,
#              the arm64 multiarch libraries and qemu-user-static to run what it builds
#   --test     adds those, the test oracles (PyTorch, Node + the HF tokenizers binding from npm) and
#              clang for the sanitized build and the fuzzers
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

build_pkgs=(g++ cmake ninja-build pkg-config libeigen3-dev libopenblas-openmp-dev libdnnl-dev
            libbenchmark-dev doctest-dev nlohmann-json3-dev libutf8proc-dev libcli11-dev
            libgfortran-12-dev   # libgfortran: the static OpenBLAS archive of -DMB_STATIC=ON needs it
            libopenmpi-dev openmpi-bin  # data-parallel training (mpirun); the build works without
            gnuplot-nox)         # scripts/demo.sh's picture
cross_pkgs=(g++-aarch64-linux-gnu libopenblas-openmp-dev:arm64 libutf8proc-dev:arm64 libgfortran-12-dev-arm64-cross
            qemu-user-static)  # qemu: the static binaries on emulated CPUs (tests/CMakeLists.txt)
want=("${build_pkgs[@]}")
if [[ $mode == --test || $mode == --aarch64 ]]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  want+=("${cross_pkgs[@]}")
fi
if [[ $mode == --test ]]; then
  want+=(python3-torch
         clang libclang-rt-dev libomp-dev)  # the sanitized build and libFuzzer (tests/sanitize_build.sh)
  command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ $mode == --test && ! -d tests/reference/node_modules/@anush008/tokenizers ]]; then
  echo "install-deps: installing the HF tokenizers oracle (npm)"
  npm install --no-package-lock --no-audit --no-fund --prefix tests/reference >/dev/null
fi
