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


def make_sampler(name: str, scheduler_config: Mapping[str, Any], num_inference_steps: int,
                 strength: float = 1.0) -> Sampler:
    """The sampler ``name`` for a checkpoint's ``scheduler_config``, as diffusers' ``<Class>.from_config``
    followed by ``set_timesteps(num_inference_steps)`` would build it; with ``strength < 1``, only the steps that
    diffusers' image-to-image pipeline runs at that strength (start from ``sampler.add_noise(x0, noise)``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    start = 0 if strength == 1.0 else skipped_steps(num_inference_steps, strength)  # (from_config checks the steps)
    return SAMPLERS[name][0].from_config(scheduler_config, num_inference_steps, start=start)


def skipped_steps(num_inference_steps: int, strength: float) -> int:
    """How many of the first steps image-to-image sampling skips: diffusers' ``get_timesteps`` (every sampler here
    has ``order`` 1). SDEdit's strength s keeps the last ``int(n * s)`` of n steps."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    if kept < 1:
        raise ValueError(f"strength {strength} keeps no step of {num_inference_steps}; raise the strength or the steps")
    return num_inference_steps - kept


def sample_loop(
    sampler: Sampler, denoise: Callable[[jax.Array, jax.Array], jax.Array], initial_sample: jax.Array
) -> jax.Array:
    """Runs all ``sampler.num_steps`` steps in one ``jax.lax.fori_loop`` and returns the final sample.

    ``denoise(model_input, timestep)`` is the model (UNet with guidance, ...) at a scalar ``timestep``
    (int32; float32 for Euler, whose timesteps may be fractional). ``initial_sample`` is
    ``noise * sampler.init_noise_sigma``. Call it inside the jitted function that holds the UNet, so that
    the UNet compiles once into the loop body.
    """

    def body(i, carry):
        sample, state = carry
        model_output = denoise(sampler.scale_model_input(sample, i), sampler.timesteps[i])
        return sampler.step(state, model_output, i, sample)

    carry = (initial_sample, sampler.init_state(initial_sample))
    final_sample, _ = jax.lax.fori_loop(0, sampler.num_steps, body, carry)
    return final_sample
