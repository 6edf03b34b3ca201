"""Where a training step spends its time, op kind by op kind, in bobjax (jax.profiler) and the PyTorch reference
(torch.profiler), side by side: the profile behind a benchmark's ratio. Workloads: the classifier steps of
``benchmarks/classify.py`` (timm) and the UNet forward+backward of ``benchmarks/unet.py`` (diffusers).

    python benchmarks/profile_steps.py --workload resnet50 --batch 8 --steps 3
    python benchmarks/profile_steps.py --workload unet --batch 8 --steps 3     # the medium UNet, as unet.py

JAX side: the step under ``jax.profiler.trace``; every XLA thunk's time from the trace, grouped
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


def jax_profile(run, steps: int) -> dict[str, float]:
    """{HLO op kind: ms per step} of ``run``, a function that runs one jitted step and waits for it."""
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


def torch_profile(run, steps: int) -> dict[str, float]:
    """{aten op: self CPU ms per step} of ``run``, a function that runs one torch step."""
    import torch

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


def _steps(workload: str, batch: int, image_size: int, unet_config: str):
    """(our step, the reference's step, the reference's name)."""
    if workload == "unet":
        import unet

        (_, ours), (_, theirs) = unet.timers(unet_config, batch)
        return ours, theirs, "diffusers"
    run, _ = make_jax_step(workload, batch, image_size, jnp.float32)
    return run, make_torch_step(workload, batch, image_size, bf16=False), "timm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="resnet50", choices=sorted(TIMM_NAMES) + ["unet"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224, help="classifiers only")
    parser.add_argument("--unet-config", default="medium", help="the UNet's: a config of benchmarks/sd_setup.py")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    ours, theirs, reference = _steps(args.workload, args.batch, args.image_size, args.unet_config)
    _print(f"bobjax {args.workload}", jax_profile(ours, args.steps), args.top)
    _print(f"{reference} {args.workload}", torch_profile(theirs, args.steps), args.top)


if __name__ == "__main__":
    main()
