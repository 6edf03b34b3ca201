"""MixUp and CutMix on a fraction of batches, with soft targets, as timm's ``Mixup`` in batch mode.

A "part" of a batch (BOB mixes the real and the synthetic halves separately) is mixed with itself reversed:
one coin decides whether the part is mixed at all (``prob``), a second picks CutMix or MixUp (even odds), and
one mixing weight serves the whole part (MixUp: Beta(0.8, 0.8); CutMix: Beta(1, 1), then corrected to the
box's clipped area). Targets become ``lam * y + (1 - lam) * y_reversed``.

Gather-free, for TPUs: a part is a slice of rows, its partner rows its reversal, the CutMix box a comparison of
iotas; indexing rows by an index array would compile to a gather over every pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MIXUP_ALPHA = 0.8
CUTMIX_ALPHA = 1.0


def cutmix_box(key, height: int, width: int, lam):
    """A box of area about (1 - lam) of the image, centred uniformly, clipped; returns (mask, corrected lam)."""
    k_y, k_x = jax.random.split(key)
    ratio = jnp.sqrt(1.0 - lam)
    cy = jax.random.uniform(k_y) * height
    cx = jax.random.uniform(k_x) * width
    y0, y1 = jnp.clip(jnp.round(cy - ratio * height / 2), 0, height), jnp.clip(jnp.round(cy + ratio * height / 2), 0, height)
    x0, x1 = jnp.clip(jnp.round(cx - ratio * width / 2), 0, width), jnp.clip(jnp.round(cx + ratio * width / 2), 0, width)
    ys, xs = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return mask[None, :, :, None], 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


def mix_part(key, images, targets, prob: float):
    """Mixes one part (images [N, H, W, C] float, targets [N, classes] float) with probability ``prob``."""
    k_apply, k_kind, k_mixup, k_cut, k_box = jax.random.split(key, 5)
    partner_images, partner_targets = images[::-1], targets[::-1]
    apply = jax.random.uniform(k_apply) < prob
    use_cutmix = jax.random.uniform(k_kind) < 0.5
    lam_mixup = jax.random.beta(k_mixup, MIXUP_ALPHA, MIXUP_ALPHA)
    mask, lam_cut = cutmix_box(k_box, images.shape[1], images.shape[2], jax.random.beta(k_cut, CUTMIX_ALPHA, CUTMIX_ALPHA))
    mixed = jnp.where(use_cutmix, jnp.where(mask, partner_images, images),
                      lam_mixup * images + (1.0 - lam_mixup) * partner_images)
    lam = jnp.where(apply, jnp.where(use_cutmix, lam_cut, lam_mixup), 1.0)
    return jnp.where(apply, mixed, images), lam * targets + (1.0 - lam) * partner_targets


def mix_batch(key, images, targets, parts, prob: float):
    """Applies :func:`mix_part` to each part (static row-index arrays, consecutive, together every row in order) with
    its own key."""
    if prob <= 0.0:
        return images, targets
    if not np.array_equal(np.concatenate(parts), np.arange(images.shape[0])):
        raise ValueError(f"batch parts must be consecutive rows covering the batch in order, got {parts}")
    stops = np.cumsum([len(rows) for rows in parts]).tolist()
    mixed = [mix_part(jax.random.fold_in(key, i), images[stop - len(rows):stop], targets[stop - len(rows):stop], prob)
             for i, (rows, stop) in enumerate(zip(parts, stops))]
    return jnp.concatenate([m[0] for m in mixed]), jnp.concatenate([m[1] for m in mixed])
