"""The fine-tuning input: prompts per training image, and grain batches whose order is a function of (seed, step).

Each training image gets one prompt, fixed for the run (its class name and, for BOB, its own background and
pose from the caption bank), so prompts are tokenized once. Every batch is computed from its step number alone
(grain ``MapDataset``: shuffle, repeat with a new order each epoch, per-element random crop/flip seeded by the
element's index), so a resumed run sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
from PIL import Image

from bobjax.errors import ConfigError

PROMPT_FIELDS = ("descriptor", "class_name", "background", "pose")


def prompt_fields(template: str) -> set[str]:
    """The ``{fields}`` a prompt template uses; a field bobjax cannot fill is a ConfigError naming it."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = sorted(fields - set(PROMPT_FIELDS))
    if unknown:
        raise ConfigError(f"config.finetune.prompt {template!r} uses unknown field(s) {unknown}; "
                          f"available: {list(PROMPT_FIELDS)}")
    return fields


def training_prompts(template: str, descriptor: str, class_names: Sequence[str], image_ids: Sequence[str],
                     contexts: dict[str, tuple[str, str]] | None) -> list[str]:
    """One prompt per training image. ``contexts`` maps image id -> (background, pose) (the caption bank);
    it is needed only when the template names ``{background}`` or ``{pose}`` (BOB's prompt, not DataDream's)."""
    fields = prompt_fields(template)
    needs_context = bool(fields & {"background", "pose"})
    if needs_context and contexts is None:
        raise ConfigError(f"config.finetune.prompt {template!r} needs the caption bank (background, pose): run the "
                          "caption stage first, or use the class-only prompt (method=datadream)")
    prompts = []
    for image_id, class_name in zip(image_ids, class_names, strict=True):
        background, pose = "", ""
        if needs_context:
            if image_id not in contexts:
                raise ConfigError(f"the caption bank has no background/pose for training image {image_id!r}")
            background, pose = contexts[image_id]
        prompts.append(template.format(descriptor=descriptor, class_name=class_name, background=background, pose=pose))
    return prompts


def resize_crop_flip(image: np.ndarray, resolution: int, rng: np.random.Generator, random_flip: bool) -> np.ndarray:
    """uint8 HxWx3 -> float32 [resolution, resolution, 3] in [-1, 1]: bilinear resize of the short side to
    ``resolution``, a random square crop, optionally a horizontal flip with probability 1/2 (as diffusers'
    training scripts do)."""
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    top = int(rng.integers(0, resized.shape[0] - resolution + 1))
    left = int(rng.integers(0, resized.shape[1] - resolution + 1))
    crop = resized[top:top + resolution, left:left + resolution]
    if random_flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop.astype(np.float32) / 127.5 - 1.0


def finetune_batches(
    load_image: Callable[[int], np.ndarray],
    input_ids: np.ndarray,
    *,
    resolution: int,
    random_flip: bool,
    seed: int,
    batch_size: int,
    rows: Sequence[int] | None = None,
    start_step: int = 0,
    num_threads: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of every global batch from ``start_step`` on (endless; the loop counts steps).

    ``load_image(i)`` gives training image ``i`` (uint8 HxWx3) and ``input_ids[i]`` its tokenized prompt.
    Each global batch is the next ``batch_size`` elements of the shuffled, repeated stream, and this process feeds
    its ``rows`` of it (all by default; ``bobjax.parallel.host_rows`` on a cluster): the global batch, in order, is
    the same for any number of processes and any mesh (per-example noise follows an example's position in it).
    """
    num_images = len(input_ids)
    if num_images == 0:
        raise ConfigError("the fine-tuning split has no training images")
    rows = np.arange(batch_size) if rows is None else np.asarray(rows)

    def element(index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        pixels = resize_crop_flip(load_image(index), resolution, rng, random_flip)
        return {"pixels": pixels, "input_ids": np.asarray(input_ids[index], np.int32)}

    elements = grain.MapDataset.range(num_images).shuffle(seed=seed).repeat(None).random_map(element, seed=seed + 1)

    def host_batch(step: int) -> dict[str, np.ndarray]:
        items = [elements[step * batch_size + int(r)] for r in rows]
        return {key: np.stack([item[key] for item in items]) for key in items[0]}

    steps = grain.MapDataset.range(start_step, sys.maxsize).map(host_batch)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads)
    return iter(steps.to_iter_dataset(options))
