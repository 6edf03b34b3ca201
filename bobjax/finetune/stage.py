"""The ``finetune`` stage: LoRA on Stable Diffusion with context-preserving prompts (BOB step 2).

Reads the few-shot train split and (for BOB's prompt) the caption bank; writes
``WORKDIR/finetune/pytorch_lora_weights.safetensors`` (diffusers/peft layout: ``load_lora_weights`` in PyTorch
reads it), or one such file per class under ``class_NNNN/`` with ``config.finetune.per_class``.
Orbax checkpoints every ``checkpoint_every`` steps; a killed run resumes from the last one and sees the same
batches (they are a function of (seed, step)). TensorBoard scalars and preview grids go to ``finetune/tb``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from bobjax import assets, fit, meshes, parallel, run_folder
from bobjax.data import fewshot
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.finetune.input import finetune_batches, prompt_fields, training_prompts
from bobjax.finetune.preview import Previews
from bobjax.models import lora_file
from bobjax.training import loop


def run(config, workdir: str) -> None:
    from bobjax.models.sd import load_stable_diffusion

    c = config.finetune
    mesh = meshes.stage_mesh(config, "finetune")
    splits = fewshot.make_splits(config.data, config.seed)
    train = splits.train
    class_names = [splits.class_names[int(label)] for label in train.labels()]
    contexts = _contexts(workdir, c.prompt)
    prompts = training_prompts(c.prompt, splits.descriptor, class_names, train.image_ids(), contexts)
    dtype = jnp.dtype(config.model.dtype)
    sd = load_stable_diffusion(assets.resolve(config.model.sd), dtype=dtype, attention=config.model.attention,
                               remat=c.remat)
    input_ids = sd.tokenize(prompts)

    folder = run_folder.stage_dir(workdir, "finetune")
    groups = ([(run_folder.class_lora_dir(folder, k), np.flatnonzero(train.labels() == k))
               for k in range(len(splits.class_names))] if c.per_class
              else [(folder, np.arange(len(train)))])
    trainers: dict[int, LoraTrainer] = {}  # By step count: classes of equal size share one compiled step.
    for folder, indices in groups:
        if (folder / run_folder.LORA_FILE).exists() or not len(indices):
            continue
        steps = total_steps(c, len(indices))
        if steps not in trainers:
            trainers[steps] = LoraTrainer(config, sd, steps, mesh)
        trainers[steps].train(lambda i, idx=indices: train[int(idx[i])]["image"], input_ids[indices], folder)


def _contexts(workdir: str, template: str) -> dict[str, tuple[str, str]] | None:
    if not prompt_fields(template) & {"background", "pose"}:
        return None
    from bobjax.caption.bank import read_caption_bank

    bank = read_caption_bank(workdir)
    return {i: (b, p) for i, b, p in zip(bank.image_ids, bank.backgrounds, bank.poses, strict=True)}


def total_steps(finetune_config, num_images: int) -> int:
    return finetune_config.epochs * math.ceil(num_images / finetune_config.batch_size)


class LoraTrainer:
    """What training a LoRA compiles, built once: the adapters' initial values, the jitted step and the preview.

    ``config.finetune.per_class`` trains one LoRA per class with it (200 on CUB): each starts from the same
    initial adapters, as separate runs would, and reuses the compiled step instead of compiling its own.
    """

    def __init__(self, config, sd, num_steps: int, mesh):
        c = config.finetune
        self.config, self.num_steps, self.mesh = config, num_steps, mesh
        self.lora_configs = lora_configs(c)
        unet, text_encoder = add_adapters(sd, self.lora_configs, config.seed)
        self.graphs, trainable, frozen, optimizer, self.train_step = lora_step.build_step(
            c, unet, text_encoder, sd.vae, sd.scheduler_config, num_steps, mesh, seed=config.seed)
        self.frozen = jax.device_put(frozen, lora_step.frozen_sharding(frozen, mesh))
        # On the host: the step donates its input state, so each LoRA's copy is placed afresh from this one.
        self.initial_state = jax.device_get(lora_step.init_state(trainable, optimizer))
        batch = lora_step.batch_shapes(c, int(sd.tokenize([""]).shape[1]))
        self.train_step = fit.program_to_run(self.train_step,
                                             lambda: self.train_step.lower(self.initial_state, self.frozen, batch),
                                             "the fine-tuning step", "finetune")
        self.previews = Previews(config, sd, self.graphs, self.lora_configs, mesh)

    def train(self, load_image, input_ids: np.ndarray, folder) -> None:
        """Trains one LoRA on the images ``load_image(0..n-1)`` with prompts ``input_ids``; exports it to
        ``folder``."""
        c, mesh, frozen, total = self.config.finetune, self.mesh, self.frozen, self.num_steps
        folder = epath.Path(folder)
        state = jax.device_put(self.initial_state, parallel.replicated(mesh))

        # Resume from the last checkpoint, if any.
        checkpoints = loop.Checkpoints(folder / "checkpoints")
        restored = checkpoints.restore({"state": state})
        if restored is not None:
            state = restored["state"]
            logging.info("finetune: resumed %s at step %d of %d", folder, int(state.step), total)
        start = int(state.step)

        # Data and logs.
        batches = finetune_batches(load_image, input_ids, resolution=c.resolution, random_flip=c.random_flip,
                                   seed=self.config.seed, batch_size=c.batch_size,
                                   rows=parallel.host_rows(c.batch_size, mesh), start_step=start)
        writer = loop.writer(folder / "tb")
        window = loop.MetricWindow()

        def check(step: int, loss) -> None:
            loop.check_finite(float(loss), what="fine-tuning", step=step, checkpoints=checkpoints,
                              hint="lower config.finetune.learning_rate, or use float32 weights")

        # Loop.
        pending = None
        with checkpoints, loop.progress_bar(total, start, "finetune") as bar:
            for step in range(start, total):
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = parallel.global_batch(next(batches), mesh, c.batch_size)
                    state, metrics = self.train_step(state, frozen, batch)
                if pending is not None:  # The previous step's loss: checking one step behind keeps the device busy.
                    check(*pending)
                pending = (step, metrics["loss"])
                window.add(metrics)
                bar.update()
                done = step + 1
                if loop.due(done, c.log_every, total):
                    scalars = window.mean()
                    writer.write_scalars(done, {**scalars, "images_per_sec": scalars["steps_per_sec"] * c.batch_size})
                if loop.due(done, c.checkpoint_every, total):
                    check(*pending)
                    checkpoints.save(done, {"state": state})
                if loop.due(done, c.sample_every, total):
                    writer.write_images(done, {"samples": self.previews(state.lora, frozen, input_ids)[None]})
        writer.flush()

        # Every host takes part in gathering the adapters (a collective); host 0 writes them.
        adapters = parallel.to_host(state.lora)
        if parallel.is_main_process():
            unet, text_encoder, _ = lora_step.merge_models(self.graphs, adapters, frozen)
            parts = {"unet": (unet, self.lora_configs["unet"])}
            if "text_encoder" in self.lora_configs:
                parts["text_encoder"] = (text_encoder, self.lora_configs["text_encoder"])
            lora_file.save_diffusers_lora(folder / run_folder.LORA_FILE, parts)
