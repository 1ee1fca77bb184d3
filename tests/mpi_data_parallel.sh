#!/usr/bin/env bash
# Data-parallel training under mpirun (docs/TRAINING.md, "Several processes (MPI)"):
#  1. the same results at any number of ranks: finetune (20 steps, with a global batch of one
#     sequence at the epoch's end, so one rank gets none) and pretrain (20 steps) at -np 1, 2 and 3,
#     pretrain --objective electra, compress mbbert and compress peakd (every student) at -np 2,
#     against one process without mpirun: every logged loss within 1e-5 relative, the final weights within 1e-5 of the largest;
#  2. a rank killed with SIGKILL ends the job within seconds, not a hang: a non-zero exit, one line
#     from the surviving rank, the last checkpoint intact; --resume on one process then finishes
#     the run as the uninterrupted one does.
# Usage: mpi_data_parallel.sh MINIBRIDGE_BINARY SCRATCH_DIR   (MINIBRIDGE_DATA: the shared data)
set -euo pipefail
mb=$1 work=$2
data=${MINIBRIDGE_DATA:?MINIBRIDGE_DATA must name the shared data directory}
# As root (CI) Open MPI needs --allow-run-as-root; two cores need --oversubscribe for -np 3.
mpi=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader)
export OMP_WAIT_POLICY=PASSIVE MB_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work" && cd "$work"

fail() { echo "mpi_data_parallel: FAIL: $*" >&2; exit 1; }

# Final weights in two safetensors files (a checkpoint's "model.*" tensors, or a model's): the largest difference
# relative to the largest weight of each tensor must be within $3. Tensors below 0.01 throughout
# count as 0.01: the key biases, whose gradient is zero but for rounding (softmax ignores them),
# hold only rounding noise of 1e-8.
same_weights() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
import numpy as np
def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    checkpoint = any(k.startswith("model.") for k in header)
    return {k: np.frombuffer(blob[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32)
            for k, v in header.items()
            if k != "__metadata__" and v["dtype"] == "F32" and (k.startswith("model.") or not checkpoint)}
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert a.keys() == b.keys() and a, "different tensors"
worst = max(float(np.max(np.abs(a[k] - b[k]))) / max(float(np.max(np.abs(a[k]))), 0.01) for k in a)
print(f"  weights: largest relative difference {worst:.2e} (limit {tol:g})")
sys.exit(0 if worst <= tol else 1)
EOF
}

# Every training loss of the log of $2 within $3 relative of $1's, step by step (at least $4 steps).
same_losses() {
  /usr/bin/python3 - "$1/train_log.jsonl" "$2/train_log.jsonl" "$3" "${4:-20}" <<'EOF'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r and "step" in r}
a, b, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
assert a.keys() == b.keys() and len(a) >= int(sys.argv[4]), f"steps differ: {sorted(a)} / {sorted(b)}"
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
print(f"  losses: {len(a)} steps, largest relative difference {worst:.2e} (limit {tol:g})")
sys.exit(0 if worst <= tol else 1)
EOF
}

"$mb" init --config tiny --out tiny --vocab "$data/vocab/bert-base-uncased" >/dev/null
mkdir -p glue/SST-2 corpus
head -146 "$data/glue/SST-2/train.tsv" > glue/SST-2/train.tsv  # 145 examples: 9 batches of 16, then 1
head -41 "$data/glue/SST-2/dev.tsv" > glue/SST-2/dev.tsv
i=0
for f in $(find "$data/corpus/gutenberg" -name '*.txt' | sort | head -2); do head -c 150000 "$f" > corpus/part$i.txt; i=$((i + 1)); done

finetune=(finetune --model tiny --task SST-2 --data glue --batch-size 16 --log-steps 1)
# lr 1e-4, not pretrain's default 1e-3 for this width: at 1e-3 Adam turns the float reassociation
# of near-zero gradient entries into lr-sized steps (7.5e-5 of the largest weight after 20 steps at
# -np 2, losses still within 1e-7), which says nothing about how the batch is split.
pretrain=(pretrain --model tiny --corpus corpus --batch-size 8 --seq-len 64 --max-steps 20 --log-steps 1
          --eval-steps 10 --lr 1e-4 --no-progress)

echo "1. the same results at any number of ranks"
"$mb" "${finetune[@]}" --max-steps 20 --out ft-1 2>/dev/null >/dev/null
"$mb" "${pretrain[@]}" --out pt-1 2>/dev/null >/dev/null
for np in 1 2 3; do
  echo " -np $np"
  "${mpi[@]}" -np $np "$mb" "${finetune[@]}" --max-steps 20 --out ft-np$np 2>ft-np$np.err >ft-np$np.out ||
    { cat ft-np$np.err; fail "finetune -np $np"; }
  [[ $(wc -l < ft-np$np.out) == 1 ]] || fail "finetune -np $np: rank 0 alone prints the result"
  same_losses ft-1 ft-np$np 1e-5 || fail "finetune -np $np: losses differ"
  same_weights {ft-1,ft-np$np}/checkpoint/tensors.safetensors 1e-5 || fail "finetune -np $np: weights differ"
  "${mpi[@]}" -np $np "$mb" "${pretrain[@]}" --out pt-np$np 2>pt-np$np.err >/dev/null ||
    { cat pt-np$np.err; fail "pretrain -np $np"; }
  same_losses pt-1 pt-np$np 1e-5 || fail "pretrain -np $np: losses differ"
  same_weights {pt-1,pt-np$np}/checkpoint/tensors.safetensors 1e-5 || fail "pretrain -np $np: weights differ"
