"""What the report shows, gathered from the run folders: accuracy per method over seeds, per-class accuracy,
the contexts of the real and synthetic training images, wall times, which runs share which stages, and, for a
sweep, each method and seed's grid with the point its validation top-1 chose (:func:`bobjax.sweep.choose`).

Everything is read from artifacts (``classify/metrics.json``, the caption bank, the synthetic dataset,
``timings.json``), never recomputed, so the report describes exactly the runs on disk.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from etils import epath

from bobjax import artifacts, compare, run_folder, share, sweep
from bobjax.caption import bank as bank_lib


@dataclasses.dataclass
class SweepPoint:
    point: str
    validation_top1: float | None
    test_top1: float


@dataclasses.dataclass
class MethodResult:
    method: str
    seeds: list[int]
    top1: list[float]  # Per seed, test top-1 (%) at the best validation epoch (of the chosen point, in a sweep).
    per_class: list[list[float | None]]  # Per seed, per class (%).
    workdirs: list[epath.Path]  # Per seed, the chosen point's in a sweep.
    grids: list[list[SweepPoint]]  # Per seed, every point of the sweep (none without one).
    chosen: list[str]  # Per seed, the chosen point.

    @property
    def top1_mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def top1_std(self) -> float:
        return float(np.std(self.top1))

    def per_class_mean(self) -> list[float | None]:
        columns = zip(*self.per_class)
        return [float(np.mean([a for a in c if a is not None])) if any(a is not None for a in c) else None
                for c in columns]

    def as_json(self, class_names: list[str]) -> dict:
        out = {"top1": self.top1_mean, "top1_std": self.top1_std, "top1_per_seed": self.top1, "seeds": self.seeds,
               "per_class": dict(zip(class_names, self.per_class_mean()))}
        if any(self.grids):
            out["sweep"] = [{"seed": seed, "chosen": chosen, "points": [dataclasses.asdict(p) for p in grid]}
                            for seed, chosen, grid in zip(self.seeds, self.chosen, self.grids)]
        return out


@dataclasses.dataclass
class Results:
    dataset: str
    class_names: list[str]
    methods: list[MethodResult]
    runs: list[compare.Run]
    timings: dict[str, dict[str, float]]  # Run folder (relative) -> stage -> seconds.
    contexts: dict[str, dict[str, collections.Counter]]  # "real train" / method -> class -> background counts.
    shared: dict[str, list[str]]  # Shared stage folder -> the run folders that use it (bobjax.share).

    @property
    def wall_seconds(self) -> float:
        return float(sum(sum(t.values()) for t in self.timings.values()))


def _metrics(run: compare.Run) -> dict:
    path = run_folder.stage_dir(run.workdir, "classify") / "metrics.json"
    if not path.exists():
        raise artifacts.ArtifactError(f"the report needs {path}, which does not exist; run the classify stage of "
                                      f"method {run.method!r} (seed {run.seed}) first")
    return artifacts.read_json(path)


def _real_contexts(run: compare.Run) -> dict[str, collections.Counter] | None:
    if not bank_lib.bank_path(run.workdir).is_dir():
        return None
    bank = bank_lib.read_caption_bank(run.workdir)
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, background in zip(bank.class_names, bank.backgrounds):
        out[name][background] += 1
    return out


def _synthetic_contexts(run: compare.Run, class_names: list[str]) -> dict[str, collections.Counter] | None:
    import tensorflow_datasets as tfds

    from bobjax.data.tfds_writer import is_finished

    folder = run_folder.stage_dir(run.workdir, "generate")
    if not is_finished(folder):
        return None
    source = tfds.builder_from_directory(folder).as_data_source(
        split="train", decoders={"image": tfds.decode.SkipDecoding()})
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for i in range(len(source)):
        record = source[i]
        out[class_names[int(record["label"])]][record["background"].decode("utf-8") or "(none)"] += 1
    return out


def collect(config, workdir: str) -> Results:
    runs = compare.runs(config, workdir)
    by_seed: dict[tuple[str, int], list[tuple[compare.Run, dict]]] = {}  # The points of each method and seed.
    for run in runs:
        by_seed.setdefault((run.method, run.seed), []).append((run, _metrics(run)))
    by_method: dict[str, MethodResult] = {}
    first_runs = {}  # The first seed's (chosen) run of each method: its images and contexts stand for the method.
    class_names: list[str] = []
    for (method, seed), points in by_seed.items():
        chosen, metrics = points[sweep.choose([r.point for r, _ in points], [m["validation_top1"] for _, m in points])]
        class_names = metrics["class_names"]
        result = by_method.setdefault(method, MethodResult(method, [], [], [], [], [], []))
        result.seeds.append(seed)
        result.top1.append(float(metrics["test"]["top1"]))
        result.per_class.append(metrics["test"]["per_class"])
        result.workdirs.append(chosen.workdir)
        result.chosen.append(chosen.point)
        result.grids.append([SweepPoint(r.point, m["validation_top1"], float(m["test"]["top1"]))
                             for r, m in points if r.point])
        first_runs.setdefault(method, chosen)

    contexts: dict[str, dict[str, collections.Counter]] = {}
    real = next((c for c in map(_real_contexts, first_runs.values()) if c is not None), None)
    if real is not None:
        contexts["real train"] = real
    for run in first_runs.values():
        synthetic = _synthetic_contexts(run, class_names)
        if synthetic is not None:
            contexts[f"{run.method} synthetic"] = synthetic

    timings = {}
    workdir = epath.Path(workdir)
    for folder in sorted({workdir, *(r.workdir for r in runs)}):
        path = folder / run_folder.TIMINGS
        if path.exists():
            timings[str(folder.relative_to(workdir))] = artifacts.read_json(path)
    return Results(dataset=config.data.name, class_names=class_names, methods=list(by_method.values()), runs=runs,
                   timings=timings, contexts=contexts, shared=share.shared_folders(runs, workdir))
