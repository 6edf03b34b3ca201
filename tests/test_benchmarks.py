"""The benchmark entry and real_size.py still run and print their numbers, on their smallest configs with one timed
iteration: the numbers mean nothing here (the suite shares the cores), the scripts working does."""

import json
import os
import re
import subprocess
import sys

import pytest

from demo_run import ROOT, xla_flags


def _run(script, *args):
    # One device, and the cheap compiler settings of conftest: compiling dominates a one-iteration run.
    env = dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], capture_output=True,
                            text=True, cwd=os.path.join(ROOT, "benchmarks"), env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _run_all(tmp_path, *args) -> tuple[list[dict], str]:
    """run_all.py at its tiny sizes, once: (the JSON's rows, the printed table), each row checked for ours, torch and
    their ratio."""
    out = tmp_path / "results.json"
    stdout = _run("run_all.py", "--tiny", "--repeats=1", "--force", f"--json={out}", *args)
    results = json.loads(out.read_text())["results"]
    for row in results:
        assert row["ours"] > 0 and row["torch"] > 0 and row["ratio"] == row["ours"] / row["torch"]
        assert f"| {row['workload']} |" in stdout
    return results, stdout


@pytest.mark.slow
def test_run_all_tabulates_the_workloads_it_is_given(tmp_path):
    """The table and JSON of one workload, the cheapest (the classifier's step): every script is the slow test's."""
    results, _ = _run_all(tmp_path, "--only=classify")
    assert [r["workload"].split()[0] for r in results] == ["classifier"]


@pytest.mark.slow
def test_run_all_prints_one_row_per_workload_with_ours_torch_and_ratio(tmp_path):
    """Slow (about 3 minutes of worker time): six scripts, each its own process importing JAX and torch and
    compiling; the only test that runs unet.py, finetune.py, generate.py, caption.py and quality.py."""
    results, _ = _run_all(tmp_path)
    # unet gives forward and forward+backward; every other script one row per model.
    assert [r["workload"].split()[0].rstrip(",") for r in results] == ["unet", "unet", "LoRA", "generation",
                                                                       "classifier", "captions", "quality"]


def test_run_all_refuses_unknown_workloads():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run_all.py"), "--only=unet,gpu"],
                            capture_output=True, text=True, cwd=os.path.join(ROOT, "benchmarks"),
                            env=dict(os.environ, XLA_FLAGS=xla_flags()))
    assert result.returncode != 0 and "unknown workloads ['gpu']" in result.stderr


@pytest.mark.slow
def test_real_size_prints_its_table():
    stdout = _run("real_size.py", "--config=tiny", "--steps=1", "--backbone=resnet18", "--classify_size=32",
                  "--classes=4", "--classify_batch=2")
    lines = stdout.splitlines()
    assert lines[0] == "real size [tiny, fp32, attention auto] on cpu x1; 1 calls each", lines[0]
    assert lines[1].split()[:3] == ["stage", "wall", "s"] and "host peak GB" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ["setup", "finetune", "generate", "classify"], lines
    for stage, cells in rows.items():
        # stage, wall s, ready s, first s, median s, host peak GB, (when ready), step growth GB, device peak GB
        wall, host_peak, device_peak = float(cells[1]), float(cells[5]), cells[8]
        assert wall > 0 and host_peak > 0.1 and device_peak == "-", cells  # a CPU reports no device peak
        if stage != "setup":  # each stage ran its step: a first call and a timed one
            assert float(cells[3]) > 0 and float(cells[4]) > 0, cells


@pytest.mark.slow
def test_cpu_kernels_and_the_step_profiles_print_their_tables():
    stdout = _run("cpu_kernels.py", "--iters=1", "--ops=resnet50 conv3x3 14px 256->256")
    assert "resnet50 conv3x3 14px 256->256" in stdout and "ratio" in stdout
    stdout = _run("profile_steps.py", "--workload=resnet18", "--batch=2", "--image-size=32", "--steps=1", "--top=5")
    jax_table, torch_table = stdout.split("timm resnet18:")
    # The trace was read: XLA's convolutions are in bobjax's table, aten's in timm's.
    assert "bobjax resnet18:" in jax_table and "conv" in jax_table.split("ms of ops per step")[1]
    assert "aten::" in torch_table
    stdout = _run("profile_steps.py", "--workload=unet", "--unet-config=tiny", "--batch=1", "--steps=1", "--top=5")
    jax_table, torch_table = stdout.split("diffusers unet:")
    assert "bobjax unet:" in jax_table and "aten::" in torch_table


def test_step_bytes_splits_the_compiled_steps_bytes_and_its_sum_meets_xlas_total():
    """The demo's tiny ResNet step on this CPU: the instructions' bytes add up to XLA's own figure (within 10 %: the
    script charges whole operands), and the split names the kinds of a ResNet step."""
    stdout = _run("step_bytes.py", "--config=../configs/demo.py", "--target=cpu")
    ratio = float(re.search(r"sum over instructions [\d.]+ GB \(([\d.]+)x\)", stdout).group(1))
    assert 0.9 <= ratio <= 1.1, stdout
    assert "fusion: convolution/dot" in stdout and "convolution" in stdout.split("by op kind:")[1], stdout
