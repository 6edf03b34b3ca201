"""Shared stages: runs of a comparison that differ only in later-stage settings caption, fine-tune and generate once,
through pointer files that every stage, the report, a rerun and --redo follow."""

import json
import os

from demo_run import demo_config
from etils import epath
import test_artifacts_cloud
from fake_gcs import local
from test_main import RecordingStage

from bobjax import artifacts, compare, config_lib, main, run_folder, share

BACKBONES = "classify.backbone=resnet_tiny|resnet18"
fake_gcs = test_artifacts_cloud.fake_gcs  # gs:// served from a local folder (a fixture).


def _recorded(monkeypatch, root, wrap):
    """Replaces each stage's run with ``wrap(name, run)``; returns its calls as (run folder relative to ``root``,
    stage)."""
    calls = []

    def recorder(name, run):
        def recorded(config, workdir):
            calls.append((str(epath.Path(workdir).relative_to(root)), name))
            return run(config, workdir)

        return recorded

    monkeypatch.setattr(main, "STAGE_RUNS", {name: recorder(name, wrap(name, run))
                                             for name, run in main.STAGE_RUNS.items()})
    return calls


def test_runs_with_equal_stage_inputs_make_them_once(tmp_path, monkeypatch):
    """Two classifier backbones x BOB, its within-class ablation (same captions and LoRA, another context plan) and
    DataDream (other prompts): one caption bank, two LoRAs, three synthetic sets, six classifiers."""
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: RecordingStage(name, []).run)
    config = demo_config(**{"compare.methods": "bob,bob_within_class,datadream", "compare.sweep": BACKBONES})
    main.run(config, str(tmp_path))
    ran = {stage: [folder for folder, s in calls if s == stage] for stage in config_lib.STAGES}
    assert ran["caption"] == ["bob/seed0/classify.backbone=resnet_tiny"]
    assert ran["finetune"] == ["bob/seed0/classify.backbone=resnet_tiny",
                               "datadream/seed0/classify.backbone=resnet_tiny"]
    assert ran["generate"] == [f"{m}/seed0/classify.backbone=resnet_tiny" for m in
                               ("bob", "bob_within_class", "datadream")]
    assert len(ran["classify"]) == 6 and len(set(ran["classify"])) == 6 and ran["report"] == ["."]

    runs = {(r.method, r.config.classify.backbone): r for r in compare.runs(config, str(tmp_path))}
    bob, ablation = runs["bob", "resnet18"], runs["bob_within_class", "resnet18"]
    pointer = (bob.workdir / "synthetic.link").read_text().strip()
    assert pointer == f"../../../shared/generate-{share.key(bob.config, 'generate')}"
    assert run_folder.stage_dir(bob.workdir, "generate") == tmp_path / pointer.removeprefix("../../../") / "synthetic"
    assert run_folder.stage_dir(ablation.workdir, "finetune") == run_folder.stage_dir(bob.workdir, "finetune")
    assert run_folder.stage_dir(ablation.workdir, "generate") != run_folder.stage_dir(bob.workdir, "generate")
    assert not (bob.workdir / "synthetic").exists() and (bob.workdir / "classify").is_dir()
    assert sorted(os.listdir(tmp_path / "shared")) == sorted(
        [f"caption-{share.key(bob.config, 'caption')}"]
        + [f"finetune-{share.key(runs[m, 'resnet18'].config, 'finetune')}" for m in ("bob", "datadream")]
        + [f"generate-{share.key(runs[m, 'resnet18'].config, 'generate')}"
           for m in ("bob", "bob_within_class", "datadream")])
    shared = share.shared_folders(list(runs.values()), str(tmp_path))
    assert shared[f"shared/caption-{share.key(bob.config, 'caption')}/captions"] == [
        f"{m}/seed0/classify.backbone={b}" for m in ("bob", "bob_within_class") for b in ("resnet_tiny", "resnet18")]

    calls.clear()
    main.run(config, str(tmp_path))
    assert calls == [], "a finished comparison has nothing to redo"
    main.run(config, str(tmp_path), redo=["generate"])
    assert [s for _, s in calls] == ["generate"] * 3, "a shared stage is redone once for all runs that share it"