done
# ELECTRA: the generator's proposals use counter-based draws, so they do not depend on the split.
echo " -np 2: pretrain --objective electra"
"$mb" "${pretrain[@]}" --objective electra --out el-1 2>/dev/null >/dev/null
"${mpi[@]}" -np 2 "$mb" "${pretrain[@]}" --objective electra --out el-np2 2>el-np2.err >/dev/null ||
  { cat el-np2.err; fail "pretrain --objective electra -np 2"; }
same_losses el-1 el-np2 1e-5 || fail "pretrain --objective electra -np 2: losses differ"
same_weights {el-1,el-np2}/checkpoint/tensors.safetensors 1e-5 || fail "pretrain --objective electra -np 2: weights differ"
# Distillation from the 20-step fine-tuned model: MB-BERT (1 bridge) and Pea-KD (3 students), 10
# updates each; Pea-KD's teacher outputs and PTP evaluation are split over the ranks too.
mbbert=(compress mbbert --teacher ft-1 --task SST-2 --data glue --steps 1 --rank 16 --batch-size 16 --log-steps 1
        --latency-examples 0 --no-progress)
peakd=(compress peakd --teacher ft-1 --task SST-2 --data glue --student-layers 1 --epochs 1 --ptp-epochs 1
       --batch-size 16 --log-steps 1 --no-progress)
"$mb" "${mbbert[@]}" --out mb-1 2>/dev/null >/dev/null
"$mb" "${peakd[@]}" --out pk-1 2>/dev/null >/dev/null
echo " -np 2: compress mbbert, compress peakd"
"${mpi[@]}" -np 2 "$mb" "${mbbert[@]}" --out mb-np2 2>mb-np2.err >mb-np2.out || { cat mb-np2.err; fail "mbbert -np 2"; }
[[ $(wc -l < mb-np2.out) == 2 ]] || fail "mbbert -np 2: rank 0 alone prints the results (2 lines)"
same_losses mb-1/step_1 mb-np2/step_1 1e-5 10 || fail "mbbert -np 2: losses differ"
same_weights {mb-1,mb-np2}/step_1/model.safetensors 1e-5 || fail "mbbert -np 2: the student differs"
"${mpi[@]}" -np 2 "$mb" "${peakd[@]}" --out pk-np2 2>pk-np2.err >pk-np2.out || { cat pk-np2.err; fail "peakd -np 2"; }
[[ $(wc -l < pk-np2.out) == 1 ]] || fail "peakd -np 2: rank 0 alone prints the results"
for student in kd sps sps_ptp/ptp sps_ptp; do
  same_losses pk-1/$student pk-np2/$student 1e-5 10 || fail "peakd -np 2: $student's losses differ"
done
for student in kd sps sps_ptp; do
  same_weights {pk-1,pk-np2}/$student/model.safetensors 1e-5 || fail "peakd -np 2: $student differs"
done

echo "2. a rank killed: the job ends with a clear message, the checkpoint stands, --resume finishes"
long=("${finetune[@]}" --max-steps 150 --save-steps 10)
"$mb" "${long[@]}" --out ft-whole 2>/dev/null >/dev/null
"${mpi[@]}" -np 2 "$mb" "${long[@]}" --out ft-killed 2>killed.err >/dev/null &
launcher=$!
for _ in $(seq 600); do [[ -f ft-killed/checkpoint/state.json ]] && break; sleep 0.1; done
[[ -f ft-killed/checkpoint/state.json ]] || fail "no checkpoint after 60 s"
victim=""
for pid in $(pgrep -f "ft-killed" || true); do
  [[ $pid != "$launcher" ]] && tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$pid
done
[[ -n $victim ]] || fail "rank 1 not found"
kill -9 "$victim"
killed_at=$(date +%s)
status=0
wait "$launcher" || status=$?
took=$(($(date +%s) - killed_at))
echo "  mpirun exit status $status, $took s after the kill"
((status != 0)) || fail "the job exited 0 after a rank was killed"
((took <= 30)) || fail "the job took $took s to end"
grep -q "rank 0 of 2: stopped by the launcher" killed.err || { cat killed.err; fail "no message from rank 0"; }
ls -d ft-killed/checkpoint.staging.* ft-killed/*.tmp.* 2>/dev/null && fail "a half-written checkpoint is visible"
"$mb" "${long[@]}" --out ft-killed --resume 2>resume.err >/dev/null || { cat resume.err; fail "--resume"; }
grep -q "resuming ft-killed at step" resume.err || fail "--resume did not resume"
same_weights {ft-whole,ft-killed}/checkpoint/tensors.safetensors 1e-4 || fail "the resumed run ends elsewhere"
echo "mpi_data_parallel: all passed"
