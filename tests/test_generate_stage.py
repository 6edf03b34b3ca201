"""Generation: parity with the diffusers pipeline, device-count independence, and a resumable stage."""

import os

import jax
import numpy as np
import pytest
from PIL import Image
import torch
from demo_run import demo_config
from ml_collections import ConfigDict
from tiny_sd import make_tiny_sd

from bobjax import parallel, run_folder
from bobjax.data.tfds_writer import read_dataset
from bobjax.errors import ConfigError
from bobjax.generate import stage as generate
from bobjax.models.sd.text_to_image import TextToImage
from bobjax.models.sd import load_stable_diffusion

PROMPTS = ["a bird photo of a crimson forkedtail in the blue sky background", "a bird photo of a golden fantail"]
DIFFUSERS_SCHEDULERS = {"pndm": "PNDMScheduler", "ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler",
                        "euler": "EulerDiscreteScheduler"}


@pytest.fixture(scope="module")
def tiny_sd_path(tmp_path_factory):
    return str(make_tiny_sd(tmp_path_factory.mktemp("sd") / "sd1", style="sd1"))


def mesh_of(n):
    return parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)), devices=jax.devices()[:n])


def resolution(sd):
    return sd.unet_config["sample_size"] * 2 ** (len(sd.vae_config["block_out_channels"]) - 1)


