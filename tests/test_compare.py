"""Comparisons: each method and seed runs in its own folder with its own stages, a killed comparison resumes
where it stopped, and the report comes last over all runs."""

import os

import pytest
from demo_run import demo_config
from test_main import RecordingStage

from bobjax import compare, config_lib, main
from bobjax.artifacts import ArtifactError
from bobjax.errors import ConfigError


@pytest.fixture
def recorded(monkeypatch):
    calls, failing = [], set()

    def recorder(name):
        stage = RecordingStage(name, [], failing)

        def run(config, workdir):
            calls.append((os.path.basename(os.path.dirname(workdir)) + "/" + os.path.basename(workdir), name))
            return stage.run(config, workdir)

        return run

    monkeypatch.setattr(main, "STAGE_RUNS", {name: recorder(name) for name in config_lib.STAGES})
    return calls, failing


def comparison(**overrides):
    return demo_config(**{"compare.methods": "real_only,datadream,bob", "compare.seeds": 2, **overrides})


def test_each_method_and_seed_runs_its_own_stages_then_one_report(tmp_path, recorded):
    """Every run's captions come first: the caption VLM needs the GPU before any JAX stage takes it."""
    calls, _ = recorded
    main.run(comparison(), str(tmp_path))
    workdir = os.path.basename(str(tmp_path))
    expected = [("bob/seed0", "caption"), ("bob/seed1", "caption")]
    for method, stages in (("real_only", ["classify"]), ("datadream", ["finetune", "generate", "classify"]),
                           ("bob", ["finetune", "generate", "classify"])):
        for seed in (0, 1):
            expected += [(f"{method}/seed{seed}", s) for s in stages]
    assert calls == expected + [(f"{os.path.basename(os.path.dirname(str(tmp_path)))}/{workdir}", "report")]
    for run in compare.runs(comparison(), str(tmp_path)):
        assert os.path.exists(os.path.join(run.workdir, "splits.json"))
        assert os.path.exists(os.path.join(run.workdir, "timings.json"))


def test_seeds_differ_and_method_presets_apply():
    runs = compare.runs(comparison(), "/w")
    assert [(r.method, r.seed) for r in runs] == [(m, s) for m in ("real_only", "datadream", "bob") for s in (0, 1)]
    by_method = {r.method: r.config for r in runs if r.seed == 1}
    assert by_method["real_only"].classify.mixing == "real_only"
    assert by_method["datadream"].generate.plan == "class_only"
    assert by_method["bob"].generate.plan == "bob"
    assert all(r.config.compare.methods == "" and "report" not in r.config.stages for r in runs)


def test_requested_stages_limit_every_run(tmp_path, recorded):
    calls, _ = recorded
    main.run(comparison(stages="caption,finetune", **{"compare.seeds": 1}), str(tmp_path))
    assert calls == [("bob/seed0", "caption"), ("datadream/seed0", "finetune"), ("bob/seed0", "finetune")]


def test_killed_comparison_resumes_without_redoing_runs(tmp_path, recorded):
    calls, failing = recorded
    failing.add("generate")
    with pytest.raises(RuntimeError):
        main.run(comparison(**{"compare.seeds": 1}), str(tmp_path))
    assert calls == [("bob/seed0", "caption"), ("real_only/seed0", "classify"), ("datadream/seed0", "finetune"),
                     ("datadream/seed0", "generate")]
    failing.clear()
    calls.clear()
    main.run(comparison(**{"compare.seeds": 1}), str(tmp_path))
    assert [c for c in calls if c[1] != "report"] == [
        ("datadream/seed0", "generate"), ("datadream/seed0", "classify"), ("bob/seed0", "finetune"),
        ("bob/seed0", "generate"), ("bob/seed0", "classify")]


def test_stale_report_is_refused_before_any_run_starts(tmp_path, recorded):
    """More seeds in a finished comparison's folder: the report's error comes first, not after the new runs."""
    calls, _ = recorded
    main.run(comparison(**{"compare.seeds": 1}), str(tmp_path))
    calls.clear()
    with pytest.raises(ArtifactError, match=r"'report'.*compare.seeds.*--redo=report"):
        main.run(comparison(), str(tmp_path))
    assert calls == []
    main.run(comparison(), str(tmp_path), redo=["report"])
    report_dir = f"{os.path.basename(os.path.dirname(str(tmp_path)))}/{os.path.basename(str(tmp_path))}"
    assert not [c for c in calls if c[0].endswith("seed0")] and calls[-1] == (report_dir, "report")


def test_unknown_method_is_named():
    with pytest.raises(ConfigError, match="'dreambooth'"):
        compare.runs(comparison(**{"compare.methods": "bob,dreambooth"}), "/w")
