"""The forward (noising) process a checkpoint was trained with, and the training targets it defines.

Fine-tuning needs exactly this from a scheduler config: ``alphas_cumprod`` to noise latents at a timestep,
and the target the UNet regresses (noise, velocity or the clean sample, per ``prediction_type``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bobjax.models.sd.schedulers.config import NOISE_SCHEDULE_OPTIONS, PREDICTION_TYPES, one_of, read_options


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """GLIDE's cosine schedule (``squaredcos_cap_v2``): betas that make alpha_bar(t) follow a squared cosine."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])


def alphas_cumprod(options: Mapping[str, Any]) -> np.ndarray:
    """``prod_{s<=t} (1 - beta_s)`` for t = 0..T-1, float32, from the noise-schedule fields of a config.

    diffusers builds this in float32 (betas and ``1 - beta`` rounded to float32, the product accumulated in
    float64 by torch); the rounding of ``1 - beta`` moves alphas_cumprod near t = T by ~1e-6 relative, which
    is visible in sampled latents. We round at the same places so that our samplers stay within float32
    rounding of a diffusers pipeline, rather than 'more exact' and visibly different.
    """
    n = options["num_train_timesteps"]
    if options["trained_betas"] is not None:
        betas = np.asarray(options["trained_betas"], np.float64)
    elif options["beta_schedule"] == "linear":
        betas = np.linspace(options["beta_start"], options["beta_end"], n)
    elif options["beta_schedule"] == "scaled_linear":  # linear in sqrt(beta): latent diffusion's schedule
        betas = np.linspace(options["beta_start"] ** 0.5, options["beta_end"] ** 0.5, n).astype(np.float32) ** 2
    else:  # squaredcos_cap_v2; read_options admits no other value
        betas = _cosine_betas(n)
    alphas = np.float32(1.0) - betas.astype(np.float32)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def _per_sample(values: jax.Array, like: jax.Array) -> jax.Array:
    """Shapes per-timestep scalars [B] (or a scalar) to broadcast over batch-first samples [B, ...]."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim)).astype(like.dtype)


@struct.dataclass
class NoiseSchedule:
    """DDPM forward process: ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` with ``a_t = alphas_cumprod[t]``.

    A pytree (``alphas_cumprod`` is its only array), so it can be passed into jitted training steps.
    ``t`` is an integer array of shape [B] (one timestep per sample) or a scalar; samples are batch-first.
    """

    alphas_cumprod: jax.Array  # [num_train_timesteps] float32
    prediction_type: str = struct.field(pytree_node=False)

    @classmethod
    def from_config(cls, scheduler_config: Mapping[str, Any]) -> NoiseSchedule:
        options = read_options(
            scheduler_config,
            {**NOISE_SCHEDULE_OPTIONS, "prediction_type": one_of(*PREDICTION_TYPES, default="epsilon")},
            reader="DDPM training",
        )
        return cls(jnp.asarray(alphas_cumprod(options)), options["prediction_type"])

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def _signal_and_noise_scales(self, t: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
        a = self.alphas_cumprod[jnp.asarray(t)]
        return _per_sample(jnp.sqrt(a), like), _per_sample(jnp.sqrt(1 - a), like)

    def add_noise(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """Samples q(x_t | x0): the noisy latents the UNet sees at timestep ``t``."""
        signal, noise_scale = self._signal_and_noise_scales(t, x0)
        return signal * x0 + noise_scale * noise

    def get_velocity(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """The v-prediction target ``v = sqrt(a_t) noise - sqrt(1 - a_t) x0`` (Salimans & Ho, 2022)."""
        signal, noise_scale = self._signal_and_noise_scales(t, x0)
        return signal * noise - noise_scale * x0

    def training_target(
        self, x0: jax.Array, noise: jax.Array, t: jax.Array, prediction_type: str | None = None
    ) -> jax.Array:
        """What the UNet must output for ``add_noise(x0, noise, t)``; ``prediction_type`` defaults to the config's."""
        prediction_type = self.prediction_type if prediction_type is None else prediction_type
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            return self.get_velocity(x0, noise, t)
        if prediction_type == "sample":
            return x0
        raise ValueError(f"prediction_type {prediction_type!r} is not supported; expected one of {PREDICTION_TYPES}")


def alphas_cumprod_at(cumprod: np.ndarray, timesteps: np.ndarray, set_alpha_to_one: bool) -> np.ndarray:
    """``alphas_cumprod[t]`` for each t; a step past t = 0 lands on the clean sample and uses 1 (if
    ``set_alpha_to_one``) or ``alphas_cumprod[0]``, as diffusers' DDIM and PNDM do."""
    t = np.asarray(timesteps, np.int64)
    past_zero = np.float32(1.0) if set_alpha_to_one else cumprod[0]
    return np.where(t >= 0, cumprod[np.clip(t, 0, None)], past_zero).astype(np.float32)


def noise_to_signal(cumprod: np.ndarray) -> np.ndarray:
    """``sigma_t = sqrt((1 - a_t) / a_t)`` per training timestep: the noise level that Euler and DPM-Solver
    step through (``x_t / sqrt(a_t) = x0 + sigma_t * noise``). float32, like diffusers' ``sigmas``."""
    a = cumprod.astype(np.float64)
    return np.sqrt((1 - a) / a).astype(np.float32)


def final_sigma(final_sigmas_type: str, sigmas: np.ndarray) -> np.float32:
    """Where the last step lands: the clean sample (``zero``) or the smallest training noise (``sigma_min``)."""
    return np.float32(0.0) if final_sigmas_type == "zero" else sigmas[0]
