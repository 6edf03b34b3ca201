"""Sweeps chosen by validation: the grid a spec makes, named errors for bad specs, the choice (best validation top-1,
never test), and a killed sweep that resumes without redoing finished points."""

import json
import os

import numpy as np
import pytest
from demo_run import demo_config
from test_share import _recorded

from bobjax import artifacts, compare, config_lib, main, report, run_folder, sweep
from bobjax.errors import ConfigError
from bobjax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(spec, **overrides):
    return demo_config(**{"compare.methods": "bob", "compare.sweep": spec, **overrides})


def test_grid_is_the_product_of_typed_values_in_the_order_written():
    grid = sweep.points(_sweep(" classify.learning_rate=1e-3|3e-3 ; classify.augment=false|yes;data.shots=2 "))
    assert [p.name for p in grid] == [f"classify.learning_rate={lr},classify.augment={a},data.shots=2"
                                      for lr in ("1e-3", "3e-3") for a in ("false", "yes")]
    assert grid[1].values == {"classify.learning_rate": 1e-3, "classify.augment": True, "data.shots": 2}
    runs = compare.runs(_sweep("classify.learning_rate=1e-3|3e-3", **{"compare.seeds": 2}), "/w")
    assert [(r.seed, str(r.workdir), r.config.classify.learning_rate) for r in runs] == [
        (s, f"/w/bob/seed{s}/classify.learning_rate={lr}", v)
        for s in (0, 1) for lr, v in (("1e-3", 1e-3), ("3e-3", 3e-3))]
    assert all(r.config.compare.sweep == "" and r.config.generate.plan == "bob" for r in runs)
    path = "/data/ckpt"
    assert sweep.points(_sweep(f"classify.checkpoint=random|{path}"))[1].name == "classify.checkpoint=_data_ckpt"


def test_a_sweep_without_methods_sweeps_config_method():
    runs = compare.runs(demo_config(method="datadream", **{"compare.sweep": "classify.real_weight=0.5|0.8"}), "/w")
    assert [(r.method, r.point) for r in runs] == [("datadream", "classify.real_weight=0.5"),
                                                   ("datadream", "classify.real_weight=0.8")]


@pytest.mark.parametrize("spec, named", [
    ("classify.learning_rte=1e-3|3e-3", r"unknown field 'classify.learning_rte'; did you mean classify.learning_rate"),
    ("classify.learning_rate=", r"classify.learning_rate has an empty value"),
    ("classify.learning_rate=1e-3||3e-3", r"classify.learning_rate has an empty value"),
    ("classify.epochs=1|2.5", r"classify.epochs='2.5' is not of the field's type, int"),
    ("classify.augment=maybe", r"classify.augment='maybe' is not of the field's type, bool"),
    ("classify.real_weight=0.5|0.50", r"classify.real_weight lists a value twice"),
    ("classify.epochs=1|2;classify.epochs=3", r"\['classify.epochs'\] more than once"),
    ("seed=1|2", r"cannot sweep 'seed'.*config.compare.seeds"),
    ("compare.seeds=1|2", r"cannot sweep 'compare.seeds'"),
    ("classify", r"'classify' is not field=value"),
    ("classify=1|2", r"unknown field 'classify'"),
    ("classify.checkpoint=a/b|a_b", r"two points .* get the same folder name"),
])
def test_bad_spec_is_a_config_error_naming_the_field(spec, named):
    with pytest.raises(ConfigError, match=named):
        compare.runs(_sweep(spec), "/w")


def test_demo_sweep_arg_sweeps_lr_and_lambda_and_the_default_demo_does_not():
    def load(arg=None):
        return config_lib.load_config_file(os.path.join(ROOT, "configs", "demo.py"), arg)

    assert load().compare.sweep == "" and len(compare.runs(load(), "/w")) == 3
    runs = compare.runs(load("sweep=1,seeds=2"), "/w")
    assert len(runs) == 3 * 2 * 4
    bob = [r.config.classify for r in runs if r.method == "bob" and r.seed == 0]
    assert {(c.learning_rate, c.real_weight) for c in bob} == {(lr, w) for lr in (3e-3, 1e-3) for w in (0.8, 0.5)}
    assert (bob[0].learning_rate, bob[0].real_weight) == (load().classify.learning_rate, load().classify.real_weight)


def _write_metrics(run, validation, test):
    class_names = ["a", "b"]
    artifacts.write_json(run_folder.stage_dir(run.workdir, "classify") / "metrics.json",
                         {"class_names": class_names, "validation_top1": validation,
                          "test": {"top1": test, "per_class": [test, test]}})


