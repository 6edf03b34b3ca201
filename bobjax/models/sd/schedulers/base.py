"""The contract every sampler keeps, so that a whole sampling run is one ``jax.lax.fori_loop``."""

from __future__ import annotations

from typing import Any

import jax


class Sampler:
    """A diffusion sampler for a fixed number of steps: per-step tables precomputed on the host, as a pytree.

    Subclasses are ``flax.struct`` dataclasses with (at least) these members; ``i`` is the step index
    ``0 .. num_steps - 1`` and may be a traced integer:

    - ``timesteps``: [num_steps] array, the timestep to give the UNet at step ``i`` (diffusers' ``timesteps``).
    - ``init_noise_sigma``: float; the run starts from ``x = noise * init_noise_sigma``, noise ~ N(0, I).
    - ``scale_model_input(x, i)``: the UNet's input at step ``i`` (only Euler scales it).
    - ``init_state(x)``: what ``step`` carries between steps; float32 arrays whose shapes depend only on x's.
    - ``step(state, model_output, i, x) -> (x_next, new_state)``: one solver step; ``x_next`` has x's dtype.
    - ``add_noise(x0, noise)``: a clean sample noised to ``timesteps[0]`` as the diffusers scheduler's
      ``add_noise`` does it there: where image-to-image sampling (SDEdit) starts.

    ``from_config(scheduler_config, num_inference_steps, start=0)`` builds one; ``start > 0`` gives the steps that
    diffusers' image-to-image pipeline runs after skipping the first ``start`` (``timesteps[start:]`` with the
    scheduler's step counters starting afresh, as they do there).

    Call ``step`` once for each ``i`` in order: multistep solvers read their history from ``state`` and
    their warm-up phase from ``i``. Arithmetic is float32 whatever x's dtype (diffusers' DPM-Solver and
    Euler upcast the same way), so bfloat16 latents lose precision only where they are stored.
    """

    @property
    def num_steps(self) -> int:
        """Number of UNet evaluations (PNDM's is one more than num_inference_steps, as in diffusers)."""
        return self.timesteps.shape[0]

    def scale_model_input(self, sample: jax.Array, i: jax.Array | int) -> jax.Array:
        return sample

    def init_state(self, sample: jax.Array) -> Any:
        return ()

    def step(self, state: Any, model_output: jax.Array, i: jax.Array | int, sample: jax.Array):
        raise NotImplementedError

    def add_noise(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        raise NotImplementedError
