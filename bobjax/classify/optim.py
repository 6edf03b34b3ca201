"""AdamW with warm-up + cosine, weight decay on weight matrices only, and optional layer-wise lr decay.

Biases, norm scales, the class token and position embeddings get no weight decay (as in timm, MAE, BEiT).
Layer-wise decay multiplies the whole AdamW update of a parameter at depth ``d`` of ``n`` by
``layer_decay ** (n - 1 - d)``: the head learns at the full rate, the embeddings at the smallest (MAE's rule).

The peak learning rate and the weight decay may be traced scalars (``peak=``, ``weight_decay=``): packed grid points
(``bobjax.classify.packed``) build each point's optimizer inside one compiled program from its own values. The
optimizer's state has the same layout whatever the values, so a point's checkpoint is a lone run's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bobjax.classify import backbones
from bobjax.errors import ConfigError

_NO_DECAY = ("cls_token", "pos_embed")


def schedule(cfg, steps_per_epoch: int, total_steps: int, peak=None) -> optax.Schedule:
    """Warm-up from ``cfg.min_learning_rate`` to the peak (``cfg.learning_rate``, or ``peak``), then cosine down."""
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    decay_steps, end = max(total_steps, warmup + 1), cfg.min_learning_rate
    if peak is None:
        return optax.warmup_cosine_decay_schedule(init_value=end, peak_value=cfg.learning_rate, warmup_steps=warmup,
                                                  decay_steps=decay_steps, end_value=end)
    # A traced peak: optax's own two pieces, joined as its warmup_cosine_decay_schedule joins them (that function asks
    # ``peak == 0`` in Python, which a traced value cannot answer).
    alpha = jnp.where(peak == 0, 0.0, end / jnp.where(peak == 0, 1.0, peak))
    return optax.join_schedules([optax.linear_schedule(end, peak, warmup),
                                 optax.cosine_decay_schedule(peak, decay_steps - warmup, alpha)], [warmup])


def _path_names(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)


def _decays(params):
    return jax.tree.map_with_path(
        lambda path, p: p.ndim >= 2 and not any(str(n) in _NO_DECAY for n in _path_names(path)), params)


def _layer_scales(params, backbone: str, layer_decay: float):
    def scale(path, _):
        depth, count = backbones.layer_depth(backbone, _path_names(path))
        return layer_decay ** (count - 1 - depth)

    return jax.tree.map_with_path(scale, params)


def _scale_by_tree(scales) -> optax.GradientTransformation:
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(lambda u, s: u * s, updates, scales), state))


def optimizer(cfg, params, learning_rate: optax.Schedule, weight_decay=None) -> optax.GradientTransformation:
    """AdamW over ``params`` (their shapes decide which decay); ``weight_decay``: ``cfg.weight_decay`` if None."""
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise ConfigError(f"config.classify.layer_decay must be in (0, 1], got {cfg.layer_decay}")
    decay = cfg.weight_decay if weight_decay is None else weight_decay
    tx = optax.adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=decay, mask=_decays(params))
    if cfg.layer_decay == 1.0:
        return tx
    return optax.chain(tx, _scale_by_tree(_layer_scales(params, cfg.backbone, cfg.layer_decay)))
