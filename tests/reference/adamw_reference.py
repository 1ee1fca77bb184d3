#!/usr/bin/env python3
"""The PyTorch trajectory that minibridge's AdamW + clipping + LR schedule must reproduce.

Usage: adamw_reference.py OUT_DIR      (run with Debian's /usr/bin/python3, which has torch)

Set up the way Hugging Face Trainer does it: torch.optim.AdamW with two param groups (weight decay,
and none for biases and LayerNorm weights), clip_grad_norm_ before each step, LambdaLR with the
linear warm-up/decay of get_linear_schedule_with_warmup. One parameter gets no grad on some steps.

Writes OUT_DIR/adamw.safetensors: init.<p>, grad.<k>.<p> (absent when the grad is None),
param.<k>.<p> (after step k), exp_avg.<p> / exp_avg_sq.<p> (final state); and OUT_DIR/adamw.json:
the settings, the parameter names in order, and per step the lr used and the pre-clip grad norm.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import write_safetensors  # noqa: E402

STEPS, WARMUP, TOTAL = 20, 4, 24
BASE_LR, WEIGHT_DECAY, MAX_NORM = 1e-2, 0.1, 1.0
SHAPES = {
    "encoder.dense.weight": (6, 5),
    "encoder.dense.bias": (6,),
    "encoder.LayerNorm.weight": (6,),
    "encoder.LayerNorm.bias": (6,),
    "embeddings.word_embeddings.weight": (7, 5),  # no grad when k % 3 == 1
    "cls.layer_norm.weight": (5,),
    "classifier.weight": (2, 6),
}


def no_decay(name):
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


def lr_lambda(step):  # transformers.get_linear_schedule_with_warmup
    if step < WARMUP:
        return float(step) / float(max(1, WARMUP))
    return max(0.0, float(TOTAL - step) / float(max(1, TOTAL - WARMUP)))


def main(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    params = {n: torch.nn.Parameter(torch.randn(*s, generator=g) * 0.5 + (1.0 if "LayerNorm.weight" in n else 0.0))
              for n, s in SHAPES.items()}
    groups = [{"params": [p for n, p in params.items() if not no_decay(n)], "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in params.items() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=BASE_LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)

    out_t = {f"init.{n}": p.detach().clone() for n, p in params.items()}
    lrs, norms = [], []
    for k in range(STEPS):
        # Alternate small and large grads so that clipping acts on some steps and not others.
        scale = 3.0 if k % 2 else 0.05
        for n, p in params.items():
            if n.startswith("embeddings") and k % 3 == 1:
                p.grad = None
            else:
                p.grad = torch.randn(p.shape, generator=g) * scale
                out_t[f"grad.{k}.{n}"] = p.grad.clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        for n, p in params.items():
            out_t[f"param.{k}.{n}"] = p.detach().clone()
    for n, p in params.items():
        out_t[f"exp_avg.{n}"] = opt.state[p]["exp_avg"].clone()
        out_t[f"exp_avg_sq.{n}"] = opt.state[p]["exp_avg_sq"].clone()

    write_safetensors(os.path.join(out, "adamw.safetensors"), out_t)
    meta = {"steps": STEPS, "warmup": WARMUP, "total": TOTAL, "base_lr": BASE_LR, "weight_decay": WEIGHT_DECAY,
            "max_norm": MAX_NORM, "names": list(SHAPES), "lr": lrs, "norm": norms}
    with open(os.path.join(out, "adamw.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
