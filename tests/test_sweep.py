"""Sweeps chosen by validation: the grid a spec makes, named errors for bad specs, the choice (best validation top-1,
never test)."""

import pytest
from demo_run import demo_config

from bobjax import artifacts, compare, report, sweep
from bobjax.errors import ConfigError


def _sweep(spec, **overrides):
    return demo_config(**{"compare.methods": "bob", "compare.sweep": spec, **overrides})


def test_grid_is_the_product_of_typed_values_in_the_order_written():
    grid = sweep.points(_sweep(" classify.learning_rate=1e-3|3e-3 ; classify.augment=false|yes;data.shots=2 "))
    assert [p.name for p in grid] == [f"classify.learning_rate={lr},classify.augment={a},data.shots=2"
                                      for lr in ("1e-3", "3e-3") for a in ("false", "yes")]
    assert grid[1].values == {"classify.learning_rate": 1e-3, "classify.augment": True, "data.shots": 2}
    runs = compare.runs(_sweep("classify.learning_rate=1e-3|3e-3", **{"compare.seeds": 2}), "/w")
    assert [(r.seed, str(r.workdir), r.config.classify.learning_rate) for r in runs] == [
        (s, f"/w/bob/seed{s}/classify.learning_rate={lr}", v) for s in (0, 1) for lr, v in (("1e-3", 1e-3), ("3e-3", 3e-3))]
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
])
def test_bad_spec_is_a_config_error_naming_the_field(spec, named):
    with pytest.raises(ConfigError, match=named):
        compare.runs(_sweep(spec), "/w")


def _write_metrics(run, validation, test):
    class_names = ["a", "b"]
    artifacts.write_json(artifacts.stage_dir(run.workdir, "classify") / "metrics.json",
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
