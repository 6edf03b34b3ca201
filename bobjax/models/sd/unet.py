"""Stable Diffusion's denoiser: diffusers' ``UNet2DConditionModel`` in Flax NNX, NHWC.

Submodules carry diffusers' names, so ``weights.load_state_dict(unet, diffusers_state_dict)`` loads a
diffusers checkpoint strictly, without renames. The architecture comes from the checkpoint's
``unet/config.json`` read with diffusers' semantics (see ``unet_config.py``); SD 1.x and 2.x are covered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax.models.attention import IMPLEMENTATIONS
from bobjax.models.sd.embeddings import TimestepEmbedding, timestep_embedding
from bobjax.models.sd.norms import group_norm
from bobjax.models.sd.unet_blocks import BlockOptions, CrossAttention, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D
from bobjax.models.sd.unet_config import UNetConfig


class UNet2DConditionModel(nnx.Module):
    """``unet(sample [B,H,W,C], timesteps [] or [B], encoder_hidden_states [B,L,D]) -> [B,H,W,out]``.

    ``dtype`` is the computation dtype (e.g. bfloat16), ``param_dtype`` the storage dtype of parameters;
    norms, softmax and the timestep features always run in float32. ``attention`` picks the kernel of
    :func:`bobjax.models.attention.dot_product_attention`. ``remat`` recomputes every resnet and
    transformer in the backward pass instead of storing its activations (training memory).
    The output has the computation dtype.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | UNetConfig,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        attention: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {attention!r}; choose one of {IMPLEMENTATIONS}")
        c = self.config = UNetConfig.from_diffusers(config)
        self.dtype = dtype
        channels = c.block_out_channels
        levels = len(channels)
        params = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        options = BlockOptions(
            groups=c.norm_num_groups, eps=c.norm_eps, temb_channels=c.time_embed_dim,
            use_linear_projection=c.use_linear_projection, upcast_attention=c.upcast_attention,
            attention=attention, remat=remat, dtype=dtype, param_dtype=param_dtype,
        )  # fmt: skip

        def cross_attention(block_type: str, level: int, layers: int) -> CrossAttention | None:
            if not block_type.startswith("CrossAttn"):
                return None
            return CrossAttention(c.num_heads[level], c.cross_attention_dim[level], layers)

        self.conv_in = nnx.Conv(
            c.in_channels, channels[0], kernel_size=(c.conv_in_kernel,) * 2, padding=(c.conv_in_kernel - 1) // 2,
            **params,
        )  # fmt: skip
        self.time_embedding = TimestepEmbedding(channels[0], c.time_embed_dim, **params)

        down_blocks = []
        for i, block_type in enumerate(c.down_block_types):
            down_blocks.append(
                DownBlock2D(
                    channels[max(i - 1, 0)], channels[i], num_layers=c.layers_per_block[i],
                    cross_attention=cross_attention(block_type, i, c.transformer_layers_per_block[i]),
                    add_downsample=i < levels - 1, downsample_padding=c.downsample_padding, options=options,
                    rngs=rngs,
                )  # fmt: skip
            )
        self.down_blocks = nnx.List(down_blocks)

        self.mid_block = UNetMidBlock2DCrossAttn(
            channels[-1], cross_attention=cross_attention("CrossAttn", -1, c.transformer_layers_per_block[-1]),
            output_scale_factor=c.mid_block_scale_factor, options=options, rngs=rngs,
        )  # fmt: skip

        up_blocks = []
        for i, block_type in enumerate(c.up_block_types):
            level = levels - 1 - i  # the up path mirrors the down path, per-block options reversed
            up_blocks.append(
                UpBlock2D(
                    channels[max(level - 1, 0)], channels[min(level + 1, levels - 1)], channels[level],
                    num_layers=c.layers_per_block[level] + 1,
                    cross_attention=cross_attention(block_type, level, c.transformer_layers_per_block[level]),
                    add_upsample=level > 0, options=options, rngs=rngs,
                )  # fmt: skip
            )
        self.up_blocks = nnx.List(up_blocks)

        self.conv_norm_out = group_norm(channels[0], c.norm_num_groups, c.norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.conv_out = nnx.Conv(
            channels[0], c.out_channels, kernel_size=(c.conv_out_kernel,) * 2,
            padding=(c.conv_out_kernel - 1) // 2, **params,
        )  # fmt: skip

    def __call__(self, sample: jax.Array, timesteps: jax.Array | int | float, encoder_hidden_states: jax.Array):
        c = self.config
        batch = self._check_inputs(sample, encoder_hidden_states)
        timesteps = jnp.asarray(timesteps)
        if timesteps.ndim > 1 or timesteps.size not in (1, batch):
            raise ValueError(f"timesteps must be a scalar or have shape [batch={batch}], got shape {timesteps.shape}")
        timesteps = jnp.broadcast_to(timesteps.reshape(-1), (batch,))

        x = sample.astype(self.dtype)
        context = encoder_hidden_states.astype(self.dtype)
        if c.center_input_sample:
            x = 2 * x - 1.0
        features = timestep_embedding(
            timesteps, c.block_out_channels[0], flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift
        )
        temb = self.time_embedding(features.astype(self.dtype))

        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, states = block(x, temb, context)
            skips.extend(states)
        x = self.mid_block(x, temb, context)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            # Upsample to the size of the skip met next: twice the size, unless a down level was odd.
            upsample_size = skips[-1].shape[1:3] if skips else None
            x = block(x, block_skips, temb, context, upsample_size)
        x = nnx.silu(self.conv_norm_out(x)).astype(self.dtype)
        return self.conv_out(x)

    def _check_inputs(self, sample: jax.Array, encoder_hidden_states: jax.Array) -> int:
        c = self.config
        if sample.ndim != 4 or sample.shape[-1] != c.in_channels:
            raise ValueError(
                f"UNet sample must be NHWC [batch, height, width, {c.in_channels}], got shape {sample.shape}"
            )
        batch = sample.shape[0]
        context_dim = c.cross_attention_dim[0]
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"encoder_hidden_states must be [batch={batch}, length, {context_dim}], got shape "
                f"{encoder_hidden_states.shape}"
            )
        if len(set(c.cross_attention_dim)) == 1 and encoder_hidden_states.shape[-1] != context_dim:
            raise ValueError(
                f"encoder_hidden_states width {encoder_hidden_states.shape[-1]} != cross_attention_dim {context_dim}"
            )
        return batch
