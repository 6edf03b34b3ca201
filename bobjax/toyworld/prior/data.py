"""The prior's training data: a pool of toy birds of every class in every background and pose, and captions
that name the object kind, background and pose but never the fine-grained class.

Captions are BOB's prompts with ``class_name`` = the object kind ("a bird photo of a bird in the blue sky
background with the perched on a branch pose"), so the wording the finetune and generate stages prompt with is
the wording the prior learnt, and only the class name is new to it. A few captions are DataDream's context-free
prompt or empty (classifier-free guidance).

The pool is rendered once, balanced over (background, pose) with a random class per image, and cached in the
workdir; every batch is a function of (seed, step) alone, so a resumed run sees the batches the killed one would.
"""

from __future__ import annotations

import os

import numpy as np

from bobjax import artifacts, toyworld
from bobjax.errors import ConfigError

EMPTY, CLASS_ONLY = 0, 1  # Prompt ids before the per-context ones (see :func:`prompts`).


def prompts(data_config) -> list[str]:
    """Every caption: empty, class-only, then one per (background, pose) at ``2 + b * len(POSES) + p``."""
    c = data_config
    for field in ("prompt", "class_prompt"):
        try:
            c[field].format(descriptor=c.descriptor, class_name=c.descriptor, background="", pose="")
        except (KeyError, IndexError) as e:
            raise ConfigError(f"config.data.{field} {c[field]!r} uses an unknown field {e}") from e
    fill = dict(descriptor=c.descriptor, class_name=c.descriptor)
    out = ["", c.class_prompt.format(**fill, background="", pose="")]
    out += [c.prompt.format(**fill, background=b, pose=p) for b in toyworld.BACKGROUNDS for p in toyworld.POSES]
    return out


def context_prompt_id(background: int, pose: int) -> int:
    return 2 + background * len(toyworld.POSES) + pose


def render_pool(data_config, seed: int) -> dict[str, np.ndarray]:
    """``images`` uint8 [N, S, S, 3] and each image's full-caption ``prompt_id`` [N]."""
    c = data_config
    if c.pool_size < 1:
        raise ConfigError(f"config.data.pool_size must be >= 1, got {c.pool_size}")
    classes = toyworld.toy_classes(toyworld.MAX_CLASSES)
    contexts = len(toyworld.BACKGROUNDS) * len(toyworld.POSES)
    images = np.empty((c.pool_size, c.image_size, c.image_size, 3), np.uint8)
    prompt_ids = np.empty((c.pool_size,), np.int32)
    from tqdm import tqdm

    for n in tqdm(range(c.pool_size), desc="prior: rendering the toy-world pool", mininterval=5):
        rng = np.random.default_rng([seed, n])
        background, pose = divmod(n % contexts, len(toyworld.POSES))
        cls = classes[int(rng.integers(len(classes)))]
        images[n] = toyworld.render(cls, toyworld.BACKGROUNDS[background], toyworld.POSES[pose], c.image_size, rng)
        prompt_ids[n] = context_prompt_id(background, pose)
    return {"images": images, "prompt_ids": prompt_ids}


def load_pool(data_config, seed: int, workdir: str) -> dict[str, np.ndarray]:
    """The pool, from ``WORKDIR/pool.npz`` when a previous run rendered it with the same settings."""
    path = os.path.join(workdir, "pool.npz")
    key = np.asarray([seed, data_config.pool_size, data_config.image_size])
    if os.path.exists(path):
        with np.load(path) as cached:
            if np.array_equal(cached["key"], key):
                return {"images": cached["images"], "prompt_ids": cached["prompt_ids"]}
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


def unet_batch(moments: dict, prompt_ids: np.ndarray, data_config, seed: int, step: int, batch_size: int) -> dict:
    """Cached VAE moments of random pool images and their prompt ids, some swapped for class-only or empty."""
    rng = step_rng(seed, "unet", step)
    index = rng.integers(len(prompt_ids), size=batch_size)
    u = rng.random(batch_size)
    ids = np.where(u < data_config.empty_prompt_prob, EMPTY, prompt_ids[index])
    class_only = (u >= data_config.empty_prompt_prob) & (u < data_config.empty_prompt_prob + data_config.class_prompt_prob)
    ids = np.where(class_only, CLASS_ONLY, ids).astype(np.int32)
    return {"mean": moments["mean"][index], "logvar": moments["logvar"][index], "prompt_ids": ids}
