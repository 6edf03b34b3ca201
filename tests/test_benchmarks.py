"""Every benchmark script still runs and prints its ratio against the PyTorch reference, or (real_size) its table of
times and peak memory (on its smallest config, one timed iteration: the numbers mean nothing here, the script
working does)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMANDS = {
    "caption": ["caption.py", "--images=4", "--batch_size=2", "--max_new_tokens=4"],
    "unet": ["unet.py", "--config=tiny", "--iters=1"],
    "finetune": ["finetune.py", "--config=tiny", "--iters=1"],
    "generate": ["generate.py", "--config=tiny", "--batch=1", "--steps=2", "--iters=1"],
    "classify": ["classify.py", "--models=resnet18", "--batch=2", "--image-size=32", "--iters=1", "--warmup=1"],
    "real_size": ["real_size.py", "--config=tiny", "--steps=1", "--backbone=resnet18", "--classify_size=32",
                  "--classes=4", "--classify_batch=2"],
}
EXPECTED = {"real_size": "peak"}  # What each script's output must contain (default: "ratio").


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_benchmark_runs_and_prints_its_numbers(name):
    script, *args = COMMANDS[name]
    # One device, and the cheap compiler settings of conftest: compiling dominates a one-iteration run.
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], capture_output=True,
                            text=True, cwd=os.path.join(ROOT, "benchmarks"), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECTED.get(name, "ratio") in result.stdout, result.stdout
