"""The caption stage: oracle, TSV and VLM methods, resuming after a kill, named errors, and the command line."""

import collections
import hashlib
import json
import os

import pytest
import tensorflow_datasets as tfds
from demo_run import cli, demo_config
from PIL import Image

from bobjax import run_folder
from bobjax.artifacts import ArtifactError
from bobjax.caption import prompts, read_caption_bank, stage
from bobjax.data import DataError, make_splits
from bobjax.errors import ConfigError


def digest(image):
    return hashlib.sha1(image.tobytes()).hexdigest()[:8]


class FakeVLM:
    """Answers "scene <digest>" / "pose <digest>" of each image; dies (like a kill) past ``fail_after`` images."""

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.asked = collections.Counter()  # (image digest, attribute) -> times answered

    def __call__(self, images, prompts_):
        keys = [(digest(i), "background" if p == prompts.question("background", "bird") else "pose")
                for i, p in zip(images, prompts_)]
        seen = {d for d, _ in self.asked} | {d for d, _ in keys}
        if self.fail_after is not None and len(seen) > self.fail_after:
            raise RuntimeError("killed")
        self.asked.update(keys)
        return [f"{'scene' if a == 'background' else 'pose'} {d}." for d, a in keys]


def ground_truth(config):
    train = make_splits(config.data, config.seed).train
    return [train[i] for i in range(len(train))]


def test_oracle_bank_equals_the_toy_worlds_ground_truth(tmp_path):
    config = demo_config()
    stage.run(config, str(tmp_path))
    captions, truth = read_caption_bank(str(tmp_path)), ground_truth(config)
    assert len(captions) == len(truth) == 30
    assert captions.image_ids == [r["image_id"] for r in truth]
    assert captions.labels.tolist() == [r["label"] for r in truth]
    assert captions.class_names == [r["class_name"] for r in truth]
    assert captions.backgrounds == [r["background"] for r in truth]
    assert captions.poses == [r["pose"] for r in truth]
    stats = json.loads((tmp_path / "captions" / "stats.json").read_text())
    assert stats["method"] == "oracle" and stats["images"] == 30 and stats["answers"] == 60 and stats["empty"] == 0


def test_tsv_export_then_import_gives_the_same_bank(tmp_path):
    stage.run(demo_config(), str(tmp_path / "a"))
    tsv_dir = tmp_path / "a" / "captions" / "tsv"
    stage.run(demo_config(**{"caption.method": "tsv", "caption.tsv_dir": str(tsv_dir)}), str(tmp_path / "b"))
    a, b = read_caption_bank(str(tmp_path / "a")), read_caption_bank(str(tmp_path / "b"))
    assert (a.image_ids, a.labels.tolist(), a.class_names, a.backgrounds, a.poses) == (
        b.image_ids, b.labels.tolist(), b.class_names, b.backgrounds, b.poses)
    assert json.loads((tmp_path / "b" / "captions" / "stats.json").read_text())["source"] == str(tsv_dir)


def test_tsv_of_another_split_is_refused_naming_the_row(tmp_path):
    stage.run(demo_config(), str(tmp_path / "a"))
    other_seed = demo_config(**{"seed": 1, "data.toyworld.seed": 1, "caption.method": "tsv",
                                "caption.tsv_dir": str(tmp_path / "a" / "captions" / "tsv")})
    with pytest.raises(DataError, match=r"background.tsv line 2: expected image 'toyworld/train/\d+', found"):
        stage.run(other_seed, str(tmp_path / "b"))


