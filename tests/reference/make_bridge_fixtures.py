#!/usr/bin/env python3
"""PyTorch oracle for MB-BERT's Low-Rank Bridge (float64 autograd).

Usage: make_bridge_fixtures.py OUT_DIR     (Debian's /usr/bin/python3, which has torch)

OUT_DIR/model/     a small random BertForSequenceClassification directory whose layer 1 is a
                   residual_layernorm bridge and layer 2 a linear bridge (config.json "minibridge"
                   key, bridge.* tensors), between two ordinary layers;
OUT_DIR/batch.safetensors   packed ids, types, offsets, labels;
OUT_DIR/expected.safetensors  last hidden state (packed rows), logits, the CE loss and the
                   gradient of every parameter (HF names), dropout off.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import bert_forward, random_weights, write_safetensors  # noqa: E402

D = torch.float64


def main():
    root = sys.argv[1]
    os.makedirs(os.path.join(root, "model"), exist_ok=True)
    H, r = 32, 8
    cfg = {"model_type": "bert", "vocab_size": 300, "hidden_size": H, "num_hidden_layers": 4,
           "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
           "attention_probs_dropout_prob": 0.0, "pad_token_id": 0,
           "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1},
           "minibridge": {"layers": [
               {"kind": "encoder", "num_heads": 4, "intermediate_size": 64},
               {"kind": "bridge", "rank": r, "form": "residual_layernorm"},
               {"kind": "bridge", "rank": r, "form": "linear"},
               {"kind": "encoder", "num_heads": 4, "intermediate_size": 64}]}}
    w32 = random_weights(cfg, 21, with_pooler=True, num_labels=2)
    g = torch.Generator().manual_seed(22)
    for l in (1, 2):
        p = f"encoder.layer.{l}."
        for k in [k for k in w32 if k.startswith(p)]:
            del w32[k]
        w32[p + "bridge.down.weight"] = torch.randn(r, H, generator=g) * 0.3
        w32[p + "bridge.up.weight"] = torch.randn(H, r, generator=g) * 0.3
        w32[p + "bridge.up.bias"] = torch.randn(H, generator=g) * 0.1
    w32["encoder.layer.1.bridge.LayerNorm.weight"] = torch.randn(H, generator=g) * 0.1 + 1.0
    w32["encoder.layer.1.bridge.LayerNorm.bias"] = torch.randn(H, generator=g) * 0.1
    stored = {("bert." + k if not k.startswith("classifier.") else k): v for k, v in w32.items()}
    write_safetensors(os.path.join(root, "model", "model.safetensors"), stored)
    with open(os.path.join(root, "model", "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    lengths = [5, 11, 2, 8]
    B, L = len(lengths), max(lengths)
    ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=g)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    labels = torch.tensor([1, 0, 1, 0])
    w = {k: v.to(D).requires_grad_(True) for k, v in w32.items()}
    hidden, _, logits = bert_forward(cfg, w, ids, types, mask)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    packed = lambda t: torch.cat([t[i, :n] for i, n in enumerate(lengths)])  # noqa: E731
    write_safetensors(os.path.join(root, "batch.safetensors"), {
        "input_ids": packed(ids).to(torch.int32), "token_type_ids": packed(types).to(torch.int32),
        "labels": labels.to(torch.int32),
        "offsets": torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)})
    out = {"hidden": packed(hidden).detach().to(torch.float32), "logits": logits.detach().to(torch.float32),
           "loss": loss.detach().reshape(1).to(torch.float32)}
    for k, v in w.items():
        out["grad." + ("bert." + k if not k.startswith("classifier.") else k)] = v.grad.to(torch.float32)
    write_safetensors(os.path.join(root, "expected.safetensors"), out)


if __name__ == "__main__":
    main()
