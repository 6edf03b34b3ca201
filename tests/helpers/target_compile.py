"""Runs code that compiles for a TPU or NVIDIA target (bobjax.targets) in a fresh Python process.

libtpu and JAX's CUDA plugin print their search for hardware when they start, and the CUDA plugin must be on the
import path before JAX starts: so such code runs in its own process, never in the test process, and prints one
JSON object as its last line of output, which :func:`run` returns.

The CUDA plugin (~4 GB with its NVIDIA libraries) is opt-in: install it into a folder of its own,
``pip install --target /work/cuda-plugin 'jax-cuda13-plugin==0.10.2' 'jax-cuda13-pjrt==0.10.2'`` (the NVIDIA
libraries come with the torch extra here), or point ``BOBJAX_CUDA_PLUGIN`` at such a folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA_PLUGIN = os.environ.get("BOBJAX_CUDA_PLUGIN", "/work/cuda-plugin")


def cuda_plugin_missing() -> str | None:
    """Why NVIDIA targets cannot be compiled for here, or None when they can."""
    if not os.path.isdir(os.path.join(CUDA_PLUGIN, "jax_plugins", "xla_cuda13")):
        return (f"JAX's CUDA plugin is not in {CUDA_PLUGIN} (opt-in, ~4 GB: pip install --target {CUDA_PLUGIN} "
                "'jax-cuda13-plugin==0.10.2' 'jax-cuda13-pjrt==0.10.2', or set BOBJAX_CUDA_PLUGIN)")
    return None


def run(code: str, *, cuda: bool = False, timeout: int = 600) -> dict:
    """Runs ``code`` with the CPU as JAX's only backend (plus the CUDA plugin's topologies when ``cuda``); returns
    the JSON object it printed last."""
    tests = os.path.join(REPO, "tests")
    paths = [os.path.join(tests, "helpers"), tests, REPO] + ([CUDA_PLUGIN] if cuda else [])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(paths))
    if cuda:
        env["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"
        # Without a GPU to autotune on, XLA's Triton GEMM emitter fails on some small dots of the tiny models
        # ("Couldn't find output tile sizes that satisfy hlo: ... dot f32[616,16]"); cuBLAS takes them.
        env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_gpu_enable_triton_gemm=false"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise AssertionError(f"target compile process failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return json.loads(lines[-1])
