"""One resumable training phase of the prior (autoencoder, UNet, decoder), on the shared training loop pieces.

A phase restores its latest checkpoint and continues from that step; the batches and randomness of each step
are functions of the step number, so kill + rerun ends where an uninterrupted run ends. A phase whose last
checkpoint is its final step is not run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bobjax.errors import UserError
from bobjax.toyworld.prior.steps import TrainState
from bobjax.training import loop


def run_phase(name: str, folder: str, state: TrainState, step: Callable, batch: Callable[[int], object],
              total_steps: int, *, checkpoint_every: int, log_every: int, writer=None) -> tuple[TrainState, dict]:
    """Runs ``state, metrics = step(state, batch(s))`` for s = (restored step) .. ``total_steps`` - 1.

    Returns the final state and the mean metrics of the last logging window this run saw ({} if it ran no step).
    """
    if total_steps < 1:
        raise UserError(f"config.{name}.steps must be >= 1, got {total_steps}")
    if checkpoint_every < 1 or log_every < 1:
        raise UserError(f"config.checkpoint_every and config.log_every must be >= 1, got {checkpoint_every}, {log_every}")
    checkpoints = loop.Checkpoints(os.path.join(folder, "checkpoints"))
    restored = checkpoints.restore({"state": state})
    if restored is not None:
        state = restored["state"]
    start = int(state.step)
    window = loop.MetricWindow()
    scalars: dict = {}
    with checkpoints, loop.progress_bar(total_steps, start, f"prior: {name}") as bar:
        for s in range(start, total_steps):
            state, metrics = step(state, batch(s))
            window.add(metrics)
            bar.update()
            done = s + 1
            if loop.due(done, log_every, total_steps) or loop.due(done, checkpoint_every, total_steps):
                scalars = window.mean()
                loop.check_finite(scalars["loss"], what=f"prior {name}", step=done, checkpoints=checkpoints,
                                  hint=f"lower config.{name}.learning_rate")
                bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                if writer is not None:
                    writer.write_scalars(done, {f"{name}/{k}": v for k, v in scalars.items()})
            if loop.due(done, checkpoint_every, total_steps):
                checkpoints.save(done, {"state": state})
    return state, scalars
