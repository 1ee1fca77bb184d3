#!/usr/bin/env python3
"""Writes random-weight BERT model directories and the outputs PyTorch computes for them.

Usage: make_bert_fixtures.py OUT_DIR      (run with Debian's /usr/bin/python3, which has torch)

Each case OUT_DIR/<case>/ holds a Hugging Face model directory (config.json, model.safetensors or
shards + index, vocab.txt) and expected.safetensors with the inputs (packed ids, token types,
offsets) and the reference outputs computed in float64 from the stored (possibly rounded) weights:
hidden [tokens, H] (real tokens only), pooled [seqs, H], logits [seqs, C].
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import bert_forward, random_weights, write_safetensors  # noqa: E402

DATA = os.environ.get("MINIBRIDGE_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
VOCAB_DIR = os.path.join(DATA, "vocab", "bert-base-uncased")


def config(L, H, A, I, labels=2, **extra):
    c = {"model_type": "bert", "vocab_size": 30522, "hidden_size": H, "num_hidden_layers": L,
         "num_attention_heads": A, "intermediate_size": I, "max_position_embeddings": 512,
         "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "initializer_range": 0.02,
         "pad_token_id": 0}
    if labels:
        c["id2label"] = {str(i): f"class_{i}" for i in range(labels)}
        c["label2id"] = {f"class_{i}": i for i in range(labels)}
    c.update(extra)
    return c


# name: (config, seed, stored dtype, naming, lengths). naming: "classifier" (bert.-prefixed + head),
# "legacy" (BertModel names without prefix, LayerNorm gamma/beta), "sharded" (like classifier, 2 shards).
CASES = {
    "tiny_f32": (config(2, 128, 2, 512), 1, torch.float32, "classifier", [9, 1, 37, 128, 20]),
    "tiny_bf16": (config(2, 128, 2, 512), 1, torch.bfloat16, "classifier", [9, 1, 37, 128, 20]),
    "odd_f32": (config(3, 96, 4, 200, labels=0, layer_norm_eps=1e-5, max_position_embeddings=64, type_vocab_size=3),
                2, torch.float32, "legacy", [5, 64, 13, 2]),
    "odd_f16": (config(3, 96, 4, 200, labels=0, layer_norm_eps=1e-5, max_position_embeddings=64, type_vocab_size=3),
                2, torch.float16, "legacy", [5, 64, 13, 2]),
    "odd6_f32": (config(2, 84, 6, 130, labels=3, hidden_act="gelu_new"), 3, torch.float32, "classifier",
                 [3, 30, 77]),
    "base_f32": (config(12, 768, 12, 3072), 4, torch.float32, "sharded", [128, 17, 64]),
}


def stored_names(w, naming, has_head):
    out = {}
    for k, v in w.items():
        name = k
        if naming == "legacy":
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        elif has_head and not k.startswith("classifier."):
            name = "bert." + k
        out[name] = v
    return out


def make_case(out_root, name, spec):
    cfg, seed, dtype, naming, lengths = spec
    labels = len(cfg.get("id2label", {}))
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    w = random_weights(cfg, seed, with_pooler=True, num_labels=labels)
    w = {k: v.to(dtype) for k, v in w.items()}
    stored = stored_names(w, naming, labels > 0)
    if naming == "legacy":
        stored["embeddings.position_ids"] = torch.arange(cfg["max_position_embeddings"]).unsqueeze(0)
    if naming == "sharded":
        names = list(stored)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        weight_map = {}
        for fname, keys in shards.items():
            write_safetensors(os.path.join(d, fname), {k: stored[k] for k in keys}, {"format": "pt"})
            weight_map.update({k: fname for k in keys})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    else:
        write_safetensors(os.path.join(d, "model.safetensors"), stored, {"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for fn in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(VOCAB_DIR, fn), os.path.join(d, fn))

    # Inputs: random ids (never the pad id, so nothing depends on it), two token-type segments.
    g = torch.Generator().manual_seed(seed + 100)
    B, L = len(lengths), max(lengths)
    ids = torch.zeros(B, L, dtype=torch.long)
    types = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, cfg["vocab_size"], (n,), generator=g)
        types[b, n // 2:n] = torch.randint(0, cfg["type_vocab_size"], (1,), generator=g).item()
        mask[b, :n] = 1
    w64 = {k: v.to(torch.float64) for k, v in w.items()}
    with torch.no_grad():
        hidden, pooled, logits = bert_forward(cfg, w64, ids, types, mask)

    packed = lambda t: torch.cat([t[b, :n] for b, n in enumerate(lengths)])  # noqa: E731
    expected = {
        "input_ids": packed(ids).to(torch.int32),
        "token_type_ids": packed(types).to(torch.int32),
        "offsets": torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32),
        "hidden": packed(hidden).to(torch.float32),
        "pooled": pooled.to(torch.float32),
    }
    if logits is not None:
        expected["logits"] = logits.to(torch.float32)
    write_safetensors(os.path.join(d, "expected.safetensors"), expected)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for name, spec in CASES.items():
        make_case(out, name, spec)
        print(f"fixture {name}: written", flush=True)


if __name__ == "__main__":
    main()
