"""The fine-tuning optimizer against torch: AdamW + clip_grad_norm_ + diffusers' cosine schedule with warm-up."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from diffusers.optimization import get_scheduler

from bobjax.errors import ConfigError
from bobjax.training import optim


def _config(**overrides):
    c = ml_collections.ConfigDict(dict(learning_rate=1e-2, adam_b1=0.9, adam_b2=0.99, adam_eps=1e-8,
                                       weight_decay=1e-2, grad_clip_norm=1.0, warmup_steps=3))
    c.update(overrides)
    return c


def test_updates_match_torch_adamw_with_clipping_and_diffusers_cosine_schedule():
    steps, config = 10, _config()
    rng = np.random.default_rng(0)
    init = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(scale=2.0, size=(4, 3)).astype(np.float32) for _ in range(steps)]  # norms > 1: clipped

    p = torch.nn.Parameter(torch.from_numpy(init.copy()))
    opt = torch.optim.AdamW([p], lr=config.learning_rate, betas=(config.adam_b1, config.adam_b2),
                            eps=config.adam_eps, weight_decay=config.weight_decay)
    sched = get_scheduler("cosine", opt, num_warmup_steps=config.warmup_steps, num_training_steps=steps)
    torch_lrs = []
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_([p], config.grad_clip_norm)
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    tx, schedule = optim.make_optimizer(config, steps)
    params = {"w": jnp.asarray(init)}
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)

    np.testing.assert_allclose([float(schedule(s)) for s in range(steps)], torch_lrs, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(params["w"], p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_bad_step_counts_are_config_errors():
    with pytest.raises(ConfigError, match="warmup_steps must be >= 0"):
        optim.make_optimizer(_config(warmup_steps=-1), 10)
    with pytest.raises(ConfigError, match="would run 0 steps"):
        optim.make_optimizer(_config(), 0)
