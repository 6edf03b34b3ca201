"""Choosing a sampler by name, and the whole sampling run as one ``jax.lax.fori_loop``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from bobjax.models.sd.schedulers.base import Sampler
from bobjax.models.sd.schedulers.ddim import DDIMSampler
from bobjax.models.sd.schedulers.dpm_solver import DPMSolverSampler
from bobjax.models.sd.schedulers.euler import EulerSampler
from bobjax.models.sd.schedulers.pndm import PNDMSampler

# name -> (sampler class, the diffusers scheduler class it reproduces)
SAMPLERS: dict[str, tuple[type[Sampler], str]] = {
    "ddim": (DDIMSampler, "DDIMScheduler"),
    "pndm": (PNDMSampler, "PNDMScheduler"),
    "dpmpp_2m": (DPMSolverSampler, "DPMSolverMultistepScheduler"),
    "euler": (EulerSampler, "EulerDiscreteScheduler"),
}


def make_sampler(name: str, scheduler_config: Mapping[str, Any], num_inference_steps: int) -> Sampler:
    """The sampler ``name`` for a checkpoint's ``scheduler_config``, as diffusers' ``<Class>.from_config``
    followed by ``set_timesteps(num_inference_steps)`` would build it."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name][0].from_config(scheduler_config, num_inference_steps)


def sample_loop(
    sampler: Sampler, denoise: Callable[[jax.Array, jax.Array], jax.Array], initial_sample: jax.Array
) -> jax.Array:
    """Runs all ``sampler.num_steps`` steps in one ``jax.lax.fori_loop`` and returns the final sample.

    ``denoise(model_input, timestep)`` is the model (UNet with guidance, ...) at a scalar ``timestep``;
    ``initial_sample`` is ``noise * sampler.init_noise_sigma``. Jit the caller, not this function, to
    compile the UNet into the loop.
    """

    def body(i, carry):
        sample, state = carry
        model_output = denoise(sampler.scale_model_input(sample, i), sampler.timesteps[i])
        return sampler.step(state, model_output, i, sample)

    final_sample, _ = jax.lax.fori_loop(0, sampler.num_steps, body, (initial_sample, sampler.init_state(initial_sample)))
    return final_sample
