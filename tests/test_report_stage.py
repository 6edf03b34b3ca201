"""The report stage over a comparison's run folders: results.json agrees with the runs' metrics, the HTML and
Markdown show every method, class and context, and the folder appears whole."""

import json
import os

import numpy as np
import pytest
from demo_run import demo_config
from PIL import Image
from synthetic_data import write_synthetic
from toy_oracle import shared_oracle  # noqa: F401  (a fixture)

from bobjax import artifacts, caption, compare, config_lib, report, run_folder
from bobjax import toyworld
from bobjax.data import make_splits
from bobjax.report import stage as report_stage
from bobjax.report.results import collect

METHODS = ("real_only", "datadream", "bob")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_metrics(run, class_names, rng):
    per_class = [float(a) for a in rng.uniform(0, 100, len(class_names))]
    metrics = {"class_names": class_names, "validation_top1": None,
               "test": {"top1": float(rng.uniform(0, 100)), "per_class": per_class}}
    artifacts.write_json(os.path.join(run_folder.stage_dir(run.workdir, "classify"), "metrics.json"), metrics)
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
    grids = os.path.join(run_folder.stage_dir(bob.workdir, "generate"), "grids")
    os.makedirs(grids)
    Image.fromarray(np.full((16, 48, 3), 90, np.uint8)).save(os.path.join(grids, "class_0000.png"))
    run_folder.record_timing(bob.workdir, "classify", 12.0)

    summary = report.run(config, workdir)

    out = run_folder.stage_dir(workdir, "report")
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
        assert "Beside the paper" not in text  # The toy world is no cell of the paper.
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


def test_ablation_table_and_fixed_noise_grids(tmp_path):
    methods = ("bob", "marginalization_only", "datadream", "preservation_only")  # Not in the table's order.
    config = demo_config(**{"compare.methods": ",".join(methods), "compare.seeds": 2})
    runs = compare.runs(config, str(tmp_path))
    class_names = make_splits(config.data, config.seed).class_names
    rng = np.random.default_rng(1)
    written = {run.workdir: _write_metrics(run, class_names, rng) for run in runs}
    bob = next(r for r in runs if r.method == "bob")
    grids = os.path.join(run_folder.stage_dir(bob.workdir, "generate"), "grids")
    os.makedirs(grids)
    Image.fromarray(np.full((32, 96, 3), 7, np.uint8)).save(os.path.join(grids, "fixed_noise.png"))

    report.run(config, str(tmp_path))

    out = run_folder.stage_dir(str(tmp_path), "report")
    markdown = open(os.path.join(out, "index.md")).read()
    table = [line for line in markdown.split("## Ablation: BOB's two halves")[1].split("##")[0].splitlines()
             if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[1] for row in table] == ["datadream", "preservation_only", "marginalization_only", "bob"]
    for row in table:
        method = row.split(" | ")[1]
        top1 = [written[r.workdir]["test"]["top1"] for r in runs if r.method == method]
        assert f"| {np.mean(top1):.1f} ± {np.std(top1):.1f} |" in row
    assert table[-1].endswith("| 73.78 |")  # The paper's both-halves row.
    assert "![bob](images/fixed_noise_bob.png)" in markdown
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(out, "images", "fixed_noise_bob.png"))), 7)
    assert not os.path.exists(os.path.join(out, "images", "fixed_noise_datadream.png"))  # It made no grid.


def test_no_ablation_table_without_an_ablation(tmp_path):
    config = demo_config(**{"compare.methods": "datadream,bob", "compare.seeds": 1})
    rng = np.random.default_rng(2)
    class_names = make_splits(config.data, config.seed).class_names
    for run in compare.runs(config, str(tmp_path)):
        _write_metrics(run, class_names, rng)
    report.run(config, str(tmp_path))
    assert "Ablation" not in open(os.path.join(run_folder.stage_dir(str(tmp_path), "report"), "index.md")).read()


def test_missing_run_names_the_file_and_stage(tmp_path):
    config = demo_config(**{"compare.methods": "real_only", "compare.seeds": 1})
    with pytest.raises(artifacts.ArtifactError, match="classify stage") as error:
        report.run(config, str(tmp_path))
    assert os.path.join(str(tmp_path), "real_only", "seed0", "classify", "metrics.json") in str(error.value)


