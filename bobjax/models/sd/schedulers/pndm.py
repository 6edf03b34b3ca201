"""PNDM as Stable Diffusion runs it (``skip_prk_steps=True``): diffusers' ``PNDMScheduler`` PLMS steps.

A linear multistep method on the noise prediction (Liu et al., 2022, "Pseudo Numerical Methods for
Diffusion Models"): the transfer ``x_t -> x_{t-d}`` of their eq. (9) is applied to an Adams-Bashforth
combination of the last noise predictions. Warm-up as in diffusers / crowsonkb's PLMS: step 0 is a plain
transfer, step 1 re-evaluates the model at the landed timestep (diffusers lists that timestep twice, so
``num_steps`` is num_inference_steps + 1) and redoes step 0 with the average of both predictions,
then AB2, AB3 and AB4 weights follow.

The original paper's Runge-Kutta warm-up (``skip_prk_steps=False``, diffusers' class default) is not
implemented: such a config raises a ValueError naming ``skip_prk_steps``.
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

OPTIONS = {
    **cfg.NOISE_SCHEDULE_OPTIONS,
    "prediction_type": cfg.one_of("epsilon", "v_prediction", default="epsilon"),
    "skip_prk_steps": cfg.Option(
        False, lambda v: v is True, "true (Runge-Kutta warm-up steps are not implemented; SD configs skip them)"
    ),
    "set_alpha_to_one": cfg.flag(False),
    "steps_offset": cfg.int_at_least(0, 0),
    "timestep_spacing": cfg.one_of(*cfg.TIMESTEP_SPACINGS, default="leading"),
}

# Weights of (current prediction; the three previous ones, oldest first) by step: step 1 averages with
# step 0's prediction, then Adams-Bashforth of order 2, 3 and 4.
_PLMS_WEIGHTS = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [1 / 2, 0.0, 0.0, 1 / 2],
        [3 / 2, 0.0, 0.0, -1 / 2],
        [23 / 12, 0.0, 5 / 12, -16 / 12],
        [55 / 24, -9 / 24, 37 / 24, -59 / 24],
    ]
)


@struct.dataclass
class PNDMState:
    recent_outputs: jax.Array  # [3, *sample.shape]: model outputs that entered the history, oldest first
    first_sample: jax.Array  # the sample step 0 started from, which step 1 restarts from


@struct.dataclass
class PNDMSampler(Sampler):
    timesteps: jax.Array  # [n + 1] int32
    alpha_prod: jax.Array  # [n + 1] alphas_cumprod where step i starts
    alpha_prod_next: jax.Array  # [n + 1] alphas_cumprod where step i lands
    output_weights: jax.Array  # [n + 1, 4] see _PLMS_WEIGHTS
    prediction_type: str = struct.field(pytree_node=False)
    init_noise_sigma: float = struct.field(pytree_node=False, default=1.0)

    @classmethod
    def from_config(cls, scheduler_config: Mapping[str, Any], num_inference_steps: int, start: int = 0) -> PNDMSampler:
        o = cfg.read_options(scheduler_config, OPTIONS, reader="the pndm sampler")
        num_train = o["num_train_timesteps"]
        visited = np.round(
            spaced_timesteps(o["timestep_spacing"], num_train, num_inference_steps, o["steps_offset"])
        ).astype(np.int64)
        # diffusers' plms_timesteps: every visited timestep, the second one repeated for the warm-up step 1.
        timesteps = np.concatenate([visited[:1], visited[1:2], visited[1:]])
        # diffusers' img2img slices this list and restarts the warm-up (its step counter) on the slice, even where
        # the slice begins at the repeated timestep: the tables below follow the slice, as diffusers does.
        timesteps = timesteps[start:]
        stride = num_train // num_inference_steps
        starts, ends = timesteps.copy(), timesteps - stride
        if len(timesteps) > 1:  # step 1 redoes step 0: from timesteps[1] + stride down to timesteps[1]
            starts[1], ends[1] = timesteps[1] + stride, timesteps[1]
        cumprod = alphas_cumprod(o)
        steps = np.arange(len(timesteps))
        return cls(
            timesteps=jnp.asarray(timesteps, jnp.int32),
            alpha_prod=jnp.asarray(alphas_cumprod_at(cumprod, starts, o["set_alpha_to_one"])),
            alpha_prod_next=jnp.asarray(alphas_cumprod_at(cumprod, ends, o["set_alpha_to_one"])),
            output_weights=jnp.asarray(_PLMS_WEIGHTS[np.minimum(steps, 4)], jnp.float32),
            prediction_type=o["prediction_type"],
        )

    def init_state(self, sample: jax.Array) -> PNDMState:
        zeros = jnp.zeros(sample.shape, jnp.float32)
        return PNDMState(recent_outputs=jnp.stack([zeros] * 3), first_sample=zeros)

    def step(self, state: PNDMState, model_output: jax.Array, i: jax.Array | int, sample: jax.Array):
        x, out = sample.astype(jnp.float32), model_output.astype(jnp.float32)
        weights = self.output_weights[i]
        combined = weights[0] * out + jnp.tensordot(weights[1:], state.recent_outputs, axes=1)
        start = jnp.where(i == 1, state.first_sample, x)
        a, a_next = self.alpha_prod[i], self.alpha_prod_next[i]
        if self.prediction_type == "v_prediction":  # diffusers converts the combined output, at the start sample
            combined = jnp.sqrt(a) * combined + jnp.sqrt(1 - a) * start
        # Eq. (9) of the PNDM paper: the transfer of x_t to the next timestep along the noise prediction.
        denominator = a * jnp.sqrt(1 - a_next) + jnp.sqrt(a * (1 - a) * a_next)
        x_next = jnp.sqrt(a_next / a) * start - (a_next - a) * combined / denominator
        appended = jnp.concatenate([state.recent_outputs[1:], out[None]])
        new_state = PNDMState(
            # step 1's prediction only corrects step 0 and does not enter the history
            recent_outputs=jnp.where(i == 1, state.recent_outputs, appended),
            first_sample=jnp.where(i == 0, x, state.first_sample),
        )
        return x_next.astype(sample.dtype), new_state

    def add_noise(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        a = self.alpha_prod[0]
        return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
