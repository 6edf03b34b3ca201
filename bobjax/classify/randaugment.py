"""RandAugment (Cubuk et al. 2020) as torchvision applies it by default: 2 operations, magnitude 9 of 31 bins.

dm-pix has no RandAugment, so the policy is here; the operations themselves use dm-pix where it has them
(affine warps, solarize, grayscale). Each image draws its operations independently (``lax.switch`` under
``vmap``), with magnitudes signed at random for the signed operations, as torchvision does. Works on float
images in [0, 1]; warps fill with black and sample the nearest pixel (torchvision's defaults).
"""

from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp

NUM_OPS = 2
MAGNITUDE, BINS = 9, 31
_FRACTION = MAGNITUDE / (BINS - 1)
SHEAR = 0.3 * _FRACTION
TRANSLATE = (150.0 / 331.0) * _FRACTION  # of the image side
ROTATE_DEGREES = 30.0 * _FRACTION
ENHANCE = 0.9 * _FRACTION  # brightness, colour, contrast, sharpness factors are 1 +- this
POSTERIZE_BITS = 8 - round(MAGNITUDE / ((BINS - 1) / 4))
SOLARIZE_THRESHOLD = 1.0 - _FRACTION


def _affine(image, linear, shift):
    """Pull-resampling about the image centre: input = linear @ (out - c) + c + shift, in (y, x)."""
    h, w = image.shape[:2]
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2])
    matrix = jnp.eye(3).at[:2, :2].set(linear)
    offset = jnp.concatenate([centre - linear @ centre + shift, jnp.zeros(1)])
    return pix.affine_transform(image, matrix, offset=offset, order=0, mode="constant", cval=0.0)


def _blend(image, degenerate, factor):
    return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _gray(image):
    return pix.rgb_to_grayscale(image, keep_dims=True)


def _sharpness(image, factor):
    kernel = jnp.array([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = jax.vmap(lambda c: jax.scipy.signal.convolve2d(c, kernel, mode="same"), in_axes=2, out_axes=2)(image)
    interior = jnp.zeros(image.shape[:2], bool).at[1:-1, 1:-1].set(True)[..., None]
    return _blend(image, jnp.where(interior, smooth, image), factor)  # Borders stay sharp, as in PIL.


def _autocontrast(image):
    low, high = image.min(axis=(0, 1), keepdims=True), image.max(axis=(0, 1), keepdims=True)
    scale = jnp.where(high > low, 1.0 / jnp.maximum(high - low, 1e-12), 1.0)
    return jnp.clip(jnp.where(high > low, (image - low) * scale, image), 0.0, 1.0)


def _equalize_channel(channel):
    """PIL's histogram equalisation on 256 levels."""
    levels = jnp.round(channel * 255.0).astype(jnp.int32)
    hist = jnp.zeros(256).at[levels.ravel()].add(1.0)
    last_nonzero = jnp.max(jnp.where(hist > 0, jnp.arange(256), 0))
    step = jnp.floor((hist.sum() - hist[last_nonzero]) / 255.0)
    lut = jnp.floor((jnp.cumsum(hist) + jnp.floor(step / 2)) / jnp.maximum(step, 1.0))
    lut = jnp.clip(jnp.concatenate([jnp.zeros(1), lut[:-1]]), 0.0, 255.0)
    return jnp.where(step > 0, lut[levels] / 255.0, channel)


def _posterize(image):
    levels = jnp.floor(image * 255.0).astype(jnp.uint8)
    mask = jnp.uint8((0xFF << (8 - POSTERIZE_BITS)) & 0xFF)
    return (levels & mask).astype(image.dtype) / 255.0


def _operations(image, sign):
    h, w = image.shape[:2]
    angle = math.radians(ROTATE_DEGREES) * sign
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    eye, zero = jnp.eye(2), jnp.zeros(2)
    factor = 1.0 + ENHANCE * sign
    return [
        lambda: image,
        lambda: _affine(image, jnp.array([[1.0, 0.0], [SHEAR * sign, 1.0]]), zero),  # shear x
        lambda: _affine(image, jnp.array([[1.0, SHEAR * sign], [0.0, 1.0]]), zero),  # shear y
        lambda: _affine(image, eye, jnp.stack([0.0, TRANSLATE * w * sign])),  # translate x
        lambda: _affine(image, eye, jnp.stack([TRANSLATE * h * sign, 0.0])),  # translate y
        lambda: _affine(image, jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])]), zero),  # rotate
        lambda: _blend(image, jnp.zeros_like(image), factor),  # brightness
        lambda: _blend(image, _gray(image), factor),  # colour
        lambda: _blend(image, jnp.mean(_gray(image)) * jnp.ones_like(image), factor),  # contrast
        lambda: _sharpness(image, factor),
        lambda: _posterize(image),
        lambda: pix.solarize(image, SOLARIZE_THRESHOLD),
        lambda: _autocontrast(image),
        lambda: jax.vmap(_equalize_channel, in_axes=2, out_axes=2)(image),
    ]


def rand_augment(key, image):
    """``NUM_OPS`` operations drawn uniformly (with replacement), each with a random sign."""
    count = len(_operations(image, 1.0))
    for k in jax.random.split(key, NUM_OPS):
        k_op, k_sign = jax.random.split(k)
        sign = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
        ops = _operations(image, sign)
        image = jax.lax.switch(jax.random.randint(k_op, (), 0, count), [lambda _, f=f: f() for f in ops], None)
    return image
