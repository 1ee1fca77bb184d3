#!/usr/bin/env python3
"""Gradients computed by PyTorch autograd (float64) for minibridge's op and whole-model tests.

Usage: make_grad_fixtures.py OUT_DIR     (Debian's /usr/bin/python3, which has torch)

OUT_DIR/ops.safetensors   for each op "<op>.<name>": inputs, the upstream gradient "dout" (or a
                          scalar loss), the output "out" and every input gradient "d<input>".
OUT_DIR/bert_step/        a small random BertForSequenceClassification model directory,
                          batch.safetensors (packed ids, types, offsets, labels) and
                          grads.safetensors (loss + the gradient of every parameter, HF names),
                          dropout off.
OUT_DIR/sps_step/         the same for a Pea-KD shared-layer (SPS) student: 2 unique layers run
                          as L0 L1 L0* L1*; grads.safetensors also holds the logits.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import bert_forward, random_weights, write_safetensors  # noqa: E402

torch.manual_seed(0)
D = torch.float64


def rnd(*shape, std=1.0):
    return (torch.randn(*shape) * std).to(torch.float32).to(D)


def leaf(t):
    return t.clone().requires_grad_(True)


def record(out, prefix, inputs, result, dout=None):
    """Backprop dout (or a scalar) and store inputs, output and input grads as f32."""
    for name, t in inputs.items():
        out[f"{prefix}.{name}"] = t.detach().to(torch.float32)
    if dout is None:
        result.backward()
    else:
        out[f"{prefix}.dout"] = dout.to(torch.float32)
        result.backward(dout)
    out[f"{prefix}.out"] = result.detach().reshape(-1 if result.dim() == 0 else result.shape).to(torch.float32)
    for name, t in inputs.items():
        if t.requires_grad:
            out[f"{prefix}.d{name}"] = t.grad.to(torch.float32)


def packed_attention(q, k, v, lengths, heads):
    """Reference attention on packed rows: each sequence attends only within itself."""
    outs, start = [], 0
    W = q.shape[1]
    dh = W // heads
    for n in lengths:
        sl = slice(start, start + n)
        qh = q[sl].view(n, heads, dh).transpose(0, 1)
        kh = k[sl].view(n, heads, dh).transpose(0, 1)
        vh = v[sl].view(n, heads, dh).transpose(0, 1)
        p = (qh @ kh.transpose(-1, -2) / math.sqrt(dh)).softmax(-1)
        outs.append((p @ vh).transpose(0, 1).reshape(n, W))
        start += n
    return torch.cat(outs)


def ops(out):
    T, K, N = 13, 24, 17
    x, W, b = leaf(rnd(T, K)), leaf(rnd(N, K, std=0.3)), leaf(rnd(N))
    record(out, "linear", {"x": x, "W": W, "b": b}, F.linear(x, W, b), rnd(T, N))

    x, r = leaf(rnd(T, K, std=2.0)), leaf(rnd(T, K))
    w, bb = leaf(rnd(K, std=0.2) + 1.0), leaf(rnd(K, std=0.2))
    record(out, "layernorm", {"x": x, "residual": r, "w": w, "b": bb},
           F.layer_norm(x + r, (K,), w, bb, 1e-12), rnd(T, K))

    for name, fn in (("gelu", lambda t: F.gelu(t)), ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh")),
                     ("tanh", torch.tanh)):
        x = leaf(rnd(T, K, std=2.0))
        record(out, name, {"x": x}, fn(x), rnd(T, K))

    x, b = leaf(rnd(T, K)), leaf(rnd(K))
    record(out, "add_bias", {"x": x, "b": b}, x + b, rnd(T, K))
    x, m = leaf(rnd(T, K)), leaf(rnd(K))
    record(out, "mask_columns", {"x": x, "m": m}, x * m, rnd(T, K))

    ids = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    table = leaf(rnd(10, K))
    out["embedding.ids"] = ids.to(torch.int32)
    record(out, "embedding", {"table": table}, table[ids], rnd(len(ids), K))

    lengths, heads, Wd = [5, 1, 12, 7], 3, 18
    Tt = sum(lengths)
    q, k, v = leaf(rnd(Tt, Wd)), leaf(rnd(Tt, Wd)), leaf(rnd(Tt, Wd))
    out["attention.offsets"] = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    record(out, "attention", {"q": q, "k": k, "v": v}, packed_attention(q, k, v, lengths, heads), rnd(Tt, Wd))

    z = leaf(rnd(9, 5, std=3.0))
    labels = torch.tensor([0, 4, -100, 2, 2, 1, -100, 3, 0])
    out["cross_entropy.labels"] = labels.to(torch.int32)
    record(out, "cross_entropy", {"z": z}, F.cross_entropy(z, labels, ignore_index=-100))

    p, t = leaf(rnd(9, 3)), rnd(9, 3)
    out["mse.target"] = t.to(torch.float32)
    record(out, "mse", {"p": p}, F.mse_loss(p, t))

    s, te, T_ = leaf(rnd(9, 4, std=3.0)), rnd(9, 4, std=3.0), 2.0
    out["kl.teacher"] = te.to(torch.float32)
    kl = F.kl_div(F.log_softmax(s / T_, -1), F.softmax(te / T_, -1), reduction="batchmean") * T_ * T_
    record(out, "kl", {"s": s}, kl)

    x = leaf(rnd(6, 11, std=2.0))
    record(out, "l2_normalize", {"x": x}, F.normalize(x, p=2, dim=-1), rnd(6, 11))
    # Pea-KD's patience term: MSE between L2-normalised student and teacher [CLS] vectors.
    s, te = leaf(rnd(5, 11)), rnd(5, 11)
    out["patience.teacher"] = te.to(torch.float32)
    record(out, "patience", {"s": s}, F.mse_loss(F.normalize(s, p=2, dim=-1), F.normalize(te, p=2, dim=-1)))


def bert_step(root):
    cfg = {"model_type": "bert", "vocab_size": 400, "hidden_size": 48, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 80, "max_position_embeddings": 40, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
           "attention_probs_dropout_prob": 0.0, "pad_token_id": 0,
           "id2label": {"0": "a", "1": "b", "2": "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
    os.makedirs(root, exist_ok=True)
    w32 = random_weights(cfg, 11, with_pooler=True, num_labels=3)
    stored = {("bert." + k if not k.startswith("classifier.") else k): v for k, v in w32.items()}
    write_safetensors(os.path.join(root, "model.safetensors"), stored)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    lengths = [7, 19, 3, 12]
    g = torch.Generator().manual_seed(5)
    B, L = len(lengths), max(lengths)
    ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=g)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    labels = torch.tensor([2, 0, 1, 2])
    w = {k: v.to(D).requires_grad_(True) for k, v in w32.items()}
    _, _, logits = bert_forward(cfg, w, ids, types, mask)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    packed = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)]).to(torch.int32)  # noqa: E731
    write_safetensors(os.path.join(root, "batch.safetensors"), {
        "input_ids": packed(ids), "token_type_ids": packed(types), "labels": labels.to(torch.int32),
        "offsets": torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)})
    grads = {"loss": loss.detach().reshape(1).to(torch.float32)}
    for k, v in w.items():
        grads[("bert." + k if not k.startswith("classifier.") else k)] = v.grad.to(torch.float32)
    write_safetensors(os.path.join(root, "grads.safetensors"), grads)


def sps_step(root):
    """A Pea-KD Shuffled-Parameter-Sharing student: 2 unique layers run as L0 L1 L0* L1* (the starred
    ones with query and key exchanged), one cross-entropy step in float64; the gradient of each
    tensor is the sum over both of its uses."""
    unique = {"model_type": "bert", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 48, "max_position_embeddings": 32,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "pad_token_id": 0}
    cfg = dict(unique, num_hidden_layers=4, minibridge={"layers": [
        {"kind": "encoder", "num_heads": 4, "intermediate_size": 48},
        {"kind": "encoder", "num_heads": 4, "intermediate_size": 48},
        {"kind": "shared", "source": 0, "swap_qk": True},
        {"kind": "shared", "source": 1, "swap_qk": True}]})
    os.makedirs(root, exist_ok=True)
    w32 = random_weights(unique, 21, with_pooler=True, num_labels=2)
    stored = {("bert." + k if not k.startswith("classifier.") else k): v for k, v in w32.items()}
    write_safetensors(os.path.join(root, "model.safetensors"), stored)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    lengths = [9, 4, 13]
    g = torch.Generator().manual_seed(6)
    B, L = len(lengths), max(lengths)
    ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=g)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    labels = torch.tensor([1, 0, 1])
    w = {k: v.to(D).requires_grad_(True) for k, v in w32.items()}
    _, _, logits = bert_forward(cfg, w, ids, types, mask)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    packed = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)]).to(torch.int32)  # noqa: E731
    write_safetensors(os.path.join(root, "batch.safetensors"), {
        "input_ids": packed(ids), "token_type_ids": packed(types), "labels": labels.to(torch.int32),
        "offsets": torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)})
    grads = {"loss": loss.detach().reshape(1).to(torch.float32), "logits": logits.detach().to(torch.float32)}
    for k, v in w.items():
        grads[("bert." + k if not k.startswith("classifier.") else k)] = v.grad.to(torch.float32)
    write_safetensors(os.path.join(root, "grads.safetensors"), grads)


def trajectory(root):
    """20 AdamW steps (weight decay 0.01 except biases/LayerNorm, clip 1.0, 2 warm-up steps then
    linear decay) on the bert_step model in float32, cycling through 4 batches; records each
    step's loss (before its update) and the final parameters."""
    cfg = json.load(open(os.path.join(root, "bert_step", "config.json")))
    w32 = random_weights(cfg, 11, with_pooler=True, num_labels=3)
    w = {k: v.clone().requires_grad_(True) for k, v in w32.items()}
    g = torch.Generator().manual_seed(9)
    batches = []
    for b in range(4):
        lengths = torch.randint(2, cfg["max_position_embeddings"] + 1, (5,), generator=g).tolist()
        B, L = len(lengths), max(lengths)
        ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
        for i, n in enumerate(lengths):
            ids[i, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=g)
            mask[i, :n] = 1
        labels = torch.randint(0, 3, (B,), generator=g)
        batches.append((lengths, ids, types, mask, labels))
    decay = [v for k, v in w.items() if not (k.endswith(".bias") or "LayerNorm" in k)]
    no_decay = [v for k, v in w.items() if k.endswith(".bias") or "LayerNorm" in k]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, eps=1e-8, foreach=False)
    steps, warmup = 20, 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup)))
    losses = []
    for step in range(steps):
        lengths, ids, types, mask, labels = batches[step % 4]
        _, _, logits = bert_forward(cfg, w, ids, types, mask)
        loss = F.cross_entropy(logits, labels)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        sched.step()
    out = {"losses": torch.tensor(losses, dtype=torch.float32)}
    for b, (lengths, ids, types, mask, labels) in enumerate(batches):
        packed = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)]).to(torch.int32)  # noqa: E731
        out[f"batch{b}.input_ids"] = packed(ids)
        out[f"batch{b}.offsets"] = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
        out[f"batch{b}.labels"] = labels.to(torch.int32)
    for k, v in w.items():
        out["final." + ("bert." + k if not k.startswith("classifier.") else k)] = v.detach()
    write_safetensors(os.path.join(root, "trajectory.safetensors"), out)


def main():
    root = sys.argv[1]
    os.makedirs(root, exist_ok=True)
    torch.set_num_threads(2)
    out = {}
    ops(out)
    write_safetensors(os.path.join(root, "ops.safetensors"), out)
    bert_step(os.path.join(root, "bert_step"))
    sps_step(os.path.join(root, "sps_step"))
    trajectory(root)
    print("gradient fixtures written", flush=True)


if __name__ == "__main__":
    main()
