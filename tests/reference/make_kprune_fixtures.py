#!/usr/bin/env python3
"""Decision-level PyTorch oracle for K-prune (float64), written from METHODS.md section 2 and the
semantics of the authors' code (snudm-starlab/K-prune: src/prune.py, src/utils/arch.py,
src/utils/capacity.py), independently of compress/kprune.cpp.

Usage: make_kprune_fixtures.py OUT_DIR [VARIANT=1 ...]   (Debian's /usr/bin/python3)

Two small BERTs (3 layers, H = 32, 4 heads of 8, FFN 80, vocab 300) are drawn at random and briefly
fine-tuned in PyTorch (150 Adam steps of 32 sentences, dropout off) on synthetic sentences so that
their units carry different amounts of knowledge: "cls" (2 labels: does the sentence hold one of
the keywords 5..14?) and "reg" (1 output, problem_type regression: how many keywords it holds).
For each model:

OUT_DIR/<model>/model/               config.json + model.safetensors (f32; what the engine loads);
OUT_DIR/<model>/batches.safetensors  the sample set: batches "b<i>." of packed input_ids,
                                     token_type_ids, offsets (int32);
OUT_DIR/<model>/<case>.json          one K-prune run of the oracle: its options (constraint,
                                     lambda_rep, lambda_pred, mu, temperature, seq_len), flops_before,
                                     flops_budget, and per sublayer step j: "predictive" and
                                     "representational" knowledge of every unit of sublayers >= j
                                     (unit level, [] before j), "kept" (the target's kept units,
                                     ascending), "flops_remaining" after the step, "out_w" (the
                                     target's output projection after the step, [H][kept width];
                                     KPWT's solution, or the kept old columns), "tuned" (whether
                                     KPWT's solution was installed), "margin" and "budget_margin"
                                     (how far the decision is from flipping: the relative gaps between
                                     the threshold score and its neighbours, and between the FLOPs of
                                     the last sets tried and the budget; the script fails below 1e-4
                                     and 1e-9), "prefix_rule_kept" (what the engine's KPMS rule would
                                     keep from the same scores, for the record); then "logits" of
                                     the pruned model on every batch and "layers" (its heads and
                                     neurons per layer).
OUT_DIR/cases.json                   the list of cases ("removes_sublayer": some sublayer keeps
                                     nothing).

The run, step by step (sublayers MHA0, FFN0, MHA1, ...), as the authors' code does it:
- knowledge (prune.py compute_scores): masks of ones on the inputs of the output projections of
  sublayers >= j; per batch L = T²·KL(softmax(z_orig/T) ‖ softmax(z/T)) with batchmean (for
  regression the mean squared difference to the original outputs, elementwise as METHODS.md says;
  the authors' code broadcasts it, see mse_broadcast below); P += ½g² of g = ∂L/∂mask;
  R += Σ_{non-pad tokens} a²·mean_k W_out[k,i]²; a head is the mean over its d_h dims;
  P /= number of sentences, R /= number of non-pad tokens. The batches are run padded with HF's
  additive attention mask, and padding is removed from every token statistic as the authors do
  (remove_paddings).
- KPMS (prune.py find_mask): candidates = heads of layers >= l (> l at an FFN step) and neurons
  of layers >= l; sorted ascending; the threshold is the first sorted score whose strictly larger
  scores fit strictly below the remaining budget; the target keeps its units scoring strictly above
  it. (Without ties this is the engine's "longest prefix of the descending order", except that the
  lowest-scoring candidate is never kept even when every candidate fits.)
- KPWT (prune.py knowledge_reconstruction): W = lstsq(AᵀA, Aᵀ(Y − X − b_out)) with A = the kept
  output-projection inputs of the current model, X = the sublayer's input in the current model,
  Y = the original model's pre-LayerNorm sum; installed as the new output projection (arch.py
  prune_heads / prune_neurons), except that prune_neurons returns early, without installing it,
  when an FFN keeps every neuron.
- removal (arch.py): Q/K/V rows and W_O columns, or W1 rows and W2 columns; a sublayer with nothing
  left computes LayerNorm(x) (pruned_BertAttention_forward / pruned_feed_forward_chunk: the output
  bias goes with the dense layer).
- budget (prune.py kprune): F_rem = (1 − c)·F, F = Σ heads·f_head + neurons·f_neuron
  (capacity.py), F_rem −= kept·f after each step.

VARIANT switches (to see what a difference from the authors' code changes; the fixtures the tests
use are made without them):
  removed_bias=1        a removed sublayer computes LN(x + b_out) (the engine's convention)
  tune_full_ffn=1       KPWT's weights are installed also when an FFN keeps every neuron
  mse_broadcast=1       regression loss as the authors' code computes it for 1 label:
                        MSELoss(logits [B,1], orig.squeeze() [B]), which broadcasts to [B,B]
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import bert_forward, random_weights, write_safetensors  # noqa: E402

D = torch.float64
LAYERS, H, HEADS, FFN, VOCAB = 3, 32, 4, 80, 300
DH = H // HEADS
EPS = 1e-12


def config(regression):
    cfg = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": VOCAB,
           "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": FFN,
           "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": EPS, "hidden_act": "gelu",
           "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "pad_token_id": 0,
           "initializer_range": 0.02}
    if regression:
        cfg.update({"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "problem_type": "regression"})
    else:
        cfg.update({"id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}})
    return cfg


# ---------------------------------------------------------------------------------------------
# Data.

def random_sequences(g, n, lo=6, hi=24):
    """[CLS] w... [SEP] w... [SEP]: ids 15..59 (a small working vocabulary, so that
    a few steps learn it), and in about half of the sentences 1 to 3 of
    them replaced by "keywords" 5..14; token types 0 then 1."""
    seqs = []
    for _ in range(n):
        L = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(15, 60, (L,), generator=g)
        mid = L // 2
        if float(torch.rand(1, generator=g)) < 0.5:
            k = int(torch.randint(1, 4, (1,), generator=g))
            at = 1 + torch.randperm(L - 2, generator=g)[:k]
            ids[at] = torch.randint(5, 15, (k,), generator=g)
        ids[0], ids[mid], ids[L - 1] = 2, 3, 3
        types = torch.zeros(L, dtype=torch.long)
        types[mid + 1:] = 1
        seqs.append((ids, types))
    return seqs


def keywords(ids):
    return float(((ids >= 5) & (ids < 15)).sum())


def padded(seqs):
    B, L = len(seqs), max(len(s[0]) for s in seqs)
    ids, types, mask = (torch.zeros(B, L, dtype=torch.long) for _ in range(3))
    for i, (a, t) in enumerate(seqs):
        ids[i, :len(a)], types[i, :len(a)], mask[i, :len(a)] = a, t, 1
    return ids, types, mask


def fine_tune(cfg, w32, regression, seed, steps=150):
    """Adam steps (float32, dropout off) until the model does its task (sample-set accuracy about
    0.98, MSE about 0.15), so that the units' knowledge differs."""
    g = torch.Generator().manual_seed(seed)
    w = {k: v.clone().requires_grad_(True) for k, v in w32.items()}
    opt = torch.optim.Adam(list(w.values()), lr=3e-3)
    for _ in range(steps):
        seqs = random_sequences(g, 32)
        ids, types, mask = padded(seqs)
        y = torch.tensor([keywords(s[0]) for s in seqs])
        _, _, logits = bert_forward(cfg, w, ids, types, mask)
        loss = F.mse_loss(logits[:, 0], y) if regression else F.cross_entropy(logits, (y > 0).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in w.items()}, float(loss)


