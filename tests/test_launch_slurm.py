"""``launch/slurm_gpu.sbatch`` end to end under a real SLURM: Debian's slurmctld and slurmd on this machine.

A one-node cluster (2 CPUs, no GPUs) with a generated ``slurm.conf`` and munge key, everything under the test's
tmp folder, the daemons stopped at the end. The script is submitted unchanged with ``sbatch --wait``; what a CPU
node needs is given the way a user overrides the script's GPU defaults: sbatch options on the command line
(``--ntasks-per-node=2 --gpus-per-node=0``) and the environment (``BOBJAX_ACCELERATOR=cpu``). The two tasks run the
tiny BOB pipeline of tests/test_main_multihost.py as one JAX cluster that JAX detects from SLURM's variables.

Needs ``apt-get install -y slurm-wlm munge`` and root (slurmd starts jobs as their user); skips, naming which,
where either is missing or the daemons do not start.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from demo_run import ROOT, xla_flags
from multihost import TINY

from bobjax import run_folder

# Two SLURM jobs of the tiny pipeline (minutes on 2 cores): CI runs them after the default suite.
pytestmark = pytest.mark.slow

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(folder, host: str, munge_socket) -> str:
    return "\n".join([
        "ClusterName=bobjaxtest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge_socket}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}", f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}", f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        # No cgroups (a container may have none to give): processes are tracked by their parent, not confined.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
        "MailProg=/bin/true", f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def _stop(pid_file) -> None:
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), 9)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node SLURM cluster: the environment its client commands need."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip(f"slurmd must run as root to start jobs; this test runs as uid {os.geteuid()}")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool"):
        (folder / sub).mkdir(parents=True)
    (folder / "munge").chmod(0o700)
    key, munge_socket = folder / "munge" / "munge.key", folder / "munge" / "socket"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SBATCH", "SRUN", "JAX_COORDINATOR"))}
    env["SLURM_CONF"] = str(folder / "slurm.conf")
    (folder / "slurm.conf").write_text(_slurm_conf(folder, socket.gethostname().split(".")[0], munge_socket))
    started = []
    try:
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        for command, pid_file in (
                (["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}",
                  f"--log-file={folder / 'munged.log'}", f"--pid-file={folder / 'munged.pid'}",
                  f"--seed-file={folder / 'munge' / 'seed'}"], folder / "munged.pid"),
                (["slurmctld", "-i"], folder / "slurmctld.pid"), (["slurmd"], folder / "slurmd.pid")):
            started.append(pid_file)
            subprocess.run(command, check=True, capture_output=True, env=env)
        deadline = time.monotonic() + 60
        while (state := subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
               ).stdout.strip() != "idle":
            if time.monotonic() > deadline:
                logs = "".join((folder / f).read_text()[-500:] for f in ("slurmctld.log", "slurmd.log")
                               if (folder / f).exists())
                pytest.skip(f"the SLURM daemons did not start (sinfo: {state.stdout.strip()!r} "
                            f"{state.stderr.strip()!r}): {logs}")
            time.sleep(0.5)
    except subprocess.CalledProcessError as e:
        for pid_file in started:
            _stop(pid_file)
        pytest.skip(f"the SLURM daemons did not start: {' '.join(e.cmd)}: {e.stderr.decode(errors='replace')}")
    yield env
    subprocess.run(["scontrol", "shutdown"], capture_output=True, env=env)
    time.sleep(1)
    for pid_file in started:
        _stop(pid_file)


def _venv(folder) -> str:
    """A BOBJAX_VENV for the script: its ``bin/activate`` puts this test's Python first on PATH as ``python``."""
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (folder / "bin" / "python").chmod(0o755)
    (folder / "bin" / "activate").write_text(f'export PATH="{folder / "bin"}:$PATH"\n')
    return str(folder)


def _sbatch(slurm, tmp_path, **env):
    """``sbatch --wait launch/slurm_gpu.sbatch`` of the tiny caption and fine-tuning as 2 tasks on the CPU node:
    the finished job and its log."""
    workdir, log = tmp_path / "run", tmp_path / "job.log"
    env = dict(slurm, BOBJAX_VENV=_venv(tmp_path / "venv"), JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(),
               PYTHONPATH=ROOT, JAX_COORDINATOR_PORT=str(_free_port()), **env)
    job = subprocess.run(
        ["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0",
         f"--output={log}", os.path.join(ROOT, "launch", "slurm_gpu.sbatch"), *TINY, "--config.finetune.epochs=1",
         "--config.stages=caption,finetune", f"--workdir={workdir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return job, log.read_text() if log.exists() else ""


def test_sbatch_runs_two_tasks_as_one_cluster(slurm, tmp_path):
    job, output = _sbatch(slurm, tmp_path, BOBJAX_ACCELERATOR="cpu")
    workdir = tmp_path / "run"
    assert job.returncode == 0, job.stderr + output[-4000:]
    assert "as process 0 of 2" in output and "as process 1 of 2" in output, output[-4000:]
    assert output.count("stage finetune: complete") == 2, output[-4000:]
    assert (workdir / "finetune" / run_folder.LORA_FILE).exists()


def test_sbatch_stops_where_it_finds_no_gpu(slurm, tmp_path):
    """The script asks for a GPU (BOBJAX_ACCELERATOR=gpu unless set): on this CPU node both tasks stop before any
    stage, each with one line naming JAX's reason."""
    job, output = _sbatch(slurm, tmp_path)
    assert job.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("bobjax: error:")]
    assert errors == ["bobjax: error: BOBJAX_ACCELERATOR=gpu, but JAX runs on cpu: JAX_PLATFORMS=cpu"] * 2, output
    assert "stage caption" not in output and not (tmp_path / "run" / "caption").exists()
