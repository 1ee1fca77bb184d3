#!/usr/bin/env python3
"""Oracle for ELECTRA's replaced-token detection (pretrain --objective electra, models/electra.h)
in float64 PyTorch, on a small random discriminator.

Usage: make_electra_fixtures.py OUT_DIR     (Debian's /usr/bin/python3, which has torch)

Written from the ELECTRA paper (Clark et al. 2020, §2: generator MLM loss + λ · the
discriminator's per-token binary loss, λ = 50, a proposal equal to the original counts as
original, no gradient through the sampling) with the engine's documented choices: the generator
is the discriminator's width with its own layers and shares all embedding tensors; the
discriminator's head is dense + GELU + two logits under cross-entropy; proposals are drawn by
inverse CDF from softmax(generator logits) with splitmix64 uniforms (engine/rng.h), draw t for
token t of the packed batch.

OUT_DIR/
  disc/                    a 2-layer H=32 random BertModel (dropout off)
  electra.safetensors      the generator's layer and MLM head and the discriminator's head, under
                           the engine's names (electra.generator.*, electra.discriminator_predictions.*);
                           the packed masked batch (input_ids, token_type_ids, offsets, labels:
                           the original id at the selected positions, -100 elsewhere); proposals
                           (one per selected position); grad.<name> for every trained parameter
                           (the discriminator's under "bert.", as the engine names them)
  electra.json             sample_base, disc_weight, and the loss terms: mlm, disc, loss, replaced
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import act, bert_forward, random_weights, write_safetensors  # noqa: E402
from make_kd_fixtures import config, make_batch, packed_rows, save_model  # noqa: E402

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform(base, draw):
    return (mix((base + (draw + 1) * GAMMA) & MASK64) >> 11) * 2.0 ** -53


def sample(logits_row, u):
    p = torch.exp(logits_row - logits_row.max())
    target = u * float(p.sum())
    acc = 0.0
    for v, pv in enumerate(p.tolist()):
        acc += pv
        if target < acc:
            return v
    return len(p) - 1


def main():
    root = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    cfg = config(2, vocab=50)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    dw = {k: v.double() for k, v in random_weights(cfg, 11).items()}
    save_model(os.path.join(root, "disc"), cfg, dw)
    gcfg = dict(cfg, num_hidden_layers=1)
    gw = {k: v.double() for k, v in random_weights(gcfg, 12, with_pooler=False).items() if "embeddings." not in k}

    def n(*shape, std=0.3, mean=0.0):
        return (torch.randn(*shape, generator=g) * std + mean).double()

    gen_head = {"cls.predictions.transform.dense.weight": n(H, H, std=1 / math.sqrt(H)),
                "cls.predictions.transform.dense.bias": n(H, std=0.1),
                "cls.predictions.transform.LayerNorm.weight": n(H, std=0.1, mean=1.0),
                "cls.predictions.transform.LayerNorm.bias": n(H, std=0.1),
                "cls.predictions.bias": n(V, std=0.1)}
    disc_head = {"dense.weight": n(H, H, std=1 / math.sqrt(H)), "dense.bias": n(H, std=0.1),
                 "dense_prediction.weight": n(2, H, std=1 / math.sqrt(H)), "dense_prediction.bias": n(2, std=0.1)}
    params = {}  # engine name -> tensor (float64, requires grad)
    for k, v in dw.items():
        if not k.startswith("pooler."):
            params["bert." + k] = v
    for k, v in gw.items():
        params["electra.generator.bert." + k] = v
    for k, v in gen_head.items():
        params["electra.generator." + k] = v
    for k, v in disc_head.items():
        params["electra.discriminator_predictions." + k] = v
    for v in params.values():
        v.requires_grad_(True)

    # A packed batch: 4 sequences, a third of the tokens selected (never [CLS]/[SEP] positions),
    # 80 % of those masked with id 3, 10 % random, 10 % kept; at least one of each kind.
    lengths = [9, 6, 12, 5]
    ids, types, mask, _ = make_batch(g, V, lengths)
    ids[:, 0] = 1
    for i, L in enumerate(lengths):
        ids[i, L - 1] = 2
    original = ids.clone()
    labels = torch.full_like(ids, -100)
    masked = ids.clone()
    kinds = []
    for i, L in enumerate(lengths):
        for t in range(1, L - 1):
            if torch.rand((), generator=g) < 0.35:
                labels[i, t] = ids[i, t]
                r = float(torch.rand((), generator=g))
                kind = 0 if r < 0.8 else 1 if r < 0.9 else 2
                kinds.append(kind)
                if kind == 0:
                    masked[i, t] = 3
                elif kind == 1:
                    masked[i, t] = int(torch.randint(4, V, (1,), generator=g))
    assert {0, 1, 2} <= set(kinds) or len(kinds) >= 8

    # The generator on the masked input; shares the discriminator's embedding tensors.
    gen_w = {k: params["electra.generator.bert." + k] for k in gw}
    for k in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"):
        gen_w[k] = params["bert." + k]
    h_gen, _, _ = bert_forward(gcfg, gen_w, masked, types, mask)
    flat_labels = packed_rows(labels, lengths)
    sel = (flat_labels != -100).nonzero().flatten()
    rows = packed_rows(h_gen, lengths)[sel]
    p = "electra.generator.cls.predictions."
    t = act(cfg, F.linear(rows, params[p + "transform.dense.weight"], params[p + "transform.dense.bias"]))
    t = F.layer_norm(t, (H,), params[p + "transform.LayerNorm.weight"], params[p + "transform.LayerNorm.bias"], 1e-12)
    gen_logits = F.linear(t, params["bert.embeddings.word_embeddings.weight"], params[p + "bias"])
    mlm = F.cross_entropy(gen_logits, flat_labels[sel])

    base = 0x1234_5678_9ABC_DEF0
    proposals = [sample(gen_logits[k].detach(), uniform(base, int(sel[k]))) for k in range(len(sel))]
    flat_orig = packed_rows(original, lengths)
    flat_corrupt = flat_orig.clone()
    flat_corrupt[sel] = torch.tensor(proposals)
    replaced = (flat_corrupt != flat_orig).long()
    corrupt = original.clone()
    off = 0
    for i, L in enumerate(lengths):
        corrupt[i, :L] = flat_corrupt[off:off + L]
        off += L

    h_disc, _, _ = bert_forward(cfg, {k: params["bert." + k] for k in dw if not k.startswith("pooler.")},
                                corrupt, types, mask)
    q = "electra.discriminator_predictions."
    d = act(cfg, F.linear(packed_rows(h_disc, lengths), params[q + "dense.weight"], params[q + "dense.bias"]))
    d_logits = F.linear(d, params[q + "dense_prediction.weight"], params[q + "dense_prediction.bias"])
    disc = F.cross_entropy(d_logits, replaced)
    disc_weight = 50.0
    loss = mlm + disc_weight * disc
    loss.backward()

    out = {}
    for k, v in params.items():
        if k.startswith("electra."):
            out[k] = v.detach().float()
        out["grad." + k] = (v.grad if v.grad is not None else torch.zeros_like(v)).float()
    out["input_ids"] = packed_rows(masked, lengths).to(torch.int32)
    out["token_type_ids"] = packed_rows(types, lengths).to(torch.int32)
    out["offsets"] = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    out["labels"] = flat_labels.to(torch.int32)
    out["proposals"] = torch.tensor(proposals, dtype=torch.int32)
    write_safetensors(os.path.join(root, "electra.safetensors"), out)
    meta = {"sample_base": base, "disc_weight": disc_weight, "mlm": float(mlm), "disc": float(disc),
            "loss": float(loss), "replaced": int(replaced.sum()), "selected": len(sel)}
    with open(os.path.join(root, "electra.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("ELECTRA fixtures written:", meta, flush=True)


if __name__ == "__main__":
    main()
