#!/usr/bin/python3
"""The edge footprint: what a model costs on a device, from the file to the first answer.

For BERT-base (f32), BERT-base K-pruned at c = 0.5 (f32, and run with --int8 from its f32 file), and
that K-pruned model stored quantized (`minibridge quantize --dtype int8`, with f32 and with int8 word
embeddings), and for ONNX Runtime on the dense BERT-base, this reports
  - model MB: the bytes of the weight files on disk;
  - binary MB: the executable plus the shared libraries it loads outside libc (`ldd`);
  - cold start: from process start to the first output line of `classify` on one sentence, with the
    page cache of the model files, the binary and its libraries dropped first
    (posix_fadvise(POSIX_FADV_DONTNEED) on each: it needs no privileges; `fincore` checks what
    stayed resident, reported as `cached after drop`); warm start: the same with the files cached;
  - warm latency: `minibridge bench --batch 1 --seq 128` (ONNX Runtime: bench/ort_bench.js on the
    same 128 token ids), the median of its iterations;
  - peak RSS of the cold `classify`, read by /usr/bin/time (whose own few MB do not count: the
    child's high-water mark starts at its exec).
Each figure is the median over --rounds runs; the runs of the rows alternate, so that the
machine's slow phases fall on every row alike.

ONNX Runtime gets the sentence already tokenized (its ids in a JSON file) and prints after one run
(bench/ort_bench.js --warmup 0 --iters 1), so its cold start leaves out the tokenizer that
minibridge's includes. Its graph is the plain torch.onnx export of the same BERT-base
(bench/compare.py).

    ONNXRUNTIME_NODE_INSTALL=skip npm install --no-package-lock --prefix bench   # for the ORT row
    /usr/bin/python3 bench/edge.py --base DIR --kprune DIR [--rounds 5] [--threads 2]
        [--binary build/minibridge] [--static build/static_build/minibridge] [--work DIR]

--base: an f32 BERT-base directory with a classifier (`minibridge init --config base --num-labels 2`
makes one with random weights: the footprint does not depend on the weights); --kprune: that model
K-pruned at c = 0.5 (`minibridge compress kprune --teacher BASE --task SST-2 --constraint 0.5`).
The quantized copies are made in --work. --static adds the static binary's rows for the K-pruned
int8 model (the binary an edge device gets).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import compare  # noqa: E402  (its helpers: run_json, the ONNX export; torch is imported only for the export)

SENTENCE = "The film is a charming, funny and moving story that never once feels long.\n"


def log(msg):
    print(f"[edge] {msg}", file=sys.stderr, flush=True)


def weight_files(model_dir):
    return [os.path.join(model_dir, f) for f in sorted(os.listdir(model_dir))
            if f.endswith(".safetensors") or f.endswith(".onnx") or f.endswith(".onnx.data")]


def dir_mb(files):
    return sum(os.path.getsize(f) for f in files) / 1e6


def shared_libraries(binary):
    """The shared libraries `binary` loads, outside the C runtime every program has."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    libs = []
    for line in r.stdout.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            path = parts[1].split("(")[0].strip()
            name = os.path.basename(path)
            if not any(name.startswith(p) for p in ("libc.so", "libm.so", "ld-linux", "libpthread", "libdl.so",
                                                     "librt.so")):
                libs.append(os.path.realpath(path))
    return libs


def drop_cache(files):
    """Evicts the files' clean pages from the page cache; returns the fraction still resident."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped: write them first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    total = resident = 0
    r = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"] + files,
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        res, size = line.split()
        resident += int(res)
        total += int(size)
    return resident / total if total else 0.0


def first_line_run(cmd, env, stdin_text):
    """(ms to the first stdout line, peak RSS MB) of cmd run under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write(stdin_text)
        p.stdin.close()
        line = p.stdout.readline()
        ms = (time.perf_counter() - t0) * 1e3
        p.stdout.read()
        err = p.stderr.read()
        if p.wait() != 0 or not line:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
        kb = int(open(rss.name).read().split()[-1])
    return ms, kb / 1024


class Row:
    def __init__(self, label, binary, model_dir, files, classify_cmd, latency_cmd, note=""):
        self.label, self.binary, self.model_dir, self.files = label, binary, model_dir, files
        self.classify_cmd, self.latency_cmd, self.note = classify_cmd, latency_cmd, note
        self.cold, self.warm, self.rss, self.latency, self.cached = [], [], [], [], []


def minibridge_row(label, binary, model_dir, threads, flag=None, note=""):
    extra = [flag] if flag else []
    classify = [binary, "classify", "--model", model_dir, "--threads", str(threads)] + extra
    latency = [binary, "bench", "--model", model_dir, "--threads", str(threads), "--batch", "1", "--seq", "128",
               "--warmup", "3", "--iters", "20"] + extra
    return Row(label, binary, model_dir, weight_files(model_dir), classify, latency, note)


