"""What the classify-stage tests share: a small demo config, and a finished run's saved state as numpy."""

import jax
import numpy as np
import orbax.checkpoint as ocp

from bobjax import classify
from demo_run import demo_config


def enable_compilation_cache(path: str) -> None:
    """Repeated runs of one computation (resumption, reruns) then compile once per test session."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def small_config(**overrides):
    """Demo world, real only, tiny ResNet at 32 px, 3 shots (18 images), batch 8: 3 steps per epoch."""
    return demo_config(**{"classify.mixing": "real_only", "classify.image_size": 32, "classify.batch_size": 8,
                          "classify.epochs": 2, "data.shots": 3, "classify.warmup_epochs": 1,
                          "classify.mix_prob": 1.0, **overrides})


def saved_state(workdir: str) -> dict:
    """The last checkpoint's training state, as host numpy arrays."""
    manager = classify.checkpoint_manager(workdir)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree.map(np.asarray, restored["state"])
