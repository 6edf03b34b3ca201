"""BOB's published accuracies beside ours: the report's paper table (``python -m bobjax.report`` prints it for many
runs).

``paper_results.json`` holds the numbers of the paper's result tables that bobjax knows (its ``source`` says where
they come from). A comparison *matches a cell* of those tables when its dataset, classifier backbone and shots are
the cell's (:func:`cell`). The table lists every number of the paper, in order, with ours beside those of the matching
cell: the mean and std over seeds of each method's test top-1 at the sweep point chosen on validation; where no run
matches, our column is empty. Methods of ours that the paper has no number for come last. A report shows the rows of
the cell its comparison runs, and no paper table for a run that is no cell of the paper (the toy world, another
dataset, backbone or number of shots).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from bobjax.data import paper_datasets
from bobjax.report import render
from bobjax.report.results import Results

PAPER_FILE = os.path.join(os.path.dirname(__file__), "paper_results.json")
# The paper's names of bobjax's datasets (config.data.name) in its few-shot table, and of its classifier backbones
# (config.classify.backbone).
DATASETS = {d.name: d.tfds_name for d in paper_datasets.DATASETS.values() if d.main_table}
BACKBONES = {"clip": "clip_vit_b16", "rn50": "resnet50", "mae": "mae_vit_b16"}
HEADER = ["table", "dataset", "backbone", "shots", "method", "paper top-1", "ours top-1", "ours - paper"]


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    dataset: str  # The paper's names (DATASETS, BACKBONES).
    backbone: str
    shots: int

    def __str__(self) -> str:
        return f"{self.dataset} / {self.backbone} / {self.shots} shots"


@dataclasses.dataclass(frozen=True)
class Score:
    """Ours: a method's test top-1 (%), mean and std over its seeds."""

    mean: float
    std: float
    seeds: int


@functools.cache
def published() -> dict:
    with open(PAPER_FILE) as f:
        return json.load(f)


def cell(config) -> Cell | None:
    """The cell of the paper's tables that ``config`` (a config, or the dict of its config.json) runs; None for data
    the paper has no table of (the toy world, a long tail, another dataset or backbone)."""
    data, backbone = config["data"], config["classify"]["backbone"]
    datasets = {name: short for short, name in DATASETS.items()}
    backbones = {name: short for short, name in BACKBONES.items()}
    if data["source"] == "toyworld" or data["imbalance"] or data["name"] not in datasets or backbone not in backbones:
        return None
    return Cell(datasets[data["name"]], backbones[backbone], int(data["shots"]))


def table(ours: dict[Cell, dict[str, Score]], only: Cell | None = None) -> list[list[str]]:
    """The rows under :data:`HEADER`: every published number (of cell ``only``, if given) with ours beside it, then
    ours that have none."""
    rows, published_keys = [], set()
    for entry in published()["results"]:
        at = Cell(entry["dataset"], entry["backbone"], entry["shots"])
        if only is not None and at != only:
            continue
        published_keys.add((at, entry["method"]))
        score = ours.get(at, {}).get(entry["method"])
        paper = f"{entry['top1']:.2f}" + (f" ± {entry['std']:.2f}" if entry["std"] is not None else "")
        rows.append([entry["table"], at.dataset, at.backbone, str(at.shots), entry["method"], paper, _ours(score),
                     "" if score is None else f"{score.mean - entry['top1']:+.2f}"])
    for at in sorted(ours):
        rows += [["", at.dataset, at.backbone, str(at.shots), method, "", _ours(score), ""]
                 for method, score in ours[at].items() if (at, method) not in published_keys]
    return rows


def _ours(score: Score | None) -> str:
    return "" if score is None else f"{score.mean:.2f} ± {score.std:.2f} ({score.seeds} seeds)"


def section(config, results: Results) -> render.Section | None:
    """The report's paper table for the comparison ``config`` ran: the published numbers of its cell with ours beside
    them; None where the run is no cell the paper has numbers for (the toy world, another dataset, backbone or number
    of shots: ``python -m bobjax.report`` prints the whole table)."""
    at = cell(config)
    info = published()
    if at is None or not any(Cell(e["dataset"], e["backbone"], e["shots"]) == at for e in info["results"]):
        return None
    ours = {at: {m.method: Score(m.top1_mean, m.top1_std, len(m.seeds)) for m in results.methods}}
    tables = " ".join(f"Table {name!r}: {text}" for name, text in info["tables"].items())
    return render.Section(
        "Beside the paper: BOB's published top-1 (%)",
        text=f"This comparison runs the paper's cell {at}: ours is each method's test top-1 at the sweep point chosen "
             f"on validation, mean ± std over seeds; methods the paper has no number for come last. The paper's "
             f"synthetic images come from Stable Diffusion 2.1-base, 100 per class; this comparison's from "
             f"{config.model.sd}, {config.generate.images_per_class} per class. {tables} Source: {info['paper']} "
             "(bobjax/report/paper_results.json says how the numbers were transcribed; `python -m bobjax.report "
             "WORKDIR ...` prints every cell).",
        header=HEADER, rows=table(ours, only=at))
