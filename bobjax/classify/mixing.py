"""How real and synthetic images share a classifier's training stream: the two schemes of the literature.

- ``lambda`` (BOB, DataDream): real images are repeated floor(n_syn_c / n_real_c) times per class, so real and
  synthetic are 1 : 1 per class; each step takes half its batch from each stream and the loss is
  lambda * CE(real half) + (1 - lambda) * CE(synthetic half) (per-row weights: ``step.row_weights``).
- ``alpha`` (SGIA, eq. 2): each slot holds a real image with probability 1 - alpha, else a synthetic image of that
  real image's class.
- ``btl`` (SGIA's Bridging Transfer Learning, eq. 3): the ``alpha`` stream, then a phase on real images only.
- ``real_only``: the baseline.

Streams are grain ``MapDataset``s of references ``(kind, index)`` (kind 0 = real, 1 = synthetic): every step is
a pure function of (seed, step), so a resumed run sees the same batches, and statistics can be checked without
decoding an image. :func:`materialize` turns references into records.
"""

from __future__ import annotations

import grain
import numpy as np

from bobjax.errors import ConfigError

REAL, SYNTHETIC = 0, 1
MIXINGS = ("lambda", "alpha", "btl", "real_only")


def _references(kind: int, indices: np.ndarray) -> grain.MapDataset:
    indices = np.asarray(indices, dtype=np.int64)
    return grain.MapDataset.source(indices).map(lambda i: (kind, int(i)))


def repeated_real_indices(real_labels: np.ndarray, synthetic_labels: np.ndarray) -> np.ndarray:
    """Real indices, each repeated floor(n_syn_c / n_real_c) times (at least once) for its class c."""
    real_labels, synthetic_labels = np.asarray(real_labels), np.asarray(synthetic_labels)
    out = []
    for index, label in enumerate(real_labels):
        n_real = int((real_labels == label).sum())
        n_syn = int((synthetic_labels == label).sum())
        out += [index] * max(1, n_syn // n_real)
    return np.asarray(out, dtype=np.int64)


def real_stream(real_labels: np.ndarray, seed: int) -> grain.MapDataset:
    return _references(REAL, np.arange(len(real_labels))).shuffle(seed=seed).repeat()


def lambda_streams(real_labels: np.ndarray, synthetic_labels: np.ndarray, seed: int) -> tuple[grain.MapDataset, grain.MapDataset]:
    """(real stream, synthetic stream), each shuffled anew every epoch and endless."""
    if len(synthetic_labels) == 0:
        raise ConfigError("mixing 'lambda' needs synthetic images; the synthetic dataset is empty")
    real = _references(REAL, repeated_real_indices(real_labels, synthetic_labels)).shuffle(seed=seed).repeat()
    synthetic = _references(SYNTHETIC, np.arange(len(synthetic_labels))).shuffle(seed=seed + 1).repeat()
    return real, synthetic


def alpha_stream(real_labels: np.ndarray, synthetic_labels: np.ndarray, alpha: float, seed: int) -> grain.MapDataset:
    """Each real slot is swapped, with probability ``alpha``, for a random synthetic image of its class."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"config.classify.alpha must be in [0, 1], got {alpha}")
    synthetic_labels = np.asarray(synthetic_labels)
    by_class = {int(c): np.flatnonzero(synthetic_labels == c) for c in np.unique(real_labels)}
    empty = [c for c, idx in by_class.items() if len(idx) == 0]
    if alpha > 0 and empty:
        raise ConfigError(f"mixing 'alpha' needs synthetic images of every class; classes {empty[:10]} have none")
    real_labels = np.asarray(real_labels)

    def swap(reference, rng: np.random.Generator):
        _, index = reference
        if rng.random() < alpha:
            candidates = by_class[int(real_labels[index])]
            return SYNTHETIC, int(candidates[rng.integers(len(candidates))])
        return reference

    repeated = repeated_real_indices(real_labels, synthetic_labels)
    return _references(REAL, repeated).shuffle(seed=seed).repeat().random_map(swap, seed=seed + 2)


def materialize(references: grain.MapDataset, real_source, synthetic_source) -> grain.MapDataset:
    """References -> records ``{"image", "label", "synthetic"}`` read from the two sources."""

    def load(reference):
        kind, index = reference
        record = (real_source if kind == REAL else synthetic_source)[index]
        return {"image": record["image"], "label": int(record["label"]), "synthetic": kind == SYNTHETIC}

    return references.map(load)


def phases(mixing: str, epochs: int, real_only_epochs: int) -> list[tuple[str, int]]:
    """The training phases of a mixing scheme: (stream kind, epochs)."""
    if mixing not in MIXINGS:
        raise ConfigError(f"config.classify.mixing is {mixing!r}; expected one of {MIXINGS}")
    if mixing == "btl":
        return [("alpha", epochs), ("real_only", real_only_epochs)]
    return [(mixing, epochs)]
