#!/bin/bash
# Pea-KD experiment (docs/PEAKD.md): fine-tune a teacher per task from a pretrained model, then run
# `compress peakd` (plain KD, SPS, SPS + PTP students) on it.
#   scripts/peakd_experiment.sh BIN PRETRAINED_DIR GLUE_DIR EXP_DIR TASK...
# Writes EXP_DIR/teacher-<TASK>/ and EXP_DIR/peakd-<TASK>/ (results.json). Tasks run side by side,
# one thread each; passive OpenMP waits (shared machine). Extra flags through TEACHER_FLAGS and
# PEAKD_FLAGS.
set -euo pipefail
BIN=$1; PRE=$2; GLUE=$3; EXP=$4; shift 4
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$EXP"
for task in "$@"; do
  (
    [ -f "$EXP/teacher-$task/model.safetensors" ] ||
      "$BIN" finetune --model "$PRE" --task "$task" --data "$GLUE" --out "$EXP/teacher-$task" \
        --threads 1 ${TEACHER_FLAGS:-} > "$EXP/teacher-$task.json" 2> "$EXP/teacher-$task.err"
    "$BIN" compress peakd --teacher "$EXP/teacher-$task" --task "$task" --data "$GLUE" \
      --out "$EXP/peakd-$task" --threads 1 --no-progress ${PEAKD_FLAGS:-} > "$EXP/peakd-$task.json" 2> "$EXP/peakd-$task.err"
  ) &
done
wait
