"""What tests of the pipeline share: the demo config with overrides, and the command line as users run it."""

import os
import subprocess
import sys

from bobjax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def xla_flags(devices: int = 1) -> str:
    """The session's cheap compilation flags (conftest) for a child process with ``devices`` host devices."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform")]
    return " ".join(flags + ([f"--xla_force_host_platform_device_count={devices}"] if devices > 1 else []))


def cli(*args, timeout=120, env=None):
    """``python -m bobjax.main ARGS`` on one host device, with the session's cheap compilation flags (conftest) and
    the variables of ``env``."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "bobjax.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def demo_config(**overrides):
    """One run of ``configs/demo.py`` (its comparison of methods off unless overridden) with
    ``{"section.field": value}`` overrides."""
    return config_file("demo.py", **{"compare.methods": "", **overrides})


def config_file(name: str, **overrides):
    """``configs/<name>`` with ``{"section.field": value}`` overrides."""
    config = config_lib.load_config_file(os.path.join(ROOT, "configs", name))
    config.unlock()
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config