@pytest.mark.parametrize("scheduler,guidance", [("pndm", 2.0), ("ddim", 1.0), ("dpmpp_2m", 3.0), ("euler", 2.0)])
def test_images_match_the_diffusers_pipeline(tiny_sd_path, scheduler, guidance):
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = getattr(diffusers, DIFFUSERS_SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    sd = load_stable_diffusion(tiny_sd_path)
    size = resolution(sd)
    generator = TextToImage(sd, scheduler=scheduler, steps=4, guidance_scale=guidance, resolution=size,
                            mesh=mesh_of(1), negative_prompt="blurry")
    latents = np.random.default_rng(0).normal(size=(2, *generator.latent_shape)).astype(np.float32)
    ours = generator.generate_float(PROMPTS, latents=latents)
    with torch.no_grad():
        reference = pipe(PROMPTS, num_inference_steps=4, guidance_scale=guidance, negative_prompt=["blurry"] * 2,
                         latents=torch.from_numpy(latents.transpose(0, 3, 1, 2)), height=size, width=size,
                         output_type="np").images
    assert ours.shape == reference.shape
    # Tolerance of the issue: images in [0, 1] agree to 1e-3 (fp32, few steps).
    np.testing.assert_allclose(ours, reference, atol=1e-3)


@pytest.mark.slow
def test_same_images_on_one_and_eight_devices(tiny_sd_path):
    sd = load_stable_diffusion(tiny_sd_path)
    kwargs = dict(scheduler="pndm", steps=3, guidance_scale=2.0, resolution=resolution(sd))
    prompts, seeds = PROMPTS * 4, list(range(100, 108))
    on_one = TextToImage(sd, mesh=mesh_of(1), **kwargs)
    one = on_one.generate_float(prompts, seeds=seeds)
    eight = TextToImage(sd, mesh=mesh_of(8), **kwargs).generate_float(prompts, seeds=seeds)
    np.testing.assert_allclose(one, eight, atol=1e-5)
    # An image depends on its own seed only, not on its batch: the fourth image again, first in a batch of other
    # seeds (the same batch size, so the same program).
    other = on_one.generate_float(prompts[3:4] + prompts[:7], seeds=seeds[3:4] + list(range(200, 207)))
    np.testing.assert_allclose(other[0], one[3], atol=1e-5)


def stage_config(tiny_sd_path, **overrides):
    return demo_config(**{
        "model.sd": tiny_sd_path, "generate.plan": "zero_shot", "generate.prompt": "a {descriptor} photo of a {class_name}",
        "generate.images_per_class": 3, "generate.steps": 2, "generate.resolution": 32, "generate.batch_size_per_device": 1,
        "data.toyworld.num_classes": 3, **overrides})


@pytest.mark.slow
def test_the_synthetic_set_does_not_depend_on_the_batch_per_device(tiny_sd_path, tmp_path, one_device):
    """1 and 4 images per device per call (9 images: calls of 1, or of 4, 4 and a padded 1): each image's noise comes
    from its own seed, so the set is the same, to one uint8 level (floats agree to 1e-5; rounding may land either
    side)."""
    sets = []
    for per_device in (1, 4):
        workdir = str(tmp_path / f"per_device_{per_device}")
        generate.run(stage_config(tiny_sd_path, **{"generate.batch_size_per_device": per_device}), workdir)
        sets.append(read_dataset(run_folder.stage_dir(workdir, "generate")))
    assert len(sets[0]) == len(sets[1]) == 9
    for i in range(9):
        assert sets[0][i]["image_id"] == sets[1][i]["image_id"]
        assert np.abs(sets[0][i]["image"].astype(int) - sets[1][i]["image"].astype(int)).max() <= 1, i
    assert len({sets[0][i]["image"].tobytes() for i in range(9)}) == 9  # Images differ: a broken seed would not.


@pytest.mark.slow
def test_killed_stage_resumes_to_the_images_of_an_uninterrupted_run(tiny_sd_path, tmp_path, monkeypatch, one_device,
                                                                     fake_accelerator):
    """Killed while writing its second shard, the stage resumes to exactly the planned images, those of an
    uninterrupted run. That run is on a (fake) accelerator, so it runs the generation call it compiled ahead for its
    fit check, and the killed one the jitted one; their images are the same."""
    config = stage_config(tiny_sd_path)
    monkeypatch.setattr(generate, "SHARD_SIZE", 4)
    written = []
    original = generate.ShardedWriter.write_shard

    def dies_on_second_shard(self, index, examples):
        if len(written) == 1:
            raise KeyboardInterrupt("killed")
        written.append(index)
        return original(self, index, examples)

    killed = str(tmp_path / "killed")
    with monkeypatch.context() as patch:
        patch.setattr(generate.ShardedWriter, "write_shard", dies_on_second_shard)
        with pytest.raises(KeyboardInterrupt):
            generate.run(config, killed)
    generate.run(config, killed)

    _, planned = generate.plan_run(config, killed)
    source = read_dataset(run_folder.stage_dir(killed, "generate"))
    ids = [source[i]["image_id"].decode() for i in range(len(source))]
    assert sorted(ids) == sorted(p.image_id for p in planned) and len(ids) == 9
    record = source[0]
    assert record["image"].shape == (32, 32, 3) and record["prompt"].decode() == planned[0].prompt
    grids = os.path.join(run_folder.stage_dir(killed, "generate"), "grids")
    assert os.path.exists(os.path.join(grids, "class_0000.png"))
    fixed_noise = np.asarray(Image.open(os.path.join(grids, generate.FIXED_NOISE_GRID)))
    classes = len(generate.plan_run(config, killed)[0].class_names)
    rows = min(generate.FIXED_NOISE_ROWS, len(planned))
    assert fixed_noise.shape[:2] == (rows * 32, classes * 32)

    with monkeypatch.context() as patch:
        calls, run_compiled = [], jax.stages.Compiled.__call__
        patch.setattr(jax.stages.Compiled, "__call__", lambda self, *a: calls.append(1) or run_compiled(self, *a))
        fake_accelerator(64)
        generate.run(config, str(tmp_path / "uninterrupted"))
    assert len(calls) >= 9  # 9 images in shards of 4, 4 and 1, one a call (one device), then the fixed-noise grid.
    uninterrupted = read_dataset(run_folder.stage_dir(str(tmp_path / "uninterrupted"), "generate"))
    assert len(uninterrupted) == len(source)
    for i in range(len(source)):
        np.testing.assert_array_equal(uninterrupted[i]["image"], source[i]["image"])


def test_a_generation_call_that_cannot_fit_stops_the_stage_before_its_first_image(tiny_sd_path, tmp_path, one_device,
                                                                                   fake_accelerator):
    fake_accelerator(1e-5)  # 10 KiB
    with pytest.raises(ConfigError, match=r"a generation call needs .* GiB per device .*config.generate.batch_size_per_device"):
        generate.run(stage_config(tiny_sd_path), str(tmp_path))


def write_random_loras(tiny_sd_path: str, seeds: dict[str, int], std: float = 0.05) -> None:
    """LoRAs with non-zero B (a trained one's shape; entries of ``std``, drawn from each path's seed), written by the
    real export path to each path of ``seeds``. The adapters are created once (a traced call of each model)."""
    import jax.numpy as jnp
    from flax import nnx

    from bobjax.config_lib import base_config
    from bobjax.finetune.adapters import add_adapters, lora_configs
    from bobjax.models import lora_file

    sd = load_stable_diffusion(tiny_sd_path)
    configs = lora_configs(base_config().finetune)
    unet, text_encoder = add_adapters(sd, configs, seed=0)
    for path, seed in seeds.items():
        rng = np.random.default_rng(seed)  # On the host: jax.random would compile a program per adapter shape.
        for model in (unet, text_encoder):
            for _, variable in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
                shape = variable.get_value().shape
                variable.set_value(jnp.asarray(std * rng.standard_normal(shape), jnp.float32))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lora_file.save_diffusers_lora(path, {"unet": (unet, configs["unet"]),
                                             "text_encoder": (text_encoder, configs["text_encoder"])})


@pytest.mark.slow
def test_folded_lora_matches_diffusers_load_lora_weights(tiny_sd_path, tmp_path):
    import diffusers

    from bobjax.models import lora_file

    path = str(tmp_path / "pytorch_lora_weights.safetensors")
    write_random_loras(tiny_sd_path, {path: 1})

    ours = load_stable_diffusion(tiny_sd_path)
    lora_file.fold_file_into_pipeline(ours, path, scale=1.0)
    generator = TextToImage(ours, scheduler="ddim", steps=3, guidance_scale=2.0, resolution=resolution(ours),
                            mesh=mesh_of(1))
    latents = np.random.default_rng(2).normal(size=(2, *generator.latent_shape)).astype(np.float32)
    mine = generator.generate_float(PROMPTS, latents=latents)

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(path)
    with torch.no_grad():
        reference = pipe(PROMPTS, num_inference_steps=3, guidance_scale=2.0, height=mine.shape[1], width=mine.shape[2],
                         latents=torch.from_numpy(latents.transpose(0, 3, 1, 2)), output_type="np").images
        base = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None,
                                                                 requires_safety_checker=False)
        base.scheduler = diffusers.DDIMScheduler.from_config(base.scheduler.config)
        base.set_progress_bar_config(disable=True)
        without = base(PROMPTS, num_inference_steps=3, guidance_scale=2.0, height=mine.shape[1], width=mine.shape[2],
                       latents=torch.from_numpy(latents.transpose(0, 3, 1, 2)), output_type="np").images
    assert np.abs(reference - without).max() > 1e-2, "the LoRA must change the images for this test to mean anything"
    np.testing.assert_allclose(mine, reference, atol=1e-3)


