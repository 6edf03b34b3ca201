"""The UNet's spatial transformer (diffusers ``Transformer2DModel`` with ``BasicTransformerBlock``s), NHWC.

Each block: self-attention, cross-attention to the text states, GEGLU feed-forward, all pre-LayerNorm
with residuals. The block is wrapped in GroupNorm and a 1x1 conv (SD 1.x) or Linear (SD 2.x,
``use_linear_projection``) projection in and out, with a residual around the whole.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bobjax.models.attention import dot_product_attention
from bobjax.models.sd.norms import group_norm, layer_norm


class Attention(nnx.Module):
    """Multi-head attention without q/k/v biases; ``to_out`` mirrors torch's [Linear, Dropout] list."""

    def __init__(
        self, query_dim: int, context_dim: int, heads: int, head_dim: int, *, implementation: str,
        upcast: bool, dtype, param_dtype, rngs: nnx.Rngs,
    ):  # fmt: skip
        inner = heads * head_dim
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.to_q = nnx.Linear(query_dim, inner, use_bias=False, **linear)
        self.to_k = nnx.Linear(context_dim, inner, use_bias=False, **linear)
        self.to_v = nnx.Linear(context_dim, inner, use_bias=False, **linear)
        self.to_out = nnx.List([nnx.Linear(inner, query_dim, **linear), nnx.Dropout(0.0)])
        self.heads, self.head_dim, self.dtype = heads, head_dim, dtype
        self.implementation, self.upcast = implementation, upcast

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        # float32 LoRA adapters over a bf16 base promote q, k, v to float32. peft's LoRA layers return the base
        # layer's dtype; attending in the model's dtype does the same, and lets the half-precision kernels serve.
        dtype = self.dtype or x.dtype
        split = lambda t: t.astype(dtype).reshape(*t.shape[:2], self.heads, self.head_dim)  # noqa: E731
        out = dot_product_attention(
            split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)),
            implementation=self.implementation, upcast=self.upcast,
        )  # fmt: skip
        out = out.reshape(*out.shape[:2], self.heads * self.head_dim)
        for layer in self.to_out:
            out = layer(out)
        return out


class GEGLU(nnx.Module):
    """One projection to twice the width; the first half gated by exact GELU of the second.

    GELU is written with ``erf`` as torch computes it; ``jax.nn.gelu`` uses ``erfc``, which XLA:CPU
    evaluates several times slower (it was 3% of a training step).
    """

    def __init__(self, dim: int, inner: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj = nnx.Linear(dim, 2 * inner, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(self.proj(x), 2, axis=-1)
        return hidden * (0.5 * gate * (1.0 + jax.lax.erf(gate * (2**-0.5))))


class FeedForward(nnx.Module):
    """``net`` = [GEGLU, Dropout, Linear] as in diffusers, so the output Linear sits at ``net.2``."""

    def __init__(self, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs, mult: int = 4):
        inner = dim * mult
        self.net = nnx.List([
            GEGLU(dim, inner, dtype=dtype, param_dtype=param_dtype, rngs=rngs),
            nnx.Dropout(0.0),
            nnx.Linear(inner, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs),
        ])  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nnx.Module):
    def __init__(
        self, dim: int, context_dim: int, heads: int, head_dim: int, *, attention: str, upcast: bool,
        dtype, param_dtype, rngs: nnx.Rngs,
    ):  # fmt: skip
        attn = dict(implementation=attention, upcast=upcast, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = layer_norm(dim, 1e-5, param_dtype=param_dtype, rngs=rngs)
        self.attn1 = Attention(dim, dim, heads, head_dim, **attn)
        self.norm2 = layer_norm(dim, 1e-5, param_dtype=param_dtype, rngs=rngs)
        self.attn2 = Attention(dim, context_dim, heads, head_dim, **attn)
        self.norm3 = layer_norm(dim, 1e-5, param_dtype=param_dtype, rngs=rngs)
        self.ff = FeedForward(dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        h = self.norm1(x).astype(self.dtype)
        x = x + self.attn1(h, h)
        x = x + self.attn2(self.norm2(x).astype(self.dtype), context)
        return x + self.ff(self.norm3(x).astype(self.dtype))


class Transformer2DModel(nnx.Module):
    """GroupNorm (eps 1e-6) -> proj_in -> ``num_layers`` blocks over the H*W tokens -> proj_out, + input."""

    def __init__(
        self, channels: int, heads: int, context_dim: int, *, num_layers: int, groups: int,
        use_linear_projection: bool, attention: str, upcast: bool, dtype, param_dtype, rngs: nnx.Rngs,
    ):  # fmt: skip
        head_dim = channels // heads
        inner = heads * head_dim
        params = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = group_norm(channels, groups, 1e-6, param_dtype=param_dtype, rngs=rngs)
        if use_linear_projection:
            self.proj_in = nnx.Linear(channels, inner, **params)
            self.proj_out = nnx.Linear(inner, channels, **params)
        else:  # a 1x1 conv is the same map as a Linear over channels; its kernel is (1, 1, in, out)
            self.proj_in = nnx.Conv(channels, inner, kernel_size=(1, 1), **params)
            self.proj_out = nnx.Conv(inner, channels, kernel_size=(1, 1), **params)
        self.transformer_blocks = nnx.List([
            BasicTransformerBlock(
                inner, context_dim, heads, head_dim, attention=attention, upcast=upcast, **params
            )
            for _ in range(num_layers)
        ])  # fmt: skip
        self.dtype = dtype

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        batch, height, width, _ = x.shape
        h = self.proj_in(self.norm(x).astype(self.dtype))
        h = h.reshape(batch, height * width, h.shape[-1])
        for block in self.transformer_blocks:
            h = block(h, context)
        h = self.proj_out(h.reshape(batch, height, width, h.shape[-1]))
        return h + x

