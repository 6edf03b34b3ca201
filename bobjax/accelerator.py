"""The accelerator a run expects, and JAX's reason when it lands on the CPU instead.

Where the GPU or TPU backend cannot start (an NVIDIA driver too old for the CUDA 13 plugin, no plugin installed,
``JAX_PLATFORMS=cpu``), JAX logs one warning and runs everything on the CPU: a GPU job of hours would run for
weeks. A launcher says what it was started for with ``BOBJAX_ACCELERATOR`` (``launch/slurm_gpu.sbatch`` sets
``gpu``, the Cloud TPU launcher ``tpu``; ``any``, the default, and ``cpu`` expect nothing), and a run that finds
another platform stops before any stage with one line giving JAX's reason. Without an expectation, a real config
(not the toy world) on the CPU logs one warning line with that reason.

On a GPU the platform is found in a child process: starting JAX's backend here would take 75 % of the GPU's memory,
which the caption stage's VLM needs first (see :mod:`bobjax.caption.stage`). Elsewhere (a TPU VM, whose runtime
expects one process per host; a backend already started) it is found here.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import subprocess
import sys

import jax
from absl import logging
from jax._src import cloud_tpu_init, hardware_utils, xla_bridge

from bobjax.errors import ConfigError, UserError

VARIABLE = "BOBJAX_ACCELERATOR"
CHOICES = ("any", "gpu", "tpu", "cpu")
_ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


class NoAcceleratorError(UserError):
    """The run was started for a GPU or TPU and JAX found none."""


def expected() -> str:
    value = os.environ.get(VARIABLE, "any").lower() or "any"
    if value not in CHOICES:
        raise ConfigError(f"environment variable {VARIABLE}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def _platforms_setting() -> str:
    return jax.config.jax_platforms or ""


def landing() -> tuple[str, str]:
    """``(platform, reason)``: where JAX runs (``cpu``, ``gpu``, ``tpu``) and, on the CPU, JAX's reason for not
    running on an accelerator. Starts this process's JAX backend."""
    records = []

    class Collect(std_logging.Handler):
        def emit(self, record):
            records.append(record)

    jax_logger, collect = std_logging.getLogger(xla_bridge.__name__), Collect(std_logging.WARNING)
    jax_logger.addHandler(collect)
    try:
        platform = jax.default_backend()
    finally:
        jax_logger.removeHandler(collect)
    platform = "gpu" if platform in ("cuda", "rocm") else platform
    reasons = [f"JAX_PLATFORMS={_platforms_setting()}"] if _platforms_setting() else []
    reasons += [f"the {name} backend failed to start: {error}" for name, error in xla_bridge._backend_errors.items()]
    reasons += [record.getMessage() for record in records]
    if not reasons:
        factories = sorted(xla_bridge._backend_factories)
        gpu = "an NVIDIA GPU is visible" if hardware_utils.has_visible_nvidia_gpu() else "no NVIDIA GPU is visible"
        reasons.append(f"JAX has no GPU or TPU plugin ({gpu}; backends JAX knows: {', '.join(factories)}; install "
                       "bobjax[cuda] or bobjax[tpu])")
    return platform, "; ".join(reasons)


def _landing_in_child() -> tuple[str, str]:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True, env=env, timeout=600)
    if child.returncode:
        return "none", f"JAX's backend did not start in a probe process: {child.stderr.strip()[-1000:]}"
    return tuple(json.loads(child.stdout.strip().splitlines()[-1]))


def _platform_and_reason() -> tuple[str, str]:
    setting = _platforms_setting()
    if setting and not any(p in setting.split(",") for p in _ACCELERATORS):
        return "cpu", f"JAX_PLATFORMS={setting}"
    if xla_bridge.backends_are_initialized() or cloud_tpu_init.running_in_cloud_tpu_vm:
        return landing()
    return _landing_in_child()


def check(config) -> None:
    """Stops a run started for a GPU or TPU that JAX cannot use; warns where a real config runs on the CPU."""
    want = expected()
    real = config.data.source != "toyworld"
    if want == "cpu" or (want == "any" and not real):
        return
    platform, reason = _platform_and_reason()
    if want == "any":
        if platform == "cpu":
            logging.warning("bobjax runs on the CPU, where a real config's stages take days: %s (set %s=cpu to "
                            "accept it)", reason, VARIABLE)
        return
    if platform != want:
        raise NoAcceleratorError(f"{VARIABLE}={want}, but JAX runs on {platform}: {reason}")


if __name__ == "__main__":  # The child of _landing_in_child.
    print(json.dumps(landing()))
