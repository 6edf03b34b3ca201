"""Normalisation layers that always compute in float32, whatever the model's computation dtype.

GroupNorm/LayerNorm statistics over thousands of bfloat16 values lose the mean; computing them in float32
costs little and keeps bf16 runs close to fp32 ones. Outputs are float32: the next layer casts.
Two-pass variance (``use_fast_variance=False``) matches torch where activations have a large mean.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


def group_norm(channels: int, groups: int, eps: float, *, param_dtype, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(
        channels, num_groups=groups, epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype,
        use_fast_variance=False, rngs=rngs,
    )  # fmt: skip


def layer_norm(features: int, eps: float, *, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        features, epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype, use_fast_variance=False, rngs=rngs
    )
