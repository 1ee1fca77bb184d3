#!/usr/bin/python3
"""Side-by-side speed of minibridge, ONNX Runtime and PyTorch on one random-weight BERT.

For each shape (tiny / mini / base, from configs/bert-*.json) this script
  1. makes random weights (tests/reference/bert_reference.py's random_weights), writes a Hugging Face
     model directory (config.json, model.safetensors, vocab.txt) and exports the same model to ONNX
     twice (input_ids, attention_mask, token_type_ids -> last_hidden_state): the plain torch.onnx
     export, and a graph of ONNX Runtime's fused BERT ops (Attention, SkipLayerNormalization,
     BiasGelu); ORT runs both, and each row is reported against the faster;
  2. checks that the engines agree on a batch of unequal lengths (max |diff| of the last hidden
     states at real tokens) before anything is timed;
  3. times forward passes at each batch size (and, with --train-shapes, training steps against
     PyTorch), running the engines alternately: every round runs each engine once (warm-up + N timed
     iterations, in a fresh process), the engine order rotating between rounds; an engine's figure is
     the median over rounds of its per-round median;
  4. prints a markdown table and (with --write-results) replaces the generated section of
     bench/RESULTS.md with it plus the machine it came from.
The bf16 and int8 rows (--bf16-shapes, --int8-shapes) run minibridge's --bf16 / --int8 against
PyTorch in the same precision: the same BERT as an nn.Module (bert_reference.BertModule, checked
equal to the reference in fp32) under CPU autocast bfloat16, or with torch.ao.quantization's
quantize_dynamic over its nn.Linear layers; ONNX Runtime stays fp32. Each one's error against
PyTorch fp32 is reported. PyTorch's bf16 needs AVX512-BF16 to be fast: without it (AVX2) its
autocast runs 30-60× slower than its fp32, so pass --bf16-shapes '' there.

Every engine gets the same inputs and the same thread count: minibridge `bench --threads T`, ONNX
Runtime intraOpNumThreads=T / interOpNumThreads=1 (bench/ort_bench.js, npm onnxruntime-node),
PyTorch torch.set_num_threads(T) (the hand-written HF-equivalent BERT of tests/reference, not
`transformers`, which is not installed). OPENBLAS_CORETYPE is set for all three (default SkylakeX).

Run with the system Python (it has torch 1.13):
    ONNXRUNTIME_NODE_INSTALL=skip npm install --no-package-lock --prefix bench
    /usr/bin/python3 bench/compare.py --shapes tiny --rounds 2           # quick check
    /usr/bin/python3 bench/compare.py --write-results                      # the full table
"""
import argparse
import contextlib
import datetime
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

# ONNX Runtime runs two graphs of the same model, as two engines: which is faster depends on the
# shape (bench/RESULTS.md), and each row is reported against the faster.
ORT_GRAPHS = {"onnxruntime": "model.onnx", "onnxruntime-fused": "model_fused.onnx"}
ENGINES = ("minibridge",) + tuple(ORT_GRAPHS) + ("pytorch",)
# PyTorch's peers of minibridge's --bf16 and --int8 (compare.py torch-worker --precision).
PEER_NAMES = {"bf16": "CPU autocast bfloat16", "int8": "dynamic int8, quantize_dynamic over nn.Linear"}
BEGIN, END = "<!-- compare.py: begin generated section -->", "<!-- compare.py: end generated section -->"


# ---------------------------------------------------------------------------------------------
# Model files and inputs


def shape_config(shape):
    with open(os.path.join(ROOT, "configs", f"bert-{shape}.json")) as f:
        cfg = json.load(f)
    # A plain encoder (BertModel names, pooler, no classifier): what ONNX and inference time.
    cfg["architectures"] = ["BertModel"]
    for k in ("num_labels", "id2label", "label2id"):
        cfg.pop(k, None)
    return cfg


def read_safetensors(path):
    import torch
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = struct.unpack("<Q", bytes(data[:8]))[0]
    header = json.loads(bytes(data[8:8 + n]))
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", f"{path}: {name} is {h['dtype']}, expected F32"
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(data, dtype=torch.float32, count=(b - a) // 4,
                                     offset=8 + n + a).view(h["shape"])
    return out


def onnx_module(cfg, w):
    """bert_forward as an nn.Module whose parameters are the weights (so ONNX stores them)."""
    import torch
    from bert_reference import bert_forward

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = list(w)
            for k, v in w.items():
                self.register_parameter(k.replace(".", "__"), torch.nn.Parameter(v, requires_grad=False))

        def forward(self, input_ids, attention_mask, token_type_ids):
            ws = {k: getattr(self, k.replace(".", "__")) for k in self.names}
            return bert_forward(cfg, ws, input_ids, token_type_ids, attention_mask)[0]

    return Exported().eval()


