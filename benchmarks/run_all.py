"""Every benchmark at fixed sizes, repeated, on an idle machine: one table (and JSON) of ours, torch and the ratio.

    python benchmarks/run_all.py [--repeats=3] [--json=out.json] [--tiny] [--force]

Each repeat runs each script in a fresh process (compilation caches and allocator state do not carry over), and
each script already interleaves our steps with the reference's and takes medians. The table gives the median over
repeats with the range (min-max). A number taken while something else runs is not a result: two busy cores
starve whichever side runs second, so the script refuses to start while the load average or another process says
the machine is busy (``--force`` runs anyway and marks the table). ``--tiny`` runs the smallest sizes, to check
that everything works, not to measure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import psutil
from result import parse

HERE = os.path.dirname(os.path.abspath(__file__))

# The workloads at the sizes a user gets by default (SD at the benchmarks' "medium" size on CPU).
WORKLOADS = {
    "unet": ["unet.py", "--config=medium", "--batch=8"],
    "finetune": ["finetune.py", "--config=medium"],
    "generate": ["generate.py", "--config=medium", "--batch=2", "--steps=5"],
    "classify": ["classify.py", "--models=resnet50,vit_b16", "--batch=8", "--image-size=224"],
    "caption": ["caption.py"],
    "quality": ["quality.py", "--config=b16", "--images=32"],
}
TINY = {
    "unet": ["unet.py", "--config=tiny", "--iters=1"],
    "finetune": ["finetune.py", "--config=tiny", "--iters=1"],
    "generate": ["generate.py", "--config=tiny", "--batch=1", "--steps=2", "--iters=1"],
    "classify": ["classify.py", "--models=resnet18", "--batch=2", "--image-size=32", "--iters=1", "--warmup=1"],
    "caption": ["caption.py", "--images=4", "--batch_size=2", "--max_new_tokens=4"],
    "quality": ["quality.py", "--config=tiny", "--images=8", "--iters=1"],
}
BUSY_LOAD_PER_CORE = 0.25  # 1-minute load average per core above which the machine counts as busy.
BUSY_PROCESS_CPU = 20.0  # % of a core another process may use while we sample.


def busy_reasons() -> list[str]:
    """Why the machine is not idle enough to time anything (empty if it is)."""
    reasons = []
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CORE * cores:
        reasons.append(f"load average {load:.2f} on {cores} cores")
    me = {os.getpid(), os.getppid()}
    procs = [p for p in psutil.process_iter(["name"]) if p.pid not in me]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    for p in procs:
        try:
            used = p.cpu_percent(None)
        except psutil.Error:
            continue
        if used > BUSY_PROCESS_CPU:
            reasons.append(f"{p.info['name']} (pid {p.pid}) uses {used:.0f} % of a core")
    return reasons


def run_script(args: list[str]) -> list[dict]:
    script, *flags = args
    result = subprocess.run([sys.executable, os.path.join(HERE, script), *flags], capture_output=True, text=True,
                            cwd=HERE)
    if result.returncode != 0:
        raise SystemExit(f"benchmarks/{script} failed:\n{result.stderr[-3000:]}")
    results = parse(result.stdout)
    if not results:
        raise SystemExit(f"benchmarks/{script} printed no RESULT line:\n{result.stdout[-3000:]}")
    return results


def summarize(runs: list[list[dict]]) -> list[dict]:
    """Per workload: median and range over repeats of ours, torch and their ratio."""
    rows = []
    for workload in dict.fromkeys(r["workload"] for run in runs for r in run):
        found = [r for run in runs for r in run if r["workload"] == workload]
        ratios = [r["ours"] / r["torch"] for r in found]
        rows.append({"workload": workload, "unit": found[0]["unit"], "repeats": len(found),
                     "ours": statistics.median(r["ours"] for r in found),
                     "torch": statistics.median(r["torch"] for r in found),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| workload | ours | torch | ours/torch (median, range) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['ours']:.3g} {r['unit']} | {r['torch']:.3g} {r['unit']} | "
                     f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}, {r['repeats']} runs) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    parser.add_argument("--tiny", action="store_true", help="smallest sizes: checks that it runs, measures nothing")
    parser.add_argument("--force", action="store_true", help="run on a busy machine (the table says so)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    workloads = TINY if args.tiny else WORKLOADS
    names = [n for n in args.only.split(",") if n] or list(workloads)
    unknown = sorted(set(names) - set(workloads))
    if unknown:
        raise SystemExit(f"--only names unknown workloads {unknown}; expected some of {sorted(workloads)}")
    busy = busy_reasons()
    if busy and not args.force:
        raise SystemExit("the machine is busy, so timings would not mean anything: " + "; ".join(busy)
                         + " (wait, or pass --force)")

    runs = []
    for repeat in range(args.repeats):
        run = []
        for name in names:
            print(f"[{repeat + 1}/{args.repeats}] {name}", file=sys.stderr, flush=True)
            run += run_script(workloads[name])
        runs.append(run)
    rows = summarize(runs)
    machine = f"{os.cpu_count()} CPU cores" + (" (tiny sizes)" if args.tiny else "")
    header = f"{datetime.date.today()}, {machine}" + (f"; BUSY: {'; '.join(busy)}" if busy else "")
    print(header)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "machine": machine, "busy": busy, "results": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
