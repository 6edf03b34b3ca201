"""Vision Transformers in Flax NNX, named like timm's ``VisionTransformer`` so timm checkpoints load key for key.

Covers the supervised ViT-B/16 (class-token pooling, final ``norm``) and the MAE ViT-B/16 as MAE fine-tunes it
(average pooling over patch tokens, then ``fc_norm``). An MAE *pre-training* checkpoint has a ``norm`` but no
``fc_norm``: its final LayerNorm is loaded into ``fc_norm``, the same normalisation at the same depth.
A checkpoint made at another resolution gets its position embeddings resized (bicubic), as timm does.
``dtype`` is the computation dtype; parameters stay float32 and LayerNorms compute their statistics in float32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bobjax.errors import ConfigError
from bobjax.models import attention, materialize, weights


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    width: int
    depth: int
    heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    global_pool: str = "token"  # "token" (class token, ``norm``) or "avg" (mean of patch tokens, ``fc_norm``)
    attention: str = "auto"  # bobjax.models.attention.IMPLEMENTATIONS


PRESETS = {
    "vit_tiny": ViTSpec(192, 12, 3),
    "vit_small": ViTSpec(384, 12, 6),
    "vit_b16": ViTSpec(768, 12, 12),
    "mae_vit_b16": ViTSpec(768, 12, 12, global_pool="avg"),
}
_POOLS = ("token", "avg")
_trunc = nnx.initializers.truncated_normal(0.02)


def _linear(cin: int, cout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, kernel_init=_trunc, dtype=dtype, rngs=rngs)


def _norm(width: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=1e-6, use_fast_variance=False, dtype=dtype, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, width: int, heads: int, implementation: str, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ConfigError(f"ViT width {width} does not split into {heads} heads")
        self.heads, self.implementation = heads, implementation
        self.qkv = _linear(width, 3 * width, dtype, rngs)
        self.proj = _linear(width, width, dtype, rngs)

    def __call__(self, x):
        b, n, d = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads), 3, axis=2)
        out = attention.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], implementation=self.implementation)
        return self.proj(out.reshape(b, n, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, hidden: int, dtype, rngs: nnx.Rngs):
        self.fc1 = _linear(width, hidden, dtype, rngs)
        self.fc2 = _linear(hidden, width, dtype, rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    def __init__(self, spec: ViTSpec, dtype, rngs: nnx.Rngs):
        self.norm1 = _norm(spec.width, dtype, rngs)
        self.attn = Attention(spec.width, spec.heads, spec.attention, dtype, rngs)
        self.norm2 = _norm(spec.width, dtype, rngs)
        self.mlp = Mlp(spec.width, int(spec.width * spec.mlp_ratio), dtype, rngs)

    def __call__(self, x):
        x = materialize.residual(x + self.attn(self.norm1(x)))
        return materialize.residual(x + self.mlp(self.norm2(x)))


class PatchEmbed(nnx.Module):
    def __init__(self, patch: int, width: int, dtype, rngs: nnx.Rngs):
        self.proj = nnx.Conv(3, width, (patch, patch), strides=patch, padding="VALID", dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(nnx.Module):
    def __init__(self, spec: ViTSpec, num_classes: int, image_size: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if spec.global_pool not in _POOLS:
            raise ConfigError(f"ViT global_pool {spec.global_pool!r} is not one of {_POOLS}")
        if image_size % spec.patch_size:
            raise ConfigError(f"config.classify.image_size={image_size} is not a multiple of the patch size {spec.patch_size}")
        self.spec = spec
        tokens = (image_size // spec.patch_size) ** 2 + 1
        self.patch_embed = PatchEmbed(spec.patch_size, spec.width, dtype, rngs)
        self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, spec.width)))
        self.pos_embed = nnx.Param(_trunc(rngs.params(), (1, tokens, spec.width)))
        self.blocks = nnx.List([Block(spec, dtype, rngs) for _ in range(spec.depth)])
        if spec.global_pool == "token":
            self.norm = _norm(spec.width, dtype, rngs)
        else:
            self.fc_norm = _norm(spec.width, dtype, rngs)
        self.num_features = spec.width
        self.head = nnx.Linear(spec.width, num_classes, kernel_init=nnx.initializers.zeros_init(), dtype=dtype,
                               rngs=rngs)

    def features(self, x):
        """NHWC images -> pooled features [B, width]."""
        x = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        if self.spec.global_pool == "token":
            return self.norm(x)[:, 0]
        return self.fc_norm(x[:, 1:].mean(axis=1))

    def __call__(self, x):
        return self.head(self.features(x))


def vit(name: str, num_classes: int, image_size: int, *, attention_kernel: str = "auto", dtype=jnp.float32,
        rngs: nnx.Rngs) -> VisionTransformer:
    if name not in PRESETS:
        raise ConfigError(f"unknown ViT {name!r}; expected one of {sorted(PRESETS)}")
    return VisionTransformer(dataclasses.replace(PRESETS[name], attention=attention_kernel), num_classes, image_size,
                             dtype=dtype, rngs=rngs)


def resample_pos_embed(pos_embed: np.ndarray, tokens: int) -> np.ndarray:
    """[1, 1 + g*g, D] -> [1, tokens, D]: the patch grid resized bicubically, the class token kept."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old, new = int(round(np.sqrt(grid.shape[1]))), int(round(np.sqrt(tokens - 1)))
    if old * old != grid.shape[1] or new * new != tokens - 1:
        raise ConfigError(f"cannot resize position embeddings of {pos_embed.shape[1]} tokens to {tokens}: not square grids")
    grid = grid.reshape(1, old, old, -1)
    grid = jax.image.resize(grid, (1, new, new, grid.shape[-1]), method="bicubic")
    return np.concatenate([cls, np.asarray(grid).reshape(1, new * new, -1)], axis=1)


def load_timm_vit(model: VisionTransformer, state_dict: dict[str, np.ndarray], *, new_head: bool,
                  source: str = "timm checkpoint") -> None:
    """Copies a timm ViT state dict into ``model``; with ``new_head`` the checkpoint's ``head`` is ignored."""
    state = dict(state_dict)
    if model.spec.global_pool == "avg" and "fc_norm.weight" not in state and "norm.weight" in state:
        state["fc_norm.weight"], state["fc_norm.bias"] = state.pop("norm.weight"), state.pop("norm.bias")
    tokens = model.pos_embed[...].shape[1]
    if "pos_embed" in state and state["pos_embed"].shape[1] != tokens:
        state["pos_embed"] = resample_pos_embed(np.asarray(state["pos_embed"], np.float32), tokens)
    if new_head or "head.weight" not in state:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        state.update({f"head.{n}": v for n, v in weights.export_state_dict(model.head).items()})
    weights.load_state_dict(model, state, source=source)