def onnx_fused_module(cfg, w):
    """The same BERT as onnx_module, exported with ONNX Runtime's fused contrib ops: one Attention
    node per layer (Q, K and V in one [H, 3H] weight, the 2-D mask), SkipLayerNormalization for each
    residual + LayerNorm, BiasGelu. This is the graph onnxruntime.transformers.optimizer makes of a
    BERT (PyPI, unreachable here), built directly through torch.autograd.Function symbolics."""
    import torch
    import torch.nn.functional as F
    H, A, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-12)
    assert cfg.get("hidden_act", "gelu") == "gelu", "the fused graph has exact GELU (BiasGelu) only"

    class Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, wqkv, bqkv, mask):
            B, L, _ = x.shape
            q, k, v = ((x @ wqkv + bqkv).split(H, -1))
            q, k, v = (t.view(B, L, A, H // A).transpose(1, 2) for t in (q, k, v))
            s = q @ k.transpose(-1, -2) / math.sqrt(H // A) + (1.0 - mask[:, None, None, :].float()) * -10000.0
            return (s.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H)

        @staticmethod
        def symbolic(g, x, wqkv, bqkv, mask):
            return g.op("com.microsoft::Attention", x, wqkv, bqkv, mask, num_heads_i=A)

    class SkipLayerNorm(torch.autograd.Function):  # LN(x + skip + bias)
        @staticmethod
        def forward(ctx, x, skip, gamma, beta, bias):
            return F.layer_norm(x + skip + bias, (H,), gamma, beta, eps)

        @staticmethod
        def symbolic(g, x, skip, gamma, beta, bias):
            return g.op("com.microsoft::SkipLayerNormalization", x, skip, gamma, beta, bias, epsilon_f=eps)

    class BiasGelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, bias):
            return F.gelu(x + bias)

        @staticmethod
        def symbolic(g, x, bias):
            return g.op("com.microsoft::BiasGelu", x, bias)

    def param(t):
        return torch.nn.Parameter(t.contiguous(), requires_grad=False)

    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.ParameterList([param(w["embeddings." + n]) for n in (
                "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                "LayerNorm.weight", "LayerNorm.bias")])
            self.layers = torch.nn.ModuleList()
            for l in range(cfg["num_hidden_layers"]):
                p, m = f"encoder.layer.{l}.", torch.nn.Module()
                m.wqkv = param(torch.cat([w[p + f"attention.self.{n}.weight"].t() for n in ("query", "key", "value")], 1))
                m.bqkv = param(torch.cat([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]))
                m.wo, m.bo = param(w[p + "attention.output.dense.weight"].t()), param(w[p + "attention.output.dense.bias"])
                m.g1, m.b1 = param(w[p + "attention.output.LayerNorm.weight"]), param(w[p + "attention.output.LayerNorm.bias"])
                m.wi, m.bi = param(w[p + "intermediate.dense.weight"].t()), param(w[p + "intermediate.dense.bias"])
                m.wo2, m.bo2 = param(w[p + "output.dense.weight"].t()), param(w[p + "output.dense.bias"])
                m.g2, m.b2 = param(w[p + "output.LayerNorm.weight"]), param(w[p + "output.LayerNorm.bias"])
                self.layers.append(m)

        def forward(self, input_ids, attention_mask, token_type_ids):
            word, pos, types, gamma, beta = self.emb
            x = word[input_ids] + pos[:input_ids.shape[1]].unsqueeze(0) + types[token_type_ids]
            x = F.layer_norm(x, (H,), gamma, beta, eps)
            mask = attention_mask.to(torch.int32)
            for m in self.layers:
                x = SkipLayerNorm.apply(Attention.apply(x, m.wqkv, m.bqkv, mask) @ m.wo, x, m.g1, m.b1, m.bo)
                x = SkipLayerNorm.apply(BiasGelu.apply(x @ m.wi, m.bi) @ m.wo2, x, m.g2, m.b2, m.bo2)
            return x

    return Fused().eval()


def export_onnx(module, path, vocab_size, custom_opsets=None):
    """torch.onnx.export with dynamic batch and sequence axes, to a temporary name, then renamed."""
    import torch
    ids = torch.randint(1000, vocab_size, (2, 16))
    with torch.no_grad():
        torch.onnx.export(module, (ids, torch.ones_like(ids), torch.zeros_like(ids)), path + ".tmp",
                          opset_version=17, do_constant_folding=True, custom_opsets=custom_opsets,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                                        ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")})
    os.replace(path + ".tmp", path)


def make_model(work, shape, seed, vocab_dir):
    """WORK/<shape>/: model dir + both ONNX graphs (ORT_GRAPHS). Reused when made before with the
    same seed; a missing graph is exported from the directory's own weights."""
    from bert_reference import random_weights, write_safetensors
    d = os.path.join(work, shape)
    stamp = os.path.join(d, "stamp.json")
    cfg = shape_config(shape)
    want = {"shape": shape, "seed": seed, "config": cfg}
    if not (os.path.exists(stamp) and json.load(open(stamp)) == want):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        write_safetensors(os.path.join(d, "model.safetensors"), random_weights(cfg, seed, with_pooler=True),
                          {"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        for fn in ("vocab.txt", "tokenizer_config.json"):
            if os.path.exists(os.path.join(vocab_dir, fn)):
                shutil.copyfile(os.path.join(vocab_dir, fn), os.path.join(d, fn))
        with open(stamp, "w") as f:
            json.dump(want, f)
    w = None
    for engine, name in ORT_GRAPHS.items():
        path = os.path.join(d, name)
        if os.path.exists(path):
            continue
        t0 = time.time()
        w = w or read_safetensors(os.path.join(d, "model.safetensors"))
        if engine.endswith("-fused"):
            export_onnx(onnx_fused_module(cfg, w), path, cfg["vocab_size"], {"com.microsoft": 1})
        else:
            export_onnx(onnx_module(cfg, w), path, cfg["vocab_size"])
        log(f"{shape}: wrote {path} (ONNX export {time.time() - t0:.1f} s)")
    return d


def glue_like_length(u, S):
    """Same distribution as `minibridge bench --lengths varied`: 8 + (S-8+1)·u², mean ≈ 8 + (S-8)/3."""
    return S if S <= 8 else 8 + int((S - 8 + 1) * u * u)


def make_inputs(path, cfg, lengths, seed):
    """[CLS] random word pieces [SEP], token types 0 then 1 (a sentence pair)."""
    import random
    rng = random.Random(seed)
    V = cfg["vocab_size"]
    ids, types = [], []
    for n in lengths:
        s = [rng.randrange(999, V) for _ in range(n)]
        s[0], s[-1] = 101, 102
        ids.append(s)
        types.append([0] * (n // 2) + [1] * (n - n // 2))
    with open(path, "w") as f:
        json.dump({"input_ids": ids, "token_type_ids": types}, f)
    return {"input_ids": ids, "token_type_ids": types}


# ---------------------------------------------------------------------------------------------
# The PyTorch worker (a subprocess, like the others: its own RSS, no state shared between rounds)


def train_forward(cfg, w, input_ids, token_type_ids, attention_mask):
    """Classifier logits with dropout where Hugging Face has it (train mode)."""
    from bert_reference import bert_forward
    return bert_forward(cfg, w, input_ids, token_type_ids, attention_mask, train=True)[2]


def peak_rss_mib():
    """VmHWM: this process's own peak RSS (ru_maxrss would include the parent's, carried over exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_worker(a):
    import torch
    import torch.nn.functional as F
    from bert_reference import bert_forward
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    w = read_safetensors(os.path.join(a.model, "model.safetensors"))
    with open(a.inputs) as f:
        spec = json.load(f)
    seqs, types = spec["input_ids"], spec["token_type_ids"]
    B, L = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros(B, L, dtype=torch.long)
    tt = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, (s, t) in enumerate(zip(seqs, types)):
        ids[b, :len(s)] = torch.tensor(s)
        tt[b, :len(s)] = torch.tensor(t)
        mask[b, :len(s)] = 1
    times, loss_first, loss_last = [], None, None
    if a.mode == "forward":
        # fp32: the functional reference. module / bf16 / int8: the same BERT as an nn.Module, in
        # fp32, under CPU autocast bfloat16, or with its nn.Linear layers dynamically quantized.
        forward = lambda: bert_forward(cfg, w, ids, tt, mask)[0]  # noqa: E731
        if a.precision != "f32":
            from bert_reference import BertModule
            module = BertModule(cfg, w).eval()
            if a.precision == "int8":
                module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
            if a.precision == "bf16":
                def forward():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return module(ids, tt, mask).float()
            else:
                forward = lambda: module(ids, tt, mask)  # noqa: E731
        with torch.inference_mode():
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                x = forward()
                ms = (time.perf_counter() - t0) * 1e3
                if i == 0 and a.dump:
                    x.numpy().tofile(a.dump)
                if i >= a.warmup:
                    times.append(ms)
    else:
        H = cfg["hidden_size"]
        g = torch.Generator().manual_seed(a.seed)
        w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        w["classifier.weight"] = (torch.randn(2, H, generator=g) * cfg.get("initializer_range", 0.02)).requires_grad_(True)
        w["classifier.bias"] = torch.zeros(2, requires_grad=True)
        labels = torch.randint(0, 2, (B,), generator=g)
        no_decay = [v for k, v in w.items() if k.endswith(".bias") or "LayerNorm" in k]
        decay = [v for k, v in w.items() if not (k.endswith(".bias") or "LayerNorm" in k)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=2e-5, betas=(0.9, 0.999), eps=1e-8)
        params = list(w.values())
        # bf16: the forward under CPU autocast bfloat16 (its matmuls in bf16, weights and optimizer
        # f32), as minibridge's `bench --train --bf16`; the backward follows autocast's casts.
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.precision == "bf16" else contextlib.nullcontext
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            with autocast():
                loss = F.cross_entropy(train_forward(cfg, w, ids, tt, mask).float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ms = (time.perf_counter() - t0) * 1e3
            loss_last = loss.item()
            if i == 0:
                loss_first = loss_last
            if i >= a.warmup:
                times.append(ms)
    tokens = sum(len(s) for s in seqs)
    med = statistics.median(times)
    out = {"engine": "pytorch" + ("" if a.precision == "f32" else "-" + a.precision), "version": torch.__version__, "batch": B, "seq": L, "tokens": tokens,
           "padded_tokens": B * L, "threads": torch.get_num_threads(), "mode": a.mode, "warmup": a.warmup,
           "iters": a.iters, "median_ms": med, "min_ms": min(times), "times_ms": times,
           "tokens_per_s": tokens * 1e3 / med,
           "peak_rss_mb": peak_rss_mib()}
    if loss_first is not None:
        out.update(loss_first=loss_first, loss_last=loss_last)
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# Running the engines


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def run_json(cmd, env, timeout):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()[-2000:]}")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(lines[-1])


def engine_cmd(engine, a, model_dir, inputs, mode, warmup, iters, dump=None, precision="f32"):
    """precision bf16 / int8: minibridge runs `bench --bf16` / `--int8`; ORT stays fp32; PyTorch's
    reduced-precision peers are engines of their own (pytorch-bf16, pytorch-int8)."""
    T = str(a.threads)
    if engine == "minibridge":
        cmd = [a.cli, "bench", "--model", model_dir, "--inputs", inputs, "--threads", T,
               "--warmup", str(warmup), "--iters", str(iters)]
        if a.gemm:
            cmd += ["--gemm", a.gemm]
        if precision != "f32":
            cmd.append("--" + precision)
        if mode == "train":
            cmd.append("--train")
        if dump:
            cmd += ["--dump", dump]
    elif engine in ORT_GRAPHS:
        assert mode == "forward"
        cmd = [a.node, os.path.join(HERE, "ort_bench.js"), "--model", os.path.join(model_dir, ORT_GRAPHS[engine]),
               "--inputs", inputs, "--threads", T, "--warmup", str(warmup), "--iters", str(iters)]
        if dump:
            cmd += ["--dump", dump]
    else:  # pytorch, pytorch-module (the nn.Module in fp32), pytorch-bf16, pytorch-int8
        torch_precision = engine.split("-")[1] if "-" in engine else "f32"
        cmd = [sys.executable, os.path.abspath(__file__), "torch-worker", "--model", model_dir, "--inputs", inputs,
               "--threads", T, "--mode", mode, "--warmup", str(warmup), "--iters", str(iters), "--seed", str(a.seed),
               "--precision", torch_precision]
        if dump:
            cmd += ["--dump", dump]
    return cmd


def engine_env(a):
    env = dict(os.environ)
    env["OPENBLAS_CORETYPE"] = a.openblas_coretype
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["OPENBLAS_NUM_THREADS"] = str(a.threads)
    env.pop("MB_NUM_THREADS", None)
    env["ONNXRUNTIME_NODE_INSTALL"] = "skip"
    return env


def busy_processes(threshold=0.15, interval=1.0):
    """Other processes using more than `threshold` of a CPU over `interval` seconds."""
    mine = {os.getpid()}

    def sample():
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in mine:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    st = f.read()
                rest = st[st.rindex(")") + 2:].split()
                out[int(pid)] = (int(rest[11]) + int(rest[12]), st[st.index("(") + 1:st.rindex(")")])
            except (OSError, ValueError, IndexError):
                pass
        return out

    hz = os.sysconf("SC_CLK_TCK")
    a = sample()
    time.sleep(interval)
    b = sample()
    busy = []
    for pid, (ticks, name) in b.items():
        if pid in a and (ticks - a[pid][0]) / hz / interval > threshold:
            busy.append(f"{name}[{pid}] {100 * (ticks - a[pid][0]) / hz / interval:.0f}%")
    return busy


def check_agreement(a, env, model_dir, cfg, shape, tmp, precisions=()):
    import numpy as np
    S = min(a.seq, cfg["max_position_embeddings"])
    lengths = sorted({S, max(2, S * 3 // 10), 9, max(2, S * 4 // 5)}, reverse=True)
    inputs = os.path.join(tmp, f"{shape}_check.json")
    spec = make_inputs(inputs, cfg, lengths, a.seed + 1)
    H, L = cfg["hidden_size"], max(lengths)
    out = {}
    torch_peers = ("pytorch-module",) + tuple(f"pytorch-{p}" for p in precisions) if precisions else ()
    for e in ENGINES + tuple(f"minibridge {p}" for p in precisions) + torch_peers:
        dump = os.path.join(tmp, f"{shape}_{e.replace(' ', '_')}.f32")
        precision = e.split()[1] if " " in e else "f32"
        run_json(engine_cmd(e.split()[0], a, model_dir, inputs, "forward", 0, 1, dump, precision=precision), env,
                 a.timeout)
        h = np.fromfile(dump, dtype=np.float32)
        if e.startswith("minibridge"):  # packed [tokens, H] -> padded [B, L, H]
            packed, h = h.reshape(-1, H), np.zeros((len(lengths), L, H), np.float32)
            off = 0
            for b, n in enumerate(lengths):
                h[b, :n] = packed[off:off + n]
                off += n
        out[e] = h.reshape(len(lengths), L, H)
    real = np.zeros((len(lengths), L), bool)
    for b, n in enumerate(lengths):
        real[b, :n] = True
    pairs = [("minibridge", "pytorch")] + [(o, "pytorch") for o in ORT_GRAPHS] + [("minibridge", o) for o in ORT_GRAPHS]
    if torch_peers:  # the nn.Module the reduced-precision PyTorch peers run is the reference's BERT
        pairs.append(("pytorch-module", "pytorch"))
    diffs = {f"{x} vs {y}": float(np.abs(out[x][real] - out[y][real]).max()) for x, y in pairs}
    scale = float(np.abs(out["pytorch"][real]).max())
    ok = all(d <= a.tol * max(1.0, scale) for d in diffs.values())
    log(f"{shape}: outputs agree (lengths {lengths}, max |h| {scale:.2f}): "
        + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + ("" if ok else "  <-- TOO LARGE"))
    if not ok:
        raise SystemExit(f"{shape}: engines disagree beyond --tol {a.tol}: {diffs}")
    for p in precisions:  # rounding / quantisation error against fp32, reported (not held to --tol)
        for e in (f"minibridge {p}", f"pytorch-{p}"):
            d = out[e][real] - out["pytorch"][real]
            diffs[f"{e} vs pytorch"] = float(np.abs(d).max())
            diffs[f"{e} vs pytorch, rms"] = float(np.sqrt((d * d).mean()))
            log(f"{shape}: {e} vs pytorch fp32 max |diff| {diffs[f'{e} vs pytorch']:.2e}, "
                f"rms {diffs[f'{e} vs pytorch, rms']:.2e}")
    return diffs


def time_case(a, env, model_dir, inputs, mode, engines, rounds, warmup, iters, label, precision="f32"):
    """Alternating rounds; returns {engine: summary}."""
    per = {e: [] for e in engines}
    contention = []
    for r in range(rounds):
        if a.check_idle:
            busy = busy_processes()
            if busy:
                contention.append(busy)
                log(f"WARNING: other processes are using the CPU: {', '.join(busy)}")
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for e in order:
            res = run_json(engine_cmd(e, a, model_dir, inputs, mode, warmup, iters, precision=precision), env,
                           a.timeout)
            per[e].append(res)
            log(f"{label} round {r + 1}/{rounds} {e}: median {res['median_ms']:.2f} ms (min {res['min_ms']:.2f})")
    out = {}
    for e, runs in per.items():
        out[e] = {
            "median_ms": statistics.median(x["median_ms"] for x in runs),
            "min_ms": min(x["min_ms"] for x in runs),
            "round_medians_ms": [x["median_ms"] for x in runs],
            "tokens": runs[0]["tokens"],
            "padded_tokens": runs[0].get("padded_tokens"),
            "tokens_per_s": runs[0]["tokens"] * 1e3 / statistics.median(x["median_ms"] for x in runs),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
            "extra": {k: runs[-1][k] for k in ("gemm", "weights_mb", "version", "loss_first") if k in runs[-1]},
        }
    return out, contention


# ---------------------------------------------------------------------------------------------
# Report


def machine_info(a):
    info = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                info[k.strip()] = v.strip()
    except OSError:
        pass
    flags = info.pop("Flags", "").split()
    info["AVX-512"] = "yes" if "avx512f" in flags else "no"
    try:
        info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            info["commit"] += " (+ uncommitted changes)"
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        info["memory"] = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def ratio(x, y):
    return f"{x / y:.2f}" if y else "—"


def render(rows, info, a, agreement, contention):
    L = []
    L.append(f"Machine: {info.get('Model name', '?')}, {info.get('CPU(s)', '?')} CPUs "
             f"({info.get('Thread(s) per core', '?')} thread/core), AVX-512 {info['AVX-512']}, {info['memory']} RAM; "
             f"{info['date']}; minibridge {info.get('commit', '?')}.")
    L.append("")
    L.append(f"Settings: {a.threads} threads per engine, OPENBLAS_CORETYPE={a.openblas_coretype}, fp32 unless the row says, "
             f"random-weight models (same weights and inputs for all engines), {a.rounds} alternating rounds × "
             f"{a.iters} timed forward passes ({a.train_rounds} × {a.train_iters} training steps) after warm-up; "
             "figures are medians over rounds of per-round medians (ms).")
    versions = {}
    for r in rows:
        for e, s in r["results"].items():
            if "version" in s["extra"]:
                versions[e] = s["extra"]["version"]
            if "gemm" in s["extra"]:
                versions["minibridge GEMM"] = s["extra"]["gemm"]
    L.append("Engines: minibridge (GEMM back-end " + versions.get("minibridge GEMM", "?") + "), ONNX Runtime "
             + versions.get("onnxruntime", "?") + " (npm onnxruntime-node, CPU EP, graph optimisation 'all'; two "
             "graphs of the model, each row against the faster: *plain*, the torch.onnx export, and *fused*, "
             "with ORT's Attention, SkipLayerNormalization and BiasGelu contrib ops as its transformers optimizer "
             "makes them), "
             "PyTorch " + versions.get("pytorch", "?") + " (Debian; a hand-written Hugging Face-equivalent BERT "
             "from tests/reference/bert_reference.py — PyPI `transformers` is unreachable here — under "
             "torch.inference_mode(); training: the same with dropout, cross-entropy, backward, "
             "clip_grad_norm_(1.0), torch.optim.AdamW). The bf16 and int8 rows run minibridge's --bf16 / --int8, "
             "ONNX Runtime in fp32, and PyTorch in the same precision on the same BERT as an nn.Module "
             "(bert_reference.BertModule): under torch.autocast('cpu', torch.bfloat16), or after "
             "torch.ao.quantization.quantize_dynamic over its nn.Linear layers (qint8, the fbgemm engine); "
             "each one's error against PyTorch fp32 is under Agreement.")
    L.append("")
    L.append("| shape | what | batch × seq (real tokens) | minibridge ms | ONNX Runtime ms (plain / fused) | "
             "PyTorch ms | mb / ORT | mb / ORT per round: median (range) | mb / PyTorch | mb tokens/s | "
             "peak RSS MiB (mb / ORT / PT) | mb weights MiB |")
    L.append("|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|")
    for r in rows:
        res = r["results"]
        pt_engine = next((e for e in res if e.startswith("pytorch")), None)
        mb, pt = res["minibridge"]["median_ms"], res[pt_engine]["median_ms"] if pt_engine else None
        ort_engines = [e for e in ORT_GRAPHS if e in res]
        best_ort = min(ort_engines, key=lambda e: res[e]["median_ms"], default=None)
        ort = res[best_ort]["median_ms"] if best_ort else None
        ort_cell = " / ".join(f"**{res[e]['median_ms']:.1f}**" if e == best_ort and len(ort_engines) > 1
                              else f"{res[e]['median_ms']:.1f}" for e in ort_engines) or "—"
        rss = " / ".join(f"{res[e]['peak_rss_mb']:.0f}" if e in res else "—" for e in ("minibridge", best_ort, pt_engine))
        # Each round runs every engine back to back, so a round's ratio is less exposed to the
        # machine's slow phases than the ratio of medians taken over different rounds.
        paired = "—"
        if best_ort:
            per_round = [m / o for m, o in zip(res["minibridge"]["round_medians_ms"], res[best_ort]["round_medians_ms"])]
            paired = f"{statistics.median(per_round):.2f} ({min(per_round):.2f}–{max(per_round):.2f})"
        L.append(f"| {r['shape']} | {r['what']} | {r['batch']} × {r['seq']} ({res['minibridge']['tokens']}) | "
                 f"{mb:.1f} | {ort_cell} | {f'{pt:.1f}' if pt else '—'} | "
                 f"{ratio(mb, ort) if ort else '—'} | {paired} | {ratio(mb, pt) if pt else '—'} | "
                 f"{res['minibridge']['tokens_per_s']:.0f} | {rss} | "
                 f"{res['minibridge']['extra'].get('weights_mb', 0):.0f} |")
    L.append("")
    L.append("Agreement before timing (max |Δ| of last hidden states at real tokens, lengths of unequal size): "
             + "; ".join(f"{s}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()) for s, d in agreement.items())
             + ".")
    if contention:
        L.append("")
        L.append("**Warning: other processes used the CPU during some rounds** (figures may be inflated): "
                 + ", ".join(sorted({p.split("[")[0] for c in contention for p in c}))
                 + f" (in {len(contention)} of the rounds)")
    return "\n".join(L)


def write_results(path, section):
    text = open(path).read() if os.path.exists(path) else "# Speed results\n\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "torch-worker":
        p = argparse.ArgumentParser(prog="compare.py torch-worker")
        p.add_argument("--model", required=True)
        p.add_argument("--inputs", required=True)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--mode", choices=("forward", "train"), default="forward")
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--iters", type=int, default=10)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dump")
        p.add_argument("--precision", choices=("f32", "module", "bf16", "int8"), default="f32")
        return torch_worker(p.parse_args(sys.argv[2:]))

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny,mini,base", help="comma-separated: tiny, mini, small, medium, base")
    p.add_argument("--batches", default="1,8", help="forward batch sizes")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--varied", default="base",
                   help="shapes that also get a GLUE-like variable-length row (batch --varied-batch, lengths 8..seq; "
                        "ORT and PyTorch pad to the longest, minibridge packs)")
    p.add_argument("--varied-batch", type=int, default=8)
    p.add_argument("--train-shapes", default="base", help="shapes with a training-step row vs PyTorch ('' for none)")
    p.add_argument("--bf16-shapes", default="base",
                   help="shapes with forward rows of minibridge's bfloat16 path against the fp32 peers ('' for none)")
    p.add_argument("--int8-shapes", default="base",
                   help="shapes with forward rows of minibridge's dynamic int8 against the fp32 peers ('' for none)")
    p.add_argument("--train-bf16-shapes", default="base",
                   help="shapes with a bf16 mixed-precision training-step row: minibridge `bench --train --bf16` "
                        "vs PyTorch under CPU autocast bfloat16 ('' for none; needs AVX512-BF16 to mean anything)")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10, help="timed forward passes per engine per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--train-rounds", type=int, default=3)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3, help="agreement tolerance (relative to max |h|, at least 1)")
    p.add_argument("--gemm", default="", help="minibridge --gemm (default: its own choice)")
    p.add_argument("--openblas-coretype", default="SkylakeX")
    p.add_argument("--work", default=os.path.join(ROOT, "build", "bench_compare"))
    p.add_argument("--cli", default=os.path.join(ROOT, "build", "minibridge"))
    p.add_argument("--node", default="node")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per engine run")
    p.add_argument("--check-idle", action=argparse.BooleanOptionalAction, default=True,
                   help="warn (and note in the report) when other processes use the CPU")
    p.add_argument("--wait-idle", type=int, default=0,
                   help="first wait up to this many seconds for other processes to stop using the CPU")
    p.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument("--json", help="also write every figure here")
    a = p.parse_args()

    # Before torch is imported here (it links OpenBLAS too).
    os.environ["OPENBLAS_CORETYPE"] = a.openblas_coretype
    env = engine_env(a)
    data = os.environ.get("MINIBRIDGE_DATA") or os.path.join(ROOT, "..", "shared", "data")
    vocab_dir = os.path.join(data, "vocab", "bert-base-uncased")
    if not os.path.exists(a.cli):
        raise SystemExit(f"{a.cli}: not built (cmake --build build --target minibridge_cli)")
    if not os.path.exists(os.path.join(HERE, "node_modules", "onnxruntime-node")):
        raise SystemExit("onnxruntime-node is not installed: "
                         "ONNXRUNTIME_NODE_INSTALL=skip npm install --no-package-lock --prefix bench")
    os.makedirs(a.work, exist_ok=True)
    tmp = os.path.join(a.work, "io")
    os.makedirs(tmp, exist_ok=True)
    # A snapshot of the binary: a rebuild of the tree during the run must not change what is timed.
    snapshot = os.path.join(a.work, "minibridge-snapshot")
    shutil.copy2(a.cli, snapshot + ".tmp")
    os.replace(snapshot + ".tmp", snapshot)
    a.cli = snapshot

    if a.wait_idle:
        deadline = time.time() + a.wait_idle
        while True:
            busy = busy_processes(interval=2.0)
            if not busy:
                break
            if time.time() > deadline:
                log(f"CPU still busy after {a.wait_idle} s ({', '.join(busy)}); measuring anyway")
                break
            log(f"waiting for an idle CPU: {', '.join(busy)}")
            time.sleep(30)

    shapes = [s for s in a.shapes.split(",") if s]
    batches = [int(b) for b in a.batches.split(",") if b]
    varied = {s for s in a.varied.split(",") if s}
    train_shapes = {s for s in a.train_shapes.split(",") if s}
    train_bf16_shapes = {s for s in a.train_bf16_shapes.split(",") if s}
    low_precision_shapes = {"bf16": {s for s in a.bf16_shapes.split(",") if s},
                            "int8": {s for s in a.int8_shapes.split(",") if s}}
    rows, agreement, contention = [], {}, []
    for shape in shapes:
        model_dir = make_model(a.work, shape, a.seed, vocab_dir)
        cfg = shape_config(shape)
        precisions = [p for p, s in low_precision_shapes.items() if shape in s]
        agreement[shape] = check_agreement(a, env, model_dir, cfg, shape, tmp, precisions)
        cases = [("forward", "forward", B, [a.seq] * B) for B in batches]
        for p in precisions:
            cases += [(f"forward, {p} (PyTorch {PEER_NAMES[p]}; ORT fp32)", "forward", B, [a.seq] * B) for B in batches]
        if shape in varied:
            import random
            rng = random.Random(a.seed + 7)
            lengths = [glue_like_length(rng.random(), a.seq) for _ in range(a.varied_batch)]
            cases.append(("forward, GLUE-like lengths", "forward", a.varied_batch, lengths))
        if shape in train_shapes:
            cases.append(("training step", "train", a.train_batch, [a.seq] * a.train_batch))
        if shape in train_bf16_shapes:
            cases.append((f"training step, bf16 (PyTorch {PEER_NAMES['bf16']})", "train", a.train_batch,
                          [a.seq] * a.train_batch))
        for what, mode, B, lengths in cases:
            inputs = os.path.join(tmp, f"{shape}_{mode}_{B}_{len(set(lengths))}.json")
            make_inputs(inputs, cfg, lengths, a.seed + B)
            engines = list(ENGINES) if mode == "forward" else ["minibridge", "pytorch"]
            label = f"{shape} {what} batch {B}"
            if mode == "forward":
                precision = next((p for p in precisions if what.startswith(f"forward, {p} ")), "f32")
                if precision != "f32":  # PyTorch in the same precision
                    engines = [e if e != "pytorch" else f"pytorch-{precision}" for e in engines]
                res, cont = time_case(a, env, model_dir, inputs, mode, engines, a.rounds, a.warmup, a.iters, label,
                                      precision=precision)
            else:
                precision = "bf16" if what.startswith("training step, bf16") else "f32"
                if precision != "f32":
                    engines = ["minibridge", f"pytorch-{precision}"]
                res, cont = time_case(a, env, model_dir, inputs, mode, engines, a.train_rounds, a.train_warmup,
                                      a.train_iters, label, precision=precision)
            contention += cont
            rows.append({"shape": shape, "what": what, "batch": B, "seq": max(lengths), "lengths": lengths,
                         "results": res})

    info = machine_info(a)
    section = render(rows, info, a, agreement, contention)
    print(section)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "rows": rows, "agreement": agreement, "contention": contention,
                       "settings": vars(a)}, f, indent=1)
    if a.write_results:
        write_results(a.results, section)
        log(f"updated {a.results}")


if __name__ == "__main__":
    main()
