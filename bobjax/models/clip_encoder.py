"""CLIP's pre-LayerNorm transformer stack, shared by the text tower and (later) the vision tower.

Submodule names mirror transformers' ``CLIPEncoder`` (``layers.N.self_attn.q_proj`` ...), so checkpoints load
through :mod:`bobjax.models.weights` without renames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax.models.attention import IMPLEMENTATIONS, dot_product_attention
from bobjax.models.sd.norms import layer_norm

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


def activation(name: str):
    """The MLP activation a CLIP config names; CLIP checkpoints use only these two."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported CLIP hidden_act {name!r}: supported are {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class CLIPAttention(nnx.Module):
    """Multi-head self-attention with separate q/k/v/out projections (all with bias), as CLIP stores them."""

    def __init__(self, hidden_size: int, num_heads: int, *, dtype, param_dtype, attention: str, rngs: nnx.Rngs):
        if hidden_size % num_heads:
            raise ValueError(f"CLIP hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.attention = attention
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = nnx.Linear(hidden_size, hidden_size, **kw)
        self.k_proj = nnx.Linear(hidden_size, hidden_size, **kw)
        self.v_proj = nnx.Linear(hidden_size, hidden_size, **kw)
        self.out_proj = nnx.Linear(hidden_size, hidden_size, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        batch, length, width = x.shape
        # LoRA's float32 adapters (the classifier's, on q_proj and v_proj) promote their projections to float32; peft's
        # LoRA layers cast back to the layer's dtype, and so does this, so a bfloat16 model attends in bfloat16.
        dtype = self.dtype or x.dtype
        heads = lambda t: t.astype(dtype).reshape(batch, length, self.num_heads, width // self.num_heads)  # noqa: E731
        out = dot_product_attention(
            heads(self.q_proj(x)),
            heads(self.k_proj(x)),
            heads(self.v_proj(x)),
            implementation=self.attention,
            mask=mask,
        )
        return self.out_proj(out.reshape(batch, length, width))


class CLIPMLP(nnx.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, *, dtype, param_dtype, rngs):
        activation(hidden_act)  # validates the name
        self.hidden_act = hidden_act
        self.fc1 = nnx.Linear(hidden_size, intermediate_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = nnx.Linear(intermediate_size, hidden_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(ACTIVATIONS[self.hidden_act](self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """x + attn(norm1(x)), then + mlp(norm2(x)): CLIP normalises before each residual branch.

    LayerNorms run in float32 (two-pass variance) whatever the computation dtype: CLIP's residual stream has
    a few very large channels.
    """

    def __init__(self, config: Mapping[str, Any], *, dtype, param_dtype, attention: str, rngs: nnx.Rngs):
        width, eps = config["hidden_size"], config["layer_norm_eps"]
        self.self_attn = CLIPAttention(
            width, config["num_attention_heads"], dtype=dtype, param_dtype=param_dtype, attention=attention, rngs=rngs
        )
        self.layer_norm1 = layer_norm(width, eps, param_dtype=param_dtype, rngs=rngs)
        self.mlp = CLIPMLP(
            width, config["intermediate_size"], config["hidden_act"], dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.layer_norm2 = layer_norm(width, eps, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    """``num_hidden_layers`` encoder layers; reads hidden_size, num_attention_heads, intermediate_size,
    hidden_act and layer_norm_eps from a CLIP text or vision config."""

    def __init__(self, config: Mapping[str, Any], *, dtype, param_dtype, attention: str, rngs: nnx.Rngs):
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {attention!r}; choose one of {IMPLEMENTATIONS}")
        self.layers = nnx.List(
            [
                CLIPEncoderLayer(config, dtype=dtype, param_dtype=param_dtype, attention=attention, rngs=rngs)
                for _ in range(config["num_hidden_layers"])
            ]
        )

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``mask``: boolean, broadcastable to [batch, heads, query, key], True where attending is allowed."""
        for layer in self.layers:
            x = layer(x, mask)
        return x


def causal_mask(length: int, attention_mask: jax.Array | None = None) -> jax.Array:
    """[B or 1, 1, L, L] boolean mask: each token sees itself and earlier tokens that are not padding."""
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.astype(bool)[:, None, None, :]
    return mask