# ---------------------------------------------------------------------------------------------
# The forward pass of a (pruned) model on a padded batch, with masks on the inputs of the output
# projections and taps on what K-prune measures.

def n_units(w, j):
    p = f"encoder.layer.{j // 2}."
    if j % 2 == 0:
        t = w.get(p + "attention.self.query.weight")
        return 0 if t is None else t.shape[0] // DH
    t = w.get(p + "intermediate.dense.weight")
    return 0 if t is None else t.shape[0]


def forward(cfg, w, batch, masks=None, taps=None, removed_bias=False):
    """Logits [B, C]. masks: {sublayer: [width]}; taps: receives {sublayer: (x, a, sum)} with
    padding removed (a is None for a removed sublayer)."""
    ids, types, amask = batch
    B, L = ids.shape
    keep = amask.bool()
    masks = masks or {}
    pos = torch.arange(L).unsqueeze(0).expand(B, L)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = F.layer_norm(x, (H,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], EPS)
    ext = (1.0 - amask[:, None, None, :].to(D)) * torch.finfo(D).min

    def sublayer(j, x, a, out, ln):
        if a is None:  # removed: LayerNorm(x) in the authors' code
            s = x + w[out + ".bias"] if removed_bias else x
        else:
            am = a * masks[j] if j in masks else a
            s = F.linear(am, w[out + ".weight"], w[out + ".bias"]) + x
        if taps is not None:
            taps[j] = (x[keep], None if a is None else a[keep], s[keep])
        return F.layer_norm(s, (H,), w[ln + ".weight"], w[ln + ".bias"], EPS)

    for l in range(LAYERS):
        p = f"encoder.layer.{l}."
        nh = n_units(w, 2 * l)
        ctx = None
        if nh:
            def heads(t):
                return t.view(B, L, nh, DH).permute(0, 2, 1, 3)
            q, k, v = (heads(F.linear(x, w[p + f"attention.self.{n}.weight"], w[p + f"attention.self.{n}.bias"]))
                       for n in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(DH) + ext
            ctx = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(B, L, nh * DH)
        x = sublayer(2 * l, x, ctx, p + "attention.output.dense", p + "attention.output.LayerNorm")
        inter = None
        if n_units(w, 2 * l + 1):
            inter = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        x = sublayer(2 * l + 1, x, inter, p + "output.dense", p + "output.LayerNorm")
    pooled = torch.tanh(F.linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))
    return F.linear(pooled, w["classifier.weight"], w["classifier.bias"])