def test_toy_world_report_measures_class_fidelity(tmp_path, shared_oracle):
    """A method whose synthetic images show their classes scores far above one whose images carry other classes'
    details; the table and results.json say so."""
    config = demo_config(**{"compare.methods": "real_only,datadream,bob", "compare.seeds": 1,
                            "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
                            "data.toyworld.test_per_class": 20, "report.oracle_steps": 60,
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
    markdown = open(os.path.join(run_folder.stage_dir(workdir, "report"), "index.md")).read()
    assert "Class fidelity of the synthetic images" in markdown
    assert f"| bob | {summary['bob']['synthetic_class_fidelity']:.1f} |" in markdown


def _write_images(root, classes, per_class):
    """``root/<split>/<class>/`` of tiny random images: a folder dataset, so that the report can show real images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for name in classes:
            os.makedirs(os.path.join(root, split, name))
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    os.path.join(root, split, name, f"{k}.png"))
    return root


def _paper_rows(markdown):
    """The rows of the report's paper table, each a dict by the table's header."""
    lines = markdown.split("## Beside the paper")[1].split("\n## ")[0].splitlines()
    table = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines if line.startswith("|")]
    return [dict(zip(table[0], row)) for row in table[2:]]


@pytest.mark.parametrize("data_name, shots", [("fgvc_aircraft", 5), ("fgvc_aircraft", 7), ("oxford_flowers102", 5)])
def test_real_datasets_report_puts_ours_beside_the_paper(tmp_path, data_name, shots):
    """A comparison of configs/paper.py's Aircraft x CLIP cell (a two-point sweep, fake metrics): beside each published
    number of the cell, and only those, ours is the mean +- std over seeds of the test top-1 at the point with the best
    validation top-1. Another number of shots, or another dataset, is no cell the paper has numbers for: no table."""
    from bobjax.report import paper

    config = config_lib.load_config_file(os.path.join(ROOT, "configs", "paper.py"),
                                         f"dataset=aircraft,seeds=2,shots={shots}")
    config.data.update(dict(source="folder", name=data_name, val_size=3,
                            data_dir=_write_images(str(tmp_path / "planes"), ["707-320", "727-200"], shots + 4)))
    config.compare.sweep = "classify.real_weight=0.5|0.8"
    config.compare.sweep_epochs = 0  # One phase: the chosen point's own metrics are the result (no final run here).
    workdir = str(tmp_path / "run")
    rng = np.random.default_rng(1)
    chosen = {}  # method -> test top-1 per seed at the point chosen on validation
    for run in compare.runs(config, workdir):
        metrics = _write_metrics(run, ["707-320", "727-200"], rng)
        metrics["validation_top1"] = float(rng.uniform(0, 100))
        artifacts.write_json(os.path.join(run_folder.stage_dir(run.workdir, "classify"), "metrics.json"), metrics)
        best = chosen.setdefault((run.method, run.seed), (-1.0, None))
        if metrics["validation_top1"] > best[0]:
            chosen[(run.method, run.seed)] = (metrics["validation_top1"], metrics["test"]["top1"])

    report.run(config, workdir)

    markdown = open(os.path.join(run_folder.stage_dir(workdir, "report"), "index.md")).read()
    if (data_name, shots) != ("fgvc_aircraft", 5):
        assert "Beside the paper" not in markdown
        return
    rows = _paper_rows(markdown)
    cell = [e for e in paper.published()["results"]
            if (e["dataset"], e["backbone"], e["shots"]) == ("aircraft", "clip", 5)]
    assert [(r["dataset"], r["backbone"], r["shots"], r["method"], r["paper top-1"]) for r in rows] \
        == [(e["dataset"], e["backbone"], str(e["shots"]), e["method"], f"{e['top1']:.2f}") for e in cell]
    ours = {method: [test for (m, _), (_, test) in sorted(chosen.items()) if m == method] for method in METHODS}
    expected = {method: f"{np.mean(top1):.2f} ± {np.std(top1):.2f} (2 seeds)" for method, top1 in ours.items()}
    assert {r["method"]: r["ours top-1"] for r in rows} == expected
    bob = next(r for r in rows if r["method"] == "bob")
    assert bob["ours - paper"] == f"{np.mean(ours['bob']) - 57.37:+.2f}"


def test_the_paper_table_over_many_workdirs(tmp_path, capsys):
    """``python -m bobjax.report RUNS/*``: ours from each workdir's report beside the paper's cell it ran; a workdir
    without a report is named and skipped."""
    from bobjax.report.__main__ import main as paper_table

    for name, dataset, backbone, top1 in (("cub-rn50", "caltech_birds2011", "resnet50", 70.5),
                                          ("pets-clip", "oxford_iiit_pet", "clip_vit_b16", 91.0)):
        config = config_lib.load_config_file(os.path.join(ROOT, "configs", "paper.py"))
        config.data.name, config.classify.backbone = dataset, backbone
        artifacts.write_text(tmp_path / name / "config.json", config.to_json_best_effort())
        artifacts.write_json(tmp_path / name / "report" / "results.json",
                             {"bob": {"top1": top1, "top1_std": 0.5, "seeds": [0, 1, 2]}})
    (tmp_path / "unfinished").mkdir()

    paper_table([str(tmp_path / "cub-rn50"), str(tmp_path / "pets-clip"), str(tmp_path / "unfinished")])

    out, err = capsys.readouterr()
    rows = _paper_rows(out.replace("## Top-1 (%)", "## Beside the paper"))
    filled = {(r["dataset"], r["backbone"], r["method"]): (r["ours top-1"], r["ours - paper"])
              for r in rows if r["ours top-1"]}
    assert filled == {("cub", "rn50", "bob"): ("70.50 ± 0.50 (3 seeds)", f"{70.5 - 71.38:+.2f}"),
                      ("pets", "clip", "bob"): ("91.00 ± 0.50 (3 seeds)", f"{91.0 - 92.73:+.2f}")}
    assert "unfinished" in err and "skipped" in err
