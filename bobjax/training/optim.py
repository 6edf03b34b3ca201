"""AdamW with linear warm-up then cosine decay, after grad-norm clipping: BOB's optimizer, as in diffusers.

The schedule is diffusers' ``get_scheduler("cosine", num_warmup_steps, num_training_steps)`` as the optimizer
sees it: the update of step ``s`` (counting from 0) uses ``lr * s / warmup`` during warm-up, so the very first
update has learning rate 0, then ``lr * (1 + cos(pi * progress)) / 2``.
"""

from __future__ import annotations

import optax

from bobjax.errors import ConfigError


def learning_rate_schedule(finetune_config, total_steps: int) -> optax.Schedule:
    peak, warmup = float(finetune_config.learning_rate), int(finetune_config.warmup_steps)
    if total_steps < 1:
        raise ConfigError(f"fine-tuning would run {total_steps} steps; check config.finetune.epochs and batch_size")
    if warmup < 0:
        raise ConfigError(f"config.finetune.warmup_steps must be >= 0, got {warmup}")
    warmup = min(warmup, total_steps)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end_value=0.0)


def make_optimizer(finetune_config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, learning-rate schedule)`` from ``config.finetune`` (lr, betas, eps, weight decay, clip)."""
    c = finetune_config
    schedule = learning_rate_schedule(c, total_steps)
    clip = optax.clip_by_global_norm(c.grad_clip_norm) if c.grad_clip_norm > 0 else optax.identity()
    adamw = optax.adamw(schedule, b1=c.adam_b1, b2=c.adam_b2, eps=c.adam_eps, weight_decay=c.weight_decay)
    return optax.chain(clip, adamw), schedule
