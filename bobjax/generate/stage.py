"""BOB step 3: context-marginalized generation into a synthetic TFDS dataset, sharded and resumable.

Reads the caption bank (``captions/``) and the fine-tuned LoRA (``finetune/``), plans every synthetic image
(``bobjax.generate.plan``), and writes ``synthetic/`` (TFDS, ArrayRecord) shard by shard. Shards are dealt to hosts
round-robin and each host samples its shards on its own devices, ``config.generate.batch_size_per_device`` images
per device per call, so generation needs no cross-host traffic; a killed run rewrites only the missing shards. Each
image's noise comes from its plan entry's seed, so the output does not depend on devices, batch size or restarts.
"""

from __future__ import annotations

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image
from tqdm import tqdm

from bobjax import artifacts, assets, fit, meshes, parallel, run_folder
from bobjax.data import make_splits
from bobjax.data.tfds_writer import ShardedWriter
from bobjax.errors import ConfigError
from bobjax.generate import guidance
from bobjax.generate.inputs import SamplerInputs
from bobjax.generate.listed_contexts import read_contexts_file
from bobjax.generate.outputs import FIXED_NOISE_CLASSES, FIXED_NOISE_GRID, FIXED_NOISE_ROWS, SHARD_SIZE
from bobjax.generate.plan import (BANK_PLANS, CONTEXT_PLANS, PlannedImage, fixed_noise_plan, images_per_class,
                                  make_plan)
from bobjax.grid import image_grid, spread

# How long a host that has written its shards waits for the others' (hosts may have one shard more than others).
SHARDS_TIMEOUT_S = 6 * 3600


def features(class_names) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=list(class_names)),
        "image_id": tfds.features.Text(),
        "class_name": tfds.features.Text(),
        "prompt": tfds.features.Text(),
        "background": tfds.features.Text(),
        "pose": tfds.features.Text(),
        "seed": np.int64,
        # Since the peers' modes (bobjax.generate.guidance); sets written before lack them and read as hard labels
        # from noise (bobjax.classify.mixing.soft_label_fields).
        "mix_prompt": tfds.features.Text(),
        "source_label": np.int64,  # -1: from noise.
        "source_weight": np.float32,  # The source class's share of the soft label.
    })


def plan_run(config, workdir: str):
    """(splits, planned images) of this run: a pure function of the config and the caption bank."""
    g = config.generate
    splits = make_splits(config.data, config.seed)
    bank = None
    if g.plan in BANK_PLANS:
        from bobjax.caption.bank import read_caption_bank

        bank = read_caption_bank(workdir)
    listed = read_contexts_file(g.contexts_file) if g.plan == "listed" else ()
    train_counts = np.bincount(splits.train.labels(), minlength=len(splits.class_names))
    counts = images_per_class(train_counts, g.images_per_class, g.long_tail_total, g.long_tail_m)
    planned = make_plan(g.plan, class_names=splits.class_names, descriptor=splits.descriptor, counts=counts,
                        prompt=g.prompt, seed=config.seed, bank=bank, listed=listed,
                        shared_sequence=g.shared_sequence)
    if guidance.in_use(g):
        planned = guidance.add_guidance(planned, seed=config.seed, train_labels=splits.train.labels(),
                                        real_guidance=g.real_guidance, strength=g.strength,
                                        gamma=g.soft_label_gamma, mvc_weight=g.mvc_weight)
    return splits, planned


def load_generator(config, workdir: str, mesh):
    """The base model, with the run's LoRA merged in (none for ``zero_shot``; per-class LoRAs are folded in
    class by class later, by :class:`~bobjax.generate.per_class.PerClassLoras`), wrapped in a sampler."""
    import jax.numpy as jnp

    from bobjax.models.sd.text_to_image import TextToImage
    from bobjax.models.sd import load_stable_diffusion

    g = config.generate
    sd = load_stable_diffusion(assets.resolve(config.model.sd), dtype=jnp.dtype(config.model.dtype),
                               attention=config.model.attention)
    if g.plan != "zero_shot":
        from bobjax.models import lora_file

        if not config.finetune.per_class:
            lora_file.fold_file_into_pipeline(sd, run_folder.stage_dir(workdir, "finetune") / run_folder.LORA_FILE,
                                         scale=g.lora_scale)
    return TextToImage(sd, scheduler=g.scheduler, steps=g.steps, guidance_scale=g.guidance_scale,
                       resolution=g.resolution, mesh=mesh, negative_prompt=g.negative_prompt,
                       strength=g.strength if g.real_guidance else None, mix_weight=g.mvc_weight)


