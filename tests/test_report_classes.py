"""The report at CUB's 200 classes: summaries, the best and worst classes and a histogram inline, every class on a
linked page; grids of a few classes spread over the list, not 200; the paper's rows of the cell the run is."""

import os
import re

import numpy as np
from PIL import Image

from bobjax import artifacts, compare, config_lib, report, run_folder
from bobjax.generate import stage as generate
from bobjax.generate.plan import PlannedImage
from bobjax.grid import spread
from bobjax.report import classes, paper
from bobjax.report import stage as report_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = [f"{c + 1:03d}.Bird_{c + 1}" for c in range(200)]  # CUB's folder names' shape.
NAMES = [f"Bird {c + 1}" for c in range(200)]


def cub_folder(root, shots):
    """train/ (``shots`` images a class) and test/ (one) of 8-px images whose red value is the class index."""
    for split, count in (("train", shots), ("test", 1)):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for k in range(count):
                Image.new("RGB", (8, 8), (c, k, 0)).save(root / split / name / f"{k}.png")
    return str(root)


def markdown_tables(markdown):
    """Each table's body row count."""
    counts, rows = [], 0
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            rows += 1
        elif rows:
            counts.append(rows - 2)
            rows = 0
    return counts


def test_a_200_class_report_summarises_inline_and_links_every_class(tmp_path):
    config = config_lib.load_config_file(os.path.join(ROOT, "configs", "paper.py"), "dataset=cub,seeds=1")
    config.data.update(dict(source="folder", data_dir=cub_folder(tmp_path / "cub", 5), val_size=0))
    config.compare.sweep = ""
    workdir = str(tmp_path / "run")
    rng = np.random.default_rng(0)
    per_class = {}
    for run in compare.runs(config, workdir):
        per_class[run.method] = rng.uniform(0, 100, 200).round(1)
        per_class[run.method][7] = 100.0  # In the last histogram band.
        artifacts.write_json(run_folder.stage_dir(run.workdir, "classify") / "metrics.json",
                             {"class_names": NAMES, "validation_top1": None,
                              "test": {"top1": float(per_class[run.method].mean()),
                                       "per_class": per_class[run.method].tolist()}})
        if run.method == "bob":
            grids = run_folder.stage_dir(run.workdir, "generate") / "grids"
            grids.mkdir(parents=True)
            for c in range(200):
                Image.new("RGB", (16, 16), (c, 0, 0)).save(grids / f"class_{c:04d}.png")
            Image.new("RGB", (8 * 16, 4 * 16)).save(grids / generate.FIXED_NOISE_GRID)

    report.run(config, workdir)

    out = run_folder.stage_dir(workdir, "report")
    index, page = (out / "index.md").read_text(), (out / "classes.md").read_text()
    html = (out / "index.html").read_text()
    assert max(markdown_tables(index)) <= 2 * classes.SHOWN, "no 200-row table inline"
    assert html.count("<tr>") < 60
    assert 'href="classes.html#per-class-accuracy-mean-over-seeds"' in html and "(classes.md)" in index
    assert (out / "classes.html").exists() and markdown_tables(page) == [200]
    full = [line for line in page.splitlines() if line.startswith("| Bird ")]
    assert [line.split(" | ")[0][2:] for line in full] == NAMES  # The dataset's order, every class once.
    first = next(iter(per_class))  # real_only: the comparison's first method ranks the classes.
    rank_of_1 = int(full[0].split(" | ")[1])
    assert rank_of_1 == 1 + int(np.sum(per_class[first] > per_class[first][0]))

    summary = {line.split(" | ")[0][2:]: line.strip(" |").split(" | ") for line in index.splitlines()
               if line.startswith(("| real_only |", "| datadream |", "| bob |"))}
    for method, values in per_class.items():
        row = summary[method]
        assert row[1] == f"{values.mean():.1f}" and row[2] == f"{np.median(values):.1f}"
        assert row[3] == f"{NAMES[int(np.argmin(values))]} ({values.min():.1f})"
        assert [int(n) for n in row[5:]] == np.histogram(values, bins=np.linspace(0, 100, 11))[0].tolist()
        assert sum(int(n) for n in row[5:]) == 200
    ends = index.split("best and worst classes by real_only")[1].split("\n## ")[0]
    ranked = [line.split(" | ")[0][2:] for line in ends.splitlines() if re.match(r"\| Bird \d+ \| \d+ \|", line)]
    order = np.argsort(-per_class[first], kind="stable")
    assert ranked == [NAMES[c] for c in list(order[:5]) + list(order[-5:])]
    assert html.count("<svg") == 1 + len(per_class)  # The accuracy bars, and a histogram per method.

    # The run is the paper's CUB x CLIP 5-shot cell: its three published numbers, ours beside them, and no others.
    beside = index.split("## Beside the paper")[1].split("\n## ")[0]
    rows = [line for line in beside.splitlines() if line.startswith("| main |")]
    published = [e for e in paper.published()["results"] if (e["dataset"], e["backbone"], e["shots"]) ==
                 ("cub", "clip", 5)]
    assert len(rows) == len(published) == 3 and all(" seeds)" in row for row in rows)

    # Grids: twelve classes spread over the list; the fixed-noise grid's eight are named.
    shown = spread(report_stage.IMAGE_CLASSES, 200)
    real = np.asarray(Image.open(out / "images" / "real.png"))
    assert real.shape[0] == len(shown) * report_stage.TILE == 12 * report_stage.TILE
    assert [int(real[k * report_stage.TILE + 5, 5, 0]) for k in range(12)] == shown  # Red = class index.
    bob = np.asarray(Image.open(out / "images" / "bob.png"))
    assert [int(bob[k * report_stage.TILE + 5, 5, 0]) for k in range(12)] == shown
    assert ", ".join(NAMES[c] for c in spread(generate.FIXED_NOISE_CLASSES, 200)) in index


