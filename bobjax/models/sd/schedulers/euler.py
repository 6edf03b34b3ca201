"""Euler: diffusers' ``EulerDiscreteScheduler`` (deterministic, ``s_churn = 0``) as a jit-friendly sampler.

Karras et al. (2022) write the diffusion ODE in the noise level sigma = sqrt((1 - a) / a) for the
unscaled variable x = x_t / sqrt(a); this sampler takes plain Euler steps in sigma. The UNet was trained on
x_t, so its input is scaled back (``scale_model_input``) and the run starts at x = noise * init_noise_sigma.
Timesteps may be fractional (``linspace`` spacing); sigmas at them are interpolated linearly, as diffusers does.
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
from bobjax.models.sd.schedulers.noise_schedule import alphas_cumprod, final_sigma, noise_to_signal
from bobjax.models.sd.schedulers.timesteps import spaced_timesteps

OPTIONS = {
    **cfg.NOISE_SCHEDULE_OPTIONS,
    # diffusers' Euler also accepts the older name "original_sample" for "sample".
    "prediction_type": cfg.one_of(*cfg.PREDICTION_TYPES, "original_sample", default="epsilon"),
    "interpolation_type": cfg.one_of("linear", default="linear"),
    "timestep_type": cfg.one_of("discrete", default="discrete"),
    "timestep_spacing": cfg.one_of(*cfg.TIMESTEP_SPACINGS, default="linspace"),
    "steps_offset": cfg.int_at_least(0, 0),
    "final_sigmas_type": cfg.one_of("zero", "sigma_min", default="zero"),
    "use_karras_sigmas": cfg.switched_off(),
    "use_exponential_sigmas": cfg.switched_off(),
    "use_beta_sigmas": cfg.switched_off(),
}


@struct.dataclass
class EulerSampler(Sampler):
    """Stateless: step i moves x from ``sigmas[i]`` to ``sigmas[i + 1]`` along the predicted direction."""

    timesteps: jax.Array  # [n] float32, possibly fractional
    sigmas: jax.Array  # [n + 1] float32, the last one where the run ends (0 by default)
    input_divisor: jax.Array  # [n] sqrt(sigma_i^2 + 1): x / input_divisor is what the UNet was trained on
    prediction_type: str = struct.field(pytree_node=False)
    init_noise_sigma: float = struct.field(pytree_node=False, default=1.0)

    @classmethod
    def from_config(cls, scheduler_config: Mapping[str, Any], num_inference_steps: int, start: int = 0) -> EulerSampler:
        o = cfg.read_options(scheduler_config, OPTIONS, reader="the euler sampler")
        spacing = o["timestep_spacing"]
        timesteps = spaced_timesteps(
            spacing, o["num_train_timesteps"], num_inference_steps, o["steps_offset"]
        ).astype(np.float32)
        all_sigmas = noise_to_signal(alphas_cumprod(o))
        sigmas = np.interp(timesteps, np.arange(len(all_sigmas)), all_sigmas)
        sigmas = np.append(sigmas, final_sigma(o["final_sigmas_type"], all_sigmas)).astype(np.float32)
        largest = np.float64(sigmas.max())
        # diffusers' rule: with leading spacing the first timestep is below T - 1, and the start noise is
        # scaled as for x_t (variance sigma^2 + 1) rather than sigma^2.
        init_noise_sigma = largest if spacing in ("linspace", "trailing") else np.sqrt(largest**2 + 1)
        timesteps, sigmas = timesteps[start:], sigmas[start:]  # Stateless: a tail is a slice.
        return cls(
            timesteps=jnp.asarray(timesteps),
            sigmas=jnp.asarray(sigmas),
            input_divisor=jnp.asarray(np.sqrt(sigmas[:-1].astype(np.float64) ** 2 + 1), jnp.float32),
            prediction_type="sample" if o["prediction_type"] == "original_sample" else o["prediction_type"],
            init_noise_sigma=float(np.float32(init_noise_sigma)),
        )

    def scale_model_input(self, sample: jax.Array, i: jax.Array | int) -> jax.Array:
        return (sample.astype(jnp.float32) / self.input_divisor[i]).astype(sample.dtype)

    def step(self, state: tuple, model_output: jax.Array, i: jax.Array | int, sample: jax.Array):
        x, out = sample.astype(jnp.float32), model_output.astype(jnp.float32)
        sigma = self.sigmas[i]
        if self.prediction_type == "epsilon":
            x0 = x - sigma * out
        elif self.prediction_type == "v_prediction":
            x0 = out * (-sigma / jnp.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
        else:  # sample
            x0 = out
        derivative = (x - x0) / sigma
        x_next = x + derivative * (self.sigmas[i + 1] - sigma)
        return x_next.astype(sample.dtype), state

    def add_noise(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        return x0 + self.sigmas[0] * noise  # Euler's variable is x_t / sqrt(a_t).
