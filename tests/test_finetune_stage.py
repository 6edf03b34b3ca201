"""The fine-tuning loop: sharded = single-device, killed + resumed = uninterrupted, NaN stops it, outputs exist.

Every run trains the minimal tiny SD 1.x pipeline's adapters (UNet and text encoder) for 3 steps on 8 images
at 16 px, global batch 8; runs are compared through their exported LoRA files (float32, 1e-5).

Compiling the training step dominates these tests, so the runs that need no other mesh (the reference, the
killed + resumed run, the NaN run) share one configuration on one device: with the session's persistent
compilation cache (conftest.py) they compile the step once. The NaN comes from the data (a NaN image at the
third step), which takes the same compiled step to a non-finite loss as a too-high learning rate would.
"""

import glob
import os

import jax
import numpy as np
import pytest

from bobjax import config_lib, parallel, run_folder
from bobjax.errors import ConfigError
from bobjax.finetune import stage as finetune
from bobjax.models import lora_file
from bobjax.models.sd import load_stable_diffusion
from bobjax.training import loop
from tiny_sd import make_tiny_sd

IMAGES = [np.random.default_rng(i).integers(0, 256, size=(20, 24, 3), dtype=np.uint8) for i in range(8)]
PROMPTS = [f"a bird photo of a {name}" for name in ("crow", "gull", "owl", "wren")] * 2
ONE_DEVICE = (1, 1)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_stable_diffusion(make_tiny_sd(tmp_path_factory.mktemp("sd1"), "sd1", minimal=True))


def _config(**overrides):
    config = config_lib.base_config()
    c = config.finetune
    c.lora_rank, c.lora_alpha, c.lora_dropout = 4, 8.0, 0.1
    c.resolution, c.random_flip, c.epochs, c.warmup_steps = 16, True, 3, 1
    c.learning_rate, c.batch_size = 1e-2, 8  # Global: the same batches on any mesh.
    c.checkpoint_every, c.sample_every, c.sample_steps, c.log_every = 100, 0, 2, 1
    c.update(overrides)
    return config


def _run(sd, folder, mesh_shape, **overrides):
    devices = mesh_shape[0] * mesh_shape[1]
    mesh = parallel.make_mesh({"data": mesh_shape[0], "fsdp": mesh_shape[1]}, devices=jax.devices()[:devices])
    config = _config(**overrides)
    ids = sd.tokenize(PROMPTS)
    trainer = finetune.LoraTrainer(config, sd, finetune.total_steps(config.finetune, len(ids)), mesh)
    trainer.train(IMAGES.__getitem__, ids, str(folder))
    return lora_file.read_diffusers_lora(os.path.join(folder, run_folder.LORA_FILE))


def _assert_same(a, b, tol):
    assert a.keys() == b.keys()
    for part in a:
        assert a[part][1] == b[part][1]
        for key, value in a[part][0].items():
            np.testing.assert_allclose(b[part][0][key], value, rtol=tol, atol=tol, err_msg=f"{part}.{key}")


def _fail_at_third_batch(monkeypatch, fail):
    """Makes the loop's third batch ``fail(batch, mesh)`` instead of the real global batch."""
    real, calls = parallel.global_batch, []

    def third_fails(batch, mesh, batch_size):
        calls.append(1)
        if len(calls) == 3:
            return fail(lambda b, m: real(b, m, batch_size), batch, mesh)
        return real(batch, mesh, batch_size)

    monkeypatch.setattr(parallel, "global_batch", third_fails)


@pytest.fixture(scope="module")
def single(sd, tmp_path_factory):
    return _run(sd, tmp_path_factory.mktemp("single"), ONE_DEVICE)


def test_single_device_run_trains_both_adapters(single):
    assert set(single) == {"unet", "text_encoder"}
    for part in single.values():
        assert any(np.abs(v).max() > 0 for k, v in part[0].items() if "lora_B" in k)  # B moved off zero


