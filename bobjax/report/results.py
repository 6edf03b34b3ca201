"""What the report shows, gathered from the run folders: accuracy per method over seeds, per-class accuracy,
the contexts of the real and synthetic training images, wall times, which runs share which stages, and, for a
sweep, each method and seed's grid with the point its validation top-1 chose (:func:`bobjax.sweep.choose`) and, in a
two-phase sweep (:func:`bobjax.compare.two_phase`), that point's full-length run, whose results stand for the method.

Everything is read from artifacts (``classify/metrics.json``, the caption bank, the synthetic dataset,
``timings.json``), never recomputed, so the report describes exactly the runs on disk.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from etils import epath

from bobjax import artifacts, compare, run_folder, share
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
    finals: list[SweepPoint | None]  # Per seed, the chosen point's full-length run (a two-phase sweep's).

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
            out["sweep"] = [{"seed": seed, "chosen": chosen, "points": [dataclasses.asdict(p) for p in grid],
                             **({"final": dataclasses.asdict(final)} if final else {})}
                            for seed, chosen, grid, final in zip(self.seeds, self.chosen, self.grids, self.finals)]
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
    phases: tuple[int, int] | None = None  # A two-phase sweep's epochs: (each point's, the chosen point's full run).

    @property
    def wall_seconds(self) -> float:
        return float(sum(sum(t.values()) for t in self.timings.values()))


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
    points = compare.runs(config, workdir)
    runs = list(points)
    by_method: dict[str, MethodResult] = {}
    first_runs = {}  # The first seed's (chosen) run of each method: its images and contexts stand for the method.
    class_names: list[str] = []
    for choice in compare.choices(points):
        chosen = choice.chosen
        final = compare.final_run(config, choice)
        shown, metrics = (final, compare.metrics(final)) if final else choice.points[choice.index]
        runs += [final] if final else []
        class_names = metrics["class_names"]
        result = by_method.setdefault(chosen.method, MethodResult(chosen.method, [], [], [], [], [], [], []))
        result.seeds.append(chosen.seed)
        result.top1.append(float(metrics["test"]["top1"]))
        result.per_class.append(metrics["test"]["per_class"])
        result.workdirs.append(shown.workdir)
        result.chosen.append(chosen.point)
        result.grids.append([SweepPoint(r.point, m["validation_top1"], float(m["test"]["top1"]))
                             for r, m in choice.points if r.point])
        result.finals.append(SweepPoint(final.point, metrics["validation_top1"], float(metrics["test"]["top1"]))
                             if final else None)
        first_runs.setdefault(chosen.method, shown)

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
                   timings=timings, contexts=contexts, shared=share.shared_folders(runs, workdir),
                   phases=(config.compare.sweep_epochs, config.classify.epochs) if compare.two_phase(config) else None)
