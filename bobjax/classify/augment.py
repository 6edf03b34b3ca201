"""The classifier's image augmentation (BOB's downstream classifier, docs/paper.md), batched and jitted on the device.

Each example gets its own key, so a batch's augmentation is a pure function of (key, images): a resumed or
re-sharded run sees the same pixels. dm-pix supplies the colour, blur and solarize operations; written here is
only what it lacks: RandomResizedCrop (``jax.image.scale_and_translate``, bicubic) and multiplicative
brightness (torchvision's; dm-pix's is additive).

Order, as torchvision's pipeline applies it: RandomResizedCrop, horizontal flip, RandAugment (optional),
ColorJitter with p, grayscale with p, Gaussian blur with p, solarize with p. Differences from torchvision,
all small: ColorJitter applies brightness, contrast, saturation, hue in this fixed order (torchvision permutes
them); contrast blends with the per-channel mean (dm-pix, as TensorFlow); a crop whose sampled box does not
fit is clipped to the image (torchvision retries ten times, then takes a central crop).

The host gives uint8 images already resized (shorter side) and centre-cropped to ``image_size``
(:func:`bobjax.data.image_ops.resize_and_center_crop`, which is also the whole test transform).
"""

from __future__ import annotations

import dataclasses
import math

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from bobjax.classify import randaugment
from bobjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    image_size: int
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.2
    solarize_threshold: float = 0.5  # torchvision's 128 of 255
    flip: bool = True
    randaugment: bool = False


def spec_from_config(cfg) -> AugmentSpec:
    """``config.classify`` -> the augmentation it asks for."""
    if not 0.0 < cfg.crop_scale_min <= 1.0:
        raise ConfigError(f"config.classify.crop_scale_min must be in (0, 1], got {cfg.crop_scale_min}")
    colour = {} if cfg.color_augment else dict(jitter_prob=0.0, grayscale_prob=0.0, solarize_prob=0.0)
    if not cfg.augment:
        return AugmentSpec(image_size=cfg.image_size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0,
                           grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, flip=False)
    return AugmentSpec(image_size=cfg.image_size, crop_scale=(cfg.crop_scale_min, 1.0), randaugment=cfg.randaugment,
                       **colour)


def random_resized_crop(key, image, spec: AugmentSpec):
    """A box of random area fraction and aspect ratio, resized (bicubic) to ``image_size``."""
    h, w = image.shape[:2]
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, minval=spec.crop_scale[0], maxval=spec.crop_scale[1]) * h * w
    log_ratio = jax.random.uniform(k_ratio, minval=math.log(spec.crop_ratio[0]), maxval=math.log(spec.crop_ratio[1]))
    ratio = jnp.exp(log_ratio)
    crop_w = jnp.clip(jnp.sqrt(area * ratio), 1.0, w)
    crop_h = jnp.clip(jnp.sqrt(area / ratio), 1.0, h)
    top = jax.random.uniform(k_y) * (h - crop_h)
    left = jax.random.uniform(k_x) * (w - crop_w)
    size = spec.image_size
    scale = jnp.stack([size / crop_h, size / crop_w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image, (size, size, image.shape[-1]), (0, 1), scale, translation,
                                         method="cubic", antialias=True)


def color_jitter(key, image, spec: AugmentSpec):
    brightness, contrast, saturation, hue = spec.jitter
    kb, kc, ks, kh = jax.random.split(key, 4)
    image = jnp.clip(image * jax.random.uniform(kb, minval=1 - brightness, maxval=1 + brightness), 0.0, 1.0)
    image = jnp.clip(pix.adjust_contrast(image, jax.random.uniform(kc, minval=1 - contrast, maxval=1 + contrast)), 0.0, 1.0)
    image = pix.adjust_saturation(image, jax.random.uniform(ks, minval=1 - saturation, maxval=1 + saturation))
    return jnp.clip(pix.adjust_hue(image, jax.random.uniform(kh, minval=-hue, maxval=hue)), 0.0, 1.0)


def _with_prob(key, prob: float, transform, image):
    """``transform(image)`` with probability ``prob``; an operation that never applies is not even traced."""
    if prob <= 0.0:
        return image
    return jnp.where(jax.random.uniform(key) < prob, transform(image), image)


def augment_image(key, image, spec: AugmentSpec):
    """One float image in [0, 1] (HxWx3) -> its augmented ``image_size`` view, in [0, 1]."""
    keys = jax.random.split(key, 10)
    image = random_resized_crop(keys[0], image, spec)
    image = jnp.clip(image, 0.0, 1.0)
    if spec.flip:
        image = pix.random_flip_left_right(keys[1], image)
    if spec.randaugment:
        image = randaugment.rand_augment(keys[2], image)
    image = _with_prob(keys[3], spec.jitter_prob, lambda x: color_jitter(keys[4], x, spec), image)
    image = _with_prob(keys[5], spec.grayscale_prob, lambda x: pix.rgb_to_grayscale(x, keep_dims=True), image)
    sigma = jax.random.uniform(keys[6], minval=spec.blur_sigma[0], maxval=spec.blur_sigma[1])
    kernel = 2 * (spec.image_size // 20) + 1  # About a tenth of the image, odd, as in SimCLR-style blur.
    image = _with_prob(keys[7], spec.blur_prob, lambda x: pix.gaussian_blur(x, sigma, kernel), image)
    return _with_prob(keys[8], spec.solarize_prob, lambda x: pix.solarize(x, spec.solarize_threshold), image)


def augment_batch(key, images_uint8, spec: AugmentSpec):
    """uint8 [B, H, W, 3] -> float32 [B, S, S, 3] in [0, 1]; example i uses ``fold_in(key, i)``."""
    images = images_uint8.astype(jnp.float32) / 255.0
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))
    return jax.vmap(lambda k, x: augment_image(k, x, spec))(keys, images)
