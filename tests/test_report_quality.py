"""The report's synthetic-data quality on the toy world (the oracle's feature space, nothing downloaded): a method whose
images show their classes is closer to the real images (FD), as faithful as the oracle and as diverse as the real set;
one whose images carry other classes' details is not; the filter's counts and the ranking note are shown."""

import pytest
import json
import os

import numpy as np
from demo_run import demo_config
from synthetic_data import write_synthetic
from toy_oracle import shared_oracle  # noqa: F401  (a fixture)

from bobjax import artifacts, compare, report, run_folder, toyworld
from bobjax.data import make_splits
from bobjax.filter import keep_list, rules
from bobjax.quality import measures


def test_diversity_is_the_mean_pairwise_cosine_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [1 - unit[i] @ unit[j] for i in range(7) for j in range(7) if i != j]
    assert abs(measures.diversity(x) - np.mean(pairs)) < 1e-12
    assert measures.diversity(np.ones((4, 3))) < 1e-12 and measures.diversity(x[:1]) is None


@pytest.mark.slow
def test_toy_world_report_measures_quality_per_method_and_class(tmp_path, shared_oracle):
    config = demo_config(**{"compare.methods": "real_only,datadream,bob", "compare.seeds": 1,
                            "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
                            "data.toyworld.test_per_class": 20, "report.oracle_steps": 60,
                            "report.oracle_per_class": 40, "quality.batch_size": 16, "filter.rule": "top_k"})
    workdir = str(tmp_path)
    runs = {r.method: r for r in compare.runs(config, workdir)}
    class_names = make_splits(config.data, config.seed).class_names
    for k, run in enumerate(runs.values()):
        top1 = [40.0, 50.0, 60.0][k]  # real only < DataDream < BOB
        artifacts.write_json(os.path.join(run_folder.stage_dir(run.workdir, "classify"), "metrics.json"),
                             {"class_names": class_names, "validation_top1": None,
                              "test": {"top1": top1, "per_class": [top1] * 3}})
    drawn = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(num_classes=3, image_size=32, seed=5, correlated=False,
                                                         train_per_class=8), "train")
    images, labels = drawn.images(), drawn.labels()
    write_synthetic(runs["bob"].workdir, class_names, images, labels)
    write_synthetic(runs["datadream"].workdir, class_names, images, (labels + 1) % 3)  # Another class's detail.
    # BOB's run as if it had filtered (a keep list of its 24 images, 20 kept); DataDream's has none.
    decision = rules.Decision(np.arange(24) % 6 != 0, {"score": np.linspace(0, 1, 24)}, "a test rule")
    fields = [{"image_id": f"s{i}", "label": int(c)} for i, c in enumerate(labels)]
    keep_list.write(runs["bob"].workdir, decision, {"rule": "top_k"}, "oracle", fields, class_names)

    summary = report.run(config, workdir)

    assert "synthetic_quality" not in summary["real_only"]
    bob, dd = summary["bob"]["synthetic_quality"], summary["datadream"]["synthetic_quality"]
    assert "toy-world oracle" in bob["encoder"] and bob["reference"] == "test"
    assert bob["fd"] < dd["fd"] and all(bob["fd_per_class"][c] < dd["fd_per_class"][c] for c in class_names)
    assert bob["fidelity"] >= 80.0 and dd["fidelity"] <= 15.0
    assert bob["fidelity"] == summary["bob"]["synthetic_class_fidelity"]  # One oracle for both tables.
    assert bob["clip_score"] is None and 0 < bob["diversity"] < 1
    assert bob["filter"] == {"rule": "a test rule", "kept": 20.0, "dropped": 4.0} and dd["filter"] is None
    assert sorted(bob["fd_per_class"]) == sorted(class_names) and bob["images_per_seed"] == 24
    saved = json.load(open(os.path.join(run_folder.stage_dir(workdir, "report"), "results.json")))
    assert saved["bob"]["synthetic_quality"]["fd"] == bob["fd"]
    markdown = open(os.path.join(run_folder.stage_dir(workdir, "report"), "index.md")).read()
    assert "## Synthetic-data quality (toy-world oracle" in markdown
    assert "## Fréchet distance per class" in markdown and "## Diversity per class" in markdown
    assert "Zero-shot fidelity per class" not in markdown  # The class-fidelity table shows it on the toy world.
    assert "Test top-1 ranks bob > datadream. FD ranks them the same way." in markdown
    assert "fidelity ranks them the same way" in markdown
    assert f"| bob | {bob['fd']:.3g} |" in markdown and "| 20 | 4 |" in markdown