def out_name(j):
    p = f"encoder.layer.{j // 2}."
    return p + ("attention.output.dense" if j % 2 == 0 else "output.dense")


# ---------------------------------------------------------------------------------------------
# K-prune.

def flops_per_head(s):
    return 8.0 * s * H * DH + 4.0 * s * s * DH  # capacity.py: 3·2·d·dh·s + 2·2·s²·dh + 2·dh·s·d


def flops_per_neuron(s):
    return 4.0 * s * H


def model_flops(w, s):
    f = 0.0
    for l in range(LAYERS):  # the order of count_model's sum, so that the budget is the same double
        f += n_units(w, 2 * l) * flops_per_head(s) + n_units(w, 2 * l + 1) * flops_per_neuron(s)
    return f


def knowledge(cfg, w, batches, orig_logits, target, opt, var):
    """prune.py compute_scores: unit-level predictive and representational knowledge of every
    sublayer >= target, and the target's A and X over all non-pad tokens (for KPWT)."""
    nsub = 2 * LAYERS
    masks = {s: torch.ones(n_units(w, s) * (DH if s % 2 == 0 else 1), dtype=D, requires_grad=True)
             for s in range(target, nsub)}
    P = {s: torch.zeros_like(m) for s, m in masks.items()}
    R = {s: torch.zeros_like(m) for s, m in masks.items()}
    A, X = [], []
    samples = tokens = 0
    T = opt["temperature"]
    regression = cfg.get("problem_type") == "regression"
    for batch, z0 in zip(batches, orig_logits):
        samples += batch[0].shape[0]
        tokens += int(batch[2].sum())
        taps = {}
        z = forward(cfg, w, batch, masks, taps, var["removed_bias"])
        if regression:
            # MSELoss (mean). The authors' code passes orig.squeeze() ([B]) against logits [B, 1]
            # for one label, which broadcasts to [B, B] (mse_broadcast reproduces it).
            loss = F.mse_loss(z, z0.squeeze(1)) if var["mse_broadcast"] else F.mse_loss(z, z0)
        else:
            loss = F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(z0 / T, dim=1), reduction="batchmean") * T * T
        grads = torch.autograd.grad(loss, [masks[s] for s in sorted(masks)])
        for s, gr in zip(sorted(masks), grads):
            P[s] += 0.5 * gr.detach() ** 2
            a = taps[s][1].detach()
            R[s] += (a ** 2).sum(0) * (w[out_name(s) + ".weight"] ** 2).mean(0)
        X.append(taps[target][0].detach())
        A.append(taps[target][1].detach())
    pred, rep = [[] for _ in range(nsub)], [[] for _ in range(nsub)]
    for s in masks:
        p_, r_ = P[s] / samples, R[s] / tokens
        if s % 2 == 0:
            p_, r_ = p_.view(-1, DH).mean(1), r_.view(-1, DH).mean(1)
        pred[s], rep[s] = p_, r_
    return pred, rep, torch.cat(A), torch.cat(X)


