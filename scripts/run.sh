#!/usr/bin/env bash
# Installs the Debian packages, builds, and runs the mission on a small default (scripts/demo.sh):
# a BERT-mini is fine-tuned on SST-2, K-pruned to half its FLOPs and stored in int8, and the three
# are compared in one table and a picture (build/demo/results.md, results.png). MODEL=DIR starts
# from your own BERT directory instead of a random initialisation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
scripts/demo.sh
