"""A fake ``gcloud`` for tests/test_launch_tpu_vm.py: the TPU VM's workers are folders on this machine.

Implements only the forms launch/tpu_vm.sh uses, and refuses any other (exit 2):

    gcloud compute tpus tpu-vm scp --zone=Z --worker=all LOCAL_FILE TPU:PATH
    gcloud compute tpus tpu-vm ssh TPU --zone=Z --worker=all|N --command=CMD

``$FAKE_TPU_ROOT/worker-<i>/`` is worker i: its ``home/`` is the worker's HOME (scp copies into it) and its ``bin/``
comes first on its PATH (a ``python3``, ``uv`` or ``hostname`` of the test's choosing). ``ssh`` runs CMD in
``bash -c`` on each worker in turn, in a session of its own, and like ssh returns once CMD has ended and its output is
closed; then, as when an ssh session ends, the session's process group gets SIGHUP and SIGKILL, so only a job that
left the session survives it. ``$FAKE_TPU_ROOT/calls.log`` records each call, one JSON list a line. With
``FAKE_GCLOUD_RECORD_ONLY=1`` calls are only recorded.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

_sessions: list[subprocess.Popen] = []


def _end_session(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _on_signal(signum, frame):  # Ctrl-C on a following `logs`: the sessions end with the client.
    for proc in _sessions:
        _end_session(proc)
    sys.exit(128 + signum)


def _workers(root: pathlib.Path, which: str) -> list[pathlib.Path]:
    workers = sorted(root.glob("worker-*"), key=lambda p: int(p.name.split("-")[1]))
    return workers if which == "all" else [workers[int(which)]]


def _option(args: list[str], name: str) -> str:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    if len(found) != 1:
        sys.exit(f"fake gcloud: expected one --{name}=..., got {args}")
    return found[0]


def _ssh(root: pathlib.Path, args: list[str]) -> int:
    command = _option(args, "command")
    status = 0
    for worker in _workers(root, _option(args, "worker")):
        home = worker / "home"
        env = {"HOME": str(home), "PATH": f"{worker / 'bin'}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.Popen(["bash", "-c", command], cwd=home, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        _sessions.append(proc)
        for line in proc.stdout:  # Until every process holding the session's output has closed it, as ssh does.
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        status = status or proc.wait()
        _end_session(proc)
    return status


def _scp(root: pathlib.Path, args: list[str]) -> int:
    source, target = [a for a in args if not a.startswith("--")]
    remote = target.split(":", 1)[1]
    for worker in _workers(root, _option(args, "worker")):
        shutil.copy(source, worker / "home" / remote)
    return 0


def main(argv: list[str]) -> int:
    root = pathlib.Path(os.environ["FAKE_TPU_ROOT"])
    with open(root / "calls.log", "a") as f:
        f.write(json.dumps(argv) + "\n")
    if argv[:4] != ["compute", "tpus", "tpu-vm", "ssh"] and argv[:4] != ["compute", "tpus", "tpu-vm", "scp"]:
        print(f"fake gcloud: unsupported command {argv}", file=sys.stderr)
        return 2
    _option(argv, "zone")
    if os.environ.get("FAKE_GCLOUD_RECORD_ONLY"):
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if argv[3] == "scp":
        return _scp(root, argv[4:])
    return _ssh(root, argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
