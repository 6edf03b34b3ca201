"""A stage's identity (bobjax/identity.py): a run moves between machines, and what is left out of an identity
leaves every output unchanged.

The move (issue 36): captions made with the data on a local disk and ``caption.batch_size=4`` are reused, the VLM not
called and the marker untouched, by a run whose data is a copy elsewhere, and by one whose data is in a (fake)
``gs://`` bucket, with a batch of 8, another mesh and another attention kernel. Markers written before identities
(whole config sections, no ``format``) keep resuming. Each setting left out of an identity is shown to give equal
outputs at two values: the captions at batch 4 and 8 (token-identical), the synthetic images at generation batch 2
and 3 (identical bytes) and with the ``xla`` and ``chunked`` attention kernels, the quality encoder's features and the
filters' decisions at batch 3 and 7; the mesh by tests/test_generate_stage.py (1 and 8 devices, 1e-5),
tests/test_finetune_stage.py (8 devices and FSDP against one) and tests/test_classify_stage_sharding.py.
"""

import functools
import json
import os
import shutil

import numpy as np
import pytest
import test_artifacts_cloud
from fake_gcs import local
from test_data_sources_folders import flat_folder, folder_config
from test_generate_stage import stage_config, tiny_sd_path  # noqa: F401  (a fixture)
from tiny_clip import IMAGE_SIZE, make_tiny_clip
from tiny_vlm import build_tiny_vlm

from bobjax import artifacts, config_lib, identity, main, run_folder, share
from bobjax.artifacts import ArtifactError
from bobjax.caption import read_caption_bank
from bobjax.caption import stage as caption_stage
from bobjax.caption.cache import ResponseCache
from bobjax.caption.vlm import VLMCaptioner
from bobjax.data.tfds_writer import read_dataset
from bobjax.filter import rules
from bobjax.generate import stage as generate
from bobjax.quality import encoders

fake_gcs = test_artifacts_cloud.fake_gcs  # gs:// served from a local folder (a fixture).


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_vlm(str(tmp_path_factory.mktemp("tiny_qwen2_5_vl")))


def caption_config(data_dir, model, batch_size, **overrides):
    """Captions of a 3-class image folder, 2 shots, by the tiny VLM."""
    config = folder_config(data_dir)
    config.stages = "caption"
    config.caption.update(dict(method="vlm", model=model, batch_size=batch_size, max_new_tokens=4))
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def in_process_vlm(monkeypatch, model):
    """main's caption stage asks the tiny VLM in this process (where the fake bucket is); returns its calls."""
    calls = []

    def make():
        captioner = VLMCaptioner(model, 4)
        return lambda images, prompts: calls.append(len(images)) or captioner(images, prompts)

    monkeypatch.setitem(main.STAGE_RUNS, "caption", functools.partial(caption_stage.run, make_captioner=make))
    return calls


def legacy_marker(config, stage):
    """A COMPLETE marker as bobjax wrote it until 2026-12-07: the stage's whole config sections."""
    full = json.loads(config.to_json_best_effort())
    sections = {"caption": ("seed", "data", "caption"), "generate": ("seed", "data", "caption", "model", "finetune",
                                                                    "generate")}[stage]
    return {key: full[key] for key in sections}


