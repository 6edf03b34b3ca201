"""``python -m bobjax.aot`` joining rows of earlier runs (``--rows_from``, one stage per process at real size) and
printing them: every row and every "does not fit" line of each file, in order, under the target's own device count,
in the table's columns; a file written for another target is refused by name. (The comparison's roofline bound
under the table is ``bobjax.aot.cell``'s, tested in tests/test_aot_counts.py.)

The rows are written here by hand (not by ``bobjax.aot.report``), with round numbers whose printed form is known.
"""

import json
import os
import subprocess
import sys

from demo_run import ROOT, xla_flags

GiB = 2**30


def hand_row(stage, program, *, temporaries_gib, total_gib, tflop, bound_s, calls, work):
    return {"stage": stage, "program": program, "work": work, "arguments": 2 * GiB, "outputs": GiB // 4,
            "aliased": GiB // 4, "temporaries": int(temporaries_gib * GiB), "code": 0, "flops": tflop * 1e12,
            "bytes_accessed": 40e9, "calls": calls, "compile_s": 12.0, "attention": {"summary": "pallas 16, xla 32"},
            "total": int(total_gib * GiB), "bound_s": bound_s,
            "stage_bound_s": bound_s * calls if calls is not None else None, "device_bytes": 16 * GiB,
            "jax_usable_bytes": 16 * GiB, "headroom": 1 - total_gib / 16}


LORA = hand_row("finetune", "LoRA step", temporaries_gib=1.5, total_gib=4.0, tflop=2.5, bound_s=0.125, calls=7200,
                work="batch 8 at 512 px")
SAMPLER = hand_row("generate", "sampler call", temporaries_gib=14.0, total_gib=15.5, tflop=661.954, bound_s=3.5,
                   calls=None, work="batch 16, 50 steps")
TOO_BIG = "generate sampler call needs 15.50 GiB per device on v5e:2x4: change generate.batch_size"


def write(path, target, rows, does_not_fit):
    with open(path, "w") as f:
        json.dump({"target": target, "argv": [], "date": "2026-12-07", "rows": rows, "does_not_fit": does_not_fit,
                   "comparison_bound": None}, f)
    return str(path)


def aot(*args):
    env = dict(os.environ, XLA_FLAGS=xla_flags(), PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "bobjax.aot", "--config=configs/cub.py", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_rows_from_earlier_runs_are_joined_in_order_and_printed(tmp_path):
    first = write(tmp_path / "finetune.json", "v5e:2x4", [LORA], [])
    second = write(tmp_path / "generate.json", "v5e:2x4", [SAMPLER], [TOO_BIG])
    out = tmp_path / "joined.json"
    result = aot("--target=v5e:2x4", "--stages=", f"--rows_from={first},{second}", f"--json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()

    assert f"DOES NOT FIT: {TOO_BIG}" in lines
    title = next(i for i, line in enumerate(lines) if line.startswith("bobjax.aot "))
    assert lines[title].startswith("bobjax.aot v5e:2x4 (8 devices): ")  # the target's devices, not this machine's
    header = lines[title + 2].split()
    assert header[:3] == ["stage", "program", "args"] and "attention;" in header
    # args 2.00, out 0.25, alias 0.25, temp, code, total, share of the 16 GiB device, TFLOP, GB accessed, bound s,
    # calls, stage hours (bound x calls), compile s, then the attention summary and the work.
    assert lines[title + 3].split() == [
        "finetune", "LoRA", "step", "2.00", "0.25", "0.25", "1.50", "0.00", "4.00", "25%", "2.500", "40.0", "0.125",
        "7200", "0.25", "12", "pallas", "16,", "xla", "32;", "batch", "8", "at", "512", "px"]
    assert lines[title + 4].split()[:16] == [
        "generate", "sampler", "call", "2.00", "0.25", "0.25", "14.00", "0.00", "15.50", "97%", "661.954", "40.0",
        "3.500", "-", "-", "12"]
    # The sampler call's bound per image: 3.5 s for 8 images per device x 8 devices of one host.
    assert lines[title + 5] == ("generate: 64 images per sampler call per host (8 per device x 8), 1 host(s) at once: "
                                "roofline bound 0.0547 s per image per host, 0.0547 s per image on v5e:2x4")
    assert lines[title + 6:] == []  # configs/cub.py is one run, not a comparison: no roofline bound of a cell

    joined = json.load(open(out))
    assert joined["target"] == "v5e:2x4"
    assert joined["rows"] == [LORA, SAMPLER]
    assert joined["does_not_fit"] == [TOO_BIG]


def test_rows_from_another_target_are_refused_by_name(tmp_path):
    other = write(tmp_path / "h100.json", "h100", [LORA], [])
    result = aot("--target=v5e:2x4", "--stages=", f"--rows_from={other}")
    assert result.returncode != 0
    assert f"--rows_from {other} is for target h100, not v5e:2x4" in result.stderr


def test_an_unknown_program_is_refused_by_name():
    result = aot("--target=v5e:2x4", "--stages=classify", "--programs=packed train stepp")
    assert result.returncode != 0
    assert "--programs: unknown ['packed train stepp'] for --stages=classify" in result.stderr
    assert "'packed train step'" in result.stderr  # the names it knows
