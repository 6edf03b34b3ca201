"""Accuracy summaries: top-1, per class, and many / medium / few-shot buckets for long-tail runs.

Bucket rule (scale-free, so it fits a 30-image CUB-LT head as well as a 1,280-image ImageNet-LT head): with
n_min and n_max the smallest and largest per-class training counts, split [n_min, n_max] into thirds on a log
scale: few if n_c < n_min^(2/3) n_max^(1/3), many if n_c > n_min^(1/3) n_max^(2/3), medium otherwise. On
ImageNet-LT (5 .. 1280) the cuts fall at 32 and 202 images, close to the customary 20 and 100.
"""

from __future__ import annotations

import numpy as np


def bucket_thresholds(train_counts: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(train_counts)), float(np.max(train_counts))
    return low ** (2 / 3) * high ** (1 / 3), low ** (1 / 3) * high ** (2 / 3)


def summarize(predictions: np.ndarray, labels: np.ndarray, num_classes: int, train_counts: np.ndarray | None = None) -> dict:
    """Top-1 (%), per-class accuracy (%, None for a class without test images) and, given per-class training
    counts, the mean per-class accuracy of each bucket."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = predictions == labels
    per_class = [float(correct[labels == c].mean() * 100) if np.any(labels == c) else None for c in range(num_classes)]
    out = {"top1": float(correct.mean() * 100) if len(labels) else 0.0, "per_class": per_class,
           "mean_per_class": float(np.mean([a for a in per_class if a is not None])) if len(labels) else 0.0}
    if train_counts is not None:
        few_cut, many_cut = bucket_thresholds(train_counts)
        groups = {"many": train_counts > many_cut, "few": train_counts < few_cut}
        groups["medium"] = ~(groups["many"] | groups["few"])
        out["buckets"] = {"rule": {"few_below": few_cut, "many_above": many_cut}}
        for name, members in groups.items():
            accs = [per_class[c] for c in np.flatnonzero(members) if per_class[c] is not None]
            out["buckets"][name] = {"classes": int(members.sum()), "accuracy": float(np.mean(accs)) if accs else None}
    return out