def test_the_best_validation_point_is_chosen_never_the_best_test_one(tmp_path):
    """Validation 50 / 70 / 70, test 90 / 60 / 80: the second point (first of the equal best), test 60."""
    config = _sweep("classify.learning_rate=1e-2|3e-3|1e-3", **{"compare.methods": "real_only",
                                                               "report.oracle_steps": 0})
    runs = compare.runs(config, str(tmp_path))
    for run, validation, test in zip(runs, (50.0, 70.0, 70.0), (90.0, 60.0, 80.0)):
        _write_metrics(run, validation, test)
    summary = report.run(config, str(tmp_path))
    assert summary["real_only"]["top1"] == 60.0
    assert summary["real_only"]["sweep"] == [{"seed": 0, "chosen": runs[1].point, "points": [
        {"point": r.point, "validation_top1": v, "test_top1": t}
        for r, v, t in zip(runs, (50.0, 70.0, 70.0), (90.0, 60.0, 80.0))]}]
    markdown = (tmp_path / "report" / "index.md").read_text()
    assert f"| real_only | 0 | {runs[1].point} | 70.0 | 60.0 | yes |" in markdown
    assert f"| real_only | 0 | {runs[0].point} | 50.0 | 90.0 |  |" in markdown


def test_a_point_without_validation_is_named(tmp_path):
    config = _sweep("classify.learning_rate=1e-2|3e-3", **{"compare.methods": "real_only"})
    runs = compare.runs(config, str(tmp_path))
    _write_metrics(runs[0], 50.0, 50.0)
    _write_metrics(runs[1], None, 50.0)
    with pytest.raises(artifacts.ArtifactError, match=rf"\['{runs[1].point}'\].*config.data.val_size"):
        report.run(config, str(tmp_path))


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch, one_device):
    """Killed right after the second point's first epoch checkpoint: the rerun trains the second point alone (from
    its checkpoint), and the report chooses by the points' validation top-1."""
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: run)
    config = _sweep("classify.learning_rate=3e-3|1e-3", **{
        "stages": "caption,generate,classify,report", "generate.renderer": "toyworld",
        "generate.images_per_class": 4, "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
        "data.toyworld.test_per_class": 4, "data.toyworld.val_per_class": 2, "classify.image_size": 32,
        "classify.epochs": 2, "classify.steps_per_epoch": 2, "classify.batch_size": 8, "report.oracle_steps": 0,
        "compare.pack_points": False})  # Each point alone (packed: tests/test_compare_packs.py).
    points = [os.path.relpath(r.workdir, tmp_path) for r in compare.runs(config, str(tmp_path))]
    saves, save = [], loop.Checkpoints.save  # The epoch of each checkpoint saved.

    def save_then_die_at_the_third(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(args[0])
        if len(saves) == 3:
            raise _Killed

    monkeypatch.setattr(loop.Checkpoints, "save", save_then_die_at_the_third)
    with pytest.raises(_Killed):
        main.run(config, str(tmp_path))
    assert calls == [(points[0], "caption"), (points[0], "generate"), (points[0], "classify"), (points[1], "classify")]
    assert saves == [1, 2, 1]

    calls.clear()
    main.run(config, str(tmp_path))
    assert calls == [(points[1], "classify"), (".", "report")]
    assert saves == [1, 2, 1, 2], "the second point resumes after its first epoch"
    metrics = [json.loads((tmp_path / p / "classify" / "metrics.json").read_text()) for p in points]
    validation = [m["validation_top1"] for m in metrics]
    chosen = int(np.argmax(validation))  # The first of equals, as numpy's argmax.
    results = json.loads((tmp_path / "report" / "results.json").read_text())["bob"]
    assert results["sweep"][0]["chosen"] == os.path.basename(points[chosen])
    assert results["top1"] == metrics[chosen]["test"]["top1"]


def test_a_two_phase_sweep_trains_points_short_and_the_chosen_point_in_final(tmp_path):
    """compare.sweep_epochs: every point trains that many epochs; the chosen point's full-length run has a folder of
    its own that no point's name can take (a point's name always holds '=') and classify.epochs."""
    config = _sweep("classify.learning_rate=1e-2|3e-3|1e-3", **{"compare.methods": "real_only", "compare.seeds": 2,
                                                               "compare.sweep_epochs": 5, "classify.epochs": 20})
    points = compare.runs(config, str(tmp_path))
    assert [r.config.classify.epochs for r in points] == [5] * 6
    for run, validation in zip(points, (50.0, 70.0, 60.0, 10.0, 20.0, 90.0)):
        _write_metrics(run, validation, 0.0)
    finals = compare.final_runs(config, str(tmp_path))
    assert [(str(r.workdir.relative_to(tmp_path)), r.point, r.final) for r in finals] == [
        (f"real_only/seed{s}/{compare.FINAL}", points[3 * s + k].point, True) for s, k in ((0, 1), (1, 2))]
    assert [(r.config.classify.epochs, r.config.classify.learning_rate, r.config.seed) for r in finals] == [
        (20, 3e-3, 0), (20, 1e-3, 1)]
    assert all("=" in p.name for p in sweep.points(config)) and compare.FINAL.find("=") < 0
    assert not {r.workdir for r in finals} & {r.workdir for r in points}
    config.compare.sweep_epochs = 0  # The full-length grid: no second phase.
    assert [r.config.classify.epochs for r in compare.runs(config, str(tmp_path))] == [20] * 6
    assert compare.final_runs(config, str(tmp_path)) == []


@pytest.mark.parametrize("epochs", [-1, 20, 30])
def test_sweep_epochs_must_be_fewer_than_the_full_schedule(epochs):
    with pytest.raises(ConfigError, match=rf"config.compare.sweep_epochs is {epochs}; expected 0 .* fewer"):
        compare.runs(_sweep("classify.learning_rate=1e-2|3e-3", **{"compare.sweep_epochs": epochs,
                                                                  "classify.epochs": 20}), "/w")


def test_the_report_shows_the_sweep_at_its_schedule_and_the_chosen_points_full_run(tmp_path):
    config = _sweep("classify.learning_rate=1e-2|3e-3", **{"compare.methods": "real_only", "report.oracle_steps": 0,
                                                          "compare.sweep_epochs": 2, "classify.epochs": 20})
    points = compare.runs(config, str(tmp_path))
    _write_metrics(points[0], 40.0, 90.0)
    _write_metrics(points[1], 50.0, 30.0)
    with pytest.raises(artifacts.ArtifactError, match=r"real_only/seed0/final/classify/metrics.json does not exist"):
        report.run(config, str(tmp_path))
    _write_metrics(compare.final_runs(config, str(tmp_path))[0], 65.0, 70.0)
    summary = report.run(config, str(tmp_path))["real_only"]
    assert summary["top1"] == 70.0
    assert summary["sweep"][0]["chosen"] == points[1].point
    assert summary["sweep"][0]["final"] == {"point": points[1].point, "validation_top1": 65.0, "test_top1": 70.0}
    markdown = (tmp_path / "report" / "index.md").read_text()
    assert f"| real_only | 0 | {points[1].point} | 50.0 | 30.0 | yes |" in markdown
    assert f"| real_only | 0 | {points[1].point} | 65.0 | 70.0 | final run |" in markdown
    assert "The points train 2 epochs" in markdown and "again for 20 epochs" in markdown


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["during the sweep", "between the phases", "during the final run"])
def test_a_killed_two_phase_sweep_resumes_at_any_point(tmp_path, monkeypatch, one_device, kill):
    """Killed in the second point's classifier, after the sweep before the final run, or after the final run's first
    epoch: the rerun finishes what was left (never a finished point again) and the report shows the final run."""
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: run)
    config = _sweep("classify.learning_rate=3e-3|1e-3", **{
        "stages": "caption,generate,classify,report", "generate.renderer": "toyworld",
        "generate.images_per_class": 4, "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
        "data.toyworld.test_per_class": 4, "data.toyworld.val_per_class": 2, "classify.image_size": 32,
        "classify.epochs": 2, "compare.sweep_epochs": 1, "classify.steps_per_epoch": 2, "classify.batch_size": 8,
        "report.oracle_steps": 0, "compare.pack_points": False})  # Each point alone (packed: test_compare_packs.py).
    points = [os.path.relpath(r.workdir, tmp_path) for r in compare.runs(config, str(tmp_path))]
    final = f"bob/seed0/{compare.FINAL}"
    saves, save = [], loop.Checkpoints.save  # The epoch of each checkpoint saved: 1 and 1 (points), 1, 2 (final).
    kill_at_save = {"during the sweep": 2, "during the final run": 3}.get(kill)

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(args[0])
        if len(saves) == kill_at_save:
            raise _Killed

    final_runs = compare.final_runs

    def die_before_the_second_phase(*args):
        raise _Killed

    monkeypatch.setattr(loop.Checkpoints, "save", save_then_die)
    if kill == "between the phases":
        monkeypatch.setattr(compare, "final_runs", die_before_the_second_phase)
    with pytest.raises(_Killed):
        main.run(config, str(tmp_path))
    monkeypatch.setattr(compare, "final_runs", final_runs)
    first = {"during the sweep": [(points[1], "classify")], "between the phases": [(points[1], "classify")],
             "during the final run": [(points[1], "classify"), (final, "classify")]}[kill]
    assert calls == [(points[0], "caption"), (points[0], "generate"), (points[0], "classify")] + first

    calls.clear()
    main.run(config, str(tmp_path))
    again = {"during the sweep": [(points[1], "classify"), (final, "classify")],
             "between the phases": [(final, "classify")], "during the final run": [(final, "classify")]}[kill]
    assert calls == again + [(".", "report")]  # The final run shares the points' captions and synthetic set.
    assert saves[-1] == 2 and saves.count(2) == 1, "the final run trains 2 epochs once, resumed where it was killed"
    metrics = [json.loads((tmp_path / p / "classify" / "metrics.json").read_text()) for p in points + [final]]
    assert (metrics[0]["epochs"], metrics[1]["epochs"], metrics[2]["epochs"]) == (1, 1, 2)
    chosen = int(np.argmax([m["validation_top1"] for m in metrics[:2]]))
    assert json.loads((tmp_path / final / "config.json").read_text())["classify"]["learning_rate"] == \
        (3e-3, 1e-3)[chosen]
    results = json.loads((tmp_path / "report" / "results.json").read_text())["bob"]
    assert results["sweep"][0]["chosen"] == os.path.basename(points[chosen])
    assert results["top1"] == metrics[2]["test"]["top1"]