def onnx_row(a, base, work, threads):
    onnx_dir = os.path.join(work, "base-onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    path = os.path.join(onnx_dir, "model.onnx")
    if not os.path.exists(path):
        t0 = time.time()
        cfg = json.load(open(os.path.join(base, "config.json")))
        w = {k[5:] if k.startswith("bert.") else k: v
             for k, v in compare.read_safetensors(os.path.join(base, "model.safetensors")).items()}
        compare.export_onnx(compare.onnx_module(cfg, w), path, cfg["vocab_size"])
        log(f"wrote {path} (ONNX export {time.time() - t0:.1f} s)")
    # The sentence's ids, as minibridge's tokenizer gives them; and 128 ids for the latency.
    enc = subprocess.run([a.binary, "tokenize", "--model", base], input=SENTENCE, capture_output=True, text=True,
                         check=True)
    ids = json.loads(enc.stdout.splitlines()[0])["input_ids"]
    one = os.path.join(onnx_dir, "one.json")
    json.dump({"input_ids": [ids]}, open(one, "w"))
    ids128 = ([101] + [1000 + (7 * i) % 20000 for i in range(126)] + [102])
    many = os.path.join(onnx_dir, "seq128.json")
    json.dump({"input_ids": [ids128]}, open(many, "w"))
    script = os.path.join(HERE, "ort_bench.js")
    classify = [a.node, script, "--model", path, "--inputs", one, "--threads", str(threads), "--warmup", "0",
                "--iters", "1"]
    latency = [a.node, script, "--model", path, "--inputs", many, "--threads", str(threads), "--warmup", "3",
               "--iters", "20"]
    row = Row("onnxruntime, base f32", a.node, onnx_dir, [path], classify, latency,
              "ids given (no tokenizer); last hidden state")
    ort_dir = os.path.join(HERE, "node_modules", "onnxruntime-node")
    row.extra_files = [os.path.join(dp, f) for dp, _, fs in os.walk(ort_dir) for f in fs
                       if f.endswith(".node") or ".so" in f]
    return row


def binary_files(row):
    files = [os.path.realpath(row.binary)] + shared_libraries(row.binary) + getattr(row, "extra_files", [])
    return [f for f in dict.fromkeys(files) if os.path.exists(f)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="f32 BERT-base model directory with a classifier")
    ap.add_argument("--kprune", required=True, help="that model K-pruned at c = 0.5")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "minibridge"))
    ap.add_argument("--static", default="", help="the static binary: adds its rows for the K-pruned int8 model")
    ap.add_argument("--work", default="", help="where the quantized copies and the ONNX export go (default: temp)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--no-ort", action="store_true", help="leave out ONNX Runtime")
    ap.add_argument("--openblas-coretype", default="",
                    help="OPENBLAS_CORETYPE for every process (default: as the environment has it)")
    a = ap.parse_args()

    work = a.work or tempfile.mkdtemp(prefix="edge-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env.pop("MB_NUM_THREADS", None)
    if a.openblas_coretype:
        env["OPENBLAS_CORETYPE"] = a.openblas_coretype

    quantized = {}
    for name, args in (("kprune-int8", ["--dtype", "int8"]), ("kprune-int8-emb8", ["--dtype", "int8", "--embeddings", "int8"])):
        out = os.path.join(work, name)
        if not os.path.exists(os.path.join(out, "model.safetensors")):
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([a.binary, "quantize", "--model", a.kprune, "--out", out] + args, check=True,
                           capture_output=True)
        quantized[name] = out

    rows = [
        minibridge_row("base f32", a.binary, a.base, a.threads),
        minibridge_row("base f32 file, --int8", a.binary, a.base, a.threads, "--int8"),
        minibridge_row("K-pruned c=0.5 f32", a.binary, a.kprune, a.threads),
        minibridge_row("K-pruned c=0.5 f32 file, --int8", a.binary, a.kprune, a.threads, "--int8"),
        minibridge_row("K-pruned c=0.5 stored int8", a.binary, quantized["kprune-int8"], a.threads),
        minibridge_row("K-pruned c=0.5 stored int8, int8 embeddings", a.binary, quantized["kprune-int8-emb8"], a.threads),
    ]
    if a.static:
        rows.append(minibridge_row("static binary: K-pruned stored int8, int8 embeddings", a.static,
                                   quantized["kprune-int8-emb8"], a.threads))
    if not a.no_ort:
        rows.append(onnx_row(a, a.base, work, a.threads))

    for r in rows:  # one untimed run each: every file exists and every command works
        first_line_run(r.classify_cmd, env, SENTENCE)
    for k in range(a.rounds):
        order = rows[k % len(rows):] + rows[:k % len(rows)]
        for r in order:
            files = r.files + binary_files(r)
            r.cached.append(drop_cache(files))
            ms, rss = first_line_run(r.classify_cmd, env, SENTENCE)
            r.cold.append(ms)
            r.rss.append(rss)
            r.warm.append(first_line_run(r.classify_cmd, env, SENTENCE)[0])
            r.latency.append(compare.run_json(r.latency_cmd, env, None)["median_ms"])
        log(f"round {k + 1}/{a.rounds} done")

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    ort = ""
    if not a.no_ort:
        ort_pkg = os.path.join(HERE, "node_modules", "onnxruntime-node", "package.json")
        ort = f"; onnxruntime-node {json.load(open(ort_pkg))['version']}"
    print(f"{cpu}, {os.cpu_count()} cores, {a.threads} threads; commit {commit}; medians of {a.rounds} rounds; "
          f"one sentence ({len(SENTENCE.split())} words) for classify{ort}")
    print()
    print("| model | model MB | binary MB | cold start ms | warm start ms | batch 1 × 128 ms | peak RSS MB "
          "| cached after drop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    for r in rows:
        label = r.label + (f" ({r.note})" if r.note else "")
        print(f"| {label} | {dir_mb(r.files):.0f} | {dir_mb(binary_files(r)):.1f} | {med(r.cold):.0f} "
              f"| {med(r.warm):.0f} | {med(r.latency):.1f} | {med(r.rss):.0f} | {100 * max(r.cached):.0f} % |")


if __name__ == "__main__":
    main()
