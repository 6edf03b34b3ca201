"""Pre-trains the toy-world prior, top to bottom: pool, autoencoder, latent cache, UNet, decoder fine-tuning,
export, sample grid.

Work in progress lives in WORKDIR (``pool.npz``, ``vae/``, ``unet/`` and ``decoder/`` checkpoints,
``latents.npz``, ``tb/``); the result is a diffusers folder (default ``WORKDIR/toyworld_prior``;
``bobjax/assets/toyworld_prior`` is what ships) and ``WORKDIR/samples.png``: one row per background, one column
per pose.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image
from transformers import CLIPTokenizer

from bobjax import artifacts, parallel, toyworld
from bobjax.errors import ConfigError
from bobjax.grid import image_grid, to_uint8
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.toyworld.prior import data, export, models, steps
from bobjax.toyworld.prior.phase import run_phase
from bobjax.training import optim

# The VAE's decoding half: fine-tuned alone after the UNet, as SD's ft-MSE VAE was, for sharper details.
DECODER = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("decoder"), nnx.PathContains("post_quant_conv")))


@dataclasses.dataclass
class Result:
    path: str  # The exported diffusers folder.
    final_metrics: dict  # {"vae": {...}, "unet": {...}, ...}: each phase's last logging window in this run.


def run(config, workdir: str, export_path: str | None = None) -> Result:
    """Trains (resuming what a previous run left), exports, and writes the sample grid (if ``sample_steps``)."""
    export_path = export_path or os.path.join(workdir, "toyworld_prior")
    os.makedirs(workdir, exist_ok=True)
    pool = data.load_pool(config.data, config.seed, workdir)
    data.check_prompts(config.data)
    tokenizer = CLIPTokenizer.from_pretrained(export.write_tokenizer(os.path.join(workdir, "tokenizer")))

    def tokenize(captions: list[str]) -> np.ndarray:
        return tokenizer(captions, padding="max_length", max_length=models.TEXT_LENGTH, truncation=True,
                         return_tensors="np").input_ids.astype(np.int32)

    unet, vae, text_encoder, init_scaling_factor = _initial_models(config)
    writer = _writer(config, workdir)
    common = dict(checkpoint_every=config.checkpoint_every, log_every=config.log_every, writer=writer)

    c = config.vae
    vae_graph, vae_params = nnx.split(vae)
    final = {"vae": {}}
    if c.steps or not config.init:
        optimizer, _ = optim.make_optimizer(c, c.steps)
        vae_step = steps.make_vae_step(vae_graph, optimizer, kl_weight=c.kl_weight, seed=config.seed)
        state, final["vae"] = run_phase(
            "vae", os.path.join(workdir, "vae"), steps.init_state(vae_params, optimizer), vae_step,
            lambda s: data.vae_batch(pool, config.seed, s, c.batch_size, c.crop_size), c.steps, **common)
        nnx.update(vae, state.params)
    moments = _latents(vae_graph, nnx.state(vae), pool["images"], workdir, c.steps)
    # A UNet that continues from config.init keeps the latent scale it was trained on.
    scaling_factor = init_scaling_factor or float(moments["scaling_factor"])

    c = config.unet
    unet_graph, unet_params = nnx.split(unet)
    text_graph, text_state = nnx.split(text_encoder)
    optimizer, _ = optim.make_optimizer(c, c.steps)
    unet_step = steps.make_unet_step(unet_graph, text_graph, NoiseSchedule.from_config(config.scheduler.to_dict()),
                                     optimizer, scaling_factor=scaling_factor, seed=config.seed)
    state, final["unet"] = run_phase(
        "unet", os.path.join(workdir, "unet"), steps.init_state(unet_params, optimizer),
        lambda state, batch: unet_step(state, text_state, batch),
        lambda s: data.unet_batch(moments, pool, config.data, config.seed, s, c.batch_size, tokenize),
        c.steps, **common)
    nnx.update(unet, state.params)

    c = config.decoder
    if c.steps:  # The UNet's latent space stays as it is: only what decodes it trains.
        graph, decoder_params, encoder_state = nnx.split(vae, DECODER, ...)
        optimizer, _ = optim.make_optimizer(c, c.steps)
        decoder_step = steps.make_vae_step(graph, optimizer, kl_weight=0.0, seed=config.seed)
        state, final["decoder"] = run_phase(
            "decoder", os.path.join(workdir, "decoder"), steps.init_state(decoder_params, optimizer),
            lambda state, pixels: decoder_step(state, pixels, encoder_state),
            lambda s: data.vae_batch(pool, config.seed, s, c.batch_size, c.crop_size, "decoder"), c.steps, **common)
        nnx.update(vae, state.params)
    if writer is not None:
        writer.flush()

    export.export_diffusers(export_path, config, unet, vae, text_encoder, scaling_factor=scaling_factor)
    if config.sample_steps:
        write_sample_grid(export_path, config, os.path.join(workdir, "samples.png"))
    return Result(export_path, final)


def _initial_models(config):
    """(unet, vae, text_encoder, scaling factor): fresh ones seeded by ``config.seed``, or with ``config.init``
    those of an exported prior of the same architecture (and its VAE's scaling factor), to continue training.
    With ``config.init_unet`` False the UNet is fresh and only the autoencoder and text encoder come from the
    init, so a UNet can be trained anew (new captions, another architecture) in the latent space of a shipped
    VAE without the VAE's 11 minutes."""
    if not config.init:
        return *models.build(config), None
    from bobjax.models.sd import load_stable_diffusion

    sd = load_stable_diffusion(config.init)
    expected = {"vae": models.vae_config(config, sd.vae.scaling_factor),
                "text_encoder": models.text_encoder_config(config)}
    if config.init_unet:
        expected["unet"] = models.unet_config(config)
    for component, want in expected.items():
        got = getattr(sd, f"{component}_config")
        differ = sorted(k for k, v in want.items() if k != "_class_name" and _plain(got.get(k)) != _plain(v))
        if differ:
            raise ConfigError(f"config.init {config.init!r}: its {component} differs from this config in {differ}")
    unet = sd.unet if config.init_unet else models.build(config)[0]
    return unet, sd.vae, sd.text_encoder, float(sd.vae.scaling_factor)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _latents(graph, params, images: np.ndarray, workdir: str, vae_steps: int, batch_size: int = 256) -> dict:
    """Posterior moments of every pool image and the SD-style ``scaling_factor`` (1 / std of the latents),
    cached in ``WORKDIR/latents.npz`` for the VAE of step ``vae_steps``."""
    path = os.path.join(workdir, "latents.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            if int(cached["vae_steps"]) == vae_steps and len(cached["mean"]) == len(images):
                return dict(cached)
    encode = steps.make_encode(graph)
    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        pixels = images[start:start + batch_size].astype(np.float32) / 127.5 - 1.0
        mean, logvar = jax.device_get(encode(params, pixels))
        means.append(mean)
        logvars.append(logvar)
    mean, logvar = np.concatenate(means), np.concatenate(logvars)
    scaling_factor = 1.0 / np.sqrt(mean.var() + np.exp(logvar).mean())
    moments = {"mean": mean, "logvar": logvar, "scaling_factor": np.float32(scaling_factor),
               "vae_steps": np.int64(vae_steps)}

    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **moments)
    return moments


def write_sample_grid(folder: str, config, path: str, seed: int = 0) -> np.ndarray:
    """Samples of the exported prior (loaded back through ``load_stable_diffusion``, as the stages load it):
    one row per background, one column per pose, the same noise in every cell of a column."""
    from bobjax.models.sd.text_to_image import TextToImage
    from bobjax.models.sd import load_stable_diffusion

    sd = load_stable_diffusion(folder)
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))
    generator = TextToImage(sd, scheduler="pndm", steps=config.sample_steps, guidance_scale=config.guidance_scale,
                            resolution=config.data.image_size, mesh=mesh)
    fill = dict(descriptor=config.data.descriptor, class_name=config.data.descriptor)
    prompts = [config.data.prompt.format(**fill, background=b, pose=p)
               for b in toyworld.BACKGROUNDS for p in toyworld.POSES]
    seeds = [seed + i % len(toyworld.POSES) for i in range(len(prompts))]
    images = generator.generate_float(prompts, seeds=seeds)
    grid = image_grid(to_uint8(images, low=0.0), columns=len(toyworld.POSES))

    with artifacts.atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return grid


def _writer(config, workdir: str):
    """TensorBoard scalars in ``WORKDIR/tb``, or None without ``config.tensorboard`` (clu's writer imports
    TensorFlow, seconds that a test does not need to pay)."""
    if not config.tensorboard:
        return None
    from clu import metric_writers

    return metric_writers.create_default_writer(os.path.join(workdir, "tb"), just_logging=not parallel.is_main_process())
