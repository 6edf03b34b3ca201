"""Stable Diffusion's KL autoencoder (diffusers ``AutoencoderKL``) in Flax NNX, NHWC.

Submodule names mirror diffusers (``encoder.down_blocks.N.resnets.M.conv1`` ...), so a diffusers checkpoint loads
strictly through :mod:`bobjax.models.weights`; :func:`checkpoint_key` also accepts the pre-0.14 attention names
(``query``/``key``/``value``/``proj_attn``) that some hub VAEs still carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax.models import weights
from bobjax.models.attention import IMPLEMENTATIONS, dot_product_attention
from bobjax.models.sd.norms import group_norm
from bobjax.models.sd.resampling import Downsample2D, Upsample2D

# diffusers' AutoencoderKL defaults, for keys an older config.json leaves out.
VAE_CONFIG_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",),
    "block_out_channels": (64,),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}
# Options whose other values would change the computation but that this implementation does not have.
_SUPPORTED_VALUES = {"act_fn": ("silu",), "shift_factor": (None,), "latents_mean": (None,), "latents_std": (None,)}
_EPS = 1e-6  # diffusers hard-codes this GroupNorm epsilon for every VAE norm
_DEPRECATED_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults filled in; unknown or unsupported options raise, naming them."""
    unknown = sorted(k for k in config if not k.startswith("_") and k not in VAE_CONFIG_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown AutoencoderKL config option(s) {unknown}: supported are {sorted(VAE_CONFIG_DEFAULTS)}"
        )
    config = {**VAE_CONFIG_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key, supported in _SUPPORTED_VALUES.items():
        if config[key] not in supported:
            raise ValueError(f"unsupported AutoencoderKL {key}={config[key]!r}: supported are {list(supported)}")
    for key, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        if any(t != block for t in config[key]):
            raise ValueError(
                f"unsupported AutoencoderKL {key}={list(config[key])}: only {block!r} blocks are supported"
            )
        if len(config[key]) != len(config["block_out_channels"]):
            raise ValueError(
                f"AutoencoderKL {key} has {len(config[key])} entries but block_out_channels has "
                f"{len(config['block_out_channels'])}"
            )
    return config


def checkpoint_key(key: str) -> str:
    """Maps the deprecated VAE attention parameter names to the current ones; other keys are unchanged."""
    parts = key.split(".")
    if "attentions" in parts and len(parts) >= 2 and parts[-2] in _DEPRECATED_ATTENTION_NAMES:
        parts[-2] = _DEPRECATED_ATTENTION_NAMES[parts[-2]]
    return ".".join(parts)


class _Layers:
    """Keyword arguments shared by every layer of one model, so blocks stay one line per layer."""

    def __init__(self, dtype, param_dtype, rngs: nnx.Rngs):
        self.kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def conv(self, cin: int, cout: int, kernel: int = 3) -> nnx.Conv:
        return nnx.Conv(cin, cout, (kernel, kernel), padding=kernel // 2, **self.kw)

    def norm(self, channels: int, groups: int) -> nnx.GroupNorm:
        """float32 GroupNorm (as the UNet's), whatever the computation dtype."""
        return group_norm(channels, groups, _EPS, param_dtype=self.kw["param_dtype"], rngs=self.kw["rngs"])


class VAEResnetBlock(nnx.Module):
    """norm-silu-conv twice plus a (1x1-projected) skip: the UNet's ResNet block without a time embedding."""

    def __init__(self, cin: int, cout: int, groups: int, layers: _Layers):
        self.norm1 = layers.norm(cin, groups)
        self.conv1 = layers.conv(cin, cout)
        self.norm2 = layers.norm(cout, groups)
        self.conv2 = layers.conv(cout, cout)
        self.conv_shortcut = layers.conv(cin, cout, 1) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class VAEAttention(nnx.Module):
    """Single-head self-attention over all H*W positions with a residual, as in the VAE's mid block.

    diffusers upcasts only the softmax here, which dot_product_attention always does.
    """

    def __init__(self, channels: int, groups: int, layers: _Layers, attention: str):
        self.attention = attention
        self.group_norm = layers.norm(channels, groups)
        self.to_q = nnx.Linear(channels, channels, **layers.kw)
        self.to_k = nnx.Linear(channels, channels, **layers.kw)
        self.to_v = nnx.Linear(channels, channels, **layers.kw)
        self.to_out = nnx.List([nnx.Linear(channels, channels, **layers.kw)])

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        h = self.group_norm(x).reshape(batch, height * width, 1, channels)
        h = dot_product_attention(self.to_q(h), self.to_k(h), self.to_v(h), implementation=self.attention)
        return x + self.to_out[0](h).reshape(x.shape)


class DownEncoderBlock2D(nnx.Module):
    def __init__(self, cin: int, cout: int, num_layers: int, groups: int, add_downsample: bool, layers: _Layers):
        self.resnets = nnx.List(
            [VAEResnetBlock(cin if i == 0 else cout, cout, groups, layers) for i in range(num_layers)]
        )
        self.downsamplers = nnx.List([Downsample2D(cout, padding=0, **layers.kw)] if add_downsample else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in [*self.resnets, *self.downsamplers]:
            x = block(x)
        return x


class UpDecoderBlock2D(nnx.Module):
    def __init__(self, cin: int, cout: int, num_layers: int, groups: int, add_upsample: bool, layers: _Layers):
        self.resnets = nnx.List(
            [VAEResnetBlock(cin if i == 0 else cout, cout, groups, layers) for i in range(num_layers)]
        )
        self.upsamplers = nnx.List([Upsample2D(cout, **layers.kw)] if add_upsample else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.resnets:
            x = block(x)
        for upsampler in self.upsamplers:
            x = upsampler(x, (2 * x.shape[1], 2 * x.shape[2]))
        return x


class VAEMidBlock(nnx.Module):
    """resnet, (attention), resnet at the lowest resolution; attention is optional per config."""

    def __init__(self, channels: int, groups: int, add_attention: bool, layers: _Layers, attention: str):
        self.resnets = nnx.List([VAEResnetBlock(channels, channels, groups, layers) for _ in range(2)])
        self.attentions = nnx.List([VAEAttention(channels, groups, layers, attention)] if add_attention else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Encoder(nnx.Module):
    def __init__(self, config: Mapping[str, Any], layers: _Layers, attention: str):
        channels, groups, depth = config["block_out_channels"], config["norm_num_groups"], config["layers_per_block"]
        self.conv_in = layers.conv(config["in_channels"], channels[0])
        self.down_blocks = nnx.List(
            [
                DownEncoderBlock2D(
                    channels[max(i - 1, 0)], c, depth, groups, add_downsample=i < len(channels) - 1, layers=layers
                )
                for i, c in enumerate(channels)
            ]
        )
        self.mid_block = VAEMidBlock(channels[-1], groups, config["mid_block_add_attention"], layers, attention)
        self.conv_norm_out = layers.norm(channels[-1], groups)
        self.conv_out = layers.conv(channels[-1], 2 * config["latent_channels"])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    def __init__(self, config: Mapping[str, Any], layers: _Layers, attention: str):
        channels = list(reversed(config["block_out_channels"]))
        groups, depth = config["norm_num_groups"], config["layers_per_block"] + 1
        self.conv_in = layers.conv(config["latent_channels"], channels[0])
        self.mid_block = VAEMidBlock(channels[0], groups, config["mid_block_add_attention"], layers, attention)
        self.up_blocks = nnx.List(
            [
                UpDecoderBlock2D(
                    channels[max(i - 1, 0)], c, depth, groups, add_upsample=i < len(channels) - 1, layers=layers
                )
                for i, c in enumerate(channels)
            ]
        )
        self.conv_norm_out = layers.norm(channels[-1], groups)
        self.conv_out = layers.conv(channels[-1], config["out_channels"])

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """Images in [-1, 1] <-> latents, NHWC. The caller scales latents by ``scaling_factor``, as in diffusers."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {attention!r}; choose one of {IMPLEMENTATIONS}")
        config = vae_config(config)
        # Only hashable scalars are kept as attributes, so the graphdef can be a static jit argument.
        self.scaling_factor: float = config["scaling_factor"]
        self.in_channels: int = config["in_channels"]
        self.latent_channels: int = config["latent_channels"]
        layers = _Layers(dtype, param_dtype, rngs)
        self.encoder = Encoder(config, layers, attention)
        self.decoder = Decoder(config, layers, attention)
        latent = config["latent_channels"]
        self.quant_conv = layers.conv(2 * latent, 2 * latent, 1) if config["use_quant_conv"] else None
        self.post_quant_conv = layers.conv(latent, latent, 1) if config["use_post_quant_conv"] else None

    def encode_moments(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images [B, H, W, C] in [-1, 1] -> (mean, logvar) of the latent Gaussian, logvar clipped to [-30, 20].

        A training latent is ``mean + exp(0.5 * logvar) * noise``.
        """
        _check_channels("images", images, self.in_channels)
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def encode(self, images: jax.Array) -> jax.Array:
        """Images [B, H, W, C] in [-1, 1] -> latent mean [B, H/f, W/f, latent_channels] (unscaled)."""
        return self.encode_moments(images)[0]

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents already divided by ``scaling_factor`` -> images [B, H, W, C], roughly in [-1, 1] (unclipped)."""
        _check_channels("latents", latents, self.latent_channels)
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


def _check_channels(name: str, x: jax.Array, channels: int) -> None:
    if x.ndim != 4 or x.shape[-1] != channels:
        raise ValueError(f"{name} must be NHWC with {channels} channels, got shape {tuple(x.shape)}")


def load_vae_weights(model: AutoencoderKL, state_dict: Mapping, *, source: str = "checkpoint") -> None:
    """Fills ``model`` from a diffusers AutoencoderKL state dict (strict; old attention names accepted)."""
    weights.load_state_dict(model, state_dict, rename=checkpoint_key, source=source)
