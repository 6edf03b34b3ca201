"""A run whose workdir is on Cloud Storage (``--workdir=gs://fake-bucket/run``), against the fake of
tests/helpers/fake_gcs.py: every artifact lands in the bucket and none in the local folder, a run killed at its first
checkpoint resumes from the checkpoint in the bucket, and an unsupported scheme stops the command before any stage.

What the fake does not cover: the real Cloud Storage clients. epath's ``gs://`` goes through TensorFlow's GCS file
system when TensorFlow is installed (as in bobjax); here it goes through fsspec (the backend epath uses without
TensorFlow), so both are epath's API but not the same code. orbax's arrays (tensorstore's ``gcs`` driver) and the
TensorBoard event files (TensorFlow's GCS file system) are written to the fake bucket's folder by patching the
path they are given. ArrayRecord's reader and orbax's bucket check (google-cloud-storage) are the real ones, through
their own GCS clients, against a fake server of downloads and bucket metadata (they upload nothing for bobjax).
"""

import importlib
import os
import sys
from unittest import mock

import pytest
from absl import flags
from absl.testing import flagsaver
from demo_run import demo_config
from etils.epath import backend, gpath
from fake_gcs import FakeGcsFileSystem, MediaServer, local
from orbax.checkpoint._src.path import gcs_utils
from tiny_sd import make_tiny_sd

from bobjax import artifacts, config_lib, main, run_folder
from bobjax.data.tfds_writer import read_dataset
from bobjax.generate import stage as generate
from bobjax.training import loop

