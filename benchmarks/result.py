"""The one machine-readable line each benchmark prints per workload, which ``run_all.py`` collects.

``RESULT {"workload": ..., "ours": x, "torch": y, "unit": "images/s"}``: throughputs (higher is better) of bobjax
and of the PyTorch reference, timed in the same process on the same inputs.
"""

from __future__ import annotations

import json

PREFIX = "RESULT "


def emit(workload: str, ours: float, torch: float, unit: str) -> None:
    print(PREFIX + json.dumps({"workload": workload, "ours": ours, "torch": torch, "unit": unit}), flush=True)


def parse(output: str) -> list[dict]:
    """The results in a benchmark's standard output."""
    return [json.loads(line[len(PREFIX):]) for line in output.splitlines() if line.startswith(PREFIX)]