def test_redo_with_a_changed_config_points_runs_at_a_new_folder(tmp_path, monkeypatch):
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: RecordingStage(name, []).run)
    config = demo_config(**{"compare.methods": "bob", "compare.sweep": BACKBONES, "stages": "caption,generate"})
    main.run(config, str(tmp_path))
    before = run_folder.stage_dir(tmp_path / "bob/seed0/classify.backbone=resnet18", "generate")
    changed = demo_config(**{"compare.methods": "bob", "compare.sweep": BACKBONES, "stages": "caption,generate",
                             "generate.steps": 7})
    calls.clear()
    main.run(changed, str(tmp_path), redo=["generate"])
    after = run_folder.stage_dir(tmp_path / "bob/seed0/classify.backbone=resnet18", "generate")
    assert calls == [("bob/seed0/classify.backbone=resnet_tiny", "generate")]
    assert after != before and (before / run_folder.COMPLETE).exists(), "the old inputs' folder stays whole"
    assert json.loads((after / run_folder.COMPLETE).read_text())["generate"]["steps"] == 7


def test_two_lambdas_generate_once_and_the_report_says_what_is_shared(tmp_path, monkeypatch, one_device):
    """The real stages on the toy world (the toy world's renderer draws the synthetic set, so no LoRA is needed)."""
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: run)
    config = demo_config(**{
        "compare.methods": "bob", "compare.sweep": "classify.real_weight=0.8|0.5",
        "stages": "caption,generate,classify,report", "generate.renderer": "toyworld",
        "generate.images_per_class": 4, "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
        "data.toyworld.test_per_class": 4, "data.toyworld.val_per_class": 2, "classify.image_size": 32,
        "classify.epochs": 1, "classify.steps_per_epoch": 2, "classify.batch_size": 8, "report.oracle_steps": 0,
        "compare.pack_points": False})  # Each point's classifier alone, through the stage table recorded here.
    main.run(config, str(tmp_path))
    points = ["bob/seed0/classify.real_weight=0.8", "bob/seed0/classify.real_weight=0.5"]
    assert calls == [(points[0], "caption"), (points[0], "generate"), (points[0], "classify"),
                     (points[1], "classify"), (".", "report")]

    results = json.loads((tmp_path / "report" / "results.json").read_text())
    grid = results["bob"]["sweep"][0]["points"]
    assert [p["point"] for p in grid] == [p.split("/")[-1] for p in points]
    for point, folder in zip(grid, points):
        metrics = json.loads((tmp_path / folder / "classify" / "metrics.json").read_text())
        assert (point["validation_top1"], point["test_top1"]) == (metrics["validation_top1"], metrics["test"]["top1"])
    markdown = (tmp_path / "report" / "index.md").read_text()
    synthetic = f"shared/generate-{share.key(compare.runs(config, str(tmp_path))[0].config, 'generate')}/synthetic"
    assert f"| {synthetic} | {', '.join(points)} |" in markdown
    assert "## Sweep: each point scored on validation" in markdown


def test_pointers_work_in_a_bucket(fake_gcs, monkeypatch):
    """On an object store (no symlinks, no renames) the pointers are objects; nothing is written locally."""
    def writes_its_folder(name, run):
        return lambda config, workdir: artifacts.write_text(run_folder.stage_dir(workdir, name) / "artifact", name)

    calls = _recorded(monkeypatch, "gs://fake-bucket/cmp", writes_its_folder)
    config = demo_config(**{"compare.methods": "bob", "compare.sweep": BACKBONES, "stages": "caption,finetune"})
    main.run(config, "gs://fake-bucket/cmp")
    assert calls == [("bob/seed0/classify.backbone=resnet_tiny", "caption"),
                     ("bob/seed0/classify.backbone=resnet_tiny", "finetune")]
    bob = compare.runs(config, "gs://fake-bucket/cmp")[1]
    folder = f"finetune-{share.key(bob.config, 'finetune')}/finetune"
    assert os.path.isfile(local(fake_gcs, f"gs://fake-bucket/cmp/shared/{folder}/{run_folder.COMPLETE}"))
    assert str(run_folder.stage_dir(bob.workdir, "finetune")) == f"gs://fake-bucket/cmp/shared/{folder}"
    main.run(config, "gs://fake-bucket/cmp")
    assert len(calls) == 2 and os.listdir(".") == []
