"""Diffusion schedulers in pure JAX, configured from a diffusers ``scheduler_config`` dict.

- ``NoiseSchedule``: the training-side forward process (``add_noise``, ``get_velocity``, ``training_target``).
- ``make_sampler(name, scheduler_config, num_inference_steps)``: DDIM, PNDM (PLMS), DPM-Solver++ 2M and
  Euler, matching diffusers' schedulers step for step; ``sample_loop`` runs one as a ``fori_loop``.
"""

from bobjax.models.sd.schedulers.base import Sampler
from bobjax.models.sd.schedulers.ddim import DDIMSampler
from bobjax.models.sd.schedulers.dpm_solver import DPMSolverSampler, DPMSolverState
from bobjax.models.sd.schedulers.euler import EulerSampler
from bobjax.models.sd.schedulers.noise_schedule import NoiseSchedule
from bobjax.models.sd.schedulers.pndm import PNDMSampler, PNDMState
from bobjax.models.sd.schedulers.sampling import SAMPLERS, make_sampler, sample_loop

__all__ = [
    "SAMPLERS",
    "DDIMSampler",
    "DPMSolverSampler",
    "DPMSolverState",
    "EulerSampler",
    "NoiseSchedule",
    "PNDMSampler",
    "PNDMState",
    "Sampler",
    "make_sampler",
    "sample_loop",
]