@pytest.mark.parametrize("overrides, message", [
    ({"caption.method": "blip"}, r"config.caption.method is 'blip'; expected one of \('vlm', 'oracle', 'tsv'\)"),
    ({"caption.method": "tsv"}, r"config.caption.method='tsv' needs config.caption.tsv_dir"),
    ({"caption.method": "vlm", "caption.batch_size": 0}, r"config.caption.batch_size must be >= 1, got 0"),
])
def test_bad_caption_config_is_named(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stage.run(demo_config(**overrides), str(tmp_path), make_captioner=FakeVLM)


def image_folder(root, corrupt=()):
    for name in ("a/1.png", "a/2.png", "b/1.png", "b/2.png"):
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        Image.new("RGB", (16, 12), (len(name) * 20, 40, 90)).save(root / name)
    for name in corrupt:
        (root / name).write_bytes(b"not an image")
    return {"data.source": "folder", "data.name": "folder", "data.data_dir": str(root), "data.shots": 0}


def test_oracle_needs_ground_truth_words(tmp_path):
    config = demo_config(**image_folder(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"method='oracle' needs ground-truth .* image 'a/1.png' .* 'vlm' or 'tsv'"):
        stage.run(config, str(tmp_path / "work"))


def test_corrupt_image_stops_the_stage_naming_it(tmp_path):
    # Both of class b's images: the flat folder holds one of them out as its test split, which captioning skips.
    config = demo_config(**image_folder(tmp_path / "data", corrupt=("b/1.png", "b/2.png")), **{"caption.method": "vlm"})
    with pytest.raises(DataError, match=r"cannot read image .*b/[12]\.png"):
        stage.run(config, str(tmp_path / "work"), make_captioner=FakeVLM)
    assert not (tmp_path / "work" / "captions").exists()


def test_unreadable_image_error_gets_the_image_id_when_the_source_left_it_out(tmp_path, monkeypatch):
    from bobjax.data import sources

    def fail(self, index):
        raise DataError("truncated file")

    monkeypatch.setattr(sources.FolderSplit, "__getitem__", fail)
    config = demo_config(**image_folder(tmp_path / "data"), **{"caption.method": "vlm"})
    with pytest.raises(DataError, match=r"^image a/1.png: truncated file$"):
        stage.run(config, str(tmp_path / "work"), make_captioner=FakeVLM)


def cached_ids(workdir):
    with open(os.path.join(run_folder.partial_dir(workdir, "caption"), "responses.jsonl")) as f:
        return [json.loads(line)["image_id"] for line in f]


def test_killed_vlm_run_resumes_and_never_asks_an_image_twice(tmp_path):
    config = demo_config(**{"caption.method": "vlm", "caption.batch_size": 4})
    first, second = FakeVLM(fail_after=10), FakeVLM()
    with pytest.raises(RuntimeError, match="killed"):
        stage.run(config, str(tmp_path), make_captioner=lambda: first)
    assert len(cached_ids(tmp_path)) == 8  # Two whole batches were answered before the kill.
    assert not (tmp_path / "captions").exists()
    stage.run(config, str(tmp_path), make_captioner=lambda: second)

    asked = first.asked + second.asked
    assert len(asked) == 60 and set(asked.values()) == {1}, "every (image, question) answered exactly once"
    assert len(second.asked) == 44
    truth = ground_truth(config)
    captions = read_caption_bank(str(tmp_path))
    assert captions.image_ids == [r["image_id"] for r in truth]
    assert captions.backgrounds == [f"scene {digest(r['image'])}" for r in truth]
    assert captions.poses == [f"pose {digest(r['image'])}" for r in truth]
    assert sorted(cached_ids(tmp_path)) == sorted(captions.image_ids)


def test_torn_last_line_after_a_kill_is_dropped(tmp_path):
    config = demo_config(**{"caption.method": "vlm", "caption.batch_size": 4})
    with pytest.raises(RuntimeError):
        stage.run(config, str(tmp_path), make_captioner=lambda: FakeVLM(fail_after=4))
    with open(os.path.join(run_folder.partial_dir(str(tmp_path), "caption"), "responses.jsonl"), "a") as f:
        f.write('{"image_id": "toyworld/train/0000')  # A kill in the middle of the next batch's write.
    rerun = FakeVLM()
    stage.run(config, str(tmp_path), make_captioner=lambda: rerun)
    assert len(rerun.asked) == 2 * 26
    ids = cached_ids(tmp_path)
    assert len(ids) == len(set(ids)) == 30


def test_answers_of_another_caption_config_are_refused_but_batch_size_may_change(tmp_path):
    config = demo_config(**{"caption.method": "vlm", "caption.batch_size": 4})
    with pytest.raises(RuntimeError):
        stage.run(config, str(tmp_path), make_captioner=lambda: FakeVLM(fail_after=4))
    with pytest.raises(ArtifactError, match=r"another caption config .* --redo=caption"):
        stage.run(demo_config(**{"caption.method": "vlm", "caption.max_new_tokens": 5}), str(tmp_path),
                  make_captioner=FakeVLM)
    rerun = FakeVLM()
    stage.run(demo_config(**{"caption.method": "vlm", "caption.batch_size": 3}), str(tmp_path),
              make_captioner=lambda: rerun)
    assert len(rerun.asked) == 2 * 26


class LeakyVLM:
    """Names the class in every first background answer, and never answers the pose."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images, prompts_):
        self.calls += 1
        return ["" if "pose" in p else ("green grass" if "do not use" in p else "a finch on green grass")
                for p in prompts_]


def test_leaks_and_empty_answers_are_handled_and_counted_in_stats(tmp_path):
    config = demo_config(**{"caption.method": "vlm", "caption.batch_size": 16})
    leaky = LeakyVLM()
    stage.run(config, str(tmp_path), make_captioner=lambda: leaky)
    assert leaky.calls == 4  # Two batches, each asked once and re-asked once.
    captions = read_caption_bank(str(tmp_path))
    assert set(captions.backgrounds) == {"green grass"} and set(captions.poses) == {""}
    stats = json.loads((tmp_path / "captions" / "stats.json").read_text())
    assert stats == {"method": "vlm", "model": config.caption.model, "images": 30, "answers": 60, "empty": 30,
                     "empty_reasked": 30, "leak_reasked": 30, "leak_removed": 0}


def test_command_line_demo_writes_a_bank_tfds_and_read_caption_bank_can_read(tmp_path):
    result = cli("--config=configs/demo.py", f"--workdir={tmp_path}", "--config.stages=caption", "--config.compare.methods=")
    assert result.returncode == 0, result.stderr[-2000:]
    source = tfds.builder_from_directory(str(tmp_path / "captions")).as_data_source(split="train")
    truth = ground_truth(demo_config())
    assert [source[i]["background"].decode() for i in range(len(source))] == [r["background"] for r in truth]
    assert read_caption_bank(str(tmp_path)).poses == [r["pose"] for r in truth]
    assert (tmp_path / "captions" / "COMPLETE").exists()


HOST = """
import json, sys, time
import jax
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2, process_id={process})
sys.path.insert(0, {tests!r})
from demo_run import demo_config
from jax._src import xla_bridge
from bobjax import parallel
from bobjax.caption import read_caption_bank, stage
if {process} == 0:
    time.sleep(3)  # Host 1 reaches the barrier well before the bank exists.
stage.run(demo_config(), {workdir!r})
print(json.dumps({{"main": parallel.is_main_process(), "images": len(read_caption_bank({workdir!r})),
                  "jax_backend_started": xla_bridge.backends_are_initialized()}}))
"""


def test_other_hosts_wait_for_host_0s_bank_without_starting_jax(tmp_path):
    """Two hosts (processes joined by jax.distributed): host 0 captions, host 1 waits at a barrier that needs no
    JAX backend, since a backend would take the GPU memory that host 0's VLM needs."""
    import socket
    import subprocess
    import sys

    from demo_run import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
    hosts = [subprocess.Popen([sys.executable, "-c", HOST.format(port=port, process=p, workdir=str(tmp_path),
                                                                  tests=os.path.join(ROOT, "tests", "helpers"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for p in (0, 1)]
    outputs = [host.communicate(timeout=300) for host in hosts]
    for host, (_, err) in zip(hosts, outputs):
        assert host.returncode == 0, err[-3000:]
    reports = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert reports == [{"main": True, "images": 30, "jax_backend_started": False},
                       {"main": False, "images": 30, "jax_backend_started": False}]