def test_eight_devices_and_fsdp_match_one_device(single, sd, tmp_path):
    _assert_same(single, _run(sd, tmp_path / "data", (8, 1)), 1e-5)
    _assert_same(single, _run(sd, tmp_path / "fsdp", (4, 2)), 1e-5)


class _Killed(Exception):
    pass


def test_on_an_accelerator_the_step_compiled_ahead_trains_the_same_lora(single, sd, tmp_path, fake_accelerator):
    """Where the device reports its memory, the trainer compiles its step before the first one, checks it fits and
    runs that program; a device too small for it stops the stage there, naming the settings to change."""
    fake_accelerator(64)
    _assert_same(single, _run(sd, tmp_path / "fits", ONE_DEVICE), 0.0)
    fake_accelerator(1e-5)  # 10 KiB
    with pytest.raises(ConfigError, match=r"the fine-tuning step needs .* GiB per device .*change config.mesh.fsdp"):
        _run(sd, tmp_path / "too_small", ONE_DEVICE)
    assert not os.path.exists(tmp_path / "too_small")


def test_killed_and_resumed_run_ends_like_the_uninterrupted_one(single, sd, tmp_path, monkeypatch):
    folder = tmp_path / "killed"

    def killed(real, batch, mesh):
        raise _Killed

    with monkeypatch.context() as patch:
        _fail_at_third_batch(patch, killed)
        with pytest.raises(_Killed):
            _run(sd, folder, ONE_DEVICE, checkpoint_every=2)
    assert os.path.isdir(folder / "checkpoints" / "2") and not os.path.exists(folder / run_folder.LORA_FILE)

    resumed = _run(sd, folder, ONE_DEVICE, checkpoint_every=2, sample_every=3)
    _assert_same(single, resumed, 1e-5)
    assert glob.glob(str(folder / "tb" / "events.out.tfevents.*"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(sd, tmp_path, monkeypatch):
    folder = tmp_path / "nan"

    def nan_image(real, batch, mesh):
        return real({**batch, "pixels": np.full_like(batch["pixels"], np.nan)}, mesh)

    _fail_at_third_batch(monkeypatch, nan_image)
    with pytest.raises(loop.TrainingDivergedError, match=r"at step 2: stopped; .*checkpoints"):
        _run(sd, folder, ONE_DEVICE, checkpoint_every=1)
    assert sorted(os.listdir(folder / "checkpoints")) == ["1", "2"]  # Step 3 (index 2) is not saved.
    assert not os.path.exists(folder / run_folder.LORA_FILE)


def test_per_class_loras_share_one_compiled_step(tmp_path, monkeypatch, one_device):
    """``finetune.per_class`` trains one LoRA per class (200 on CUB) with one compiled training step, not one each."""
    from demo_run import demo_config
    from tiny_sd import make_tiny_sd

    steps = []

    def recorded(*args, **kwargs):
        steps.append(jit_train_step(*args, **kwargs))
        return steps[-1]

    jit_train_step = finetune.lora_step.jit_train_step
    monkeypatch.setattr(finetune.lora_step, "jit_train_step", recorded)
    config = demo_config(**{"model.sd": str(make_tiny_sd(tmp_path / "sd1", "sd1", minimal=True)),
                            "data.toyworld.num_classes": 3, "data.shots": 2, "finetune.per_class": True,
                            "finetune.prompt": config_lib.CLASS_PROMPT, "finetune.epochs": 2, "finetune.warmup_steps": 0,
                            "finetune.batch_size": 2, "finetune.resolution": 16, "finetune.sample_every": 0})
    finetune.run(config, str(tmp_path / "run"))
    files = sorted(glob.glob(str(tmp_path / "run" / "finetune" / "class_*" / run_folder.LORA_FILE)))
    assert [os.path.basename(os.path.dirname(f)) for f in files] == ["class_0000", "class_0001", "class_0002"]
    assert len(steps) == 1 and steps[0]._cache_size() == 1
    first, second = (lora_file.read_diffusers_lora(f)["unet"][0] for f in files[:2])
    assert any(not np.array_equal(first[k], second[k]) for k in first)  # Each class trained on its own images.
