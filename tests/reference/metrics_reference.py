#!/usr/bin/env python3
"""Reference values for tests/test_metrics.cpp, computed independently of the C++ formulas:
MCC as the Pearson correlation of the two 0/1 vectors, F1 from precision and recall, Pearson by
numpy.corrcoef, Spearman from ranks built with numpy.unique (ties averaged), as SciPy does.

usage: metrics_reference.py IN.json OUT.json
IN: [{"pred": [int], "gold": [int], "x": [float], "y": [float]}, ...]
OUT: [{"accuracy", "f1", "mcc", "pearson", "spearman"}, ...]
"""
import json
import sys

import numpy as np


def f1(pred, gold):
    tp = np.sum((pred == 1) & (gold == 1))
    if tp == 0:
        return 0.0
    precision, recall = tp / np.sum(pred == 1), tp / np.sum(gold == 1)
    return float(2 * precision * recall / (precision + recall))


def mcc(pred, gold):
    if pred.std() == 0 or gold.std() == 0:
        return 0.0
    return float(np.corrcoef(pred.astype(np.float64), gold.astype(np.float64))[0, 1])


def ranks(x):
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first copy
    return (first + (counts - 1) / 2.0)[inverse]


def main():
    cases = json.load(open(sys.argv[1]))
    out = []
    for c in cases:
        pred, gold = np.array(c["pred"]), np.array(c["gold"])
        x, y = np.array(c["x"], dtype=np.float64), np.array(c["y"], dtype=np.float64)
        out.append({
            "accuracy": float(np.mean(pred == gold)),
            "f1": f1(pred, gold),
            "mcc": mcc(pred, gold),
            "pearson": float(np.corrcoef(x, y)[0, 1]),
            "spearman": float(np.corrcoef(ranks(x), ranks(y))[0, 1]),
        })
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
