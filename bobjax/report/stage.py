"""The ``report`` stage: ``WORKDIR/report/index.html``, its Markdown twin ``index.md``, for more than a dozen classes
the full per-class tables in ``classes.html`` and ``classes.md`` (:mod:`bobjax.report.classes`), and ``results.json``
(``{method: {"top1": mean over seeds, "top1_std", "top1_per_seed", "seeds", "per_class"}}``, plus
``"synthetic_class_fidelity"`` on the toy world: see :mod:`bobjax.toyworld.fidelity`; and ``"synthetic_quality"``,
per method with a synthetic set: FD, diversity, fidelity, CLIP score and the filter's counts, see
:mod:`bobjax.report.quality_section`).

It covers the run in ``WORKDIR`` or, for a comparison (``config.compare``), every method and seed side by side:
accuracy as a table and a bar chart, per-class accuracy, the real and synthetic images of up to a dozen classes, the
backgrounds those images show, on the toy world how much class detail the synthetic images carry, where the run is a
cell of the paper the paper's published numbers beside ours (:mod:`bobjax.report.paper`), the wall time of every
stage, and the config. The whole folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from bobjax import artifacts, parallel, run_folder, toyworld
from bobjax.data import make_splits
from bobjax.data.tfds_writer import read_dataset
from bobjax.generate.outputs import FIXED_NOISE_CLASSES, FIXED_NOISE_GRID
from bobjax.grid import spread
from bobjax.report import ablation, classes, paper, quality_section, render, sections
from bobjax.report.results import Results, collect
from bobjax.toyworld import fidelity

TILE = 64  # Pixels of one image in the report's grids.
PER_CLASS = 8  # Images per class row.
IMAGE_CLASSES = 12  # Rows of the real and synthetic grids: classes spread over the list (bobjax.grid.spread).


def _tile(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").resize((TILE, TILE), Image.BICUBIC))


def _grid(rows: list[list[np.ndarray]]) -> Image.Image:
    """Rows of images (any sizes) -> one picture of TILE-pixel tiles; short rows are padded with white."""
    blank = np.full((TILE, TILE, 3), 255, np.uint8)
    lines = [np.concatenate([_tile(x) for x in row] + [blank] * (PER_CLASS - len(row)), axis=1) for row in rows]
    return Image.fromarray(np.concatenate(lines, axis=0))


def _real_rows(results: Results, shown: list[int]) -> list[list[np.ndarray]]:
    run = results.runs[0]
    train = make_splits(run.config.data, run.seed).train
    labels = train.labels()
    return [[train[int(i)]["image"] for i in np.flatnonzero(labels == c)[:PER_CLASS]] for c in shown]


def _synthetic_rows(workdir: str, shown: list[int]) -> list[list[np.ndarray]] | None:
    """The generate stage's per-class grid rows of the ``shown`` classes, cut back into images."""
    folder = run_folder.stage_dir(workdir, "generate") / "grids"
    if not folder.is_dir():
        return None
    rows = []
    for c in shown:
        path = folder / f"class_{c:04d}.png"
        if not path.exists():
            rows.append([])
            continue
        with path.open("rb") as f:
            strip = np.asarray(Image.open(f).convert("RGB"))
        size = strip.shape[0]
        rows.append([strip[:, k * size:(k + 1) * size] for k in range(min(strip.shape[1] // size, PER_CLASS))])
    return rows


def _oracle(config, results: Results) -> fidelity.Oracle | None:
    """Toy world only: the oracle behind class fidelity and the quality metrics' feature space; None where there is
    nothing to measure."""
    if (config.data.source != "toyworld" or not config.report.oracle_steps
            or not quality_section.synthetic_workdirs(results)):
        return None
    return fidelity.train_oracle(toyworld.spec_from_config(config.data.toyworld),
                                 per_class=config.report.oracle_per_class, steps=config.report.oracle_steps,
                                 seed=config.seed)


def _class_fidelity(oracle: fidelity.Oracle, results: Results) -> dict[str, dict]:
    """Each method's synthetic class fidelity (mean over its seeds), and the oracle's own test accuracy under the key
    ``"oracle"``."""
    out = {"oracle": {"test_top1": oracle.test_top1}}
    for method, workdirs in quality_section.synthetic_workdirs(results).items():
        scores = []
        for folder in workdirs:
            source = read_dataset(run_folder.stage_dir(folder, "generate"))
            records = [source[i] for i in range(len(source))]
            images = np.stack([np.asarray(r["image"]) for r in records])
            labels = np.array([int(r["label"]) for r in records])
            scores.append(fidelity.class_fidelity(oracle, images, labels, len(results.class_names)))
        if scores:
            out[method] = {"top1": float(np.mean([s["top1"] for s in scores])),
                           "per_class": np.nanmean([s["per_class"] for s in scores], axis=0).tolist()}
    return out


def _fixed_noise_grids(results: Results, out_dir: str) -> list[tuple[str, str]]:
    """Each method's fixed-noise grid (first seed), copied into ``out_dir/images``: (caption, relative path)."""
    images = []
    for method in results.methods:
        source = run_folder.stage_dir(method.workdirs[0], "generate") / "grids" / FIXED_NOISE_GRID
        if source.exists():
            path = os.path.join("images", f"fixed_noise_{method.method}.png")
            with open(os.path.join(out_dir, path), "wb") as f:
                f.write(source.read_bytes())
            images.append((method.method, path))
    return images


def run(config, workdir: str) -> dict:
    if not parallel.is_main_process():  # One page from one host; the others wait at the stage's end.
        return {}
    results = collect(config, workdir)
    out_dir = run_folder.stage_dir(workdir, "report")
    summary = {m.method: m.as_json(results.class_names) for m in results.methods}
    oracle = _oracle(config, results)
    class_fidelity = _class_fidelity(oracle, results) if oracle is not None else None
    if class_fidelity is not None:
        for method, score in class_fidelity.items():
            if method in summary:
                summary[method]["synthetic_class_fidelity"] = score["top1"]
    measured = quality_section.measure(config, results, oracle)
    if measured is not None:
        for method, numbers in measured["methods"].items():
            summary[method]["synthetic_quality"] = {"encoder": measured["encoder"], "reference": measured["reference"],
                                                    **numbers}
    title = f"bobjax report: {results.dataset}"
    shown = spread(IMAGE_CLASSES, len(results.class_names))
    with artifacts.atomic_dir(out_dir, marker="results.json") as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        grids = [("real (few-shot train)", _real_rows(results, shown))]
        for method in results.methods:
            rows = _synthetic_rows(method.workdirs[0], shown)
            if rows is not None:
                grids.append((f"{method.method} synthetic", rows))
        images = []
        for caption, rows in grids:
            path = os.path.join("images", caption.split(" ")[0] + ".png")
            _grid(rows).save(os.path.join(tmp, path))
            images.append((caption, path))
        parts = sections.sections(results, images, config.to_json_best_effort(indent=2), class_fidelity,
                                  paper.section(config, results), ablation.section(results, class_fidelity),
                                  _fixed_noise_grids(results, tmp),
                                  spread(FIXED_NOISE_CLASSES, len(results.class_names)), shown,
                                  quality_section.sections(measured, results, class_fidelity is None)
                                  if measured else ())
        index, full = classes.layout(parts)
        pages = [("index", title, index, "")]
        if full:
            pages.append((classes.PAGE, f"{title}: every class", full, '<a href="index.html">back to the report</a>'))
        for name, page_title, page, intro in pages:
            with open(os.path.join(tmp, f"{name}.html"), "w") as f:
                f.write(render.to_html(page_title, page, intro))
            with open(os.path.join(tmp, f"{name}.md"), "w") as f:
                f.write(render.to_markdown(page_title, page))
        artifacts.write_json(os.path.join(tmp, "results.json"), summary)
    return summary
