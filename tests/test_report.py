"""The report stage over a comparison's run folders: results.json agrees with the runs' metrics, the HTML and
Markdown show every method, class and context, and the folder appears whole."""

import json
import os

import numpy as np
import pytest
from demo_run import demo_config
from PIL import Image
from synthetic_data import write_synthetic

from bobjax import artifacts, caption, compare, report
from bobjax import toyworld
from bobjax.data import make_splits
from bobjax.report import stage as report_stage
from bobjax.report.results import collect

METHODS = ("real_only", "datadream", "bob")


def _write_metrics(run, class_names, rng):
    per_class = [float(a) for a in rng.uniform(0, 100, len(class_names))]
    metrics = {"class_names": class_names, "validation_top1": None,
               "test": {"top1": float(rng.uniform(0, 100)), "per_class": per_class}}
    artifacts.write_json(os.path.join(artifacts.stage_dir(run.workdir, "classify"), "metrics.json"), metrics)
    return metrics


def test_report_over_a_comparison(tmp_path):
    config = demo_config(**{"compare.methods": ",".join(METHODS), "compare.seeds": 2})
    workdir = str(tmp_path)
    runs = compare.runs(config, workdir)
    class_names = make_splits(config.data, config.seed).class_names
    rng = np.random.default_rng(0)
    written = {run.workdir: _write_metrics(run, class_names, rng) for run in runs}
    bob = next(r for r in runs if r.method == "bob")
    caption.run(bob.config, bob.workdir)  # Oracle captions: the real images' backgrounds.
    grids = os.path.join(artifacts.stage_dir(bob.workdir, "generate"), "grids")
    os.makedirs(grids)
    Image.fromarray(np.full((16, 48, 3), 90, np.uint8)).save(os.path.join(grids, "class_0000.png"))
    artifacts.record_timing(bob.workdir, "classify", 12.0)

    summary = report.run(config, workdir)

    out = artifacts.stage_dir(workdir, "report")
    assert json.load(open(os.path.join(out, "results.json"))) == summary
    assert list(summary) == list(METHODS)  # In the comparison's order (results.json sorts its keys).
    for method in METHODS:
        top1 = [written[r.workdir]["test"]["top1"] for r in runs if r.method == method]
        assert summary[method]["top1"] == np.mean(top1)
        assert summary[method]["top1_std"] == np.std(top1)
        assert summary[method]["top1_per_seed"] == top1
        per_class = np.mean([written[r.workdir]["test"]["per_class"] for r in runs if r.method == method], axis=0)
        np.testing.assert_allclose([summary[method]["per_class"][n] for n in class_names], per_class)
    page = open(os.path.join(out, "index.html")).read()
    markdown = open(os.path.join(out, "index.md")).read()
    for text in (page, markdown):
        assert all(method in text for method in METHODS) and all(name in text for name in class_names)
        assert "Backgrounds of the real train images" in text and "Wall time" in text
    real_contexts = collect(config, workdir).contexts["real train"]
    assert [sum(real_contexts[n].values()) for n in class_names] == [config.data.shots] * len(class_names)
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {class_names[0]} |") and "| 0 |" in line)
    assert sum(int(x) for x in row.strip("|").split("|")[1:]) == config.data.shots  # Its context row.
    assert page.count("<svg") == 1 and page.count("<rect") == len(METHODS)
    assert f"| bob | {summary['bob']['top1']:.1f} |" in markdown
    real = Image.open(os.path.join(out, "images", "real.png"))
    assert real.size == (report_stage.PER_CLASS * report_stage.TILE, len(class_names) * report_stage.TILE)
    bob_grid = np.asarray(Image.open(os.path.join(out, "images", "bob.png")))
    assert (bob_grid[: report_stage.TILE, : 3 * report_stage.TILE] == 90).all()  # The three 16-px images, scaled.
    assert (bob_grid[: report_stage.TILE, 3 * report_stage.TILE:] == 255).all()  # The rest of the row is padding.
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".report")]  # No temporary folder left.


def test_missing_run_names_the_file_and_stage(tmp_path):
    config = demo_config(**{"compare.methods": "real_only", "compare.seeds": 1})
    with pytest.raises(artifacts.ArtifactError, match="classify stage") as error:
        report.run(config, str(tmp_path))
    assert os.path.join(str(tmp_path), "real_only", "seed0", "classify", "metrics.json") in str(error.value)


def test_toy_world_report_measures_class_fidelity(tmp_path):
    """A method whose synthetic images show their classes scores far above one whose images carry other classes'
    details; the table and results.json say so."""
    config = demo_config(**{"compare.methods": "real_only,datadream,bob", "compare.seeds": 1,
                            "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
                            "data.toyworld.test_per_class": 20, "report.oracle_steps": 150,
                            "report.oracle_per_class": 40})
    workdir = str(tmp_path)
    runs = {r.method: r for r in compare.runs(config, workdir)}
    class_names = make_splits(config.data, config.seed).class_names
    rng = np.random.default_rng(0)
    for run in runs.values():
        _write_metrics(run, class_names, rng)
    world = toyworld.ToyWorldSpec(num_classes=3, image_size=32, seed=5, correlated=False, train_per_class=8)
    drawn = toyworld.ToyWorldSplit(world, "train")
    images, labels = drawn.images(), drawn.labels()
    write_synthetic(runs["bob"].workdir, class_names, images, labels)
    write_synthetic(runs["datadream"].workdir, class_names, images, (labels + 1) % 3)  # Another class's detail.

    summary = report.run(config, workdir)

    assert "synthetic_class_fidelity" not in summary["real_only"]
    assert summary["bob"]["synthetic_class_fidelity"] >= 80.0 and summary["datadream"]["synthetic_class_fidelity"] <= 15.0
    markdown = open(os.path.join(artifacts.stage_dir(workdir, "report"), "index.md")).read()
    assert "Class fidelity of the synthetic images" in markdown
    assert f"| bob | {summary['bob']['synthetic_class_fidelity']:.1f} |" in markdown