def test_captions_move_to_a_copy_of_the_data_and_to_a_bucket_with_another_batch(tmp_path, fake_gcs, tiny_vlm,
                                                                                 monkeypatch):
    data = flat_folder(tmp_path / "birds", per_class=(4, 4, 4))
    workdir = str(tmp_path / "run")
    calls = in_process_vlm(monkeypatch, tiny_vlm)
    main.run(caption_config(data, tiny_vlm, 4), workdir)
    assert calls and max(calls) == 8  # 4 of the 6 train images x 2 questions.
    marker = os.path.join(workdir, "captions", run_folder.COMPLETE)
    recorded = open(marker).read()
    bank = read_caption_bank(workdir)
    assert "data_dir" not in recorded and "batch_size" not in recorded

    copy = shutil.copytree(data, tmp_path / "elsewhere" / "cub_copy")
    shutil.copytree(data, local(fake_gcs, "gs://fake-bucket/data/birds"))
    for data_dir in (str(copy), "gs://fake-bucket/data/birds"):
        calls.clear()
        moved = caption_config(data_dir, tiny_vlm, 8, **{"mesh.data": 2, "model.attention": "xla"})
        assert identity.is_complete(moved, workdir, "caption")
        main.run(moved, workdir)
        assert calls == [], data_dir  # The VLM was not asked again ...
        assert open(marker).read() == recorded  # ... and the stage not marked again.
    assert read_caption_bank(workdir).backgrounds == bank.backgrounds

    # What counts still does: another image in the copy is another dataset.
    flat_folder(copy, per_class=(5, 4, 4))
    identity._images.cache_clear()
    with pytest.raises(ArtifactError, match=r"stage 'caption' is complete .* \(data.images.sha256"):
        main.run(caption_config(str(copy), tiny_vlm, 8), workdir)

    # The caption batch size does not change the captions: a fresh run at batch 8 banks the same answers.
    main.run(caption_config(data, tiny_vlm, 8), str(tmp_path / "batch8"))
    assert max(calls) == 12  # All 6 train images in one batch.
    again = read_caption_bank(str(tmp_path / "batch8"))
    assert (again.image_ids, again.backgrounds, again.poses) == (bank.image_ids, bank.backgrounds, bank.poses)
    assert any(bank.backgrounds + bank.poses), "the tiny VLM must say something"


def test_a_marker_in_the_format_before_identities_keeps_resuming(tmp_path, tiny_vlm, monkeypatch):
    data = flat_folder(tmp_path / "birds", per_class=(4, 4, 4))
    workdir = str(tmp_path / "run")
    calls = in_process_vlm(monkeypatch, tiny_vlm)
    made = caption_config(data, tiny_vlm, 4)
    main.run(made, workdir)
    marker = os.path.join(workdir, "captions", run_folder.COMPLETE)
    artifacts.write_json(marker, legacy_marker(made, "caption"))
    recorded = open(marker).read()
    assert '"data_dir": "' + data in recorded

    calls.clear()
    moved = caption_config(str(shutil.copytree(data, tmp_path / "copy")), tiny_vlm, 8)
    main.run(moved, workdir)
    assert calls == [] and open(marker).read() == recorded
    changed = caption_config(data, tiny_vlm, 4, **{"caption.max_new_tokens": 5})
    with pytest.raises(ArtifactError, match=r"different config \(caption.max_new_tokens\); rerun with --redo=caption"):
        main.run(changed, workdir)

    # The VLM's answers cached by a caption stage killed midway: their key was the old sections but the batch size.
    cache = tmp_path / "cache"
    key = legacy_marker(made, "caption")
    del key["caption"]["batch_size"]
    artifacts.write_json(cache / "responses.config.json", key)
    (cache / "responses.jsonl").write_text(json.dumps({"image_id": "000.class_0/00.png", "background": "sky"}) + "\n")
    kept = ResponseCache(cache, identity.of(moved, "caption"),
                         lambda recorded: not identity.changed(recorded, moved, "caption"))
    assert "000.class_0/00.png" in kept
    with pytest.raises(ArtifactError, match="another caption config"):
        ResponseCache(cache, identity.of(changed, "caption"),
                      lambda recorded: not identity.changed(recorded, changed, "caption"))

    # A marker of a format this bobjax does not know names what to do.
    artifacts.write_json(marker, {"format": 99})
    with pytest.raises(ArtifactError, match=r"format 99, which this bobjax \(format 2\) cannot read; .*--redo=caption"):
        identity.is_complete(made, workdir, "caption")


