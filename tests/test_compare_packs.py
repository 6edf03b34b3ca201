"""Which sweep points train packed (bobjax.compare.packs), and a comparison that packs them (bobjax.main): every
point still ends as a complete run of its own, and a pack killed in its classifier resumes packed."""

import json
import os

import numpy as np
import pytest
from demo_run import ROOT, demo_config
from test_share import _recorded

from bobjax import compare, config_lib, identity, main, run_folder, share
from bobjax.training import loop


def _paper_grid(backbone: str) -> str:
    """The grid of configs/paper.py's cells with ``backbone``."""
    return config_lib.load_config_file(os.path.join(ROOT, "configs", "paper.py"), f"backbone={backbone}").compare.sweep


def _linked(config, root):
    runs = compare.runs(config, str(root))
    share.link_runs(runs, str(root), (), timeout_s=60)
    return runs


def test_the_paper_grids_pack_per_method_and_seed(tmp_path):
    """The paper's CLIP grid (4 x 2 x 2) and ResNet-50 grid (3 x 3 x 2): one pack per method and seed; real only, which
    reads no synthetic set, as BOB; every point in a pack, in grid order."""
    for grid, size in ((_paper_grid("clip"), 16), (_paper_grid("rn50"), 18)):
        config = demo_config(**{"compare.methods": "real_only,bob", "compare.seeds": 2, "compare.sweep": grid,
                                "compare.sweep_epochs": 1})
        runs = _linked(config, tmp_path / str(size))
        packs = compare.packs(runs)
        assert [[r.workdir for r in pack] for pack in packs] == [
            [r.workdir for r in runs if (r.method, r.seed) == (method, seed)]
            for method in ("real_only", "bob") for seed in (0, 1)]
        assert all(len(pack) == size for pack in packs)


def test_points_that_differ_elsewhere_final_runs_and_pack_points_false_train_alone(tmp_path):
    config = demo_config(**{"compare.methods": "bob", "compare.sweep":
                            "classify.learning_rate=1e-3|3e-3;classify.augment=false|true"})
    runs = _linked(config, tmp_path / "augment")
    assert [[r.point for r in pack] for pack in compare.packs(runs)] == [
        [runs[0].point, runs[2].point], [runs[1].point, runs[3].point]], "one pack per value of classify.augment"

    config = demo_config(**{"compare.methods": "bob", "compare.sweep": "classify.real_weight=0.5|0.8",
                            "compare.pack_points": False})
    assert compare.packs(_linked(config, tmp_path / "off")) == []

    config = demo_config(**{"compare.methods": "bob", "compare.sweep": "classify.real_weight=0.5|0.8"})
    runs = _linked(config, tmp_path / "final")
    finals = [compare.Run(r.method, r.seed, r.workdir.parent / compare.FINAL, r.config, r.point, final=True)
              for r in runs]
    assert len(compare.packs(runs)) == 1 and compare.packs(finals) == []


def test_packing_is_no_part_of_any_identity():
    """A workdir made packed (or before packing existed) stays complete for the other setting: a packed point trains as
    it does alone, to float rounding (tests/test_classify_packed.py)."""
    config = demo_config(**{"compare.methods": "bob", "compare.sweep": "classify.real_weight=0.5|0.8"})
    alone = demo_config(**{"compare.methods": "bob", "compare.sweep": "classify.real_weight=0.5|0.8",
                           "compare.pack_points": False})
    for stage in ("classify", "report"):
        assert identity.of(config, stage) == identity.of(alone, stage)
    assert "pack_points" not in identity.of(config, "report")["compare"]


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_a_packed_sweep_completes_each_point_and_resumes_packed_after_a_kill(tmp_path, monkeypatch, one_device):
    """The two points' classifiers train in one program (the stage's own run is never called for them): each point
    has its metrics, its COMPLETE marker (its own config's identity), its timing and no checkpoints left. Killed after
    both points' first epoch, the rerun trains their second epoch, packed, and the report chooses between them."""
    calls = _recorded(monkeypatch, tmp_path, lambda name, run: run)
    config = demo_config(**{
        "compare.methods": "bob", "compare.sweep": "classify.learning_rate=3e-3|1e-3;classify.real_weight=0.8|0.5",
        "stages": "caption,generate,classify,report", "generate.renderer": "toyworld",
        "generate.images_per_class": 4, "data.toyworld.num_classes": 3, "data.toyworld.image_size": 32,
        "data.toyworld.test_per_class": 4, "data.toyworld.val_per_class": 2, "classify.image_size": 32,
        "classify.epochs": 2, "classify.steps_per_epoch": 2, "classify.batch_size": 8, "report.oracle_steps": 0})
    runs = compare.runs(config, str(tmp_path))
    saves, save = [], loop.Checkpoints.save

    def save_then_die_after_the_first_epoch(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(args[0])
        if len(saves) == len(runs):
            raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(loop.Checkpoints, "save", save_then_die_after_the_first_epoch)
        with pytest.raises(_Killed):
            main.run(config, str(tmp_path))
    first = os.path.relpath(runs[0].workdir, tmp_path)
    assert calls == [(first, "caption"), (first, "generate")] and saves == [1] * len(runs)

    calls.clear()
    saves.clear()
    monkeypatch.setattr(loop.Checkpoints, "save", lambda self, *a, **k: (saves.append(a[0]), save(self, *a, **k)))
    main.run(config, str(tmp_path))
    assert calls == [(".", "report")] and saves == [2] * len(runs), "each point's second epoch, packed"
    for run in runs:
        assert identity.is_complete(run.config, run.workdir, "classify")
        assert "classify" in json.loads((run.workdir / run_folder.TIMINGS).read_text())
        assert not run_folder.partial_dir(run.workdir, "classify").exists()
    metrics = [json.loads((run_folder.stage_dir(r.workdir, "classify") / "metrics.json").read_text()) for r in runs]
    assert all(m["epochs"] == 2 and len(m["validation_history"]) == 2 for m in metrics)
    results = json.loads((tmp_path / "report" / "results.json").read_text())["bob"]
    chosen = int(np.argmax([m["validation_top1"] for m in metrics]))  # The first of equals, as numpy's argmax.
    assert results["sweep"][0]["chosen"] == runs[chosen].point
    assert results["top1"] == metrics[chosen]["test"]["top1"]
