#!/usr/bin/env bash
# Turns a pretraining wall-time budget into a step count: the median steps per second of three
# 30-step probes of the same command (scripts/pretrain_probe.sh; three because this machine's speed
# drifts by tens of percent between phases) times the minutes. A step count rather than a time
# limit keeps the run's learning-rate schedule fixed from its start and lets a killed run resume to
# the same end.
#   scripts/pretrain_steps.sh MINUTES PROBE_DIR MINIBRIDGE PRETRAIN_ARGS...
#   scripts/pretrain_steps.sh --rates RATES_FILE MINUTES   (probes already taken, one rate a line)
# PRETRAIN_ARGS: the run's arguments but --out and --max-steps. Prints the step count on stdout.
set -euo pipefail

steps_from_rates() {  # MINUTES RATES_FILE
  /usr/bin/python3 -c 'import statistics, sys
print(max(1, int(float(sys.argv[1]) * 60 * statistics.median(map(float, open(sys.argv[2]))))))' "$1" "$2"
}

if [ "${1:-}" = --rates ]; then
  steps_from_rates "$3" "$2"
  exit
fi
minutes=$1 probe=$2 mb=$3
shift 3
rates=$(mktemp)
trap 'rm -f "$rates"' EXIT
for _ in 1 2 3; do
  bash "$(dirname "$0")/pretrain_probe.sh" "$probe" "$mb" "$@" >> "$rates"
done
steps_from_rates "$minutes" "$rates"
