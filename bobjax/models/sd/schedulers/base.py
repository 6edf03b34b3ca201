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

    Call ``step`` once for each ``i`` in order: multistep solvers read their history from ``state`` and
    their warm-up phase from ``i``. Arithmetic is float32 whatever x's dtype, as in diffusers.
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
