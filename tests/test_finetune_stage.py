"""The fine-tuning loop: sharded = single-device, killed + resumed = uninterrupted, NaN stops it, outputs exist.

Every run trains the minimal tiny SD 1.x pipeline's adapters (UNet and text encoder) for 3 steps on 8 images
at 16 px, global batch 8; runs are compared through their exported LoRA files (float32, 1e-5).

Tracing and compiling the training step dominate these tests, so the runs that need no other mesh (the reference,
the killed + resumed run, the NaN run) share one trainer on one device (a per-class run's ``LoraTrainer``: one
traced and compiled step and preview, each run training a fresh LoRA into its own folder); the runs on a (fake)
accelerator build their own trainer with the same configuration, which the session's persistent compilation cache
(conftest.py) serves. The NaN comes from the data (a NaN image at the third step), which takes the same compiled
step to a non-finite loss as a too-high learning rate would.
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


# config.finetune of every run; batch_size is global: the same batches on any mesh.
TRAINING = dict(lora_rank=4, lora_alpha=8.0, lora_dropout=0.1, resolution=16, random_flip=True, epochs=3,
                warmup_steps=1, learning_rate=1e-2, batch_size=8)


def _config(**overrides):
    """A checkpoint at step 2 (where the killed run resumes and the NaN run stops) and 3, previews at step 3."""
    config = config_lib.base_config()
    config.finetune.update(dict(TRAINING, checkpoint_every=2, sample_every=3, sample_steps=2, log_every=1))
    config.finetune.update(overrides)
    return config


def _trainer(sd, mesh_shape, **overrides):
    devices = mesh_shape[0] * mesh_shape[1]
    mesh = parallel.make_mesh({"data": mesh_shape[0], "fsdp": mesh_shape[1]}, devices=jax.devices()[:devices])
    config = _config(**overrides)
    return finetune.LoraTrainer(config, sd, finetune.total_steps(config.finetune, len(PROMPTS)), mesh)


def _train(trainer, sd, folder):
    trainer.train(IMAGES.__getitem__, sd.tokenize(PROMPTS), str(folder))
    return lora_file.read_diffusers_lora(os.path.join(folder, run_folder.LORA_FILE))


def _run(sd, folder, mesh_shape, **overrides):
    return _train(_trainer(sd, mesh_shape, **overrides), sd, folder)


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
def trainer(sd):
    """The one-device trainer that the reference, the killed + resumed and the NaN runs share."""
    return _trainer(sd, ONE_DEVICE)


@pytest.fixture(scope="module")
def single(trainer, sd, tmp_path_factory):
    return _train(trainer, sd, tmp_path_factory.mktemp("single"))


@pytest.mark.slow
def test_single_device_run_trains_both_adapters(single):
    assert set(single) == {"unet", "text_encoder"}
    for part in single.values():
        assert any(np.abs(v).max() > 0 for k, v in part[0].items() if "lora_B" in k)  # B moved off zero


@pytest.mark.slow
def test_eight_devices_with_fsdp_match_one_device(single, sd, tmp_path):
    """One mesh of 4 data x 2 FSDP devices checks both: the batch split over data, the weights over FSDP (a run per
    mesh would compile the step once more)."""
    _assert_same(single, _run(sd, tmp_path / "fsdp", (4, 2), sample_every=0), 1e-5)


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_on_an_accelerator_the_step_compiled_ahead_trains_the_same_lora(single, sd, tmp_path, fake_accelerator):
    """Where the device reports its memory, the trainer compiles its step before the first one, checks it fits and
    runs that program; a device too small for it stops the stage there, naming the settings to change."""
    fake_accelerator(64)
    _assert_same(single, _run(sd, tmp_path / "fits", ONE_DEVICE, sample_every=0), 0.0)
    fake_accelerator(1e-5)  # 10 KiB
    with pytest.raises(ConfigError, match=r"the fine-tuning step needs .* GiB per device .*change config.mesh.fsdp"):
        _run(sd, tmp_path / "too_small", ONE_DEVICE, sample_every=0)
    assert not os.path.exists(tmp_path / "too_small")


@pytest.mark.slow
def test_killed_and_resumed_run_ends_like_the_uninterrupted_one(single, trainer, sd, tmp_path, monkeypatch):
    folder = tmp_path / "killed"

    def killed(real, batch, mesh):
        raise _Killed

    with monkeypatch.context() as patch:
        _fail_at_third_batch(patch, killed)
        with pytest.raises(_Killed):
            _train(trainer, sd, folder)
    assert os.path.isdir(folder / "checkpoints" / "2") and not os.path.exists(folder / run_folder.LORA_FILE)

    resumed = _train(trainer, sd, folder)
    _assert_same(single, resumed, 1e-5)
    assert glob.glob(str(folder / "tb" / "events.out.tfevents.*"))


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(trainer, sd, tmp_path, monkeypatch):
    folder = tmp_path / "nan"

    def nan_image(real, batch, mesh):
        return real({**batch, "pixels": np.full_like(batch["pixels"], np.nan)}, mesh)

    _fail_at_third_batch(monkeypatch, nan_image)
    with pytest.raises(loop.TrainingDivergedError, match=r"at step 2: stopped; .*checkpoints"):
        _train(trainer, sd, folder)
    assert os.listdir(folder / "checkpoints") == ["2"]  # Step 3 (index 2) is not saved.
    assert not os.path.exists(folder / run_folder.LORA_FILE)


@pytest.mark.slow
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
    # The other tests' training (8 images a class: one batch, 3 steps), so the session's compilation cache may
    # hold this step already.
    config = demo_config(**{"model.sd": str(make_tiny_sd(tmp_path / "sd1", "sd1", minimal=True)),
                            "data.toyworld.num_classes": 3, "data.shots": 8, "finetune.per_class": True,
                            "finetune.prompt": config_lib.CLASS_PROMPT, "finetune.sample_every": 0,
                            **{f"finetune.{key}": value for key, value in TRAINING.items()}})
    finetune.run(config, str(tmp_path / "run"))
    files = sorted(glob.glob(str(tmp_path / "run" / "finetune" / "class_*" / run_folder.LORA_FILE)))
    assert [os.path.basename(os.path.dirname(f)) for f in files] == ["class_0000", "class_0001", "class_0002"]
    assert len(steps) == 1 and steps[0]._cache_size() == 1
    first, second = (lora_file.read_diffusers_lora(f)["unet"][0] for f in files[:2])
    assert any(not np.array_equal(first[k], second[k]) for k in first)  # Each class trained on its own images.
