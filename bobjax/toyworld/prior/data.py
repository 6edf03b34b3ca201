"""The prior's training data: a pool of toy birds of every class in every background and pose, and captions
that name the object kind, background and pose, in some its look in plain words, but never the class.

Captions are BOB's prompts with ``class_name`` = the object kind ("a bird photo of a bird in the blue sky
background with the perched on a branch pose"), so the wording the finetune and generate stages prompt with is
the wording the prior learnt, and only the class name is new to it. In a share of captions
(``attribute_prompt_prob``) the object kind is a plain description of the bird's look instead ("a bird photo of
a red-crested bird with a forked tail in the ..."), with synonyms: like SD, which can draw "a red bird" without
knowing a species, the prior then knows the words for what tells classes apart, and a LoRA only has to tie each
species name to them. A few captions are DataDream's context-free prompt or empty (classifier-free guidance).

The pool is rendered once, balanced over (background, pose) with a random class per image, and cached in the
workdir; every batch is a function of (seed, step) alone, so a resumed run sees the batches the killed one would.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from bobjax import artifacts, toyworld
from bobjax.errors import ConfigError

_POOL_VERSION = 2  # 2: each image's class is cached too (captions describe it).


def check_prompts(data_config) -> None:
    """Both caption templates fill with the fields the prior uses, or a ConfigError names the template."""
    c = data_config
    for field in ("prompt", "class_prompt"):
        try:
            c[field].format(descriptor=c.descriptor, class_name=c.descriptor, background="", pose="")
        except (KeyError, IndexError) as e:
            raise ConfigError(f"config.data.{field} {c[field]!r} uses an unknown field {e}") from e
    if not 0.0 <= c.empty_prompt_prob + c.class_prompt_prob <= 1.0:
        raise ConfigError(f"config.data.empty_prompt_prob + class_prompt_prob must be in [0, 1], got "
                          f"{c.empty_prompt_prob} + {c.class_prompt_prob}")
    if not 0.0 <= c.attribute_prompt_prob <= 1.0:
        raise ConfigError(f"config.data.attribute_prompt_prob must be in [0, 1], got {c.attribute_prompt_prob}")


def caption(data_config, rng: np.random.Generator, cls: toyworld.ToyClass, context: int) -> str:
    """One random caption of a pool image of class ``cls`` in context ``context`` (background * poses + pose)."""
    c = data_config
    u = rng.random()
    if u < c.empty_prompt_prob:
        return ""
    subject = c.descriptor
    if rng.random() < c.attribute_prompt_prob:
        descriptions = cls.descriptions(c.descriptor)
        subject = descriptions[int(rng.integers(len(descriptions)))]
    if u < c.empty_prompt_prob + c.class_prompt_prob:
        return c.class_prompt.format(descriptor=c.descriptor, class_name=subject, background="", pose="")
    background, pose = divmod(context, len(toyworld.POSES))
    return c.prompt.format(descriptor=c.descriptor, class_name=subject, background=toyworld.BACKGROUNDS[background],
                           pose=toyworld.POSES[pose])


def render_pool(data_config, seed: int) -> dict[str, np.ndarray]:
    """``images`` uint8 [N, S, S, 3], each image's ``label`` (in ``toy_classes(MAX_CLASSES)``) and ``context``
    (background * len(POSES) + pose) [N]."""
    c = data_config
    if c.pool_size < 1:
        raise ConfigError(f"config.data.pool_size must be >= 1, got {c.pool_size}")
    classes = toyworld.toy_classes(toyworld.MAX_CLASSES)
    contexts = len(toyworld.BACKGROUNDS) * len(toyworld.POSES)
    images = np.empty((c.pool_size, c.image_size, c.image_size, 3), np.uint8)
    labels = np.empty((c.pool_size,), np.int32)
    from tqdm import tqdm

    for n in tqdm(range(c.pool_size), desc="prior: rendering the toy-world pool", mininterval=5):
        rng = np.random.default_rng([seed, n])
        background, pose = divmod(n % contexts, len(toyworld.POSES))
        labels[n] = int(rng.integers(len(classes)))
        images[n] = toyworld.render(classes[labels[n]], toyworld.BACKGROUNDS[background], toyworld.POSES[pose],
                                    c.image_size, rng)
    return {"images": images, "labels": labels, "contexts": np.arange(c.pool_size, dtype=np.int32) % contexts}


def load_pool(data_config, seed: int, workdir: str) -> dict[str, np.ndarray]:
    """The pool, from ``WORKDIR/pool.npz`` when a previous run rendered it with the same settings."""
    path = os.path.join(workdir, "pool.npz")
    key = np.asarray([seed, data_config.pool_size, data_config.image_size, _POOL_VERSION])
    if os.path.exists(path):
        with np.load(path) as cached:
            if np.array_equal(cached["key"], key):
                return {name: cached[name] for name in ("images", "labels", "contexts")}
    pool = render_pool(data_config, seed)
    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=key, **pool)
    return pool


def step_rng(seed: int, phase: str, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, {"vae": 0, "unet": 1, "decoder": 2}[phase], step])


def vae_batch(pool: dict, seed: int, step: int, batch_size: int, crop_size: int, phase: str = "vae") -> np.ndarray:
    """Random crops (``crop_size``; 0 = whole images), randomly flipped, in [-1, 1]: the VAE is convolutional, so
    crops teach it the same local code at a fraction of the cost."""
    images = pool["images"]
    size = images.shape[1]
    crop = crop_size or size
    if not 0 < crop <= size:
        raise ConfigError(f"config.{phase}.crop_size must be in [0, {size}], got {crop_size}")
    rng = step_rng(seed, phase, step)
    index = rng.integers(len(images), size=batch_size)
    top, left = rng.integers(size - crop + 1, size=(2, batch_size))
    batch = np.stack([images[i, t:t + crop, l:l + crop] for i, t, l in zip(index, top, left)])
    flip = rng.random(batch_size) < 0.5
    batch[flip] = batch[flip, :, ::-1]
    return batch.astype(np.float32) / 127.5 - 1.0


def unet_batch(moments: dict, pool: dict, data_config, seed: int, step: int, batch_size: int,
               tokenize: Callable[[list[str]], np.ndarray]) -> dict:
    """Cached VAE moments of random pool images and the token ids of a random caption of each (:func:`caption`)."""
    rng = step_rng(seed, "unet", step)
    index = rng.integers(len(pool["labels"]), size=batch_size)
    classes = toyworld.toy_classes(toyworld.MAX_CLASSES)
    captions = [caption(data_config, rng, classes[pool["labels"][i]], int(pool["contexts"][i])) for i in index]
    return {"mean": moments["mean"][index], "logvar": moments["logvar"][index], "input_ids": tokenize(captions)}
