"""The classifier's host input: the mixing streams of ``bobjax.classify.mixing`` cut into per-step batches.

Batch ``s`` of a phase is a pure function of (seed, s): a resumed run starts at its step and sees the same images.
Each host decodes only the rows of the global batch its devices hold (``bobjax.parallel.host_rows``), so the global
batch, row by row, does not depend on the number of hosts or the mesh. Images are resized (shorter side) and
centre-cropped to ``image_size``, then augmented here, on the host (``bobjax.classify.augment``), row ``r`` of global
step ``s`` from the generator ``(seed, s, r)``: the same pixels for any number of hosts, input workers or restarts.
Batches are made by ``workers`` processes (grain's ``mp_prefetch``; :func:`worker_count` sizes them from the host's
CPUs), or by threads of this process when it is 0; MixUp/CutMix happen on the device
(``bobjax.classify.step.prepare``).

With ``lambda`` mixing a global batch is its real rows then its synthetic rows; :attr:`TrainInput.parts` gives
the global row indices of each part, which the loss weights and MixUp/CutMix keep apart.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator

import grain
import numpy as np

from bobjax.classify import augment, mixing
from bobjax.data import image_ops
from bobjax.errors import ConfigError

_READ = grain.ReadOptions(num_threads=4, prefetch_buffer_size=4)


class ResizedCache:
    """A record source whose images are read and resized once, then served from memory.

    For the real training images: few-shot runs repeat each of them floor(n_syn / k) times per epoch, so
    decoding them once saves most of the input work (5 shots x 200 classes at 224 px is 150 MB).
    """

    def __init__(self, source, image_size: int):
        self.source, self.image_size = source, image_size
        self._records: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.source)

    def labels(self) -> np.ndarray:
        return self.source.labels()

    def __getitem__(self, index: int) -> dict:
        record = self._records.get(index)
        if record is None:
            raw = self.source[index]
            record = {"image": image_ops.resize_and_center_crop(np.asarray(raw["image"]), self.image_size),
                      "label": int(raw["label"])}
            self._records[index] = record  # Threads may race to fill a slot; both write the same record.
        return record


class LabelledSource:
    """A record source plus its labels array (what the mixing streams need up front)."""

    def __init__(self, source, labels: np.ndarray):
        self.source, self._labels = source, np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return self.source[index]

    def labels(self) -> np.ndarray:
        return self._labels


def _records(stream: grain.MapDataset, real, synthetic, image_size: int) -> grain.MapDataset:
    def prepare(record):
        out = {"image": image_ops.resize_and_center_crop(np.asarray(record["image"]), image_size),
               "label": np.int32(record["label"]), "synthetic": np.bool_(record["synthetic"]),
               "source_label": np.int32(record["source_label"]), "source_weight": np.float32(record["source_weight"])}
        if "partner" in record:  # realmix: the synthetic image this row is mixed with, and its label.
            out |= {"partner": image_ops.resize_and_center_crop(np.asarray(record["partner"]), image_size),
                    "partner_label": np.int32(record["partner_label"]), "mixed": np.bool_(record["mixed"]),
                    "partner_source_label": np.int32(record["partner_source_label"]),
                    "partner_source_weight": np.float32(record["partner_source_weight"])}
        return out

    return mixing.materialize(stream, real, synthetic).map(prepare)


def _host_rows(parts: list[grain.MapDataset], global_size: int,
               rows: np.ndarray) -> Callable[[int], list[tuple[int, dict]]]:
    """``step -> this host's (global row, record) pairs of that step``. A global batch is the next rows of each part
    side by side (an equal share each: BOB's real and synthetic halves), and a host reads its ``rows`` of it
    (``bobjax.parallel.host_rows``), so the global batch, row by row, is the same for any number of hosts and any
    mesh (augmentation draws by row)."""
    share = global_size // len(parts)
    return lambda step: [(int(r), parts[r // share][step * share + r % share]) for r in rows]


def _augmented(record: dict, spec: augment.AugmentSpec, seed: int, step: int, row: int) -> dict:
    """``record`` with its image (and realmix partner) augmented by the generators of (seed, global step, row)."""
    out = dict(record, image=augment.augment_image(augment.row_rng(seed, step, row), record["image"], spec))
    if "partner" in record:
        out["partner"] = augment.augment_image(augment.row_rng(seed, step, row, 1), record["partner"], spec)
    return out


def _stack(records: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.stack([r[key] for r in records]) for key in records[0]}


@dataclasses.dataclass
class Phase:
    kind: str  # a mixing kind: lambda | alpha | realmix | real_only
    epochs: int
    steps_per_epoch: int
    batch: Callable[[int], dict[str, np.ndarray]]  # step within the phase -> this host's batch

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


MAX_WORKERS = 32  # What classify.input_workers=-1 starts at most.


def worker_count(setting: int, platform: str) -> int:
    """``config.classify.input_workers`` -> input worker processes. -1 (auto): none where the model trains on the CPU
    (the workers would take its cores), else every core of this host but two, at most 32 (a v5e-8 host's 224 vCPUs
    need a few: benchmarks/host_augment.py)."""
    if setting < -1:
        raise ConfigError(f"config.classify.input_workers must be -1 (auto), 0 (in this process) or a count, "
                          f"got {setting}")
    if setting >= 0:
        return setting
    return 0 if platform == "cpu" else max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) - 2))


def batch_parts(kind: str, batch_size: int) -> list[np.ndarray]:
    """Global row indices of each part of a batch of a phase of ``kind`` (two for ``lambda``: real, synthetic)."""
    if kind != "lambda":
        return [np.arange(batch_size)]
    return np.split(np.arange(batch_size), 2)


class TrainInput:
    """Every phase of the configured mixing scheme, and the batch layout the loss needs."""

    def __init__(self, cfg, real, synthetic, seed: int, image_size: int, rows=None, workers: int = 0):
        """``rows``: the rows of each global batch this host reads (all by default; ``parallel.host_rows``);
        ``workers``: input worker processes (:func:`worker_count`)."""
        self.batch_size, self.workers = cfg.batch_size, workers
        rows = np.arange(cfg.batch_size) if rows is None else np.asarray(rows)
        spec = dataclasses.replace(augment.spec_from_config(cfg), image_size=image_size)
        real = ResizedCache(real, image_size)
        real_labels = real.labels()
        synthetic_labels = synthetic.labels() if synthetic is not None else np.zeros(0, np.int64)
        self.phases: list[Phase] = []
        for kind, epochs in mixing.phases(cfg.mixing, cfg.epochs, cfg.real_only_epochs):
            if kind != "real_only" and synthetic is None:
                raise ConfigError(f"config.classify.mixing={cfg.mixing!r} needs the synthetic dataset; run the "
                                  "generate stage first, or set config.classify.mixing='real_only'")
            if kind == "lambda":
                if cfg.batch_size % 2:
                    raise ConfigError(f"config.classify.batch_size={cfg.batch_size} must split into equal real and "
                                      "synthetic halves")
                streams = mixing.lambda_streams(real_labels, synthetic_labels, seed)
                host = _host_rows([_records(s, real, synthetic, image_size) for s in streams], cfg.batch_size, rows)
                epoch_size = len(mixing.repeated_real_indices(real_labels, synthetic_labels)) + len(synthetic_labels)
            else:
                if kind == "alpha":
                    refs = mixing.alpha_stream(real_labels, synthetic_labels, cfg.alpha, seed)
                    epoch_size = len(mixing.repeated_real_indices(real_labels, synthetic_labels))
                elif kind == "realmix":
                    refs = mixing.realmix_stream(real_labels, synthetic_labels, cfg.alpha, cfg.realmix_prob, seed)
                    epoch_size = len(mixing.repeated_real_indices(real_labels, synthetic_labels))
                else:
                    refs = mixing.real_stream(real_labels, seed)
                    epoch_size = len(real_labels)
                host = _host_rows([_records(refs, real, synthetic, image_size)], cfg.batch_size, rows)
            if cfg.steps_per_epoch < 0:
                raise ConfigError(f"config.classify.steps_per_epoch must be >= 0 (0: one pass), got {cfg.steps_per_epoch}")
            steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(epoch_size / cfg.batch_size))
            first = self.total_steps  # Global step of this phase's first step: rows draw by global step.
            self.phases.append(Phase(kind, epochs, steps_per_epoch, lambda step, host=host, first=first: _stack(
                [_augmented(record, spec, seed, first + step, row) for row, record in host(step)])))

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_at(self, step: int) -> tuple[Phase, int]:
        """The phase of global ``step`` and the step within it."""
        for phase in self.phases:
            if step < phase.steps:
                return phase, step
            step -= phase.steps
        raise IndexError(f"step {step} is past the last phase")

    def parts(self, phase: Phase) -> list[np.ndarray]:
        """Global row indices of each part of a batch of ``phase`` (:func:`batch_parts`)."""
        return batch_parts(phase.kind, self.batch_size)

    def batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        """This host's batches from global ``start_step`` to the end, read ahead by worker processes (or threads)."""
        step = start_step
        while step < self.total_steps:
            phase, within = self.phase_at(step)
            batches = grain.MapDataset.range(within, phase.steps).map(phase.batch)
            if self.workers:
                options = grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2)
                batches = batches.to_iter_dataset().mp_prefetch(options)
            else:
                batches = batches.to_iter_dataset(_READ)
            yield from batches
            step += phase.steps - within


def eval_batches(source, image_size: int, batch_size: int, rows=None) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """This host's ``rows`` (all by default; ``bobjax.parallel.host_rows``) of each global evaluation batch, padded
    with repeats of the last image at the end; yields (batch, number of real rows in the global batch)."""
    n = len(source)
    rows = np.arange(batch_size) if rows is None else np.asarray(rows)

    def load(k: int):
        records = [source[min(k * batch_size + int(r), n - 1)] for r in rows]
        return {"image": np.stack([image_ops.resize_and_center_crop(np.asarray(r["image"]), image_size)
                                   for r in records]),
                "label": np.asarray([r["label"] for r in records], np.int32)}, min(batch_size, n - k * batch_size)

    yield from grain.MapDataset.range(0, math.ceil(n / batch_size)).map(load).to_iter_dataset(_READ)
