#!/bin/bash
# MB-BERT experiment (docs/MBBERT.md): the four runs of the paper's comparison on one fine-tuned
# teacher (progressive MB-BERT, no KD, all bridges at once, DistilBERT-style baseline), then the
# table.
#   [TASK=SST-2] [STEPS=half the teacher's layers] [RANK=85] [MAX_TRAIN=5000] [MB_NUM_THREADS=1] \
#     scripts/mbbert_experiment.sh BIN TEACHER_DIR GLUE_DIR OUT_DIR
# Runs `compress mbbert --ablation A` for A = none, no-kd, one-shot, distil-baseline, one after
# another, into OUT_DIR/<A>/ (stdout in OUT_DIR/<A>.json, stderr in OUT_DIR/<A>.err), with
# --steps STEPS --rank RANK --epochs-per-step 1 --lr 1e-4 --batch-size 32
# --max-train-examples MAX_TRAIN --latency-examples 0 --threads MB_NUM_THREADS (the published
# table's options); extra flags through MBBERT_FLAGS. Then writes the output of
# `scripts/mbbert_table.py` on the four run directories to OUT_DIR/table.md and prints it.
# Rerunning resumes: complete steps are not redone (other options into the same OUT_DIR/<A> are
# refused).
# Passive OpenMP waits (shared machine). PYTHON: the interpreter for the table (default python3).
set -euo pipefail
BIN=$1; TEACHER=$2; GLUE=$3; OUT=$4
TASK=${TASK:-SST-2}
THREADS=${MB_NUM_THREADS:-1}
# Every even-numbered block by default: 6 steps for a 12-layer teacher, 2 for a 4-layer one.
STEPS=${STEPS:-$("${PYTHON:-python3}" -c 'import json, sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"] // 2)' \
  "$TEACHER/config.json")}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
runs=()
for ab in none no-kd one-shot distil-baseline; do
  echo "mbbert_experiment: $TASK, ablation $ab -> $OUT/$ab" >&2
  "$BIN" compress mbbert --teacher "$TEACHER" --task "$TASK" --data "$GLUE" --out "$OUT/$ab" \
    --steps "$STEPS" --rank "${RANK:-85}" --epochs-per-step 1 --lr 1e-4 --batch-size 32 \
    --max-train-examples "${MAX_TRAIN:-5000}" --latency-examples 0 --threads "$THREADS" --no-progress \
    --ablation "$ab" ${MBBERT_FLAGS:-} > "$OUT/$ab.json" 2> "$OUT/$ab.err" ||
    { echo "mbbert_experiment: $ab failed, see $OUT/$ab.err:" >&2; tail -5 "$OUT/$ab.err" >&2; exit 1; }
  runs+=("$OUT/$ab")
done
"${PYTHON:-python3}" "$(dirname "$0")/mbbert_table.py" "${runs[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
