"""The command line: config overrides, named errors, the stage loop and its skip/resume rules."""

import hashlib
import json
import os

import pytest
from demo_run import cli, demo_config

from bobjax import artifacts, config_lib, main, run_folder
from bobjax.artifacts import ArtifactError
from bobjax.errors import ConfigError


class RecordingStage:
    """A stage that leaves work in progress, then dies (its name is in ``failing``) or writes its artifact."""

    def __init__(self, name, calls, failing=()):
        self.name, self.calls, self.failing = name, calls, failing

    def run(self, config, workdir):
        self.calls.append(self.name)
        os.makedirs(run_folder.partial_dir(workdir, self.name), exist_ok=True)
        if self.name in self.failing:
            raise RuntimeError("killed")
        os.makedirs(run_folder.stage_dir(workdir, self.name), exist_ok=True)


@pytest.fixture
def recorded(monkeypatch):
    calls, failing = [], set()
    monkeypatch.setattr(main, "STAGE_RUNS", {name: RecordingStage(name, calls, failing).run
                                             for name in config_lib.STAGES})
    return calls, failing


def test_override_and_resolved_config_written(tmp_path):
    result = cli("--config=configs/demo.py", f"--workdir={tmp_path}", "--config.finetune.lora_rank=3",
                 "--config.stages=caption", "--config.caption.method=oracle", "--config.compare.methods=")
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["finetune"]["lora_rank"] == 3
    assert "lora_rank: 3" in result.stdout
    assert (tmp_path / "splits.json").exists()


def test_misspelt_key_is_named():
    result = cli("--config=configs/demo.py", "--workdir=/tmp/unused", "--config.finetune.lora_rnk=8")
    assert result.returncode != 0
    assert "lora_rnk" in result.stderr


def test_missing_data_dir_is_one_clear_line(tmp_path):
    result = cli("--config=configs/cub.py", f"--workdir={tmp_path}", f"--config.data.data_dir={tmp_path}/nodata")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = [l for l in result.stderr.splitlines() if l.startswith("bobjax: error:")]
    assert len(line) == 1 and f"{tmp_path}/nodata" in line[0] and "python -m bobjax.data.prepare caltech_birds2011" in line[0]


def test_stages_run_in_order_and_complete_ones_are_skipped(tmp_path, recorded):
    calls, _ = recorded
    config = demo_config(stages="generate,caption,finetune")
    main.run(config, str(tmp_path))
    assert calls == ["caption", "finetune", "generate"]
    main.run(config, str(tmp_path))
    assert calls == ["caption", "finetune", "generate"], "complete stages must be skipped"


def test_killed_stage_reruns_and_earlier_ones_do_not(tmp_path, recorded):
    calls, failing = recorded
    config = demo_config(stages="caption,finetune,generate")
    failing.add("finetune")
    with pytest.raises(RuntimeError):
        main.run(config, str(tmp_path))
    assert os.path.isdir(run_folder.partial_dir(str(tmp_path), "finetune")), "a killed stage keeps its progress"
    failing.clear()
    main.run(config, str(tmp_path))
    assert calls == ["caption", "finetune", "finetune", "generate"]
    assert not any(os.path.exists(run_folder.partial_dir(str(tmp_path), s))
                   for s in ("caption", "finetune", "generate"))


def test_changed_config_refuses_stale_stage_until_redo(tmp_path, recorded):
    calls, _ = recorded
    main.run(demo_config(stages="caption,finetune"), str(tmp_path))
    changed = demo_config(stages="caption,finetune", **{"finetune.lora_rank": 2})
    with pytest.raises(ArtifactError, match=r"finetune.lora_rank"):
        main.run(changed, str(tmp_path))
    main.run(changed, str(tmp_path), redo=["finetune"])
    assert calls == ["caption", "finetune", "finetune"]


def test_unknown_stage_is_named():
    with pytest.raises(ConfigError, match="'train'"):
        config_lib.parse_stages("caption,train")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    artifacts.write_json(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["out.json"]


def test_unwritable_workdir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match=str(blocker)):
        artifacts.write_json(str(blocker / "sub" / "a.json"), {})


def test_redo_discards_work_in_progress_too(tmp_path):
    partial = run_folder.partial_dir(str(tmp_path), "caption")
    os.makedirs(partial)
    open(os.path.join(partial, "responses.jsonl"), "w").write("{}\n")
    os.makedirs(run_folder.stage_dir(str(tmp_path), "caption"))
    run_folder.remove_stage(str(tmp_path), "caption")
    assert not os.path.exists(partial) and not os.path.exists(run_folder.stage_dir(str(tmp_path), "caption"))


def test_every_stage_has_its_run_in_pipeline_order():
    assert tuple(main.STAGE_RUNS) == config_lib.STAGES
    assert all(run.__name__ == "run" for run in main.STAGE_RUNS.values())


def test_weights_manifest_records_what_each_stage_that_ran_loads(tmp_path, recorded):
    """Demo: oracle captions (no weights), the shipped SD prior (a local folder: sha256 per file), a tiny ResNet
    from scratch. A stage skipped as complete keeps the record of the run that made it."""
    calls, _ = recorded
    main.run(demo_config(stages="caption,finetune"), str(tmp_path))
    first = json.loads((tmp_path / "weights.json").read_text())
    assert sorted(first) == ["finetune"]
    prior = first["finetune"]
    assert (prior["field"], prior["name"], prior["source"], prior["revision"]) == (
        "model.sd", "bobjax:toyworld_prior", "local", None)
    unet = os.path.join(prior["path"], "unet", "diffusion_pytorch_model.safetensors")
    with open(unet, "rb") as f:
        expected = hashlib.sha256(f.read()).hexdigest()
    assert prior["files"]["unet/diffusion_pytorch_model.safetensors"]["sha256"] == expected

    first["finetune"]["revision"] = "made by an earlier run"
    (tmp_path / "weights.json").write_text(json.dumps(first))
    main.run(demo_config(stages="caption,finetune,generate,classify"), str(tmp_path))
    second = json.loads((tmp_path / "weights.json").read_text())
    assert calls == ["caption", "finetune", "generate", "classify"]
    assert second["finetune"]["revision"] == "made by an earlier run", "a skipped stage keeps its record"
    assert second["generate"]["name"] == "bobjax:toyworld_prior"
    assert second["classify"] == {"field": "classify.checkpoint", "backbone": "resnet_tiny", "name": "random",
                                  "source": "random initialisation"}


def test_comparison_records_each_runs_weights_in_its_folder(tmp_path, recorded):
    main.run(demo_config(**{"compare.methods": "real_only,bob", "stages": "caption,finetune,classify"}), str(tmp_path))
    assert sorted(json.loads((tmp_path / "real_only" / "seed0" / "weights.json").read_text())) == ["classify"]
    assert sorted(json.loads((tmp_path / "bob" / "seed0" / "weights.json").read_text())) == ["classify", "finetune"]
    assert not (tmp_path / "weights.json").exists()
