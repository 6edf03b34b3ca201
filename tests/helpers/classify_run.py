"""What the classify-stage tests share: a small demo config, and a finished run's saved state as numpy."""

import contextlib

import jax
import numpy as np

from bobjax.classify import stage as classify
from demo_run import demo_config


@contextlib.contextmanager
def compilation_cache(path: str):
    """Within the block, repeated runs of one computation (a run and its resumption) compile once."""
    settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    previous = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)


def small_config(**overrides):
    """Demo world, real only, tiny ResNet at 32 px, 3 shots (18 images), batch 8, one pass per epoch: 3 steps; lr 1e-3
    (fixed here so that tuning the demo does not move these tests' tolerances)."""
    return demo_config(**{"classify.mixing": "real_only", "classify.image_size": 32, "classify.batch_size": 8,
                          "classify.epochs": 2, "data.shots": 3, "classify.warmup_epochs": 1,
                          "classify.mix_prob": 1.0, "classify.steps_per_epoch": 0,
                          "classify.learning_rate": 1e-3, **overrides})


def saved_state(workdir: str) -> dict:
    """The last checkpoint's training state, as host numpy arrays."""
    restored = classify.checkpoints(workdir).restore({"state": None})
    return jax.tree.map(np.asarray, restored["state"])
