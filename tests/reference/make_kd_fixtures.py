#!/usr/bin/env python3
"""Decision-level oracles for Pea-KD and MB-BERT in float64 PyTorch, on small random models.

Usage: make_kd_fixtures.py OUT_DIR     (Debian's /usr/bin/python3, which has torch)

Written from the papers (docs/METHODS.md §1, §3) and the semantics of the Pea-KD authors' code
(cih23/PeaKD: the PTP rule of src/nli_data_processing.py get_pretrain_dataloader_PTP, the SPS
encoder of BERT/pytorch_pretrained_bert/modeling.py BertEncoder_SPS, distillation_loss and
patience_loss of utils/KD_loss.py), with the engine's documented choices where it departs from
them (KL averaged over the batch, not over batch × classes; torch-style AdamW with bias correction
and global-norm clipping instead of BertAdam). The BERT forward below is this file's own (padded
batch, additive mask, like the authors' BertLayer with its `mode` query/key swap).

OUT_DIR/peakd/
  teacher/               a 12-layer H=32 random classifier (dropout off)
  batch.safetensors      packed input_ids, token_type_ids, offsets, labels (6 sequences)
  ptp.safetensors        logits2 [64, 2], gold2, labels2.<TASK> for RTE, MRPC, SST-2, QNLI, CoLA (the
                         paper's t1/t2); logits3 [64, 3], gold3, labels3 (t1 = 0.6, t2 = 0.5)
  pkd.safetensors        the SPS student (teacher layers 0..2 run as L1 L2 L3 L1* L2* L3*): teacher
                         logits and [CLS] rows of hidden states 2,4,6,8,10; student [CLS] rows of
                         hidden states 1..6 (cls.<i>), logits, the PKD loss (α 0.7, T 10, β 100) and
                         its terms (loss, ce, kd, pt; kd_authors: KLDivLoss(reduction='mean')), and
                         grad.<name> for every student parameter
  steps.safetensors/.json   4 AdamW updates of the full batch with that loss (lr 1e-3, weight
                         decay 0.01 except biases/LayerNorm, clip 1.0, warm-up 2 of 4 updates):
                         per update loss/ce/kd/pt, the pre-clip grad norm and lr; param.<k>.<name>
                         after update k
OUT_DIR/mbbert/
  teacher/               a 4-layer H=32 random classifier (dropout off)
  fit.safetensors        fit batches fit0.*, fit1.* and a held-out batch held.*; the reduced-rank
                         regression bridge for layer 3 at rank 8 (A, B, b), its residual branch
                         X·A·B + b and the bridge output LN(X + X·A·B + b) on the held-out batch, the
                         projector onto B's row space
  step1_student/         the teacher with layer 3 replaced by that bridge (model directory)
  step2_bridge.safetensors   bridge tensors for layer 1 of step 2 (fixed random values)
  progressive.safetensors/.json   step 1: the MB-BERT loss (α 0.7, T 2, β 1, all-token MSE of hidden
                         state 4) of step1_student against the teacher on batch.*, grad.<name>;
                         3 AdamW updates (lr 1e-3, decay 0.01, clip 1.0, no warm-up) with per-update
                         terms; step 2: the first loss of the student (step 1's trained student with
                         layer 1 bridged) against step 1's trained student, and the same loss against
                         the original teacher (which the engine must not use)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import random_weights, write_safetensors  # noqa: E402

D = torch.float64
EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# A BERT forward of this file's own: padded [B, L] batch, every hidden state kept.
# layers: list of ("encoder", source_layer, swap_qk) or ("bridge", layer).

def forward(cfg, w, layers, ids, types, mask):
    H, A = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = H // A
    B, L = ids.shape
    pos = torch.arange(L).unsqueeze(0).expand(B, L)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = F.layer_norm(x, (H,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], EPS)
    ext = (1.0 - mask[:, None, None, :].to(D)) * torch.finfo(D).min
    hidden = [x]
    for kind, src, swap in layers:
        p = f"encoder.layer.{src}."
        if kind == "bridge":
            up = (x @ w[p + "bridge.down.weight"].T) @ w[p + "bridge.up.weight"].T + w[p + "bridge.up.bias"]
            x = F.layer_norm(x + up, (H,), w[p + "bridge.LayerNorm.weight"], w[p + "bridge.LayerNorm.bias"], EPS)
        else:
            def lin(t, n):
                return t @ w[p + n + ".weight"].T + w[p + n + ".bias"]

            def split(t):
                return t.view(B, L, A, dh).permute(0, 2, 1, 3)
            # The authors' BertSelfAttention(mode=True): the query from the key projection and the
            # key from the query projection.
            q = split(lin(x, "attention.self.key" if swap else "attention.self.query"))
            k = split(lin(x, "attention.self.query" if swap else "attention.self.key"))
            v = split(lin(x, "attention.self.value"))
            probs = (q @ k.transpose(-1, -2) / math.sqrt(dh) + ext).softmax(-1)
            ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, L, H)
            a = F.layer_norm(lin(ctx, "attention.output.dense") + x, (H,), w[p + "attention.output.LayerNorm.weight"],
                             w[p + "attention.output.LayerNorm.bias"], EPS)
            x = F.layer_norm(lin(F.gelu(lin(a, "intermediate.dense")), "output.dense") + a, (H,),
                             w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], EPS)
        hidden.append(x)
    pooled = torch.tanh(x[:, 0] @ w["pooler.dense.weight"].T + w["pooler.dense.bias"])
    logits = pooled @ w["classifier.weight"].T + w["classifier.bias"]
    return hidden, logits


def plain_layers(n):
    return [("encoder", l, False) for l in range(n)]


def hf(name):
    return name if name.startswith("classifier.") else "bert." + name


def save_model(root, cfg, w, layer_specs=None):
    os.makedirs(root, exist_ok=True)
    c = dict(cfg)
    if layer_specs is not None:
        c["minibridge"] = {"layers": layer_specs}
    write_safetensors(os.path.join(root, "model.safetensors"),
                      {hf(k): v.detach().to(torch.float32).contiguous() for k, v in w.items()})
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(c, f, indent=1)


def make_batch(g, vocab, lengths):
    B, L = len(lengths), max(lengths)
    ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=g)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    return ids, types, mask, lengths


def packed_batch(prefix, batch, labels=None):
    ids, types, mask, lengths = batch
    pk = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)]).to(torch.int32)  # noqa: E731
    out = {prefix + "input_ids": pk(ids), prefix + "token_type_ids": pk(types),
           prefix + "offsets": torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)}
    if labels is not None:
        out[prefix + "labels"] = labels.to(torch.int32)
    return out


def packed_rows(t, lengths):
    return torch.cat([t[i, :n] for i, n in enumerate(lengths)])


def config(layers, vocab=200):
    return {"model_type": "bert", "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "pad_token_id": 0,
            "id2label": {"0": "0", "1": "1"}, "label2id": {"0": 0, "1": 1}}


# ----------------------------------------------------------------------------------------------
# Losses.

def kd_terms(s_logits, t_logits, labels, T):
    """CE, the engine's KD term T²·KL(p_t ‖ p_s) averaged over the batch, and the authors' (averaged
    over batch × classes: nn.KLDivLoss(reduction='mean'))."""
    ce = F.cross_entropy(s_logits, labels)
    kl = F.kl_div(F.log_softmax(s_logits / T, -1), F.softmax(t_logits / T, -1), reduction="sum")
    return ce, kl / s_logits.shape[0] * T * T, kl / s_logits.numel() * T * T


def patience(s_cls, t_cls):
    """PKD's normalised patience term over stacked [B, pairs, H] [CLS] vectors (patience_loss with
    normalized_patience=True): mean squared difference of the L2-normalised vectors."""
    return F.mse_loss(F.normalize(s_cls, p=2, dim=2, eps=EPS), F.normalize(t_cls, p=2, dim=2, eps=EPS))


def no_decay(name):
    return name.endswith(".bias") or "LayerNorm" in name


def adamw_steps(w, loss_fn, steps, lr, warmup, weight_decay, max_norm, record):
    """torch-style AdamW (bias-corrected, decoupled decay), global-norm clipping, linear warm-up then
    linear decay to 0 at `steps` (the lr of update k is lr·k/warmup, then lr·(steps−k)/(steps−warmup)).
    record(k, terms, norm, lr) after each update."""
    m = {k: torch.zeros_like(v) for k, v in w.items()}
    v2 = {k: torch.zeros_like(v) for k, v in w.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for k in range(steps):
        for t in w.values():
            t.grad = None
        terms = loss_fn()
        terms[0].backward()
        grads = {n: (t.grad if t.grad is not None else torch.zeros_like(t)) for n, t in w.items()}
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        coef = min(1.0, max_norm / (norm + 1e-6))
        rate = lr * k / warmup if k < warmup else lr * max(0.0, (steps - k) / max(1, steps - warmup))
        with torch.no_grad():
            for n, t in w.items():
                g = grads[n] * coef
                m[n].mul_(b1).add_(g, alpha=1 - b1)
                v2[n].mul_(b2).addcmul_(g, g, value=1 - b2)
                t.mul_(1 - rate * (0.0 if no_decay(n) else weight_decay))
                denom = v2[n].sqrt() / math.sqrt(1 - b2 ** (k + 1)) + eps
                t.addcdiv_(m[n], denom, value=-rate / (1 - b1 ** (k + 1)))
        record(k, [float(x) for x in terms], norm, rate)


# ----------------------------------------------------------------------------------------------
# Pea-KD.

PTP_PAPER = {"RTE": (0.80, 0.60), "MRPC": (0.95, 0.75), "SST-2": (0.98, 0.80), "QNLI": (0.98, 0.70),
             "CoLA": (0.95, 0.70)}


def ptp_rule(logits, gold, t1, t2):
    """get_pretrain_dataloader_PTP: confidence = max softmax (T = 1); correct = argmax == gold;
    0: correct & c > t1, 1: correct & c ≤ t1, 2: wrong & c > t2, 3: wrong & c ≤ t2."""
    p = F.softmax(logits.to(D), -1)
    c = p.max(-1).values
    right = logits.argmax(-1) == gold
    out = torch.where(right, torch.where(c > t1, 0, 1), torch.where(c > t2, 2, 3))
    return out.to(torch.int32)


def peakd(root):
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(31)

    # PTP labels: binary logits spread over the confidence range of all five tasks' thresholds.
    n = 64
    logits2 = (torch.randn(n, 2, generator=g) * torch.linspace(0.2, 6.0, n).unsqueeze(1)).to(torch.float32)
    gold2 = torch.randint(0, 2, (n,), generator=g)
    ptp = {"logits2": logits2, "gold2": gold2.to(torch.int32)}
    for task, (t1, t2) in PTP_PAPER.items():
        ptp[f"labels2.{task}"] = ptp_rule(logits2, gold2, t1, t2)
    logits3 = (torch.randn(n, 3, generator=g) * 2.0).to(torch.float32)
    gold3 = torch.randint(0, 3, (n,), generator=g)
    ptp.update({"logits3": logits3, "gold3": gold3.to(torch.int32), "labels3": ptp_rule(logits3, gold3, 0.6, 0.5)})
    for task in PTP_PAPER:  # every label occurs, so a swapped branch cannot go unnoticed
        assert len(set(ptp[f"labels2.{task}"].tolist())) == 4, task
    assert len(set(ptp["labels3"].tolist())) == 4
    write_safetensors(os.path.join(root, "ptp.safetensors"), ptp)

    # Teacher (12 layers) and the SPS student (N = 3: teacher layers 0..2, L1 L2 L3 L1* L2* L3*).
    cfg = config(12)
    w32 = random_weights(cfg, 41, with_pooler=True, num_labels=2)
    save_model(os.path.join(root, "teacher"), cfg, {k: v for k, v in w32.items()})
    tw = {k: v.to(D) for k, v in w32.items()}
    s_names = [k for k in w32 if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < 3]
    sw = {k: w32[k].to(D).clone().requires_grad_(True) for k in s_names}
    s_layers = plain_layers(3) + [("encoder", l, True) for l in range(3)]

    batch = make_batch(g, cfg["vocab_size"], [9, 5, 13, 7, 11, 4])
    labels = torch.tensor([1, 0, 0, 1, 1, 0])
    ids, types, mask, lengths = batch
    write_safetensors(os.path.join(root, "batch.safetensors"), packed_batch("", batch, labels))

    with torch.no_grad():
        t_hidden, t_logits = forward(cfg, tw, plain_layers(12), ids, types, mask)
    t_pairs = [2, 4, 6, 8, 10]  # hidden-state indices: the authors' fc_layer_idx 1,3,5,7,9 (0-based layers)
    t_cls = torch.stack([t_hidden[i][:, 0] for i in t_pairs], 1)
    alpha, T, beta = 0.7, 10.0, 100.0

    def pkd_loss():
        hidden, logits = forward(cfg, sw, s_layers, ids, types, mask)
        s_cls = torch.stack([h[:, 0] for h in hidden[1:-1]], 1)  # the authors' full_output[:-1]: layers 1..5
        ce, kd, kd_authors = kd_terms(logits, t_logits, labels, T)
        pt = patience(s_cls, t_cls)
        return (1 - alpha) * ce + alpha * kd + beta * pt, ce, kd, pt, kd_authors, hidden, logits

    loss, ce, kd, pt, kd_authors, hidden, logits = pkd_loss()
    loss.backward()
    out = {"teacher_logits": t_logits.to(torch.float32), "logits": logits.detach().to(torch.float32)}
    for i in t_pairs:
        out[f"teacher_cls.{i}"] = t_hidden[i][:, 0].to(torch.float32)
    for i in range(1, 7):
        out[f"cls.{i}"] = hidden[i][:, 0].detach().to(torch.float32)
    for name, val in (("loss", loss), ("ce", ce), ("kd", kd), ("pt", pt), ("kd_authors", kd_authors)):
        out[name] = val.detach().reshape(1).to(torch.float32)
    for k, v in sw.items():
        out["grad." + hf(k)] = v.grad.to(torch.float32)
    write_safetensors(os.path.join(root, "pkd.safetensors"), out)

    # One KD stage: 4 updates on the full batch.
    sw = {k: w32[k].to(D).clone().requires_grad_(True) for k in s_names}
    steps, meta = {}, {"lr": 1e-3, "warmup_steps": 2, "updates": 4, "weight_decay": 0.01, "max_grad_norm": 1.0,
                       "alpha": alpha, "temperature": T, "beta": beta, "log": []}

    def record(k, terms, norm, rate):
        meta["log"].append({"loss": terms[0], "ce": terms[1], "kd": terms[2], "hidden_mse": terms[3],
                            "grad_norm": norm, "lr": rate})
        for n_, t in sw.items():
            steps[f"param.{k}.{hf(n_)}"] = t.detach().to(torch.float32).clone()

    def stage_loss():
        return pkd_loss()[:4]
    adamw_steps(sw, stage_loss, meta["updates"], meta["lr"], meta["warmup_steps"], meta["weight_decay"],
                meta["max_grad_norm"], record)
    write_safetensors(os.path.join(root, "steps.safetensors"), steps)
    with open(os.path.join(root, "steps.json"), "w") as f:
        json.dump(meta, f, indent=1)


# ----------------------------------------------------------------------------------------------
# MB-BERT.

def reduced_rank_regression(X, Y, r):
    """docs/METHODS.md §1: fit M, b minimising ‖X·M + 1·bᵀ − Y‖² (centred least squares with the
    engine's documented ridge λ = 1e-6 · mean diag(XcᵀXc)), reduce M to rank r by reduced-rank
    regression (project onto the top-r principal directions of the fitted values), and factor the
    rank-r M = A·B with A = U_r Σ_r^½, B = Σ_r^½ V_rᵀ."""
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    Cxx, Cxy = Xc.T @ Xc, Xc.T @ Yc
    lam = 1e-6 * torch.diagonal(Cxx).mean()
    M = torch.linalg.solve(Cxx + lam * torch.eye(Cxx.shape[0], dtype=D), Cxy)
    fitted = Xc @ M
    _, _, Vh = torch.linalg.svd(fitted, full_matrices=False)
    Vr = Vh[:r].T
    Mr = M @ Vr @ Vr.T
    b = ym - xm @ Mr
    U, S, Wh = torch.linalg.svd(Mr, full_matrices=False)
    root = S[:r].sqrt()
    return U[:, :r] * root, root[:, None] * Wh[:r], b, Vr @ Vr.T


def mbbert(root):
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(51)
    cfg = config(4)
    w32 = random_weights(cfg, 52, with_pooler=True, num_labels=2)
    save_model(os.path.join(root, "teacher"), cfg, w32)
    tw = {k: v.to(D) for k, v in w32.items()}
    H, r, layer = cfg["hidden_size"], 8, 3
    specs = [{"kind": "encoder", "num_heads": 4, "intermediate_size": 64} for _ in range(4)]

    # The bridge fit: X = layer 3's input, target = its pre-LayerNorm output minus X.
    fits = [make_batch(g, cfg["vocab_size"], [int(x) for x in torch.randint(4, 30, (8,), generator=g)])
            for _ in range(2)]
    held = make_batch(g, cfg["vocab_size"], [12, 6, 17])
    fit_out = {}
    for i, b in enumerate(fits):
        fit_out.update(packed_batch(f"fit{i}.", b))
    fit_out.update(packed_batch("held.", held))

    def layer_io(b):
        ids, types, mask, lengths = b
        with torch.no_grad():
            hidden, _ = forward(cfg, tw, plain_layers(layer), ids, types, mask)
            x = hidden[-1]
            p = f"encoder.layer.{layer}."
            # the layer up to (not including) its output LayerNorm
            h_all, _ = forward(cfg, tw, plain_layers(layer + 1), ids, types, mask)
            B, L = ids.shape
            A = cfg["num_attention_heads"]
            dh = H // A
            ext = (1.0 - mask[:, None, None, :].to(D)) * torch.finfo(D).min

            def lin(t, n):
                return t @ tw[p + n + ".weight"].T + tw[p + n + ".bias"]

            def split(t):
                return t.view(B, L, A, dh).permute(0, 2, 1, 3)
            probs = (split(lin(x, "attention.self.query")) @ split(lin(x, "attention.self.key")).transpose(-1, -2)
                     / math.sqrt(dh) + ext).softmax(-1)
            ctx = (probs @ split(lin(x, "attention.self.value"))).permute(0, 2, 1, 3).reshape(B, L, H)
            a = F.layer_norm(lin(ctx, "attention.output.dense") + x, (H,), tw[p + "attention.output.LayerNorm.weight"],
                             tw[p + "attention.output.LayerNorm.bias"], EPS)
            pre = lin(F.gelu(lin(a, "intermediate.dense")), "output.dense") + a
            # consistency: LN(pre) is the layer's output
            y = F.layer_norm(pre, (H,), tw[p + "output.LayerNorm.weight"], tw[p + "output.LayerNorm.bias"], EPS)
            assert torch.allclose(y, h_all[-1])
        return packed_rows(x, lengths), packed_rows(pre, lengths)

    X = torch.cat([layer_io(b)[0] for b in fits])
    Y = torch.cat([layer_io(b)[1] for b in fits])
    A_, B_, b_, proj = reduced_rank_regression(X, Y - X, r)
    Xh, _ = layer_io(held)
    branch = Xh @ A_ @ B_ + b_
    p = f"encoder.layer.{layer}."
    ln_w, ln_b = tw[p + "output.LayerNorm.weight"], tw[p + "output.LayerNorm.bias"]
    fit_out.update({"A": A_.to(torch.float32), "B": B_.to(torch.float32), "b": b_.to(torch.float32),
                    "row_projector": proj.to(torch.float32), "held_input": Xh.to(torch.float32),
                    "held_branch": branch.to(torch.float32),
                    "held_bridge": F.layer_norm(Xh + branch, (H,), ln_w, ln_b, EPS).to(torch.float32),
                    "fit_rows": torch.tensor([X.shape[0]], dtype=torch.int32)})
    write_safetensors(os.path.join(root, "fit.safetensors"), fit_out)

    def bridged(w, l, A, B, b, lw, lb):
        w = {k: v for k, v in w.items() if not k.startswith(f"encoder.layer.{l}.")}
        q = f"encoder.layer.{l}.bridge."
        w.update({q + "down.weight": A.T.contiguous(), q + "up.weight": B.T.contiguous(), q + "up.bias": b,
                  q + "LayerNorm.weight": lw, q + "LayerNorm.bias": lb})
        return w

    # Step 1's student: the teacher with layer 3 bridged (the fit above, rounded to f32 as stored).
    s1 = bridged(tw, layer, A_.float().to(D), B_.float().to(D), b_.float().to(D), ln_w, ln_b)
    s1_specs = [dict(s) for s in specs]
    s1_specs[layer] = {"kind": "bridge", "rank": r, "form": "residual_layernorm"}
    save_model(os.path.join(root, "step1_student"), cfg, s1, s1_specs)
    s1_layers = [("bridge" if l == layer else "encoder", l, False) for l in range(4)]

    batch = make_batch(g, cfg["vocab_size"], [10, 7, 15, 5, 9])
    labels = torch.tensor([0, 1, 1, 0, 1])
    ids, types, mask, lengths = batch
    prog = packed_batch("", batch, labels)
    alpha, T, beta = 0.7, 2.0, 1.0

    def mb_loss(sw, s_layers, tw_, t_layers, hidden_index):
        with torch.no_grad():
            th, tl = forward(cfg, tw_, t_layers, ids, types, mask)
        sh, sl = forward(cfg, sw, s_layers, ids, types, mask)
        ce, kd, _ = kd_terms(sl, tl, labels, T)
        # the hidden state right after the replaced position, every (non-pad) token
        mse = F.mse_loss(packed_rows(sh[hidden_index], lengths), packed_rows(th[hidden_index], lengths))
        return (1 - alpha) * ce + alpha * kd + beta * mse, ce, kd, mse

    sw = {k: v.clone().requires_grad_(True) for k, v in s1.items()}
    loss, ce, kd, mse = mb_loss(sw, s1_layers, tw, plain_layers(4), layer + 1)
    loss.backward()
    for name, val in (("loss", loss), ("ce", ce), ("kd", kd), ("hidden_mse", mse)):
        prog["step1." + name] = val.detach().reshape(1).to(torch.float32)
    for k, v in sw.items():
        prog["step1.grad." + hf(k)] = v.grad.to(torch.float32)

    meta = {"lr": 1e-3, "updates": 3, "warmup_steps": 0, "weight_decay": 0.01, "max_grad_norm": 1.0,
            "alpha": alpha, "temperature": T, "beta": beta, "rank": r, "layer": layer, "log": []}
    sw = {k: v.clone().requires_grad_(True) for k, v in s1.items()}

    def record(k, terms, norm, rate):
        meta["log"].append({"loss": terms[0], "ce": terms[1], "kd": terms[2], "hidden_mse": terms[3],
                            "grad_norm": norm, "lr": rate})
        for n_, t in sw.items():
            prog[f"step1.param.{k}.{hf(n_)}"] = t.detach().to(torch.float32).clone()
    adamw_steps(sw, lambda: mb_loss(sw, s1_layers, tw, plain_layers(4), layer + 1), meta["updates"], meta["lr"],
                0, meta["weight_decay"], meta["max_grad_norm"], record)

    # Step 2: the teacher is step 1's trained student; the student is that model with layer 1 bridged.
    trained = {k: v.detach().clone() for k, v in sw.items()}
    l2 = 1
    bridge2 = {"A": torch.randn(H, r, generator=g) * 0.2, "B": torch.randn(r, H, generator=g) * 0.2,
               "b": torch.randn(H, generator=g) * 0.05,
               "ln_w": torch.randn(H, generator=g) * 0.1 + 1.0, "ln_b": torch.randn(H, generator=g) * 0.1}
    write_safetensors(os.path.join(root, "step2_bridge.safetensors"), {
        "bert.encoder.layer.1.bridge.down.weight": bridge2["A"].T.contiguous(),
        "bert.encoder.layer.1.bridge.up.weight": bridge2["B"].T.contiguous(),
        "bert.encoder.layer.1.bridge.up.bias": bridge2["b"],
        "bert.encoder.layer.1.bridge.LayerNorm.weight": bridge2["ln_w"],
        "bert.encoder.layer.1.bridge.LayerNorm.bias": bridge2["ln_b"]})
    s2 = bridged({k: v.float().to(D) for k, v in trained.items()}, l2,
                 *(bridge2[k].to(D) for k in ("A", "B", "b", "ln_w", "ln_b")))
    s2_layers = [("bridge" if l in (l2, layer) else "encoder", l, False) for l in range(4)]
    teacher2 = {k: v.float().to(D) for k, v in trained.items()}  # as the engine reads it back: f32
    sw2 = {k: v.clone().requires_grad_(True) for k, v in s2.items()}
    loss2 = mb_loss(sw2, s2_layers, teacher2, s1_layers, l2 + 1)
    wrong = mb_loss(sw2, s2_layers, tw, plain_layers(4), l2 + 1)
    meta["step2"] = {"layer": l2, "loss": float(loss2[0]), "ce": float(loss2[1]), "kd": float(loss2[2]),
                     "hidden_mse": float(loss2[3]),
                     "with_original_teacher": {"loss": float(wrong[0]), "kd": float(wrong[2]),
                                               "hidden_mse": float(wrong[3])}}
    write_safetensors(os.path.join(root, "progressive.safetensors"), prog)
    with open(os.path.join(root, "progressive.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    root = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    peakd(os.path.join(root, "peakd"))
    mbbert(os.path.join(root, "mbbert"))
    print("KD fixtures written", flush=True)


if __name__ == "__main__":
    main()
