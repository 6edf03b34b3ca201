"""DPM-Solver++ 2M: diffusers' ``DPMSolverMultistepScheduler`` (``algorithm_type="dpmsolver++"``).

A second-order multistep solver of the diffusion ODE in log-SNR time lambda = log(alpha / sigma) (Lu et al.,
2022, "DPM-Solver++"): the linear part of the ODE is integrated exactly, and the data prediction x0 across
the step is corrected to first order in lambda using the previous step's x0 prediction. The first step, and
(diffusers' defaults) the last one, are first order, i.e. DDIM. Every coefficient depends only on the step,
so they are precomputed on the host:

    x_next = sample_coeff[i] * x + x0_coeff[i] * x0_i + previous_x0_coeff[i] * x0_{i-1}
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
from bobjax.models.sd.schedulers.timesteps import check_num_inference_steps, trailing_timesteps

OPTIONS = {
    **cfg.NOISE_SCHEDULE_OPTIONS,
    "prediction_type": cfg.one_of(*cfg.PREDICTION_TYPES, default="epsilon"),
    "solver_order": cfg.one_of(1, 2, default=2),
    # diffusers maps DEIS / UniPC settings onto these when built from such a checkpoint's config.
    "algorithm_type": cfg.one_of("dpmsolver++", "deis", default="dpmsolver++"),
    "solver_type": cfg.one_of("midpoint", "heun", "logrho", "bh1", "bh2", default="midpoint"),
    "lower_order_final": cfg.flag(True),
    "euler_at_final": cfg.flag(False),
    "final_sigmas_type": cfg.one_of("zero", "sigma_min", default="zero"),
    "lambda_min_clipped": cfg.number(-float("inf")),
    "timestep_spacing": cfg.one_of(*cfg.TIMESTEP_SPACINGS, default="linspace"),
    "steps_offset": cfg.int_at_least(0, 0),
    "variance_type": cfg.Option(None, lambda v: v is None, "null (learned-variance models are not supported)"),
    "thresholding": cfg.switched_off(),
    "use_karras_sigmas": cfg.switched_off(),
    "use_exponential_sigmas": cfg.switched_off(),
    "use_beta_sigmas": cfg.switched_off(),
    "use_lu_lambdas": cfg.switched_off(),
    "use_flow_sigmas": cfg.switched_off(),
    "use_dynamic_shifting": cfg.switched_off(),
}


def _timesteps(o: Mapping[str, Any], num_inference_steps: int, cumprod: np.ndarray) -> np.ndarray:
    """diffusers' DPM-Solver spacing: n of n + 1 evenly spaced points (the last, near t = 0, is dropped)."""
    num_train = o["num_train_timesteps"]
    check_num_inference_steps(num_inference_steps, num_train)
    # Timesteps whose log-SNR is below lambda_min_clipped are never visited (for the cosine schedule).
    a = cumprod.astype(np.float64)
    log_snr = 0.5 * (np.log(a) - np.log1p(-a))
    last = num_train - int(np.searchsorted(log_snr[::-1], o["lambda_min_clipped"]))
    spacing = o["timestep_spacing"]
    if spacing == "linspace":
        timesteps = np.linspace(0, last - 1, num_inference_steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        step = last // (num_inference_steps + 1)
        timesteps = (np.arange(num_inference_steps + 1) * step)[::-1][:-1] + o["steps_offset"]
    else:  # trailing
        timesteps = trailing_timesteps(last, num_train, num_inference_steps)
    return timesteps.astype(np.int64)


def _step_coefficients(sigmas: np.ndarray, first_order: np.ndarray, solver_type: str) -> tuple[np.ndarray, ...]:
    """(sample, x0, previous x0) coefficients for each step i: sigmas[i] -> sigmas[i + 1] (float64)."""
    with np.errstate(divide="ignore"):  # a final sigma of 0 is lambda = +inf: the step lands on x0 exactly
        alpha = 1 / np.sqrt(sigmas.astype(np.float64) ** 2 + 1)
        sigma = sigmas * alpha
        log_snr = np.log(alpha) - np.log(sigma)
    alpha_next, sigma_next, sigma_now = alpha[1:], sigma[1:], sigma[:-1]
    h = log_snr[1:] - log_snr[:-1]
    first = -alpha_next * np.expm1(-h)  # first order (DDIM) coefficient of x0
    sample_coeff = sigma_next / sigma_now
    x0_coeff, previous_coeff = first.copy(), np.zeros_like(first)
    for i in np.flatnonzero(~first_order):
        r = (log_snr[i] - log_snr[i - 1]) / h[i]  # previous step length relative to this one
        if solver_type == "midpoint":
            correction = 0.5 * first[i] / r
        else:  # heun
            correction = alpha_next[i] * (np.expm1(-h[i]) / h[i] + 1) / r
        # the correction multiplies (x0_i - x0_{i-1}): the change of x0 along lambda
        x0_coeff[i] += correction
        previous_coeff[i] = -correction
    return sample_coeff, x0_coeff, previous_coeff


@struct.dataclass
class DPMSolverState:
    previous_x0: jax.Array  # the previous step's data prediction, float32


@struct.dataclass
class DPMSolverSampler(Sampler):
    timesteps: jax.Array  # [n] int32
    signal_scale: jax.Array  # [n] alpha_i = 1 / sqrt(sigma_i^2 + 1)
    noise_scale: jax.Array  # [n] sigma_i * alpha_i
    sample_coeff: jax.Array  # [n]
    x0_coeff: jax.Array  # [n]
    previous_x0_coeff: jax.Array  # [n]
    prediction_type: str = struct.field(pytree_node=False)
    init_noise_sigma: float = struct.field(pytree_node=False, default=1.0)

    @classmethod
    def from_config(cls, scheduler_config: Mapping[str, Any], num_inference_steps: int, start: int = 0) -> DPMSolverSampler:
        o = cfg.read_options(scheduler_config, OPTIONS, reader="the dpmpp_2m sampler")
        cumprod = alphas_cumprod(o)
        timesteps = _timesteps(o, num_inference_steps, cumprod)
        all_sigmas = noise_to_signal(cumprod)
        sigmas = np.interp(timesteps, np.arange(len(all_sigmas)), all_sigmas)
        sigmas = np.append(sigmas, final_sigma(o["final_sigmas_type"], all_sigmas)).astype(np.float32)
        n = len(timesteps)
        last = np.arange(n) == n - 1
        # diffusers' rule for a first-order step: warm-up, or the final one (always, when it lands on sigma 0).
        first_order = (np.arange(n) == 0) | (o["solver_order"] == 1)
        first_order |= last & (
            o["euler_at_final"] or (o["lower_order_final"] and n < 15) or o["final_sigmas_type"] == "zero"
        )
        # A tail (img2img) keeps the full run's final-step rule, and its own first step is first order: diffusers
        # counts lower-order steps afresh but judges "final" by the full timestep list.
        timesteps, sigmas, first_order = timesteps[start:], sigmas[start:], first_order[start:].copy()
        first_order[0] = True
        solver_type = "heun" if o["solver_type"] == "heun" else "midpoint"
        coefficients = _step_coefficients(sigmas, first_order, solver_type)
        alpha = 1 / np.sqrt(sigmas[:-1].astype(np.float64) ** 2 + 1)
        sample_coeff, x0_coeff, previous_x0_coeff = (jnp.asarray(c, jnp.float32) for c in coefficients)
        return cls(
            timesteps=jnp.asarray(timesteps, jnp.int32),
            signal_scale=jnp.asarray(alpha, jnp.float32),
            noise_scale=jnp.asarray(sigmas[:-1] * alpha, jnp.float32),
            sample_coeff=sample_coeff,
            x0_coeff=x0_coeff,
            previous_x0_coeff=previous_x0_coeff,
            prediction_type=o["prediction_type"],
        )

    def init_state(self, sample: jax.Array) -> DPMSolverState:
        return DPMSolverState(previous_x0=jnp.zeros(sample.shape, jnp.float32))

    def step(self, state: DPMSolverState, model_output: jax.Array, i: jax.Array | int, sample: jax.Array):
        x, out = sample.astype(jnp.float32), model_output.astype(jnp.float32)
        signal, noise = self.signal_scale[i], self.noise_scale[i]
        if self.prediction_type == "epsilon":
            x0 = (x - noise * out) / signal
        elif self.prediction_type == "v_prediction":
            x0 = signal * x - noise * out
        else:  # sample
            x0 = out
        x_next = self.sample_coeff[i] * x + self.x0_coeff[i] * x0 + self.previous_x0_coeff[i] * state.previous_x0
        return x_next.astype(sample.dtype), DPMSolverState(previous_x0=x0)

    def add_noise(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        return self.signal_scale[0] * x0 + self.noise_scale[0] * noise