def test_runs_that_differ_in_storage_mesh_or_batch_sizes_that_change_nothing_share_their_stages(tmp_path):
    data = flat_folder(tmp_path / "birds")
    config = folder_config(data)
    other = folder_config(str(shutil.copytree(data, tmp_path / "copy")))
    other.mesh.data, other.mesh.fsdp, other.model.attention = 1, 8, "chunked"
    other.caption.batch_size, other.generate.batch_size_per_device, other.quality.batch_size = 2, 3, 5
    for stage in ("caption", "finetune", "generate", "filter"):
        assert share.key(config, stage) == share.key(other, stage), stage
    other.finetune.batch_size = 4  # Training depends on it.
    assert share.key(config, "caption") == share.key(other, "caption")
    assert share.key(config, "finetune") != share.key(other, "finetune")
    other.classify.batch_size = 32
    assert identity.changed(identity.of(config, "classify"), other, "classify") == ["classify.batch_size",
                                                                                  "finetune.batch_size"]


def test_files_count_by_their_content_not_their_path(tmp_path):
    config = config_lib.base_config()
    config.data.source = "toyworld"
    config.generate.plan = "listed"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "contexts.tsv").write_text("blue sky\tflying\n")
    config.generate.contexts_file = str(tmp_path / "a" / "contexts.tsv")
    made = identity.of(config, "generate")
    config.generate.contexts_file = str(tmp_path / "b" / "contexts.tsv")
    assert identity.changed(made, config, "generate") == []
    (tmp_path / "b" / "contexts.tsv").write_text("green grass\tperching\n")
    assert identity.changed(made, config, "generate") == ["generate.contexts_sha256"]


def synthetic_images(config, workdir):
    generate.run(config, workdir)
    source = read_dataset(run_folder.stage_dir(workdir, "generate"))
    return {source[i]["image_id"]: source[i]["image"] for i in range(len(source))}


@pytest.mark.slow
def test_generation_batch_size_and_attention_kernel_leave_the_images_unchanged(tiny_sd_path, tmp_path):  # noqa: F811
    made = synthetic_images(stage_config(tiny_sd_path, **{"model.attention": "xla"}), str(tmp_path / "a"))
    for name, overrides in (("batch", {"model.attention": "xla", "generate.batch_size_per_device": 3}),
                            ("kernel", {"model.attention": "chunked"})):
        other = synthetic_images(stage_config(tiny_sd_path, **overrides), str(tmp_path / name))
        assert sorted(other) == sorted(made) and len(made) == 9
        for image_id, image in made.items():
            # A call of 3 per device spans another mesh than the default's: XLA may sum in another order, which
            # moves a pixel by at most one uint8 level (as tests/test_generate_stage.py's per-device batch test).
            difference = np.abs(other[image_id].astype(int) - image.astype(int)).max()
            assert difference <= 1, f"{name}: {image_id} differs by {difference} levels"


def test_quality_batch_size_leaves_features_and_filter_decisions_unchanged(tmp_path):
    make_tiny_clip(str(tmp_path))
    classes = ["laysan albatross", "crested auklet", "painted bunting"]
    images = np.random.default_rng(0).integers(0, 256, (10, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    decided = []
    for batch_size in (3, 7):
        config = config_lib.base_config()
        config.quality.encoder, config.quality.batch_size = str(tmp_path), batch_size
        encoder = encoders.make_encoder(config, classes, "bird")
        features, _ = encoder.encode([{"image": x} for x in images])
        config.filter.rule, config.filter.top_k = "top_k", 2
        decision = rules.decide(config.filter, labels, features, encoder.class_logits(features), features[:6],
                                labels[:6], encoder.class_text)
        decided.append((features, decision.kept))
    np.testing.assert_allclose(decided[0][0], decided[1][0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(decided[0][1], decided[1][1])
    assert 0 < decided[0][1].sum() < 10
