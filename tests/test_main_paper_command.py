"""The paper's command as a user runs it, ``python -m bobjax.main --config=configs/cub.py``, offline: every stage from
the hub ids the config names (served by tests/helpers/fake_hub.py), and, with an empty cache, one line before any
work."""

import hashlib
import json
import os

import numpy as np
import pytest
from demo_run import cli, config_file
from fake_hub import CLIP_ID, SD15_ID, SD_ID, VLM_ID
from PIL import Image

from bobjax import config_lib, main, pretrained
from bobjax.models.hub import WeightsError

CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
# Only sizes, step counts and the data source differ from configs/cub.py: the hub ids are the config's own.
REDUCED = (
    "--config.data.source=folder", "--config.data.val_size=3", "--config.data.shots=2",
    "--config.caption.batch_size=6", "--config.caption.max_new_tokens=3",
    "--config.finetune.epochs=1", "--config.finetune.batch_size=6", "--config.finetune.resolution=32",
    "--config.finetune.warmup_steps=0", "--config.finetune.sample_every=0",
    "--config.generate.images_per_class=2", "--config.generate.steps=2", "--config.generate.resolution=32",
    "--config.generate.batch_size_per_device=6",
    "--config.classify.epochs=1", "--config.classify.steps_per_epoch=1", "--config.classify.batch_size=4",
    "--config.classify.image_size=32", "--config.classify.warmup_epochs=0",
)


def write_birds(root) -> str:
    """``train/<class>/`` (4 images each) and ``test/<class>/`` (2 each): CUB's class folder names, random pixels."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}_{k}.png")
    return str(root)


def command(data_dir, workdir):
    return ("--config=configs/cub.py", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *REDUCED)


@pytest.mark.slow  # the CUB command through every stage in a fresh process; CI runs it after the suite
def test_cub_end_to_end_from_the_hub_cache(fake_hub, tmp_path):
    fake_hub.add(VLM_ID, SD_ID, CLIP_ID)
    workdir = tmp_path / "run"
    result = cli(*command(write_birds(tmp_path / "birds"), workdir), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for folder in ("captions", "finetune", "synthetic", "classify", "report"):
        assert (workdir / folder / "COMPLETE").exists(), folder
    metrics = json.loads((workdir / "classify" / "metrics.json").read_text())
    assert len(metrics["test"]["per_class"]) == len(CLASSES)
    weights = json.loads((workdir / "weights.json").read_text())
    assert sorted(weights) == ["caption", "classify", "finetune", "generate", "report"]
    for stage, repo_id in (("caption", VLM_ID), ("finetune", SD_ID), ("generate", SD_ID), ("classify", CLIP_ID)):
        snapshot = fake_hub.snapshots[repo_id]
        assert (weights[stage]["name"], weights[stage]["revision"]) == (repo_id, os.path.basename(snapshot)), stage
    assert weights["classify"]["backbone"] == "clip_vit_b16"
    weight_file = os.path.join(fake_hub.snapshots[CLIP_ID], "model.safetensors")
    with open(weight_file, "rb") as f:
        assert weights["classify"]["files"]["model.safetensors"]["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_empty_cache_stops_at_once_naming_the_first_missing_id(empty_hub, tmp_path):
    workdir = tmp_path / "run"
    result = cli(*command(write_birds(tmp_path / "birds"), workdir), timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bobjax: error:")]
    assert len(errors) == 1 and repr(VLM_ID) in errors[0] and "config.caption.model" in errors[0], result.stderr
    assert "HF_HOME" in errors[0]
    assert not any((workdir / f).exists() for f in ("captions", "finetune", "synthetic", "classify", "report",
                                                   "captions.partial", "weights.json"))


@pytest.mark.parametrize("present, missing, field", [((VLM_ID,), SD_ID, "config.model.sd"),
                                                     ((VLM_ID, SD_ID), CLIP_ID, "config.classify.checkpoint")])
def test_a_later_stages_missing_weights_stop_the_run_before_its_first_stage(fake_hub, tmp_path, monkeypatch,
                                                                           present, missing, field):
    """The weights of every stage are fetched before the first stage runs, not when their stage's turn comes."""
    fake_hub.subset(str(tmp_path / "hf_home"), *present).use(monkeypatch)
    calls = []
    monkeypatch.setattr(main, "STAGE_RUNS", {name: lambda config, workdir, name=name: calls.append(name)
                                             for name in config_lib.STAGES})
    config = config_file("cub.py", **{"data.source": "folder", "data.data_dir": write_birds(tmp_path / "birds"),
                                      "data.val_size": 3, "data.shots": 2})
    with pytest.raises(WeightsError) as error:
        main.run(config, str(tmp_path / "run"))
    assert repr(missing) in str(error.value) and field in str(error.value)
    assert calls == [] and not (tmp_path / "run" / "weights.json").exists()


@pytest.mark.parametrize("sd, sd_id", [("sd21", SD_ID), ("sd15", SD15_ID)])
@pytest.mark.parametrize("name", ["cub.py", "aircraft.py", "cars.py", "pets.py", "cub_lt.py", "flowers_lt.py"])
def test_every_real_config_names_only_weights_users_can_download(fake_hub, name, sd, sd_id):
    """The fake hub holds exactly the ids that exist on the hub today; main's check before the first stage resolves
    each stage's weights there, so a config naming a withdrawn id (stabilityai/, runwayml/) fails here."""
    fake_hub.add(VLM_ID, SD_ID, SD15_ID, CLIP_ID)
    config = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", name), f"sd={sd}")
    plan = [(config, "run", stage) for stage in config_lib.parse_stages(config.stages)]
    records = pretrained.resolve_all(plan)["run"]
    names = {stage: record["name"] for stage, record in records.items()}
    # The report's quality metrics: CLIP's image tower (config.quality.encoder's default on real datasets).
    assert names == {"caption": VLM_ID, "finetune": sd_id, "generate": sd_id, "classify": CLIP_ID, "report": CLIP_ID}
