"""Reads a diffusers ``UNet2DConditionModel`` ``config.json`` into the settings our UNet is built from.

diffusers' config carries historic quirks that must be read exactly as diffusers reads them, or a
checkpoint loads but computes something else:

- ``attention_head_dim`` is the number of heads (not their width) unless ``num_attention_heads`` is given;
  each head is ``channels // heads`` wide. (diffusers itself refuses ``num_attention_heads`` in this class;
  we accept it with the meaning it has in every other diffusers model.)
- per-block options may be one value for all blocks or a list; the up path uses them reversed.

Options that change the architecture in ways we do not implement are refused by name, never ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
ACTIVATIONS = ("silu", "swish")  # the same function under two names

# Options whose only supported value(s) are diffusers' defaults: anything else changes the architecture.
_ONLY_DEFAULT = {
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,),
    "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_cond_proj_dim": (None,),
    "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "dual_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "attention_type": ("default",),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
    "dropout": (0.0, 0),
}
# Options that only configure block types we refuse anyway, so any value builds the same network.
_NO_EFFECT = ("resnet_out_scale_factor", "addition_embed_type_num_heads")
_SUPPORTED = (
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "upcast_attention", "time_embedding_dim",
    "conv_in_kernel", "conv_out_kernel",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """A diffusers UNet config with every per-block option expanded to one entry per down block."""

    in_channels: int
    out_channels: int
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: tuple[int, ...]
    transformer_layers_per_block: tuple[int, ...]
    num_heads: tuple[int, ...]
    cross_attention_dim: tuple[int, ...]
    norm_num_groups: int
    norm_eps: float
    flip_sin_to_cos: bool
    freq_shift: float
    use_linear_projection: bool
    upcast_attention: bool
    center_input_sample: bool
    downsample_padding: int
    mid_block_scale_factor: float
    time_embed_dim: int
    conv_in_kernel: int
    conv_out_kernel: int
    sample_size: Any = None

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
        """Validates and expands a diffusers UNet config dict (keys starting with ``_`` are metadata)."""
        if isinstance(config, UNetConfig):
            return config
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        unknown = sorted(set(config) - set(_SUPPORTED) - set(_ONLY_DEFAULT) - set(_NO_EFFECT))
        if unknown:
            raise ValueError(f"unknown UNet config option(s) {unknown}; supported: {sorted(_SUPPORTED)}")
        for option, allowed in _ONLY_DEFAULT.items():
            if option in config and config[option] not in allowed:
                raise ValueError(
                    f"UNet config option {option}={config[option]!r} is not supported; supported value(s): "
                    f"{' or '.join(repr(a) for a in allowed)}"
                )
        get = config.get
        block_out_channels = _int_tuple("block_out_channels", get("block_out_channels", (320, 640, 1280, 1280)))
        n = len(block_out_channels)
        down = tuple(get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
        up = tuple(get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
        mid = get("mid_block_type", "UNetMidBlock2DCrossAttn")
        _check_choices("down_block_types", down, DOWN_BLOCK_TYPES)
        _check_choices("up_block_types", up, UP_BLOCK_TYPES)
        _check_choices("mid_block_type", (mid,), MID_BLOCK_TYPES)
        if len(down) != n or len(up) != n:
            raise ValueError(
                f"UNet config needs one entry per level in down_block_types {list(down)} and up_block_types "
                f"{list(up)}, as in block_out_channels {list(block_out_channels)}"
            )
        only_cross = get("only_cross_attention", False)
        if any(_per_block("only_cross_attention", only_cross, n)):
            raise ValueError(f"UNet config option only_cross_attention={only_cross!r} is not supported; use False")
        act_fn = get("act_fn", "silu")
        _check_choices("act_fn", (act_fn,), ACTIVATIONS)
        groups = get("norm_num_groups", 32)
        if not isinstance(groups, int) or isinstance(groups, bool):
            raise ValueError(f"UNet config option norm_num_groups={groups!r} is not supported; use an int")
        for channels in block_out_channels:
            if channels % groups:
                raise ValueError(
                    f"UNet config block_out_channels {list(block_out_channels)} must be multiples of "
                    f"norm_num_groups={groups}"
                )
        heads = get("num_attention_heads") or get("attention_head_dim", 8)
        transformer_layers = get("transformer_layers_per_block", 1)
        if isinstance(transformer_layers, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in transformer_layers):
            raise ValueError(
                f"UNet config option transformer_layers_per_block={transformer_layers!r} (a different count per "
                "layer, asymmetric UNets) is not supported; use an int or one int per block"
            )
        return cls(
            in_channels=get("in_channels", 4),
            out_channels=get("out_channels", 4),
            block_out_channels=block_out_channels,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=_per_block("layers_per_block", get("layers_per_block", 2), n),
            transformer_layers_per_block=_per_block("transformer_layers_per_block", transformer_layers, n),
            num_heads=_per_block("num_attention_heads" if get("num_attention_heads") else "attention_head_dim", heads, n),
            cross_attention_dim=_per_block("cross_attention_dim", get("cross_attention_dim", 1280), n),
            norm_num_groups=groups,
            norm_eps=float(get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(get("flip_sin_to_cos", True)),
            freq_shift=get("freq_shift", 0),
            use_linear_projection=bool(get("use_linear_projection", False)),
            upcast_attention=bool(get("upcast_attention", False)),
            center_input_sample=bool(get("center_input_sample", False)),
            downsample_padding=get("downsample_padding", 1),
            mid_block_scale_factor=float(get("mid_block_scale_factor", 1.0)),
            time_embed_dim=get("time_embedding_dim") or 4 * block_out_channels[0],
            conv_in_kernel=get("conv_in_kernel", 3),
            conv_out_kernel=get("conv_out_kernel", 3),
            sample_size=_hashable(get("sample_size")),
        )


def _check_choices(option: str, values: tuple, choices: tuple) -> None:
    for value in values:
        if value not in choices:
            raise ValueError(f"UNet config option {option} has {value!r}; supported: {list(choices)}")


def _int_tuple(option: str, value) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"UNet config option {option}={value!r} must be a list of positive ints")
    return tuple(value)


def _per_block(option: str, value, n: int) -> tuple:
    """One value per down block: a scalar is repeated, a list must have exactly ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"UNet config option {option}={list(value)!r} needs {n} entries, one per block")
        return tuple(value)
    return (value,) * n


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