def test_the_fixed_noise_grid_draws_eight_classes_spread_over_the_list(tmp_path):
    names = [f"class {c}" for c in range(20)]
    planned = [PlannedImage(c, k, names[c], f"a photo of a {names[c]}", "bg", "pose", seed=100 * c + k)
               for c in range(20) for k in range(5)]
    drawn = []

    def generate_fn(batch):
        drawn.extend(batch)
        return np.stack([np.full((4, 4, 3), item.label * 10 + k % 4, np.uint8) for k, item in
                         enumerate(batch, len(drawn) - len(batch))])

    path = tmp_path / "fixed_noise.png"
    generate.write_fixed_noise_grid(path, planned, names, "bird", "a photo of a {class_name}", generate_fn,
                                    batch_size=6)
    labels = spread(generate.FIXED_NOISE_CLASSES, 20)
    assert labels == [0, 3, 5, 8, 11, 14, 16, 19]
    assert len(drawn) == 8 * generate.FIXED_NOISE_ROWS
    grid = np.asarray(Image.open(path))
    assert grid.shape[:2] == (generate.FIXED_NOISE_ROWS * 4, 8 * 4)
    for row in range(generate.FIXED_NOISE_ROWS):
        assert [int(grid[row * 4, col * 4, 0]) for col in range(8)] == [label * 10 + row for label in labels]
        assert {drawn[i].seed for i in range(row, len(drawn), generate.FIXED_NOISE_ROWS)} == {planned[row].seed}


def test_classes_without_a_value_are_neither_best_nor_worst_nor_counted():
    values = [float(v) for v in range(20)]
    values[0] = values[19] = None  # No test image of these classes.
    table = classes.PerClass("Per-class accuracy (%)", [f"c{k}" for k in range(20)], {"bob": values},
                             lambda v: "-" if v is None else f"{v:.1f}", percent=True)
    summary, ends = table.inline()
    assert summary.rows == [["bob", "9.5", "9.5", "c1 (1.0)", "c18 (18.0)", "9", "9"] + ["0"] * 8]  # 1-9, 10-18.
    assert [row[:2] for row in ends.rows] == [["c18", "1"], ["c17", "2"], ["c16", "3"], ["c15", "4"], ["c14", "5"],
                                              ["c5", "14"], ["c4", "15"], ["c3", "16"], ["c2", "17"], ["c1", "18"]]
    full = table.full()
    assert full.rows[0] == ["c0", "19", "-"] and full.rows[19] == ["c19", "20", "-"] and len(full.rows) == 20
