"""A plain PyTorch BERT (Hugging Face BertModel semantics) used as the oracle for parity tests.

Runs on a padded batch with an additive attention mask exactly as HF does, so comparing against
minibridge's packed (padding-free) execution also checks that padding is handled right.
"""
import json
import math
import struct

import torch
import torch.nn.functional as F

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int32: "I32", torch.int64: "I64", torch.float64: "F64"}


def write_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer (the format spec: u64 header size, JSON header, raw bytes)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t
        data = raw.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def random_weights(cfg, seed, with_pooler=True, num_labels=0):
    """HF-named BertModel weights (no prefix) with non-trivial values everywhere (LayerNorm too),
    so that any mistake in any tensor's use shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def n(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    w = {
        "embeddings.word_embeddings.weight": n(V, H, std=0.5),
        "embeddings.position_embeddings.weight": n(cfg["max_position_embeddings"], H, std=0.5),
        "embeddings.token_type_embeddings.weight": n(cfg["type_vocab_size"], H, std=0.5),
        "embeddings.LayerNorm.weight": n(H, std=0.1, mean=1.0),
        "embeddings.LayerNorm.bias": n(H, std=0.1),
    }
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        for part in ("query", "key", "value"):
            w[p + f"attention.self.{part}.weight"] = n(H, H, std=1.5 / math.sqrt(H))
            w[p + f"attention.self.{part}.bias"] = n(H, std=0.1)
        w[p + "attention.output.dense.weight"] = n(H, H, std=1.0 / math.sqrt(H))
        w[p + "attention.output.dense.bias"] = n(H, std=0.1)
        w[p + "attention.output.LayerNorm.weight"] = n(H, std=0.1, mean=1.0)
        w[p + "attention.output.LayerNorm.bias"] = n(H, std=0.1)
        w[p + "intermediate.dense.weight"] = n(I, H, std=1.0 / math.sqrt(H))
        w[p + "intermediate.dense.bias"] = n(I, std=0.1)
        w[p + "output.dense.weight"] = n(H, I, std=1.0 / math.sqrt(I))
        w[p + "output.dense.bias"] = n(H, std=0.1)
        w[p + "output.LayerNorm.weight"] = n(H, std=0.1, mean=1.0)
        w[p + "output.LayerNorm.bias"] = n(H, std=0.1)
    if with_pooler:
        w["pooler.dense.weight"] = n(H, H, std=1.0 / math.sqrt(H))
        w["pooler.dense.bias"] = n(H, std=0.1)
    if num_labels:
        w["classifier.weight"] = n(num_labels, H, std=1.0 / math.sqrt(H))
        w["classifier.bias"] = n(num_labels, std=0.1)
    return w


def act(cfg, x):
    a = cfg.get("hidden_act", "gelu")
    if a == "gelu":
        return F.gelu(x)
    if a in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    raise ValueError(a)


def bert_forward(cfg, w, input_ids, token_type_ids, attention_mask, train=False):
    """HF BertModel + BertForSequenceClassification head on a padded batch [B, L].
    Returns last_hidden_state [B, L, H], pooled [B, H] (or None), logits [B, C] (or None).
    train=True applies dropout where Hugging Face has it (the config's probabilities)."""
    H, A = cfg["hidden_size"], cfg["num_attention_heads"]
    dh, eps = H // A, cfg.get("layer_norm_eps", 1e-12)
    p_h, p_a = cfg.get("hidden_dropout_prob", 0.1), cfg.get("attention_probs_dropout_prob", 0.1)
    p_c = cfg.get("classifier_dropout") or p_h

    def drop(t, p):
        return F.dropout(t, p, training=train)

    B, L = input_ids.shape
    dt = w["embeddings.LayerNorm.weight"].dtype
    pos = torch.arange(L).unsqueeze(0).expand(B, L)
    x = (w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][pos]
         + w["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = drop(F.layer_norm(x, (H,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps), p_h)
    ext = (1.0 - attention_mask[:, None, None, :].to(dt)) * torch.finfo(dt).min
    specs = cfg.get("minibridge", {}).get("layers") or [{"kind": "encoder"}] * cfg["num_hidden_layers"]
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        swap = False
        if specs[l]["kind"] == "shared":
            # Pea-KD's shared layer: layer `source`'s tensors, query and key roles exchanged if swap_qk.
            p = f"encoder.layer.{specs[l]['source']}."
            swap = specs[l].get("swap_qk", False)
        if specs[l]["kind"] == "bridge":
            # MB-BERT's Low-Rank Bridge: LN(x + (x·A)·B + b), or x·A·B + b for the "linear" form.
            up = drop(F.linear(F.linear(x, w[p + "bridge.down.weight"]), w[p + "bridge.up.weight"],
                               w[p + "bridge.up.bias"]), p_h)
            if specs[l].get("form", "residual_layernorm") == "linear":
                x = up
            else:
                x = F.layer_norm(up + x, (H,), w[p + "bridge.LayerNorm.weight"], w[p + "bridge.LayerNorm.bias"], eps)
            continue

        def lin(t, name):
            return F.linear(t, w[p + name + ".weight"], w[p + name + ".bias"])

        def heads(t):
            return t.view(B, L, A, dh).permute(0, 2, 1, 3)

        roles = ("key", "query", "value") if swap else ("query", "key", "value")
        q, k, v = (heads(lin(x, f"attention.self.{n}")) for n in roles)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + ext
        ctx = (drop(scores.softmax(-1), p_a) @ v).permute(0, 2, 1, 3).reshape(B, L, H)
        x = F.layer_norm(drop(lin(ctx, "attention.output.dense"), p_h) + x, (H,),
                         w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        h = act(cfg, lin(x, "intermediate.dense"))
        x = F.layer_norm(drop(lin(h, "output.dense"), p_h) + x, (H,), w[p + "output.LayerNorm.weight"],
                         w[p + "output.LayerNorm.bias"], eps)
    pooled = logits = None
    if "pooler.dense.weight" in w:
        pooled = torch.tanh(F.linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))
        if "classifier.weight" in w:
            logits = F.linear(drop(pooled, p_c), w["classifier.weight"], w["classifier.bias"])
    return x, pooled, logits


class BertModule(torch.nn.Module):
    """bert_forward's plain BERT encoder (no minibridge layer kinds, no dropout) as an nn.Module of
    nn.Embedding, nn.LayerNorm and nn.Linear, for what works on modules: CPU autocast and
    torch.ao.quantization.quantize_dynamic (which replaces the nn.Linear layers). forward returns
    the last hidden state [B, L, H]."""

    def __init__(self, cfg, w):
        super().__init__()
        nn = torch.nn
        assert not cfg.get("minibridge", {}).get("layers"), "BertModule runs plain BERT layers only"
        H, self.A = cfg["hidden_size"], cfg["num_attention_heads"]
        self.cfg, self.H, self.dh, eps = cfg, H, H // self.A, cfg.get("layer_norm_eps", 1e-12)

        def linear(prefix):
            weight = w[prefix + ".weight"]
            m = nn.Linear(weight.shape[1], weight.shape[0])
            m.weight.data.copy_(weight)
            m.bias.data.copy_(w[prefix + ".bias"])
            return m

        def layer_norm(prefix):
            m = nn.LayerNorm(H, eps=eps)
            m.weight.data.copy_(w[prefix + ".weight"])
            m.bias.data.copy_(w[prefix + ".bias"])
            return m

        self.embeddings = nn.ModuleList(nn.Embedding.from_pretrained(w[f"embeddings.{n}_embeddings.weight"].clone())
                                        for n in ("word", "position", "token_type"))
        self.embeddings_ln = layer_norm("embeddings.LayerNorm")
        self.layers = nn.ModuleList()
        for l in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            self.layers.append(nn.ModuleDict({
                "query": linear(p + "attention.self.query"), "key": linear(p + "attention.self.key"),
                "value": linear(p + "attention.self.value"), "attn_out": linear(p + "attention.output.dense"),
                "attn_ln": layer_norm(p + "attention.output.LayerNorm"),
                "ffn_in": linear(p + "intermediate.dense"), "ffn_out": linear(p + "output.dense"),
                "ffn_ln": layer_norm(p + "output.LayerNorm")}))

    def forward(self, input_ids, token_type_ids, attention_mask):
        B, L = input_ids.shape
        pos = torch.arange(L).unsqueeze(0).expand(B, L)
        word, position, token_type = self.embeddings
        x = self.embeddings_ln(word(input_ids) + position(pos) + token_type(token_type_ids))
        ext = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min

        def heads(t):
            return t.reshape(B, L, self.A, self.dh).permute(0, 2, 1, 3)

        for m in self.layers:
            q, k, v = heads(m["query"](x)), heads(m["key"](x)), heads(m["value"](x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + ext
            ctx = (scores.softmax(-1).to(v.dtype) @ v).permute(0, 2, 1, 3).reshape(B, L, self.H)
            x = m["attn_ln"](m["attn_out"](ctx) + x)
            x = m["ffn_ln"](m["ffn_out"](act(self.cfg, m["ffn_in"](x))) + x)
        return x
