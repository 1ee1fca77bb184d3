#!/usr/bin/env bash
# Installs everything minibridge needs to build and test, from Debian packages (Debian 12).
# Usage: scripts/install-deps.sh [--test]    (--test adds the test oracles: PyTorch, Node + the
#                                             HF tokenizers binding from the npm registry; and what
#                                             the emulated checks need: qemu-user-static and the
#                                             aarch64 cross compiler with arm64 multiarch libraries)
set -euo pipefail
cd "$(dirname "$0")/.."

build_pkgs=(g++ cmake ninja-build pkg-config libeigen3-dev libopenblas-openmp-dev libdnnl-dev
            libbenchmark-dev doctest-dev nlohmann-json3-dev libutf8proc-dev libcli11-dev
            libgfortran-12-dev)  # libgfortran: the static OpenBLAS archive of -DMB_STATIC=ON needs it
test_pkgs=(python3-torch qemu-user-static)  # qemu: the static binary on emulated CPUs (tests/CMakeLists.txt)
want=("${build_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${test_pkgs[@]}")
  command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The aarch64 cross build the tests make (scripts/build-aarch64.sh installs the same by itself).
if [[ "${1:-}" == "--test" ]]; then
  cross=(g++-aarch64-linux-gnu libopenblas-openmp-dev:arm64 libutf8proc-dev:arm64 libgfortran-12-dev-arm64-cross)
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  missing=()
  for p in "${cross[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

if [[ "${1:-}" == "--test" && ! -d tests/reference/node_modules/@anush008/tokenizers ]]; then
  echo "install-deps: installing the HF tokenizers oracle (npm)"
  npm install --no-package-lock --no-audit --no-fund --prefix tests/reference >/dev/null
fi