@pytest.mark.slow
def test_per_class_loras_draw_each_class_with_its_own(tiny_sd_path, tmp_path, one_device):
    """With ``finetune.per_class``, every image equals the one a pipeline holding only its class's LoRA draws
    for the same prompt and seed (on one device, the second batch of 2 crosses a class boundary, so LoRAs are
    swapped mid-batch). The check draws in batches of 2 too: the program the stage compiled."""
    from flax import nnx

    from bobjax.models import lora_file

    config = stage_config(tiny_sd_path, **{"generate.plan": "class_only", "finetune.per_class": True,
                                           "generate.batch_size_per_device": 2})
    finetune_dir = run_folder.stage_dir(str(tmp_path), "finetune")
    loras = {os.path.join(run_folder.class_lora_dir(finetune_dir, label), run_folder.LORA_FILE): 10 + label
             for label in range(3)}
    write_random_loras(tiny_sd_path, loras, std=0.3)  # Strong enough that each class's images tell its LoRA.
    generate.run(config, str(tmp_path))

    _, planned = generate.plan_run(config, str(tmp_path))
    source = read_dataset(run_folder.stage_dir(str(tmp_path), "generate"))
    drawn = {source[i]["image_id"].decode(): source[i]["image"] for i in range(len(source))}
    g = config.generate
    own = TextToImage(load_stable_diffusion(tiny_sd_path), scheduler=g.scheduler, steps=g.steps,
                      guidance_scale=g.guidance_scale, resolution=g.resolution, mesh=mesh_of(1))
    for label in range(3):  # One sampler (traced once), given each class's weights in turn.
        sd = load_stable_diffusion(tiny_sd_path)
        lora_file.fold_file_into_pipeline(sd, os.path.join(run_folder.class_lora_dir(finetune_dir, label),
                                                           run_folder.LORA_FILE))
        for mine, folded in ((own.sd.unet, sd.unet), (own.sd.text_encoder, sd.text_encoder)):
            nnx.update(mine, nnx.state(folded))
        own.refresh_weights()
        items = [p for p in planned if p.label == label]
        other = [p for p in planned if p.label == (label + 1) % 3][0]
        assert len(items) == 3
        want = np.concatenate([own([p.prompt for p in pair], seeds=[p.seed for p in pair])
                               for pair in (items[:2], [items[2], other])])
        got = np.stack([drawn[p.image_id] for p in items])
        assert np.abs(got.astype(int) - want[:3].astype(int)).max() <= 1, label  # uint8 rounding of float noise.
        assert np.abs(drawn[other.image_id].astype(int) - want[3]).max() > 8
