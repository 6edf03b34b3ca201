"""The ``finetune`` stage: LoRA on Stable Diffusion with context-preserving prompts (BOB step 2).

Reads the few-shot train split and (for BOB's prompt) the caption bank; writes
``WORKDIR/finetune/pytorch_lora_weights.safetensors`` (diffusers/peft layout: ``load_lora_weights`` in PyTorch
reads it), or one such file per class under ``class_NNNN/`` with ``config.finetune.per_class``.
Orbax checkpoints every ``checkpoint_every`` steps; a killed run resumes from the last one and sees the same
batches (they are a function of (seed, step)). TensorBoard scalars and preview grids go to ``finetune/tb``.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from bobjax import artifacts, assets, parallel
from bobjax.data import fewshot
from bobjax.data.finetune_input import finetune_batches, prompt_fields, training_prompts
from bobjax.errors import UserError
from bobjax.models import lora
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training import lora_step, optim, preview

LORA_FILE = "pytorch_lora_weights.safetensors"
NUM_PREVIEWS = 4


def class_dir(finetune_dir: str, label: int) -> str:
    """Where class ``label``'s LoRA goes with ``config.finetune.per_class``."""
    return os.path.join(finetune_dir, f"class_{label:04d}")


class TrainingDivergedError(UserError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


def lora_configs(finetune_config) -> dict[str, lora.LoraConfig]:
    """The adapters BOB trains: UNet attention, and (``text_encoder_lora``) the CLIP text encoder's."""
    c = finetune_config
    common = dict(rank=c.lora_rank, alpha=c.lora_alpha, dropout=c.lora_dropout, init=c.lora_init)
    configs = {"unet": lora.LoraConfig(targets=lora.UNET_TARGETS, **common)}
    if c.text_encoder_lora:
        configs["text_encoder"] = lora.LoraConfig(targets=lora.TEXT_ENCODER_TARGETS, **common)
    return configs


def tokenize(tokenizer, prompts: list[str]) -> np.ndarray:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="np").input_ids.astype(np.int32)


def add_adapters(sd, configs: dict[str, lora.LoraConfig], seed: int):
    """(unet, text_encoder) with adapters; qwix traces each once on tiny inputs to create them."""
    rngs = nnx.Rngs(seed)  # One default stream: adapter init, and the dropout qwix draws during that first call.
    down = 2 ** (len(sd.unet_config["block_out_channels"]) - 1)
    example = (jnp.zeros((1, down, down, sd.unet_config["in_channels"])), jnp.zeros((1,), jnp.int32),
               jnp.zeros((1, 1, sd.unet_config["cross_attention_dim"])))
    unet = lora.add_lora(sd.unet, configs["unet"], *example, rngs=rngs)
    text_encoder = sd.text_encoder
    if "text_encoder" in configs:
        text_encoder = lora.add_lora(text_encoder, configs["text_encoder"], jnp.zeros((1, 2), jnp.int32), rngs=rngs)
    return unet, text_encoder


def run(config, workdir: str) -> None:
    from bobjax.models.sd import load_stable_diffusion

    c = config.finetune
    mesh = parallel.make_mesh(config.mesh)
    splits = fewshot.make_splits(config.data, config.seed)
    train = splits.train
    class_names = [splits.class_names[int(label)] for label in train.labels()]
    contexts = _contexts(workdir, c.prompt)
    prompts = training_prompts(c.prompt, splits.descriptor, class_names, train.image_ids(), contexts)
    dtype = jnp.dtype(config.model.dtype)
    sd = load_stable_diffusion(assets.resolve(config.model.sd), dtype=dtype, attention=config.model.attention,
                               remat=c.remat)
    input_ids = tokenize(sd.tokenizer, prompts)

    folder = artifacts.stage_dir(workdir, "finetune")
    groups = ([(class_dir(folder, k), np.flatnonzero(train.labels() == k))
               for k in range(len(splits.class_names))] if c.per_class
              else [(folder, np.arange(len(train)))])
    for folder, indices in groups:
        if os.path.exists(os.path.join(folder, LORA_FILE)) or not len(indices):
            continue
        train_lora(config, sd, lambda i, idx=indices: train[int(idx[i])]["image"], input_ids[indices], folder, mesh)


def _contexts(workdir: str, template: str) -> dict[str, tuple[str, str]] | None:
    if not prompt_fields(template) & {"background", "pose"}:
        return None
    from bobjax.caption.bank import read_caption_bank

    bank = read_caption_bank(workdir)
    return {i: (b, p) for i, b, p in zip(bank.image_ids, bank.backgrounds, bank.poses, strict=True)}


