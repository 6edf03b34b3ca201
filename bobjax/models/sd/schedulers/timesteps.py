"""Which training timesteps an n-step sampler visits (``timestep_spacing``), as diffusers chooses them.

Users compare our images with diffusers pipelines, so the visited timesteps must be diffusers' exactly,
including its quirks (``leading`` adds ``steps_offset``; ``trailing`` starts at T - 1). The spacings follow
Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al., 2023).
DPM-Solver spaces its steps differently and keeps its own rule in ``dpm_solver.py``.
"""

from __future__ import annotations

import numpy as np


def check_num_inference_steps(num_inference_steps: int, num_train_timesteps: int) -> None:
    if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool):
        raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps = {num_inference_steps} must be between 1 and the config's "
            f"num_train_timesteps = {num_train_timesteps}"
        )


def trailing_timesteps(start: int, num_train_timesteps: int, num_inference_steps: int) -> np.ndarray:
    """``round(start - k T/n) - 1`` for k = 0.. while positive, at most n of them.

    diffusers computes these with ``np.arange(start, 0, -T/n)``, which for some n (61, 103, 121, ...) rounds
    into one extra step at timestep -1 (an index that wraps to t = T - 1). We keep diffusers' values and drop
    that spurious step, so such an n gives n steps.
    """
    step = num_train_timesteps / num_inference_steps
    return np.round(np.arange(start, 0, -step)[:num_inference_steps]) - 1


def spaced_timesteps(
    spacing: str, num_train_timesteps: int, num_inference_steps: int, steps_offset: int
) -> np.ndarray:
    """Visited timesteps, descending, float64; ``linspace`` ones are fractional (DDIM and PNDM round them)."""
    check_num_inference_steps(num_inference_steps, num_train_timesteps)
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_inference_steps)[::-1].copy()
    if spacing == "leading":
        step = num_train_timesteps // num_inference_steps
        return (np.arange(num_inference_steps) * step)[::-1].astype(np.float64) + steps_offset
    if spacing == "trailing":
        return trailing_timesteps(num_train_timesteps, num_train_timesteps, num_inference_steps)
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; expected 'leading', 'trailing' or 'linspace'")
