"""Per-class quality of a synthetic set against real images, in one encoder's feature space.

- **Fréchet distance** to the class's real reference images (:mod:`bobjax.quality.frechet`; BOB reports per-class FID).
- **Diversity**: the mean cosine distance (1 - cos) between two different images of the class, for the synthetic
  images and for the real reference alike (SaSPA reports LPIPS diversity; cosine distance is the scale-free
  counterpart in a feature space). A set far less diverse than the real one has collapsed onto a few modes.
- **Fidelity**: the share (%) of synthetic images the encoder's zero-shot classifier labels as the class they were
  made for (CLIP against the class prompts; the toy world's oracle).
- **CLIP score**: 100 x max(cos(image, its own generation prompt), 0), averaged (Hessel et al., as torchmetrics'
  CLIPScore computes it); only with a text tower.

A class with fewer than two images on either side gets None for what needs two.
"""

from __future__ import annotations

import numpy as np

from bobjax.quality import frechet


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def diversity(features: np.ndarray) -> float | None:
    """Mean cosine distance over the pairs of distinct rows of ``features``; None for fewer than two."""
    n = len(features)
    if n < 2:
        return None
    cos = unit(features) @ unit(features).T
    return float((n * n - cos.sum()) / (n * (n - 1)))  # The diagonal's distances are 0.


class Reference:
    """The real reference images of each class: their Gaussians and diversity, computed once for every synthetic set
    measured against them."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int):
        labels = np.asarray(labels)
        groups = [features[labels == c] for c in range(num_classes)]
        self.counts = [len(g) for g in groups]
        self.gaussians = [frechet.gaussian(g) if len(g) >= 2 else None for g in groups]
        self.diversity = [diversity(g) for g in groups]


def measure(features: np.ndarray, labels: np.ndarray, reference: Reference, logits: np.ndarray,
            clip_cosines: np.ndarray | None = None) -> dict:
    """Per class (lists indexed by class): ``fd``, ``diversity``, ``fidelity`` (%), ``clip_score`` (None without
    ``clip_cosines``: each image's cosine to its prompt), ``count``, and ``shrinkage``: the Ledoit-Wolf coefficient of
    each class's synthetic covariance (0: none was needed)."""
    labels = np.asarray(labels)
    out = {key: [] for key in ("fd", "diversity", "fidelity", "clip_score", "count", "shrinkage")}
    predicted = np.argmax(logits, axis=-1) if len(labels) else labels
    for c, real in enumerate(reference.gaussians):
        rows = labels == c
        group = features[rows]
        synthetic = frechet.gaussian(group) if len(group) >= 2 else None
        both = synthetic is not None and real is not None
        out["fd"].append(frechet.frechet_distance(synthetic, real) if both else None)
        out["shrinkage"].append(synthetic.shrinkage if synthetic is not None else None)
        out["diversity"].append(diversity(group))
        out["fidelity"].append(100.0 * float(np.mean(predicted[rows] == c)) if rows.any() else None)
        scores = None if clip_cosines is None or not rows.any() else 100.0 * np.maximum(clip_cosines[rows], 0).mean()
        out["clip_score"].append(None if scores is None else float(scores))
        out["count"].append(int(rows.sum()))
    return out


def mean_of(values) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
