"""benchmarks/counts.py (the bookkeeping of a CUB-shaped run at the paper's counts) still runs and prints a row per
stage, at one synthetic image per class: the numbers mean nothing here, the script working does."""

import pytest
import os
import subprocess
import sys

from demo_run import ROOT, xla_flags


@pytest.mark.slow
def test_counts_prints_every_stage_at_each_count():
    env = dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "counts.py"), "--per_class=1,2"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("200 classes x 5 shots")[1]
    for stage in ("plan", "write synthetic set", "fixed-noise grid", "PNG export", "classifier's label scan",
                  "classifier input: streams", "report"):
        assert f"\n{stage} " in table, stage