def find_mask(target, scores, f_head, f_neuron, f_rem):
    """prune.py find_mask: the target's kept units, and the decision's margin."""
    l = target // 2
    # heads of layers >= l (> l when the target is an FFN), neurons of layers >= l
    cands = [s for s in range(2 * LAYERS) if (s % 2 == 1 and s // 2 >= l) or
             (s % 2 == 0 and (s // 2 > l or (s // 2 == l and target % 2 == 0)))]
    assert all(s >= target for s in cands)
    pool = torch.cat([scores[s] for s in cands])
    s_tilde = pool.sort().values
    heads = [s for s in cands if s % 2 == 0]
    neurons = [s for s in cands if s % 2 == 1]
    thres, f_at, used_at = s_tilde[0], 0, []
    for f in range(pool.numel()):
        thres = s_tilde[f]
        head_flops = f_head * sum(int((scores[s] > thres).sum()) for s in heads)
        neuron_flops = f_neuron * sum(int((scores[s] > thres).sum()) for s in neurons)
        f_at = f
        used_at.append(head_flops + neuron_flops)
        if head_flops + neuron_flops < f_rem:
            break
    kept = torch.nonzero(scores[target] > thres).flatten().tolist()
    # Margins of the decision: the relative gaps between the threshold score and its neighbours
    # in the sorted pool (float32 noise in the engine's scores must not reorder them), and how far
    # the FLOPs of the last two sets tried are from the budget.
    gaps = [float((s_tilde[b] - s_tilde[a]) / s_tilde[b].abs()) for a, b in ((f_at - 1, f_at), (f_at, f_at + 1))
            if a >= 0 and b < pool.numel()]
    margin = min(gaps, default=float("inf"))
    budget_margin = min(abs(u - f_rem) / f_rem for u in used_at[-2:])
    # The engine's rule (longest prefix of the descending order whose FLOPs stay strictly below
    # the budget), for the report.
    order = sorted(((float(scores[s][u]), -i, s, u) for i, (s, u) in
                    enumerate((s, u) for s in cands for u in range(scores[s].numel()))), reverse=True)
    used, prefix = 0.0, []
    for sc, _, s, u in order:
        f = f_head if s % 2 == 0 else f_neuron
        if not used + f < f_rem:
            break
        used += f
        if s == target:
            prefix.append(u)
    return kept, margin, budget_margin, sorted(prefix)


def kprune(cfg, w0, batches, opt, var):
    w = dict(w0)
    s_len = opt["seq_len"]
    f_head, f_neuron = flops_per_head(s_len), flops_per_neuron(s_len)
    flops = lambda s: f_head if s % 2 == 0 else f_neuron  # noqa: E731
    F0 = model_flops(w0, s_len)
    f_rem = (1.0 - opt["constraint"]) * F0
    budget = f_rem
    with torch.no_grad():
        orig_logits, orig_taps = [], []
        for b in batches:
            taps = {}
            orig_logits.append(forward(cfg, w0, b, taps=taps))
            orig_taps.append(taps)
    steps = []
    for j in range(2 * LAYERS):
        units = n_units(w, j)
        pred, rep, A, X = knowledge(cfg, w, batches, orig_logits, j, opt, var)
        scores = {}
        for s in range(j, 2 * LAYERS):
            know = opt["lambda_rep"] * rep[s] + opt["lambda_pred"] * pred[s]
            scores[s] = opt["mu"] * know / f_head if s % 2 == 0 else know / f_neuron
        kept, margin, budget_margin, prefix = find_mask(j, scores, f_head, f_neuron, f_rem)
        assert margin > 1e-4 and budget_margin > 1e-9, \
            f"step {j}: a near tie (score gap {margin:.1e}, budget gap {budget_margin:.1e}): choose other seeds"
        width = DH if j % 2 == 0 else 1
        cols = [u * width + d for u in kept for d in range(width)]
        name = out_name(j)
        p = f"encoder.layer.{j // 2}."
        if kept:
            # KPWT: min ‖A·W − (Y − X − b_out)‖² over all non-pad tokens, by the normal equations.
            Y = torch.cat([t[j][2] for t in orig_taps])
            Ak = A[:, cols]
            ata, atb = Ak.T @ Ak, Ak.T @ (Y - X - w[name + ".bias"])
            W = torch.linalg.lstsq(ata, atb, rcond=0.0).solution  # [n, H]
            tuned = W.T.contiguous()
            install = not (j % 2 == 1 and len(kept) == units) or var["tune_full_ffn"]
            new_out = tuned if install else w[name + ".weight"][:, cols]
            idx = torch.tensor(cols)
            if j % 2 == 0:
                for n in ("query", "key", "value"):
                    w[p + f"attention.self.{n}.weight"] = w[p + f"attention.self.{n}.weight"][idx]
                    w[p + f"attention.self.{n}.bias"] = w[p + f"attention.self.{n}.bias"][idx]
            else:
                w[p + "intermediate.dense.weight"] = w[p + "intermediate.dense.weight"][idx]
                w[p + "intermediate.dense.bias"] = w[p + "intermediate.dense.bias"][idx]
            w[name + ".weight"] = new_out
        else:
            names = ([p + f"attention.self.{n}.{t}" for n in ("query", "key", "value") for t in ("weight", "bias")]
                     if j % 2 == 0 else [p + "intermediate.dense.weight", p + "intermediate.dense.bias"])
            for n in names + [name + ".weight"]:
                del w[n]
            install = False
        f_rem -= len(kept) * flops(j)
        steps.append({"step": j, "units_before": units, "kept": kept,
                      "predictive": [[] if s < j else pred[s].tolist() for s in range(2 * LAYERS)],
                      "representational": [[] if s < j else rep[s].tolist() for s in range(2 * LAYERS)],
                      "flops_remaining": f_rem, "tuned": install,
                      "out_w": w[name + ".weight"].tolist() if kept else [],
                      "margin": margin, "budget_margin": budget_margin, "prefix_rule_kept": prefix})
    with torch.no_grad():
        logits = [forward(cfg, w, b, removed_bias=var["removed_bias"]) for b in batches]
    layers = [{"heads": n_units(w, 2 * l), "neurons": n_units(w, 2 * l + 1)} for l in range(LAYERS)]
    return {"flops_before": F0, "flops_budget": budget, "steps": steps, "layers": layers,
            "flops_after": model_flops(w, s_len), "logits": [z.tolist() for z in logits]}


# ---------------------------------------------------------------------------------------------

MODELS = {"cls": {"regression": False, "seed": 31}, "reg": {"regression": True, "seed": 32}}
# (model, case, constraint). At c = 0.8 (cls) and 0.7 (reg) whole MHA sublayers are removed.
CASES = [("cls", "c50", 0.5), ("cls", "c70", 0.7), ("reg", "c50", 0.5), ("cls", "c80", 0.8), ("reg", "c70", 0.7)]
OPTIONS = {"lambda_rep": 2.5e-4, "lambda_pred": 1.0, "mu": 8.0, "temperature": 2.0}


def main():
    var = {"removed_bias": False, "tune_full_ffn": False, "mse_broadcast": False}
    paths = []
    for a in sys.argv[1:]:
        k, eq, v = a.partition("=")
        if eq and k in var:
            var[k] = v == "1"
        elif eq:
            sys.exit(f"make_kprune_fixtures: unknown variant {k} (one of {', '.join(var)})")
        else:
            paths.append(a)
    if len(paths) != 1:
        sys.exit(__doc__)
    root = paths[0]
    t0 = time.time()
    cases = []
    for mname, spec in MODELS.items():
        d = os.path.join(root, mname)
        os.makedirs(os.path.join(d, "model"), exist_ok=True)
        cfg = config(spec["regression"])
        w32 = random_weights(cfg, spec["seed"], with_pooler=True, num_labels=1 if spec["regression"] else 2)
        w32, loss = fine_tune(cfg, w32, spec["regression"], spec["seed"] + 100)
        stored = {("bert." + k if not k.startswith("classifier.") else k): v.to(torch.float32) for k, v in w32.items()}
        write_safetensors(os.path.join(d, "model", "model.safetensors"), stored)
        with open(os.path.join(d, "model", "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        # The sample set: 6 batches of 8 sentences, packed.
        g = torch.Generator().manual_seed(spec["seed"] + 200)
        seqs = random_sequences(g, 48)
        groups = [seqs[i:i + 8] for i in range(0, 48, 8)]
        out = {}
        for i, grp in enumerate(groups):
            lengths = [len(s[0]) for s in grp]
            out[f"b{i}.input_ids"] = torch.cat([s[0] for s in grp]).to(torch.int32)
            out[f"b{i}.token_type_ids"] = torch.cat([s[1] for s in grp]).to(torch.int32)
            out[f"b{i}.offsets"] = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
        write_safetensors(os.path.join(d, "batches.safetensors"), out)
        batches = [padded(grp) for grp in groups]
        tokens = sum(len(s[0]) for s in seqs)
        w = {k: v.to(D) for k, v in w32.items()}  # the f32 weights the engine reads, in float64
        with torch.no_grad():  # how well the fine-tuned model does on the sample set (for the record)
            z = torch.cat([forward(cfg, w, b) for b in batches])
            y = torch.tensor([keywords(s[0]) for s in seqs], dtype=D)
            fit = (float(((z[:, 0] - y) ** 2).mean()) if spec["regression"]
                   else float((z.argmax(1) == (y > 0)).double().mean()))
        for model, case, c in CASES:
            if model != mname:
                continue
            opt = dict(OPTIONS, constraint=c, seq_len=tokens / len(seqs))
            res = kprune(cfg, w, batches, opt, var)
            removes = any(not s["kept"] for s in res["steps"])
            res.update({"options": opt, "model": mname, "case": case, "batches": len(groups), "variant": var})
            with open(os.path.join(d, case + ".json"), "w") as f:
                json.dump(res, f)
            cases.append({"model": mname, "case": case, "dir": mname, "expected": f"{mname}/{case}.json",
                          "removes_sublayer": removes})
            print(f"{mname} {case}: heads {[x['heads'] for x in res['layers']]} neurons "
                  f"{[x['neurons'] for x in res['layers']]}; smallest score gap at a decision "
                  f"{min(s['margin'] for s in res['steps']):.1e}; "
                  f"KPWT installed {[int(s['tuned']) for s in res['steps']]};"
                  f" the engine's prefix rule would differ at steps "
                  f"{[s['step'] for s in res['steps'] if s['prefix_rule_kept'] != s['kept']]}; "
                  f"sample-set {'MSE' if spec['regression'] else 'accuracy'} {fit:.3f}")
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"make_kprune_fixtures: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
