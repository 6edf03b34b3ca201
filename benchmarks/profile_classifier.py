"""Where a classifier training step spends its time, op kind by op kind, in bobjax (jax.profiler) and timm
(torch.profiler), side by side: the profile behind ``benchmarks/classify.py``'s ratio.

    python benchmarks/profile_classifier.py --model resnet50 --batch 8 --steps 3

JAX side: the step of ``classify.py`` under ``jax.profiler.trace``; every XLA thunk's time from the trace, grouped
by HLO op kind (``convolution.12`` -> ``convolution``; fusions by their kind). torch side: ``torch.profiler``'s
self CPU time per aten op. Both per step, in ms, with their share of the step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax
import jax.numpy as jnp
from classify import TIMM_NAMES, make_jax_step, make_torch_step

# Trace events that are not XLA's work on the step: Python frames, PjRt's dispatch wrappers, the profiler itself.
_NOT_OPS = re.compile(r"^\$|PjRt|Pjit|Execute|Buffer|Allocate|ParseArguments|Handle inputs|GarbageCollect|"
                      r"CollectGarbage|ThunkExecutor|TfrtCpu")


def _kind(name: str) -> str:
    return re.sub(r"[._]\d+$", "", name.split(":")[0])


def jax_profile(name: str, batch: int, size: int, steps: int) -> dict[str, float]:
    """{HLO op kind: ms per step}."""
    run, _ = make_jax_step(name, batch, size, jnp.float32)
    for _ in range(2):
        run()
    folder = tempfile.mkdtemp(prefix="bobjax-profile-")
    with jax.profiler.trace(folder):
        for _ in range(steps):
            run()
    (trace,) = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)
    with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not _NOT_OPS.search(event["name"]):
            totals[_kind(event["name"])] += event.get("dur", 0.0) / 1e3 / steps
    return dict(totals)


def torch_profile(name: str, batch: int, size: int, steps: int) -> dict[str, float]:
    """{aten op: self CPU ms per step}."""
    import torch

    run = make_torch_step(name, batch, size, bf16=False)
    for _ in range(2):
        run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    return {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}


def _print(title: str, totals: dict[str, float], top: int) -> None:
    step = sum(totals.values())
    print(f"\n{title}: {step:.0f} ms of ops per step")
    for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {op:48s} {ms:8.1f} ms  {ms / step * 100:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=sorted(TIMM_NAMES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    _print(f"bobjax {args.model}", jax_profile(args.model, args.batch, args.image_size, args.steps), args.top)
    _print(f"timm {args.model}", torch_profile(args.model, args.batch, args.image_size, args.steps), args.top)


if __name__ == "__main__":
    main()
