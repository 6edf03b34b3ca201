"""One resumable training phase: orbax checkpoints, a tqdm bar with rate and ETA, TensorBoard scalars.

A phase restores its latest checkpoint and continues from that step; the batches and randomness of each step
are functions of the step number, so kill + rerun ends where an uninterrupted run ends. A phase whose last
checkpoint is its final step is not run again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from bobjax.errors import UserError
from bobjax.prior.steps import TrainState


class PretrainingDivergedError(UserError):
    """A loss became NaN or inf; the message names the phase, the step and where the last good checkpoint is."""


def run_phase(name: str, folder: str, state: TrainState, step: Callable, batch: Callable[[int], object],
              total_steps: int, *, checkpoint_every: int, log_every: int, writer=None) -> tuple[TrainState, dict]:
    """Runs ``state, metrics = step(state, batch(s))`` for s = (restored step) .. ``total_steps`` - 1.

    Returns the final state and the mean metrics of the last logging window this run saw ({} if it ran no step).
    """
    if total_steps < 1:
        raise UserError(f"config.{name}.steps must be >= 1, got {total_steps}")
    if checkpoint_every < 1 or log_every < 1:
        raise UserError(f"config.checkpoint_every and config.log_every must be >= 1, got {checkpoint_every}, {log_every}")
    checkpoints = ocp.CheckpointManager(os.path.join(folder, "checkpoints"),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    if checkpoints.latest_step() is not None:
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state = checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(target))
    start = int(state.step)
    window: list[dict] = []
    scalars: dict = {}
    try:
        with tqdm(total=total_steps, initial=start, desc=f"prior: {name}", unit="step", mininterval=10) as bar:
            for s in range(start, total_steps):
                state, metrics = step(state, batch(s))
                window.append(metrics)
                bar.update(1)
                done = s + 1
                if done % log_every == 0 or done == total_steps or done % checkpoint_every == 0:
                    scalars = {k: float(np.mean([jax.device_get(m[k]) for m in window])) for k in window[0]}
                    window = []
                    if not math.isfinite(scalars["loss"]):
                        raise PretrainingDivergedError(
                            f"prior {name} loss is {scalars['loss']} by step {done}: stopped; the last good "
                            f"checkpoint is in {os.path.join(folder, 'checkpoints')} (lower config.{name}.learning_rate)")
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                    if writer is not None:
                        writer.write_scalars(done, {f"{name}/{k}": v for k, v in scalars.items()})
                if done % checkpoint_every == 0 or done == total_steps:
                    checkpoints.save(done, args=ocp.args.StandardSave(state))
    finally:  # Also on a stop: the last good checkpoint's async save completes.
        checkpoints.wait_until_finished()
    return state, scalars
