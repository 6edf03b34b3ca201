"""DiffCoRe-Mix's real/synthetic mixing on the device (Islam & Akhtar, 2025, "Context-guided Responsible Data
Augmentation with Diffusion Models"): a real image and a synthetic image of its class are mixed at the pixel level
or the patch level.

Rows flagged ``mixed`` (``bobjax.classify.mixing.realmix_stream`` pairs them) take, with even odds, MixUp's blend
``lam * real + (1 - lam) * synthetic`` (lam ~ Beta(0.8, 0.8)) or CutMix's box of the synthetic image pasted into the
real one (lam: the real area left). Labels are mixed by the same lam, as MixUp and CutMix mix them:
``lam * y_real + (1 - lam) * y_synthetic``; with DiffCoRe-Mix's pairs of one class this is the real label, unless the
synthetic image carries a soft label (Diff-Mix). Mixing happens after each image's own augmentation, where timm
mixes, and before the batch-level MixUp/CutMix, which may mix the result again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bobjax.classify import mixup


def mix_rows(key, images, targets, partners, partner_targets, mixed):
    """images, partners [N, H, W, C] float; targets, partner_targets [N, classes]; mixed [N] bool."""
    height, width = images.shape[1:3]

    def one(k, image, partner):
        k_kind, k_pixel, k_patch, k_box = jax.random.split(k, 4)
        lam_pixel = jax.random.beta(k_pixel, mixup.MIXUP_ALPHA, mixup.MIXUP_ALPHA)
        mask, lam_patch = mixup.cutmix_box(k_box, height, width,
                                           jax.random.beta(k_patch, mixup.CUTMIX_ALPHA, mixup.CUTMIX_ALPHA))
        patch = jax.random.uniform(k_kind) < 0.5
        blended = jnp.where(patch, jnp.where(mask[0], partner, image), lam_pixel * image + (1 - lam_pixel) * partner)
        return blended, jnp.where(patch, lam_patch, lam_pixel)

    blended, lam = jax.vmap(one)(jax.random.split(key, images.shape[0]), images, partners)
    lam = jnp.where(mixed, lam, 1.0).astype(targets.dtype)[:, None]
    return jnp.where(mixed[:, None, None, None], blended, images), lam * targets + (1 - lam) * partner_targets
