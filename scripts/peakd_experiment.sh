#!/bin/bash
# Pea-KD experiment (docs/PEAKD.md): fine-tune a teacher per task from a pretrained model, then run
# `compress peakd` (plain KD, SPS, SPS + PTP students) on it, once per seed, then the tables.
#   [SEEDS="42 43 44"] [SST2_SUBSET=20000] scripts/peakd_experiment.sh BIN PRETRAINED_DIR GLUE_DIR EXP_DIR TASK...
# Writes EXP_DIR/teacher-<TASK>/ and EXP_DIR/peakd-<TASK>-s<SEED>/ (results.json), then
# `scripts/peakd_table.py --glue GLUE_DIR` on this call's runs to EXP_DIR/table.md, and prints it.
# SEEDS: the students' seeds (default 42). SST2_SUBSET=N: SST-2 trains on a fixed N-example sample
# of its train.tsv (shuf seeded with 42, written to EXP_DIR/glue/SST-2/), as the published table
# does with 20000. Tasks run side by side (one process per task, one thread each), each task's
# seeds one after another; passive OpenMP waits (shared machine). Extra flags through TEACHER_FLAGS
# and PEAKD_FLAGS (the published table: TEACHER_FLAGS="--epochs 3 --lr 1e-4" PEAKD_FLAGS="--lr 1e-4").
# Rerunning resumes: a finished teacher or Pea-KD run is not redone, a stopped teacher run resumes
# from its checkpoint, a stopped Pea-KD run keeps its finished students and trains the others.
# PYTHON: the interpreter for the table (default python3).
set -euo pipefail
BIN=$1; PRE=$2; GLUE=$3; EXP=$4; shift 4
SEEDS=${SEEDS:-42}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$EXP"
pids=()
for task in "$@"; do
  (
    data=$GLUE
    if [ "$task" = SST-2 ] && [ -n "${SST2_SUBSET:-}" ]; then
      data=$EXP/glue
      if [ ! -f "$data/SST-2/dev.tsv" ]; then
        mkdir -p "$data/SST-2"
        head -1 "$GLUE/SST-2/train.tsv" > "$data/SST-2/train.tsv.tmp"
        tail -n +2 "$GLUE/SST-2/train.tsv" | shuf --random-source=<(yes 42) -n "$SST2_SUBSET" >> "$data/SST-2/train.tsv.tmp"
        mv "$data/SST-2/train.tsv.tmp" "$data/SST-2/train.tsv"
        cp "$GLUE/SST-2/dev.tsv" "$data/SST-2/dev.tsv"
      fi
    fi
    if [ ! -f "$EXP/teacher-$task/results.json" ]; then  # not finished: start, or resume a stopped run
      resume=""; [ -d "$EXP/teacher-$task/checkpoint" ] && resume=--resume
      "$BIN" finetune --model "$PRE" --task "$task" --data "$data" --out "$EXP/teacher-$task" \
        --threads 1 $resume ${TEACHER_FLAGS:-} > "$EXP/teacher-$task.json" 2> "$EXP/teacher-$task.err" ||
        { echo "peakd_experiment: teacher-$task failed, see $EXP/teacher-$task.err" >&2; exit 1; }
    fi
    for seed in $SEEDS; do
      out=$EXP/peakd-$task-s$seed
      # Complete when results.json has every student its options name (results.json is written
      # from the start of a run, before any student is trained).
      python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
sys.exit(not set(r["options"]["students"]) <= set(r["students"]))' "$out/results.json" 2> /dev/null ||
        "$BIN" compress peakd --teacher "$EXP/teacher-$task" --task "$task" --data "$data" --out "$out" \
          --seed "$seed" --threads 1 --no-progress ${PEAKD_FLAGS:-} > "$out.json" 2> "$out.err" ||
        { echo "peakd_experiment: peakd-$task-s$seed failed, see $out.err" >&2; exit 1; }
    done
  ) &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || exit 1
results=()
for task in "$@"; do for seed in $SEEDS; do results+=("$EXP/peakd-$task-s$seed/results.json"); done; done
"${PYTHON:-python3}" "$(dirname "$0")/peakd_table.py" --glue "$GLUE" "${results[@]}" > "$EXP/table.md"
cat "$EXP/table.md"
