"""The UNet's resolution changes: strided-conv ``Downsample2D`` and nearest+conv ``Upsample2D``, NHWC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Downsample2D(nnx.Module):
    """3x3 convolution with stride 2. ``padding=0`` pads only bottom/right by one, as diffusers does."""

    def __init__(self, channels: int, *, padding: int, dtype, param_dtype, rngs: nnx.Rngs):
        pads = ((0, 1), (0, 1)) if padding == 0 else ((padding, padding), (padding, padding))
        self.conv = nnx.Conv(
            channels, channels, kernel_size=(3, 3), strides=2, padding=pads, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour resize to ``size`` (twice the input unless the skip it meets is odd), 3x3 conv."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            channels, channels, kernel_size=(3, 3), padding=1, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, size: tuple[int, int]) -> jax.Array:
        return self.conv(resize_nearest(x, size))


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest resize of [B, H, W, C] to ``size``, picking source pixels as torch's ``interpolate`` does."""
    batch, height, width, channels = x.shape
    if tuple(size) == (2 * height, 2 * width):  # the common case, as a broadcast instead of a gather
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
        return x.reshape(batch, 2 * height, 2 * width, channels)
    rows = _nearest_source_index(height, size[0])
    cols = _nearest_source_index(width, size[1])
    return x[:, rows][:, :, cols]


def _nearest_source_index(in_size: int, out_size: int) -> np.ndarray:
    scale = np.float32(in_size / out_size)  # torch computes the scale in float32
    return np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64), in_size - 1)
