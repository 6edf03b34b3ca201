"""Which synthetic images the classifier keeps: the filtering rules of the literature, in an encoder's feature space.

``config.filter.rule``:

- ``none`` (default, BOB's): every image is kept; the filter stage does not run.
- ``cosine`` (DiffCoRe-Mix's hard-cosine filtration): keep an image whose cosine to its class's real training images
  is at least ``config.filter.real_threshold`` and, with ``config.filter.text_threshold`` above -1, whose cosine to
  its class prompt ("a {descriptor} photo of a {class}") is at least that. DiffCoRe-Mix's code compares each image with
  one real image of its class drawn at random (CLIP ViT-B/32, threshold 0.6); here the score is the mean cosine to
  every real training image of the class, the expectation of that draw without its randomness.
- ``zero_shot`` (DISEF): keep an image only if the encoder's zero-shot classifier names its class (argmax).
- ``top_k``: keep the ``config.filter.top_k`` images of each class that the zero-shot classifier gives the highest
  probability of their class (the first generated among equals).

Every image gets a score (the real-image cosine for ``cosine``, the probability of its class otherwise), so the
keep list says how far each image was from the line.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bobjax.errors import ConfigError
from bobjax.quality.measures import unit

RULES = ("none", "cosine", "zero_shot", "top_k")


@dataclasses.dataclass
class Decision:
    kept: np.ndarray  # bool per image
    scores: dict[str, np.ndarray]  # "score" always; "text_score" too for cosine against the class text
    rule: str  # The rule as a sentence, for the keep list and the report.


def check(cfg) -> None:
    """``config.filter`` is valid: a clear error before any image is encoded."""
    if cfg.rule not in RULES:
        raise ConfigError(f"config.filter.rule={cfg.rule!r}; expected one of {RULES}")
    for field in ("real_threshold", "text_threshold"):
        if not -1.0 <= cfg[field] <= 1.0:
            raise ConfigError(f"config.filter.{field}={cfg[field]} is not a cosine; expected a value in [-1, 1] (-1: "
                              "off)")
    if cfg.rule == "top_k" and cfg.top_k < 1:
        raise ConfigError(f"config.filter.top_k={cfg.top_k}; rule 'top_k' needs at least 1 image per class")


def _probabilities(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def decide(cfg, labels: np.ndarray, features: np.ndarray, logits: np.ndarray, real_features: np.ndarray,
           real_labels: np.ndarray, class_text: np.ndarray | None) -> Decision:
    """Applies ``config.filter`` (``cfg``) to synthetic images with ``labels``, ``features`` and zero-shot
    ``logits``; ``real_*``: the few-shot real training images in the same space; ``class_text``: the unit class-prompt
    embeddings, None for an encoder without a text tower."""
    check(cfg)
    labels = np.asarray(labels)
    if cfg.rule == "cosine":
        num_classes = logits.shape[1]
        missing = [c for c in range(num_classes) if (labels == c).any() and not (real_labels == c).any()]
        if missing:
            raise ConfigError(f"config.filter.rule='cosine' compares each image with its class's real training images; "
                              f"classes {missing[:10]} have none")
        real = unit(real_features)
        centres = np.stack([real[real_labels == c].mean(axis=0) if (real_labels == c).any() else np.zeros(real.shape[1])
                            for c in range(num_classes)])
        score = np.sum(unit(features) * centres[labels], axis=1)
        kept = score >= cfg.real_threshold
        scores = {"score": score}
        rule = f"cosine to the class's real training images >= {cfg.real_threshold:g}"
        if cfg.text_threshold > -1.0:
            if class_text is None:
                raise ConfigError(f"config.filter.text_threshold={cfg.text_threshold} needs an encoder with a text tower "
                                  "(a CLIP config.quality.encoder); set it to -1 (off)")
            scores["text_score"] = np.sum(unit(features) * unit(class_text)[labels], axis=1)
            kept &= scores["text_score"] >= cfg.text_threshold
            rule += f" and to the class prompt >= {cfg.text_threshold:g}"
        return Decision(kept, scores, rule + " (DiffCoRe-Mix)")
    probability = _probabilities(logits)[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    if cfg.rule == "zero_shot":
        return Decision(np.argmax(logits, axis=-1) == labels, {"score": probability},
                        "the zero-shot classifier names the image's class (DISEF)")
    if cfg.rule == "top_k":
        kept = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            kept[rows[np.argsort(-probability[rows], kind="stable")[:cfg.top_k]]] = True
        return Decision(kept, {"score": probability},
                        f"the {cfg.top_k} images per class with the highest zero-shot probability of their class")
    return Decision(np.ones(len(labels), bool), {"score": np.full(len(labels), np.nan)}, "none: every image kept")
