"""The README's main command, reduced (one seed, few steps): every stage of every method runs from the shipped
toy-world prior through the report, and rerunning the same command redoes nothing."""

import json
import math

import pytest
from demo_run import cli

REDUCED = ("--config.compare.seeds=1", "--config.finetune.epochs=2", "--config.generate.images_per_class=4",
           "--config.generate.steps=3", "--config.classify.epochs=2", "--config.classify.steps_per_epoch=2",
           "--config.data.toyworld.test_per_class=4", "--config.data.toyworld.val_per_class=2",
           "--config.report.oracle_steps=5", "--config.report.oracle_per_class=4")


@pytest.mark.slow  # every stage of every method through the CLI: the longest test; CI runs it after the suite
def test_reduced_demo_end_to_end_then_nothing_to_redo(tmp_path):
    command = ("--config=configs/demo.py", f"--workdir={tmp_path}", *REDUCED)
    first = cli(*command, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert sorted(results) == ["bob", "datadream", "real_only"]
    assert all(math.isfinite(r["top1"]) and 0 <= r["top1"] <= 100 for r in results.values())
    assert all(0 <= results[m]["synthetic_class_fidelity"] <= 100 for m in ("bob", "datadream"))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "datadream synthetic" in page and "bob synthetic" in page and "Wall time" in page
    timings = {p: p.read_text() for p in tmp_path.glob("**/timings.json")}
    assert len(timings) == 4  # Three runs and the report.

    again = cli(*command, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": running in" not in again.stderr and again.stderr.count(", skipped") == 1 + 3 + 4 + 1
    assert {p: p.read_text() for p in tmp_path.glob("**/timings.json")} == timings
