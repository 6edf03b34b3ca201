"""The UNet's levels: down blocks, the mid block, up blocks (diffusers' ``*Block2D`` classes), NHWC.

One class serves both ``DownBlock2D`` and ``CrossAttnDownBlock2D`` (and likewise up): they differ only in
whether a ``Transformer2DModel`` follows each resnet, so ``cross_attention=None`` drops ``attentions``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax.models.sd.resampling import Downsample2D, Upsample2D
from bobjax.models.sd.resnet import ResnetBlock2D
from bobjax.models.sd.transformer import Transformer2DModel


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """What every block of one UNet shares."""

    groups: int
    eps: float
    temb_channels: int
    use_linear_projection: bool
    upcast_attention: bool
    attention: str
    remat: bool
    dtype: Any
    param_dtype: Any


@dataclasses.dataclass(frozen=True)
class CrossAttention:
    """The spatial transformers of one level: heads, text-state width, blocks per transformer."""

    heads: int
    context_dim: int
    layers: int


def call_module(module: nnx.Module, *args, remat: bool):
    """Calls ``module``; with ``remat`` its activations are recomputed in the backward pass, not stored.

    ``graph_updates=False``: only the Variables the call changed are written back (e.g. a LoRA dropout
    stream's count), and Variables created inside are dropped. The default writes back every Variable, which
    raises ``TraceContextError`` for weights closed over by an inner transform (the frozen weights under the
    LoRA step's ``jax.grad``).
    """
    if remat:
        return nnx.remat(lambda m, *a: m(*a), graph_updates=False)(module, *args)
    return module(*args)


def _resnet(in_channels: int, out_channels: int, o: BlockOptions, rngs: nnx.Rngs, scale: float = 1.0):
    return ResnetBlock2D(
        in_channels, out_channels, o.temb_channels, groups=o.groups, eps=o.eps, output_scale_factor=scale,
        dtype=o.dtype, param_dtype=o.param_dtype, rngs=rngs,
    )  # fmt: skip


def _transformer(channels: int, spec: CrossAttention, o: BlockOptions, rngs: nnx.Rngs):
    return Transformer2DModel(
        channels, spec.heads, spec.context_dim, num_layers=spec.layers, groups=o.groups,
        use_linear_projection=o.use_linear_projection, attention=o.attention, upcast=o.upcast_attention,
        dtype=o.dtype, param_dtype=o.param_dtype, rngs=rngs,
    )  # fmt: skip


class DownBlock2D(nnx.Module):
    """``num_layers`` x (resnet [+ transformer]), then an optional stride-2 downsampler.

    Returns the output and every intermediate state, which the up path consumes as skip connections.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, num_layers: int, cross_attention: CrossAttention | None,
        add_downsample: bool, downsample_padding: int, options: BlockOptions, rngs: nnx.Rngs,
    ):  # fmt: skip
        o = options
        self.resnets = nnx.List(
            [_resnet(in_channels if i == 0 else out_channels, out_channels, o, rngs) for i in range(num_layers)]
        )
        self.attentions = (
            nnx.List([_transformer(out_channels, cross_attention, o, rngs) for _ in range(num_layers)])
            if cross_attention is not None
            else None
        )
        self.downsamplers = (
            nnx.List([Downsample2D(out_channels, padding=downsample_padding, dtype=o.dtype,
                                   param_dtype=o.param_dtype, rngs=rngs)])  # fmt: skip
            if add_downsample
            else None
        )
        self.remat = o.remat

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        states = []
        for i, resnet in enumerate(self.resnets):
            x = call_module(resnet, x, temb, remat=self.remat)
            if self.attentions is not None:
                x = call_module(self.attentions[i], x, context, remat=self.remat)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UNetMidBlock2DCrossAttn(nnx.Module):
    """resnet, then ``len(attentions)`` x (transformer, resnet), at the lowest resolution."""

    def __init__(
        self, channels: int, *, cross_attention: CrossAttention, output_scale_factor: float, options: BlockOptions,
        rngs: nnx.Rngs,
    ):  # fmt: skip
        o = options
        self.resnets = nnx.List([_resnet(channels, channels, o, rngs, output_scale_factor) for _ in range(2)])
        self.attentions = nnx.List([_transformer(channels, cross_attention, o, rngs)])
        self.remat = o.remat

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> jax.Array:
        x = call_module(self.resnets[0], x, temb, remat=self.remat)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            x = call_module(attention, x, context, remat=self.remat)
            x = call_module(resnet, x, temb, remat=self.remat)
        return x


class UpBlock2D(nnx.Module):
    """``num_layers`` x (concat a skip, resnet [+ transformer]), then an optional nearest+conv upsampler.

    The last skip a block consumes comes from one level further down, so it is ``skip_channels`` wide
    (diffusers' ``in_channels``); the others are ``out_channels`` wide. ``prev_output_channels`` is the
    width of the block below.
    """

    def __init__(
        self, skip_channels: int, prev_output_channels: int, out_channels: int, *, num_layers: int,
        cross_attention: CrossAttention | None, add_upsample: bool, options: BlockOptions, rngs: nnx.Rngs,
    ):  # fmt: skip
        o = options
        resnets = []
        for i in range(num_layers):
            res_channels = skip_channels if i == num_layers - 1 else out_channels
            in_channels = prev_output_channels if i == 0 else out_channels
            resnets.append(_resnet(in_channels + res_channels, out_channels, o, rngs))
        self.resnets = nnx.List(resnets)
        self.attentions = (
            nnx.List([_transformer(out_channels, cross_attention, o, rngs) for _ in range(num_layers)])
            if cross_attention is not None
            else None
        )
        self.upsamplers = (
            nnx.List([Upsample2D(out_channels, dtype=o.dtype, param_dtype=o.param_dtype, rngs=rngs)])
            if add_upsample
            else None
        )
        self.remat = o.remat

    def __call__(
        self, x: jax.Array, skips: list[jax.Array], temb: jax.Array, context: jax.Array,
        upsample_size: tuple[int, int] | None,
    ) -> jax.Array:  # fmt: skip
        """``skips`` are consumed last first; ``upsample_size`` is the spatial size of the next level."""
        for i, resnet in enumerate(self.resnets):
            x = jnp.concatenate([x, skips[-1 - i]], axis=-1)
            x = call_module(resnet, x, temb, remat=self.remat)
            if self.attentions is not None:
                x = call_module(self.attentions[i], x, context, remat=self.remat)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x
