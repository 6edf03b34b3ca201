"""Timestep conditioning: the sinusoidal projection (diffusers' ``Timesteps``) and its MLP."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def timestep_embedding(
    timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0
) -> jax.Array:
    """Sinusoidal features of ``timesteps`` [B] -> [B, dim] in float32 (DDPM/diffusers convention).

    Frequencies are ``max_period ** (-i / (dim/2 - freq_shift))``; ``flip_sin_to_cos`` puts cosines first.
    Always float32: timesteps up to 1000 lose whole steps in bfloat16.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """Linear -> SiLU -> Linear on the sinusoidal features (diffusers ``time_embedding``)."""

    def __init__(self, in_features: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.linear_1 = nnx.Linear(in_features, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_2 = nnx.Linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.linear_2(nnx.silu(self.linear_1(features)))
