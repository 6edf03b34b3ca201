"""diffusers' ``ResnetBlock2D`` (time-conditioned, "default" time-embedding norm), NHWC."""

from __future__ import annotations

import jax
from flax import nnx

from bobjax.models.sd.norms import group_norm


class ResnetBlock2D(nnx.Module):
    """GroupNorm-SiLU-Conv, add the projected time embedding, GroupNorm-SiLU-Conv, plus a skip.

    The skip is a 1x1 ``conv_shortcut`` when the channel count changes; the sum is divided by
    ``output_scale_factor`` (diffusers' ``mid_block_scale_factor`` in the mid block, else 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
        dtype,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        conv = dict(kernel_size=(3, 3), padding=1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = group_norm(in_channels, groups, eps, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(in_channels, out_channels, **conv)
        self.time_emb_proj = nnx.Linear(temb_channels, out_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm2 = group_norm(out_channels, groups, eps, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = nnx.Conv(out_channels, out_channels, **conv)
        if in_channels != out_channels:
            self.conv_shortcut = nnx.Conv(
                in_channels, out_channels, kernel_size=(1, 1), dtype=dtype, param_dtype=param_dtype, rngs=rngs
            )
        else:
            self.conv_shortcut = None
        self.output_scale_factor = output_scale_factor
        self.dtype = dtype

    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)).astype(self.dtype))
        h = h + self.time_emb_proj(nnx.silu(temb))[:, None, None, :]
        h = self.conv2(nnx.silu(self.norm2(h)).astype(self.dtype))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = skip + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out