def make_generate_fn(config, workdir: str, mesh, train_source):
    """``planned images -> uint8 images``: the fine-tuned diffusion model, or the toy world's own renderer."""
    g = config.generate
    renderer = g.renderer
    if renderer == "toyworld":
        if guidance.in_use(g):
            raise ConfigError("config.generate.renderer='toyworld' draws the planned contexts only; it cannot start "
                              "from real images (config.generate.real_guidance) or mix prompts "
                              "(config.generate.mvc_weight)")
        if g.plan not in CONTEXT_PLANS:
            raise ConfigError(f"config.generate.renderer='toyworld' needs a background and pose per image, which "
                              f"config.generate.plan={g.plan!r} does not give; use one of {CONTEXT_PLANS}")
        from bobjax.toyworld.renderer import ToyWorldRenderer

        return ToyWorldRenderer(config)
    if renderer != "diffusion":
        raise ConfigError(f"config.generate.renderer must be 'diffusion' or 'toyworld', got {renderer!r}")
    generator = load_generator(config, workdir, mesh)
    per_call = meshes.generation_batch(config, mesh.size)
    generator.use_program(per_call, fit.program_to_run(generator.jitted, lambda: generator.lower(per_call),
                                                       "a generation call", "generate"))
    inputs = SamplerInputs(train_source, g.resolution, real_guided=bool(g.real_guidance), mixed=g.mvc_weight != 1.0)
    if config.finetune.per_class and g.plan != "zero_shot":
        from bobjax.generate.per_class import PerClassLoras

        return PerClassLoras(generator, run_folder.stage_dir(workdir, "finetune"), g.lora_scale, inputs)
    return lambda planned: generator(**inputs(planned))


def _records(planned: list[PlannedImage], images: np.ndarray):
    for item, image in zip(planned, images):
        yield {"image": image, "label": item.label, "image_id": item.image_id, "class_name": item.class_name,
               "prompt": item.prompt, "background": item.background, "pose": item.pose, "seed": item.seed,
               "mix_prompt": item.mix_prompt, "source_label": item.source_label, "source_weight": item.source_weight}


def write_grids(directory, planned: list[PlannedImage], source, per_class: int = 8) -> None:
    """One PNG row of the first images of each class, for the report and for people."""
    by_class: dict[int, list[int]] = {}
    for position, item in enumerate(planned):
        by_class.setdefault(item.label, []).append(position)
    for label, positions in by_class.items():
        row = image_grid(np.stack([source[p]["image"] for p in positions[:per_class]]), columns=per_class)
        with artifacts.atomic_path(epath.Path(directory) / f"class_{label:04d}.png") as tmp:
            Image.fromarray(row).save(tmp, format="PNG")


def write_fixed_noise_grid(path, planned: list[PlannedImage], class_names, descriptor: str, prompt: str,
                           generate, batch_size: int) -> None:
    """One row per noise seed (and context), one column per shown class (:data:`FIXED_NOISE_CLASSES`):
    :func:`~bobjax.generate.plan.fixed_noise_plan`."""
    labels = spread(FIXED_NOISE_CLASSES, len(class_names))
    grid_plan = fixed_noise_plan(planned, class_names, descriptor, prompt, FIXED_NOISE_ROWS, labels)
    if not grid_plan:
        return
    images = np.concatenate([generate(grid_plan[k:k + batch_size]) for k in range(0, len(grid_plan), batch_size)])
    rows = len(grid_plan) // len(labels)
    by_row = images.reshape(len(labels), rows, *images.shape[1:]).swapaxes(0, 1).reshape(images.shape)
    with artifacts.atomic_path(epath.Path(path)) as tmp:
        Image.fromarray(image_grid(by_row, columns=len(labels))).save(tmp, format="PNG")


def export_png(directory, source) -> None:
    """An image folder (``<class name>/<image id>.png``) for PyTorch users."""
    for i in range(len(source)):
        record = source[i]
        path = epath.Path(directory) / record["class_name"].decode() / f"{record['image_id'].decode()}.png"
        if not path.exists():
            with artifacts.atomic_path(path) as tmp:
                Image.fromarray(record["image"]).save(tmp, format="PNG")


def run(config, workdir: str) -> None:
    g = config.generate
    out_dir = run_folder.stage_dir(workdir, "generate")
    splits, planned = plan_run(config, workdir)
    shards = [planned[k : k + SHARD_SIZE] for k in range(0, max(len(planned), 1), SHARD_SIZE)]
    writer = ShardedWriter(out_dir, "synthetic", features(splits.class_names), "train", num_shards=len(shards))
    mine = [k for k in writer.missing_shards() if k % jax.process_count() == jax.process_index()]
    logging.info("generate: %d images in %d shards; %d shards left for this host", len(planned), len(shards), len(mine))
    grid_path = out_dir / "grids" / FIXED_NOISE_GRID
    grid_due = parallel.is_main_process() and not grid_path.exists()
    if mine or grid_due:
        mesh = meshes.stage_mesh(config, "generate")
        generate = make_generate_fn(config, workdir, mesh, splits.train)
        batch = meshes.generation_batch(config, mesh.size)
    if mine:
        with tqdm(total=sum(len(shards[k]) for k in mine), desc="generate", unit="img") as progress:
            for k in mine:
                images = []
                for start in range(0, len(shards[k]), batch):
                    chunk = shards[k][start : start + batch]
                    images.append(generate(chunk))
                    progress.update(len(chunk))
                writer.write_shard(k, _records(shards[k], np.concatenate(images) if images else []))
    # Host 0 finalizes the dataset from every host's shards.
    parallel.wait_for_every_host(f"bobjax: synthetic shards written in {out_dir}", SHARDS_TIMEOUT_S)
    if parallel.is_main_process():
        writer.finalize([len(s) for s in shards])
        from bobjax.data.tfds_writer import read_dataset

        source = read_dataset(out_dir)
        write_grids(out_dir / "grids", planned, source)
        if grid_due:
            write_fixed_noise_grid(grid_path, planned, splits.class_names, splits.descriptor, g.prompt, generate,
                                   batch)
        if g.export_png:
            export_png(out_dir / "png", source)
