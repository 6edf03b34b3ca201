"""What every training loop in bobjax shares (finetune, classify, the toy-world prior's phases).

- :class:`Checkpoints`: orbax checkpoints whose restore puts every array back with the sharding the run has
  *now* (a run killed on 8 devices resumes on 1), and whose async saves complete however the loop ends;
- :func:`due`: the one rule for periodic actions (logging, checkpoints, previews);
- :func:`check_finite` and :class:`TrainingDivergedError`: a NaN or inf loss stops the run before that step is
  checkpointed, so the last checkpoint on disk is the last good one, and the message says where it is;
- :class:`MetricWindow`: step metrics stay on the device until a logging step (reading one waits for it);
- :func:`progress_bar`: tqdm with rate and ETA on the main process.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from bobjax import parallel
from bobjax.errors import UserError


class TrainingDivergedError(UserError):
    """A loss became NaN or inf; the message names what was training, the step and the last good checkpoint."""


def due(done: int, every: int, total: int) -> bool:
    """Whether a periodic action is due after ``done`` of ``total`` steps: every ``every`` steps and after the
    last one; never when ``every`` is 0."""
    return every > 0 and (done % every == 0 or done == total)


def check_finite(loss: float, *, what: str, step: int, checkpoints: Checkpoints, hint: str) -> None:
    """Raises :class:`TrainingDivergedError` if ``loss`` (of ``step``) is NaN or inf; ``hint``: what to change."""
    if not math.isfinite(loss):
        raise TrainingDivergedError(f"{what} loss is {loss} at step {step}: stopped; the last good checkpoint is in "
                                    f"{checkpoints.directory} ({hint})")


def _restore_target(tree):
    """Shapes, dtypes and shardings of the current run's arrays: what orbax restores into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:
    """Named items saved together at a step: ``arrays`` (pytrees of jax arrays) and ``json`` (plain values).

    Use as a context manager around the loop: leaving it (also by an exception or a kill's KeyboardInterrupt)
    waits for the last async save, so the newest complete checkpoint is on disk.
    """

    def __init__(self, directory, max_to_keep: int = 2):
        self.directory = directory  # Local or gs://: orbax commits a gs:// step with a marker file, not a rename.
        self._manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, arrays: dict, json: tuple[str, ...] = ()) -> dict | None:
        """The latest checkpoint's items, each array tree placed like its template in ``arrays`` (a template of
        None restores the tree as it was saved); None if there is no checkpoint."""
        step = self.latest_step()
        if step is None:
            return None
        args = {name: ocp.args.StandardRestore(None if tree is None else _restore_target(tree))
                for name, tree in arrays.items()}
        args.update({name: ocp.args.JsonRestore() for name in json})
        return dict(self._manager.restore(step, args=ocp.args.Composite(**args)))

    def save(self, step: int, arrays: dict, json: dict | None = None) -> None:
        args = {name: ocp.args.StandardSave(tree) for name, tree in arrays.items()}
        args.update({name: ocp.args.JsonSave(value) for name, value in (json or {}).items()})
        self._manager.save(step, args=ocp.args.Composite(**args))

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self._manager.wait_until_finished()


class MetricWindow:
    """Collects each step's metrics (device arrays) and averages them when asked, with the steps per second."""

    def __init__(self):
        self._metrics: list[dict] = []
        self._start = time.perf_counter()

    def add(self, metrics: dict) -> None:
        self._metrics.append(metrics)

    def mean(self, per_row: bool = False) -> dict:
        """Means over the steps since the last call (``{}`` if none), plus ``steps_per_sec``; starts a new window.
        ``per_row``: each metric is a vector (one value per packed grid point), averaged over the steps only."""
        if not self._metrics:
            return {}
        host = jax.device_get(self._metrics)
        average = (lambda values: np.mean(values, axis=0)) if per_row else (lambda values: float(np.mean(values)))
        scalars = {k: average([m[k] for m in host]) for k in host[0]}
        now = time.perf_counter()
        scalars["steps_per_sec"] = len(host) / max(now - self._start, 1e-9)
        self._metrics, self._start = [], now
        return scalars


def progress_bar(total: int, initial: int, desc: str) -> tqdm.tqdm:
    """A bar with rate and ETA, on the main process only."""
    return tqdm.tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=5,
                     disable=not parallel.is_main_process())


def writer(folder):
    """A clu writer of TensorBoard scalars and images in ``folder`` (only logging on other processes); TensorFlow
    writes a ``gs://`` folder through its own Cloud Storage file system."""
    from clu import metric_writers  # Imports TensorFlow: seconds a loop without a writer need not pay.

    return metric_writers.create_default_writer(str(folder), just_logging=not parallel.is_main_process())
