"""Several JAX processes on this one CPU machine, launched the way clusters launch ``python -m bobjax.main``.

Each process gets its own host devices (``--xla_force_host_platform_device_count``) and finds the others through
JAX's coordination service, described either by explicit variables (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) or by a one-node SLURM job's variables, from which JAX detects the
cluster itself. CPU collectives between the processes go through gloo, JAX's default on CPU.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys

from demo_run import ROOT, xla_flags

# A BOB pipeline small enough to run in 2 processes on a CPU: every stage, 3 classes, a few steps each.
TINY = ("--config=configs/demo.py", "--config.compare.methods=", "--config.data.toyworld.num_classes=3",
        "--config.data.shots=4", "--config.data.toyworld.test_per_class=4", "--config.data.toyworld.val_per_class=2",
        "--config.finetune.epochs=2", "--config.finetune.batch_size=4", "--config.finetune.checkpoint_every=1",
        "--config.generate.images_per_class=2", "--config.generate.steps=2",
        "--config.generate.batch_size_per_device=1",
        "--config.classify.epochs=2", "--config.classify.steps_per_epoch=2", "--config.classify.batch_size=8")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                    "JAX_PROCESS_ID", "TPU_WORKER"))}
    env.update(XLA_FLAGS=xla_flags(devices),
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra)
    return env


def cluster_env(form: str, processes: int, index: int, port: int) -> dict[str, str]:
    """The variables a launcher gives process ``index`` of ``processes``: ``explicit`` or ``slurm``."""
    if form == "explicit":
        return {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": str(processes),
                "JAX_PROCESS_ID": str(index)}
    if form == "slurm":  # JAX derives the coordinator's port from the job id.
        return {"SLURM_JOB_ID": str(port), "SLURM_NTASKS": str(processes), "SLURM_STEP_NODELIST": "localhost",
                "SLURM_PROCID": str(index), "SLURM_LOCALID": str(index)}
    raise ValueError(form)


def run(args: list[str], *, processes: int, devices: int, form: str = "explicit", logs: str,
        kill_at_save: dict[int, int] | None = None, timeout: float = 600) -> list[int]:
    """Runs ``bobjax.main ARGS`` as ``processes`` processes of ``devices`` devices each; their exit codes.

    ``kill_at_save={index: step}``: that process SIGKILLs itself once its checkpoint of ``step`` is written; the
    others are then killed too, as SLURM ends a job step whose task died. Output goes to ``logs``.<index>.
    """
    port = _free_port() if form == "explicit" else random.randrange(10_000, 60_000)
    procs = []
    for index in range(processes):
        extra = cluster_env(form, processes, index, port) if processes > 1 else {}
        if kill_at_save and index in kill_at_save:
            extra["BOBJAX_TEST_KILL_AT_SAVE"] = str(kill_at_save[index])
        with open(f"{logs}.{index}", "w") as log:
            procs.append(subprocess.Popen([sys.executable, WORKER, *args], cwd=ROOT, env=_env(devices, extra),
                                          stdout=log, stderr=subprocess.STDOUT))
    try:
        if kill_at_save:
            victim = procs[next(iter(kill_at_save))]
            victim.wait(timeout=timeout)
            for p in procs:
                p.kill()
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()


def log(logs: str, index: int = 0) -> str:
    with open(f"{logs}.{index}") as f:
        return f.read()
