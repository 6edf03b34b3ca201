"""Few-shot, long-tail and split-file selections of a source's training images, and the validation hold-out.

Everything is a deterministic function of the config (and its seed), so each stage recomputes the same split
instead of passing images around; ``splits.json`` in the workdir records it for people and for checks, and is
itself a split file (:mod:`bobjax.data.split_file`): ``--config.data.split_file=RUN/splits.json`` repeats it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from bobjax.data import split_file
from bobjax.data.sources import DataError, RecordSource, Source, load_source


class Subset:
    """The records of ``source`` at ``indices``, in that order (a record source itself)."""

    def __init__(self, source: RecordSource, indices: Sequence[int]):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self._labels = source.labels()[self.indices] if len(self.indices) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]

    def labels(self) -> np.ndarray:
        return self._labels

    def image_ids(self) -> list[str]:
        ids = self.source.image_ids()
        return [ids[i] for i in self.indices]


@dataclasses.dataclass
class Splits:
    """What every stage sees of the real data."""

    name: str
    class_names: list[str]
    descriptor: str
    train: Subset
    validation: RecordSource | None
    test: RecordSource | None

    def manifest(self) -> dict:
        """Image ids per split: what the run used, for people and for resumption checks."""
        out = {"dataset": self.name, "class_names": self.class_names, "descriptor": self.descriptor}
        for split in ("train", "validation", "test"):
            records = getattr(self, split)
            out[split] = records.image_ids() if records is not None else []
        return out


def per_class_indices(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    return [np.flatnonzero(labels == c) for c in range(num_classes)]


def k_shot(labels: np.ndarray, class_names: Sequence[str], shots: int, rng: np.random.Generator,
           held_out: str = "") -> np.ndarray:
    """``shots`` images per class, drawn without replacement; a class with fewer is an error naming it (and
    ``held_out``, what was taken out of the train split before)."""
    chosen = []
    for c, indices in enumerate(per_class_indices(labels, len(class_names))):
        if len(indices) < shots:
            raise DataError(f"class {class_names[c]!r} has {len(indices)} training images{held_out}, fewer than "
                            f"shots={shots}")
        chosen.append(rng.permutation(indices)[:shots])
    return np.sort(np.concatenate(chosen))


def long_tail_counts(max_per_class: int, num_classes: int, imbalance: float) -> list[int]:
    """Exponential profile n_c = n_max * imbalance^(c / (C - 1)), the usual CIFAR-LT / CUB-LT construction."""
    if not 0.0 < imbalance <= 1.0:
        raise DataError(f"config.data.imbalance must be in (0, 1], got {imbalance}")
    if num_classes == 1:
        return [max_per_class]
    return [max(1, int(math.floor(max_per_class * imbalance ** (c / (num_classes - 1))))) for c in range(num_classes)]


def long_tail(labels: np.ndarray, class_names: Sequence[str], imbalance: float, rng: np.random.Generator) -> np.ndarray:
    groups = per_class_indices(labels, len(class_names))
    counts = long_tail_counts(max(len(g) for g in groups), len(class_names), imbalance)
    chosen = []
    for c, (indices, count) in enumerate(zip(groups, counts)):
        if len(indices) < count:
            raise DataError(f"class {class_names[c]!r} has {len(indices)} training images; long tail asks {count}")
        chosen.append(rng.permutation(indices)[:count])
    return np.sort(np.concatenate(chosen))


def stratified_test(labels: np.ndarray, class_names: Sequence[str], fraction: float) -> np.ndarray:
    """Indices of a test split held out of a source that has none: ``round(fraction * n_c)`` images of each class
    (at least one of a class with two or more, never its last), drawn with a fixed seed, so that every seed and
    method of a comparison is tested on the same images, as on a dataset's own test split."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"config.data.test_size must be in (0, 1) (the share of each class held out as the test "
                        f"split), got {fraction}")
    rng = np.random.default_rng(0x7E57)
    chosen = []
    for indices in per_class_indices(labels, len(class_names)):
        n = len(indices)
        count = min(max(int(round(fraction * n)), 1), n - 1) if n >= 2 else 0
        chosen.append(rng.permutation(indices)[:count])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def make_splits(data_config, seed: int) -> Splits:
    source = load_source(data_config)
    return select(source, data_config, seed)


def select(source: Source, data_config, seed: int) -> Splits:
    """Applies the config's split file, or its test and validation hold-outs and shot selection, to ``source``."""
    rng = np.random.default_rng([seed, 0x5EED])
    pool = source.split(data_config.train_split)
    labels = pool.labels()
    test = source.splits.get(data_config.test_split)
    if test is None and not data_config.test_size:
        raise DataError(f"dataset {source.name!r} has no {data_config.test_split!r} split (it has "
                        f"{sorted(source.splits)}) and config.data.test_size is 0; add a test/ folder beside train/, "
                        "or set config.data.test_size (say 0.2) to hold out that share of each class as the test split")
    if split_file.is_manifest(data_config.split_file):
        fixed = split_file.read_manifest(data_config.split_file, source, data_config)
        validation = source.splits.get("validation") if fixed.validation is None else Subset(pool, fixed.validation)
        test = test if fixed.test is None else Subset(pool, fixed.test)
        return Splits(source.name, source.class_names, source.descriptor, Subset(pool, fixed.train), validation, test)
    listed = split_file.read_list(data_config.split_file, pool.image_ids()) if data_config.split_file else None

    available = np.arange(len(pool)) if listed is None else np.setdiff1d(np.arange(len(pool)), listed)
    held_out_test = ""
    if test is None:  # Out of the images a split file does not list, as the validation hold-out below.
        test_indices = available[stratified_test(labels[available], source.class_names, data_config.test_size)]
        test = Subset(pool, test_indices)
        available = np.setdiff1d(available, test_indices)
        held_out_test = f" after the test hold-out (config.data.test_size={data_config.test_size})"

    validation = source.splits.get("validation")
    if data_config.val_size:
        # Out of the images a split file does not list: the authors' few-shot lists come without a validation split.
        if data_config.val_size >= len(available):
            raise DataError(f"config.data.val_size={data_config.val_size} is not smaller than the {len(available)} "
                            f"images of the train split it is held out of{held_out_test}")
        held_out = np.sort(available[rng.permutation(len(available))[: data_config.val_size]])
        validation = Subset(pool, held_out)
        available = np.setdiff1d(available, held_out)

    if listed is not None:
        train = listed
    elif data_config.imbalance:
        train = available[long_tail(labels[available], source.class_names, data_config.imbalance, rng)]
    elif data_config.shots:
        train = available[k_shot(labels[available], source.class_names, data_config.shots, rng, held_out_test)]
    else:
        train = available
    return Splits(source.name, source.class_names, source.descriptor, Subset(pool, train), validation, test)
