"""launch/tpu_vm.sh against a fake gcloud (tests/helpers/fake_gcloud.py) whose two workers are folders on this machine.

Worker 0's python3 is 3.10 (the stock TPU images'), so the launcher must get 3.11 from uv (here a fake uv that makes
the venv with pyenv's 3.11, offline); worker 1's is 3.11. The job is a small script (BOBJAX_TPU_RUN) and the install
a check (BOBJAX_TPU_INSTALL), so no test installs bobjax; the real install and run lines are tested on their own.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY310, PY311 = "/root/.pyenv/versions/3.10.13/bin/python3", "/root/.pyenv/versions/3.11.7/bin/python3"
pytestmark = pytest.mark.skipif(not (os.path.exists(PY310) and os.path.exists(PY311)),
                                reason=f"needs pyenv's {PY310} and {PY311} for the workers' pythons")

JOB = """import os, sys, time
print("job", open("version.txt").read().strip(), "python %d.%d" % sys.version_info[:2],
      "expect=" + os.environ.get("BOBJAX_ACCELERATOR", ""), "args=" + repr(sys.argv[1:]), flush=True)
while not os.path.exists(os.path.expanduser("~/release")):
    time.sleep(0.05)
print("job done", flush=True)
"""
FAKE_UV = f"""#!/bin/bash
echo "$@" >> ~/uv-calls
[[ "$1 $2 $3 $4" == "venv --seed --python 3.11" && $# == 5 ]] || {{ echo "fake uv: unexpected $*" >&2; exit 2; }}
exec {PY311} -m venv --without-pip "$5"
"""
CHECK_INSTALL = 'python -c "import sys; assert sys.version_info >= (3, 11)" && pwd >> ~/installs'
FLAGS = ["--config=configs/cub.py:method=bob", "--workdir=gs://bucket/a run", "--config.caption.prompt=it's"]


@pytest.fixture
def tpu(tmp_path):
    """The fake TPU (two workers), a small repository holding the launcher, and the environment to run it in."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "launch", repo / "launch")
    (repo / "job.py").write_text(JOB)
    (repo / "version.txt").write_text("v1\n")
    (repo / "old.py").write_text("")
    for junk in (".git/HEAD", ".venv/bin/python", "runs/cub/COMPLETE", "pkg/__pycache__/m.pyc", "b.egg-info/PKG-INFO"):
        (repo / junk).parent.mkdir(parents=True, exist_ok=True)
        (repo / junk).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'tests' / 'helpers' / 'fake_gcloud.py'} \"$@\"\n")
    fake_tpu = tmp_path / "tpu"
    for i, python in enumerate((PY310, PY311)):
        (fake_tpu / f"worker-{i}" / "home").mkdir(parents=True)
        wbin = fake_tpu / f"worker-{i}" / "bin"
        wbin.mkdir()
        (wbin / "python3").symlink_to(python)
        (wbin / "uv").write_text(FAKE_UV)
        (wbin / "hostname").write_text(f"#!/bin/sh\necho t1v-n-fake-w-{i}\n")
        for f in ("uv", "hostname"):
            (wbin / f).chmod(0o755)
    (bin_dir / "gcloud").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_TPU_ROOT": str(fake_tpu),
           "BOBJAX_TPU_RUN": "python job.py", "BOBJAX_TPU_INSTALL": CHECK_INSTALL}
    yield repo, fake_tpu, env
    for pidfile in fake_tpu.glob("worker-*/home/bobjax-job.pid"):  # No job outlives the test.
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def launcher(repo, env, *args, check=True):
    result = subprocess.run(["bash", str(repo / "launch" / "tpu_vm.sh"), "my-tpu", "us-west4-a", *args], env=env,
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def home(fake_tpu, i):
    return fake_tpu / f"worker-{i}" / "home"


def wait_for(path, text, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text() if path.exists() else 'missing'}")


def alive(fake_tpu, i):
    """Whether worker i's job runs (a zombie, left where nothing reaps orphans, does not)."""
    stat = pathlib.Path(f"/proc/{(home(fake_tpu, i) / 'bobjax-job.pid').read_text().strip()}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_launch_follow_status_stop_and_relaunch(tpu):
    repo, fake_tpu, env = tpu
    launcher(repo, env, *FLAGS)
    # The ssh sessions have ended (the fake gcloud hung them up and killed their process groups): jobs run on.
    for i in (0, 1):
        log = wait_for(home(fake_tpu, i) / "bobjax-job.log", "job v1")
        assert f"python 3.11 expect=tpu args={FLAGS!r}" in log
        assert alive(fake_tpu, i)
        assert (home(fake_tpu, i) / "installs").read_text() == f"{home(fake_tpu, i) / 'bobjax'}\n"
        # A clean tree: no .git, venvs, runs/, caches.
        copied = sorted(str(p.relative_to(home(fake_tpu, i) / "bobjax"))
                        for p in (home(fake_tpu, i) / "bobjax").rglob("*"))
        launch = [f"launch/{p.name}" for p in (repo / "launch").iterdir()]
        assert copied == sorted(["job.py", "launch", *launch, "old.py", "pkg", "version.txt"])
    # Worker 0 (python3 3.10) got its 3.11 from uv; worker 1 (3.11) from python3, without uv.
    uv_calls = (home(fake_tpu, 0) / "uv-calls").read_text()
    assert uv_calls == f"venv --seed --python 3.11 {home(fake_tpu, 0)}/bobjax-venv\n"
    assert not (home(fake_tpu, 1) / "uv-calls").exists()
    for i in (0, 1):
        assert "version = 3.11.7" in (home(fake_tpu, i) / "bobjax-venv" / "pyvenv.cfg").read_text()

    status = launcher(repo, env, "status").stdout
    assert re.search(r"t1v-n-fake-w-0: running \(pid \d+\); job v1", status), status
    assert re.search(r"t1v-n-fake-w-1: running \(pid \d+\); job v1", status), status

    # Follow worker 1's log; stopping the follower (as Ctrl-C) leaves the job running.
    follow = subprocess.Popen(["bash", str(repo / "launch" / "tpu_vm.sh"), "my-tpu", "us-west4-a", "logs", "1"],
                              env=env, stdout=subprocess.PIPE, text=True)
    assert "job v1" in follow.stdout.readline()
    follow.terminate()
    follow.wait(timeout=30)
    assert alive(fake_tpu, 0) and alive(fake_tpu, 1)

    # A second start while the job runs is refused on every worker, and leaves the running copy alone.
    (repo / "version.txt").write_text("v2\n")
    refused = launcher(repo, env, *FLAGS, check=False)
    assert refused.returncode != 0 and "t1v-n-fake-w-0: the job still runs" in refused.stdout
    assert (home(fake_tpu, 0) / "bobjax" / "version.txt").read_text() == "v1\n"

    stopped = launcher(repo, env, "stop").stdout
    assert "t1v-n-fake-w-0: stopped" in stopped and "t1v-n-fake-w-1: stopped" in stopped
    assert not alive(fake_tpu, 0) and not alive(fake_tpu, 1)
    assert "t1v-n-fake-w-0: not running" in launcher(repo, env, "status").stdout

    # Relaunch (resume) over the old copy: the new code runs, no nesting, a file deleted here is gone there.
    (repo / "old.py").unlink()
    launcher(repo, env, *FLAGS)
    for i in (0, 1):
        h = home(fake_tpu, i)
        wait_for(h / "bobjax-job.log", "job v2")
        assert "job v1" in (h / "bobjax-job.log.prev").read_text()
        assert sorted(p.name for p in (h / "bobjax").iterdir()) == ["job.py", "launch", "pkg", "version.txt"]
        assert sorted(p.name for p in h.iterdir() if p.name.startswith("bobjax")) == [
            "bobjax", "bobjax-job.log", "bobjax-job.log.prev", "bobjax-job.pid", "bobjax-venv"]
    assert len((home(fake_tpu, 0) / "uv-calls").read_text().splitlines()) == 1  # The 3.11 venv is kept.

    # A job that ends by itself: status gives its exit code.
    for i in (0, 1):
        (home(fake_tpu, i) / "release").write_text("")
        wait_for(home(fake_tpu, i) / "bobjax-job.exit", "0")
    status = launcher(repo, env, "status").stdout
    assert "t1v-n-fake-w-0: finished, exit code 0" in status and "t1v-n-fake-w-1: finished, exit code 0" in status


def recorded_start(tpu, *flags):
    """The worker command a start sends, with the real install and run lines (gcloud only records)."""
    repo, fake_tpu, env = tpu
    env = {k: v for k, v in env.items() if not k.startswith("BOBJAX_TPU_")} | {"FAKE_GCLOUD_RECORD_ONLY": "1"}
    launcher(repo, env, *flags)
    calls = [json.loads(line) for line in (fake_tpu / "calls.log").read_text().splitlines()]
    assert [c[3] for c in calls] == ["scp", "ssh"]
    assert "--worker=all" in calls[0] and calls[0][-1] == "my-tpu:bobjax.tar.gz"
    return calls[1][-1]


def test_real_install_is_tpu_only_unless_captioning_here(tpu):
    command = recorded_start(tpu, "--config=configs/cub.py")
    assert "BOBJAX_TPU_INSTALL=python\\ -m\\ pip\\ install\\ -q\\ -e\\ \\'.\\[tpu\\]\\'" in command
    assert "torch" not in command
    assert "BOBJAX_TPU_RUN=python\\ -m\\ bobjax.main" in command


def test_caption_here_adds_the_cpu_build_of_the_pinned_torch(tpu):
    command = recorded_start(tpu, "--caption-here", "--config=configs/cub.py")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(r for r in pyproject["project"]["optional-dependencies"]["torch"] if r.startswith("torch=="))
    assert f"install\\ -q\\ {pin}\\ --index-url\\ https://download.pytorch.org/whl/cpu\\ \\&\\&" in command
    assert command.endswith("start --config=configs/cub.py ")  # --caption-here is the launcher's, not bobjax's.


def test_unknown_command_is_an_error(tpu):
    repo, _, env = tpu
    result = launcher(repo, env, "follow", check=False)
    assert result.returncode == 2 and "unknown command 'follow'" in result.stderr
