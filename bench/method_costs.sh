#!/usr/bin/env bash
# What each compression method costs at BERT-base shape on this machine: K-prune at N sample
# tokens, one MB-BERT progressive step and one Pea-KD student (SPS + PTP) per 1,000 training
# examples. The teacher has random weights: the cost does not depend on what the weights know.
# One JSON line per run on stdout: wall seconds, the method's own seconds, peak RSS.
#   bench/method_costs.sh [EXP_DIR]     (env: MB=build/minibridge, THREADS=2, TOKENS=10000,
#                                        EXAMPLES=1000, TASK=SST-2, RANK=256 (MB-BERT),
#                                        WHAT="kprune mbbert peakd", FLAGS: added to every
#                                        method's command, e.g. FLAGS=--bf16)
# A/B of two builds: run it once per binary (MB=...) into different EXP_DIRs, in turn.
set -euo pipefail
exp=${1:-build/exp/method-costs}
mb=${MB:-build/minibridge}
threads=${THREADS:-2}
tokens=${TOKENS:-10000}
examples=${EXAMPLES:-1000}
task=${TASK:-SST-2}
rank=${RANK:-256}
what=${WHAT:-kprune mbbert peakd}
read -r -a flags <<< "${FLAGS:-}"
mkdir -p "$exp"
teacher=$exp/base-rand
[ -f "$teacher/model.safetensors" ] || "$mb" init --config base --out "$teacher" --num-labels 2 --seed 3 >&2

# timed NAME OUT_DIR COMMAND...: runs it under /usr/bin/time and prints the JSON line.
timed() {
  local name=$1 out=$2
  shift 2
  rm -rf "$out"
  /usr/bin/time -f '%e %M' -o "$exp/$name.time" "$@" > "$exp/$name.stdout" 2> "$exp/$name.stderr" ||
    { tail -3 "$exp/$name.stderr" >&2; exit 1; }
  python3 - "$name" "$out" "$exp/$name.time" "$tokens" "$examples" "$threads" "$(basename "$mb")" "${flags[*]}" <<'EOF'
import json, os, sys
name, out, timefile, tokens, examples, threads, binary, flags = sys.argv[1:]
wall, rss_kb = open(timefile).read().split()[-2:]
line = {"run": name, "binary": binary, "flags": flags, "threads": int(threads), "wall_s": float(wall),
        "peak_rss_mb": round(int(rss_kb) / 1024)}
if name == "kprune":
    r = json.load(open(os.path.join(out, "results.json")))
    steps = [json.loads(l) for l in open(os.path.join(out, "kprune_log.jsonl"))]
    steps = [s for s in steps if "sublayer" in s]
    line.update({"sample_tokens": r["sample_tokens"], "prune_s": r["seconds"],
                 "step_s": [round(s["seconds"], 2) for s in steps],
                 "projected_100k_tokens_s": round(r["seconds"] * 100000 / r["sample_tokens"])})
elif name == "mbbert":
    rows = [json.loads(l) for l in open(os.path.join(out, "results.jsonl"))]
    step = [r for r in rows if r.get("step", 0) >= 1][0]
    line.update({"train_examples": int(examples), "step_s": step["seconds"], "updates": step["train_steps"]})
else:
    r = json.load(open(os.path.join(out, "results.json")))
    s = r["students"]["sps_ptp"]
    line.update({"train_examples": int(examples), "teacher_outputs_s": r.get("teacher_outputs_seconds"),
                 "student_s": s["seconds"], "ptp_stage_s": s["ptp_stage"]["seconds"],
                 "kd_s": s["seconds"] - s["ptp_stage"]["seconds"], "kd_updates": s["kd_steps"]})
print(json.dumps(line), flush=True)
EOF
}

for w in $what; do
  case $w in
    kprune) timed kprune "$exp/kprune" "$mb" compress kprune --teacher "$teacher" --task "$task" --out "$exp/kprune" \
              --constraint 0.5 --num-tokens "$tokens" --no-eval --threads "$threads" "${flags[@]}" ;;
    mbbert) timed mbbert "$exp/mbbert" "$mb" compress mbbert --teacher "$teacher" --task "$task" --out "$exp/mbbert" \
              --steps 1 --rank "$rank" --max-train-examples "$examples" --threads "$threads" --no-progress "${flags[@]}" ;;
    peakd) timed peakd "$exp/peakd" "$mb" compress peakd --teacher "$teacher" --task "$task" --out "$exp/peakd" \
              --student-layers 6 --first-shared 3 --sps on --ptp on --epochs 1 --ptp-epochs 1 \
              --max-train-examples "$examples" --threads "$threads" --no-progress "${flags[@]}" ;;
    *) echo "unknown run $w" >&2; exit 2 ;;
  esac
done