WORKDIR = "gs://fake-bucket/run"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo's single BOB run, small: 3 classes x 2 shots, 6 fine-tuning steps (checkpoints at 2, 4, 6) of the minimal
# tiny SD 1.x (tests/helpers/tiny_sd.py; what the run stores does not depend on the model, and the shipped prior's
# programs take several times as long to compile) at 16 px, 2 images per class from 2 sampler steps, one classifier
# step per epoch.
TINY = {"data.toyworld.num_classes": 3, "data.shots": 2, "data.toyworld.val_per_class": 1,
        "data.toyworld.test_per_class": 2, "finetune.epochs": 2, "finetune.batch_size": 2, "finetune.resolution": 16,
        "finetune.warmup_steps": 0, "finetune.checkpoint_every": 2, "finetune.sample_every": 0,
        "generate.images_per_class": 2, "generate.steps": 2, "generate.resolution": 16, "generate.batch_size_per_device": 6,
        "classify.epochs": 2, "classify.steps_per_epoch": 1, "classify.batch_size": 8, "classify.image_size": 32,
        "classify.warmup_epochs": 0, "report.oracle_steps": 0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """:data:`TINY` with the minimal tiny SD 1.x as ``model.sd``."""
    return {**TINY, "model.sd": make_tiny_sd(tmp_path_factory.mktemp("sd1"), "sd1", minimal=True)}


def tiny_args(run):
    return ("--config.compare.methods=", *(f"--config.{key}={value}" for key, value in run.items()))


class _Killed(Exception):
    pass


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """``gs://`` served from ``tmp_path/gcs`` (see tests/helpers/fake_gcs.py); the test runs in an empty
    ``tmp_path/cwd``."""
    root = str(tmp_path / "gcs")
    os.makedirs(os.path.join(root, "fake-bucket"))
    monkeypatch.setattr(FakeGcsFileSystem, "root", root)
    registry = importlib.import_module("fsspec.registry")._registry  # No public way to undo a registration.
    for protocol in FakeGcsFileSystem.protocol:
        monkeypatch.setitem(registry, protocol, FakeGcsFileSystem)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath's fsspec backend, not TensorFlow's GCS.
    backend.fsspec_backend._get_filesystem.cache_clear()
    FakeGcsFileSystem.clear_instance_cache()
    server = MediaServer(root)
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", server.endpoint)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
    gcs_utils.get_bucket.cache_clear()  # Its client knows the server of the test that made it.
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", lambda path: {"driver": "file", "path": local(root, path)})
    writer = loop.writer
    monkeypatch.setattr(loop, "writer", lambda folder: writer(local(root, folder)))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    yield root
    server.shutdown()
    server.server_close()
    backend.fsspec_backend._get_filesystem.cache_clear()
    gcs_utils.get_bucket.cache_clear()


def command(*args):
    """``python -m bobjax.main --config=configs/demo.py ARGS`` in this process, where the fake is."""
    argv = ["bobjax", "--config=" + os.path.join(ROOT, "configs", "demo.py"), *args]
    with flagsaver.flagsaver(), mock.patch.object(sys, "argv", argv):  # config_flags finds overrides in sys.argv.
        flags.FLAGS(argv)
        main.main([])


@pytest.mark.slow
def test_a_killed_run_in_a_bucket_resumes_there_and_writes_nothing_locally(fake_gcs, tiny_run, one_device,
                                                                            monkeypatch):
    save = loop.Checkpoints.save
    saved = []

    def save_then_die(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(loop.Checkpoints, "save", save_then_die)
        with pytest.raises(_Killed):
            command(f"--workdir={WORKDIR}", *tiny_args(tiny_run))
    run = local(fake_gcs, WORKDIR)
    assert os.path.exists(os.path.join(run, "captions", run_folder.COMPLETE))
    assert os.listdir(os.path.join(run, "finetune", "checkpoints")) == ["2"]
    assert not os.path.exists(os.path.join(run, "finetune", run_folder.COMPLETE))

    def recorded(self, step, *args, **kwargs):
        saved.append((os.path.basename(os.path.dirname(self.directory)), step))
        save(self, step, *args, **kwargs)

    monkeypatch.setattr(loop.Checkpoints, "save", recorded)
    command(f"--workdir={WORKDIR}", *tiny_args(tiny_run))

    assert saved[:2] == [("finetune", 4), ("finetune", 6)]  # Resumed after step 2, from the bucket.
    assert os.listdir(".") == []
    stages = [s for s in config_lib.STAGES if s != "filter"]  # No config.filter.rule: nothing to filter.
    for stage in stages:
        assert os.path.exists(os.path.join(run_folder.stage_dir(run, stage), run_folder.COMPLETE)), stage
    for name in ("config.json", "splits.json", "weights.json", "timings.json", "finetune/" + run_folder.LORA_FILE,
                 "classify/metrics.json", "report/index.html", "report/results.json", "synthetic/grids/class_0002.png"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert sorted(artifacts.read_json(f"{WORKDIR}/timings.json")) == sorted(stages)
    assert [f for _, _, files in os.walk(fake_gcs) for f in files if ".tmp" in f] == []
    assert not os.path.exists(os.path.join(run, "classify.partial"))  # Dropped once classify was complete.

    _, planned = generate.plan_run(demo_config(**tiny_run), WORKDIR)
    source = read_dataset(f"{WORKDIR}/synthetic")  # ArrayRecord's reader, through the fake download server.
    ids = [source[i]["image_id"].decode() for i in range(len(source))]
    assert sorted(ids) == sorted(p.image_id for p in planned) and len(set(ids)) == len(ids) == 6


@pytest.mark.parametrize("args, named", [
    (("--workdir=ftp://x/y",), "--workdir='ftp://x/y'"),
    (("--workdir=gs:/bucket/run",), "--workdir='gs:/bucket/run'"),
    (("--workdir=foo://",), "--workdir='foo://'"),
    (("--workdir=run", "--config.data.source=folder", "--config.data.data_dir=s3://bucket/birds"),
     "config.data.data_dir='s3://bucket/birds'"),
])
def test_an_unsupported_scheme_stops_the_command_before_any_stage(args, named, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(main, "STAGE_RUNS", {name: lambda config, workdir, name=name: calls.append(name)
                                             for name in config_lib.STAGES})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        command("--config.compare.methods=", "--config.stages=caption", *args)
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 1 and calls == []
    assert error.startswith("bobjax: error: ") and named in error and "gs://BUCKET/PATH" in error, error
    assert not any(name.endswith(":") for name in os.listdir(tmp_path))  # No local folder named after the scheme.
