"""DDIM, deterministic (eta = 0): diffusers' ``DDIMScheduler`` as a jit-friendly sampler.

Each step predicts the clean sample x0 and the noise, then re-noises x0 to the next timestep along the same
noise direction (Song et al., 2021, eq. 12 with sigma_t = 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bobjax.models.sd.schedulers import config as cfg
from bobjax.models.sd.schedulers.base import Sampler
from bobjax.models.sd.schedulers.noise_schedule import alphas_cumprod, alphas_cumprod_at
from bobjax.models.sd.schedulers.timesteps import spaced_timesteps

# The fields DDIMScheduler reads, with its defaults (they differ from other classes': clip_sample is on).
OPTIONS = {
    **cfg.NOISE_SCHEDULE_OPTIONS,
    "prediction_type": cfg.one_of(*cfg.PREDICTION_TYPES, default="epsilon"),
    "clip_sample": cfg.flag(True),
    "clip_sample_range": cfg.positive_number(1.0),
    "set_alpha_to_one": cfg.flag(True),
    "steps_offset": cfg.int_at_least(0, 0),
    "timestep_spacing": cfg.one_of(*cfg.TIMESTEP_SPACINGS, default="leading"),
    "thresholding": cfg.switched_off(),
}


@struct.dataclass
class DDIMSampler(Sampler):
    """Stateless: step i goes from ``timesteps[i]`` to ``timesteps[i] - T // n`` (the clean sample past 0)."""

    timesteps: jax.Array  # [n] int32
    alpha_prod: jax.Array  # [n] alphas_cumprod at timesteps[i]
    alpha_prod_next: jax.Array  # [n] alphas_cumprod where step i lands
    prediction_type: str = struct.field(pytree_node=False)
    clip_range: float | None = struct.field(pytree_node=False)  # None: x0 is not clipped
    init_noise_sigma: float = struct.field(pytree_node=False, default=1.0)

    @classmethod
    def from_config(cls, scheduler_config: Mapping[str, Any], num_inference_steps: int, start: int = 0) -> DDIMSampler:
        o = cfg.read_options(scheduler_config, OPTIONS, reader="the ddim sampler")
        num_train = o["num_train_timesteps"]
        timesteps = np.round(
            spaced_timesteps(o["timestep_spacing"], num_train, num_inference_steps, o["steps_offset"])
        ).astype(np.int64)
        cumprod = alphas_cumprod(o)
        # diffusers steps by T // n whatever the spacing, so trailing/linspace steps may not land on the next one.
        next_timesteps = timesteps - num_train // num_inference_steps
        timesteps, next_timesteps = timesteps[start:], next_timesteps[start:]  # Stateless: a tail is a slice.
        return cls(
            timesteps=jnp.asarray(timesteps, jnp.int32),
            alpha_prod=jnp.asarray(alphas_cumprod_at(cumprod, timesteps, o["set_alpha_to_one"])),
            alpha_prod_next=jnp.asarray(alphas_cumprod_at(cumprod, next_timesteps, o["set_alpha_to_one"])),
            prediction_type=o["prediction_type"],
            clip_range=float(o["clip_sample_range"]) if o["clip_sample"] else None,
        )

    def step(self, state: tuple, model_output: jax.Array, i: jax.Array | int, sample: jax.Array):
        x, out = sample.astype(jnp.float32), model_output.astype(jnp.float32)
        a, a_next = self.alpha_prod[i], self.alpha_prod_next[i]
        signal, noise_scale = jnp.sqrt(a), jnp.sqrt(1 - a)
        if self.prediction_type == "epsilon":
            x0, eps = (x - noise_scale * out) / signal, out
        elif self.prediction_type == "sample":
            x0, eps = out, (x - signal * out) / noise_scale
        else:  # v_prediction
            x0, eps = signal * x - noise_scale * out, signal * out + noise_scale * x
        if self.clip_range is not None:
            x0 = jnp.clip(x0, -self.clip_range, self.clip_range)
        x_next = jnp.sqrt(a_next) * x0 + jnp.sqrt(1 - a_next) * eps
        return x_next.astype(sample.dtype), state

    def add_noise(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        a = self.alpha_prod[0]
        return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