def train_lora(config, sd, load_image, input_ids: np.ndarray, folder: str, mesh) -> None:
    """Trains one LoRA on the images ``load_image(0..n-1)`` with prompts ``input_ids`` and exports it to ``folder``."""
    c = config.finetune
    configs = lora_configs(c)
    global_batch = c.batch_size * mesh.size
    local_batch = parallel.local_batch_size(global_batch, mesh)
    total_steps = c.epochs * math.ceil(len(input_ids) / global_batch)

    unet, text_encoder = add_adapters(sd, configs, config.seed)
    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    schedule = NoiseSchedule.from_config(sd.scheduler_config)
    optimizer, lr = optim.make_optimizer(c, total_steps)
    step_fn = lora_step.make_train_step(graphs, schedule, optimizer, lr, seed=config.seed, lora_dropout=c.lora_dropout)
    frozen = jax.device_put(frozen, lora_step.frozen_sharding(frozen, mesh))
    state = jax.device_put(lora_step.init_state(trainable, optimizer), parallel.replicated(mesh))
    train_step = lora_step.jit_train_step(step_fn, state, frozen, mesh)

    checkpoints = ocp.CheckpointManager(os.path.join(folder, "checkpoints"),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    if checkpoints.latest_step() is not None:
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state = checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(target))
        logging.info("finetune: resumed %s at step %d of %d", folder, int(state.step), total_steps)
    start = int(state.step)

    batches = finetune_batches(load_image, input_ids, resolution=c.resolution, random_flip=c.random_flip,
                               seed=config.seed, local_batch_size=local_batch, process_index=jax.process_index(),
                               process_count=jax.process_count(), start_step=start)
    writer, progress = _writers(folder, total_steps)
    previews = _Previews(config, sd, graphs, configs, input_ids, mesh)

    pending, window, t0 = None, [], time.perf_counter()
    try:
        for step in range(start, total_steps):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = train_step(state, frozen, parallel.global_batch(next(batches), mesh))
            if pending is not None:  # Check the previous step's loss: one step behind keeps the device busy.
                _check_finite(*pending, folder)
            pending = (step, metrics)
            window.append(metrics)
            progress(step + 1)
            done = step + 1
            if done % c.log_every == 0 or done == total_steps:
                scalars = {k: float(np.mean([jax.device_get(m[k]) for m in window])) for k in window[0]}
                elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
                scalars.update(steps_per_sec=len(window) / elapsed, images_per_sec=len(window) * global_batch / elapsed)
                writer.write_scalars(done, scalars)
                window = []
            if done % c.checkpoint_every == 0 or done == total_steps:
                _check_finite(*pending, folder)
                checkpoints.save(done, args=ocp.args.StandardSave(state))
            if c.sample_every and (done % c.sample_every == 0 or done == total_steps):
                writer.write_images(done, {"samples": previews(state.lora, frozen)[None]})
    finally:  # Also when stopped (NaN, kill): the last good checkpoint's async save completes.
        checkpoints.wait_until_finished()
    writer.flush()

    if parallel.is_main_process():
        unet, text_encoder, _ = lora_step.merge_models(graphs, parallel.to_host(state.lora), frozen)
        parts = {"unet": (unet, configs["unet"])}
        if "text_encoder" in configs:
            parts["text_encoder"] = (text_encoder, configs["text_encoder"])
        lora.save_diffusers_lora(os.path.join(folder, LORA_FILE), parts)


def _check_finite(step: int, metrics: dict, folder: str) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"fine-tuning loss is {loss} at step {step}: stopped; the last good checkpoint is in "
            f"{os.path.join(folder, 'checkpoints')} (lower config.finetune.learning_rate, or use float32 weights)")


def _writers(folder: str, total_steps: int):
    from clu import metric_writers, periodic_actions

    writer = metric_writers.create_default_writer(os.path.join(folder, "tb"),
                                                  just_logging=not parallel.is_main_process())
    report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_secs=30)
    return writer, report


class _Previews:
    """Fixed prompts (the first training prompts) and fixed noise, so grids of different steps compare."""

    def __init__(self, config, sd, graphs, configs, input_ids: np.ndarray, mesh):
        c = config.finetune
        n = min(NUM_PREVIEWS, len(input_ids))
        factor = 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
        size = c.resolution // factor
        self.noise = jax.random.normal(jax.random.key(config.seed), (n, size, size, sd.unet_config["in_channels"]))
        self.input_ids = jnp.asarray(input_ids[:n])
        self.uncond_ids = jnp.asarray(tokenize(sd.tokenizer, [""] * n))
        fn = preview.make_preview_fn(graphs, configs, sd.scheduler_config, num_steps=c.sample_steps,
                                     guidance_scale=config.generate.guidance_scale)
        self.fn = jax.jit(fn, out_shardings=parallel.replicated(mesh))

    def __call__(self, trainable, frozen) -> np.ndarray:
        images = self.fn(trainable, frozen, self.noise, self.input_ids, self.uncond_ids)
        return preview.image_grid(parallel.to_host(images))

