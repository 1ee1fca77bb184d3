#!/usr/bin/env python3
"""scripts/demo.sh's last step: measures each model directory and compares them.

Per model: parameters and FLOPs per 128-token sequence (`minibridge info`), weight bytes on disk,
the task's dev metric (`minibridge eval`, when --task is given), and the median latency at batch 1
and batch 8 of 128 tokens (`minibridge bench`). Prints a markdown table, writes it to
OUT/results.md, and draws OUT/results.png with gnuplot (pngcairo): size, latency and accuracy of each model
next to the first one's.

    scripts/demo_table.py --mb build/minibridge --out DIR [--task SST-2 --data GLUE_DIR] MODEL_DIR...
"""
import argparse
import json
import os
import shutil
import subprocess
import sys


def run_json(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr.strip()}")
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def weight_mb(model_dir):
    return sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)
               if f.endswith(".safetensors")) / 1e6


def measure(a, model_dir):
    info = run_json([a.mb, "info", "--json", "--seq-len", "128", "--model", model_dir])
    row = {"model": os.path.basename(os.path.normpath(model_dir)), "params_m": info["params"]["total"] / 1e6,
           "gflop": info["flops"]["total"] / 1e9, "disk_mb": weight_mb(model_dir),
           "stored": (info["quantization"] or {}).get("dtype", "f32")}
    if a.task:
        cmd = [a.mb, "eval", "--model", model_dir, "--task", a.task, "--max-len", "64"]
        if a.data:
            cmd += ["--data", a.data]
        metrics = run_json(cmd)
        row["metric_name"] = next(k for k in ("accuracy", "mcc", "f1", "pearson") if k in metrics)
        row["metric"] = metrics[row["metric_name"]]
    for batch in (1, 8):
        res = run_json([a.mb, "bench", "--model", model_dir, "--batch", str(batch), "--seq", "128", "--warmup", "2",
                        "--iters", "10" if batch == 1 else "5"])
        row[f"ms_b{batch}"] = res["median_ms"]
    print(f"  {row['model']}: done", file=sys.stderr, flush=True)
    return row


def table(rows):
    metric = rows[0].get("metric_name")
    head = "| model | stored | parameters (M) | GFLOP / 128 tokens | disk MB |" + (f" dev {metric} |" if metric else "") \
           + " batch 1 ms | batch 8 ms |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['stored']} | {r['params_m']:.1f} | {r['gflop']:.2f} | {r['disk_mb']:.0f} |"
                     + (f" {r['metric']:.4f} |" if metric else "") + f" {r['ms_b1']:.1f} | {r['ms_b8']:.1f} |")
    return "\n".join(lines)


def plot(rows, path):
    """Bars relative to the first model: disk, FLOPs, latency at batch 1 and 8 (and the metric)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("gnuplot not found (apt-get install gnuplot-nox): no picture", file=sys.stderr)
        return False
    base = rows[0]
    keys = [("disk_mb", "disk"), ("gflop", "FLOPs"), ("ms_b1", "latency b1"), ("ms_b8", "latency b8")]
    if "metric" in base:
        keys.append(("metric", base["metric_name"]))
    data = path + ".dat"
    with open(data, "w") as f:
        f.write("what " + " ".join(f'"{r["model"]}"' for r in rows) + "\n")
        for k, label in keys:
            f.write(f'"{label}" ' + " ".join(f"{r[k] / base[k]:.4f}" for r in rows) + "\n")
    script = f"""
set terminal pngcairo size 900,480 font "sans,11"
set output "{path}"
set title "{base['model']} and what minibridge makes of it (relative to {base['model']})"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:1.15]
set grid ytics
set ylabel "relative to {base['model']}"
set key outside bottom center horizontal
plot for [i=2:{len(rows) + 1}] "{data}" using i:xtic(1) title columnhead
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)
    os.remove(data)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", default="build/minibridge")
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="")
    ap.add_argument("--data", default="")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    rows = [measure(a, m) for m in a.models]
    text = table(rows)
    print(text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text + "\n")
    if plot(rows, os.path.join(a.out, "results.png")):
        print(f"\n{os.path.join(a.out, 'results.md')} and results.png written", file=sys.stderr)


if __name__ == "__main__":
    main()
