"""Pretrained weights by hub id (bobjax.models.hub): the fake hub cache reads like the real one, what a resolution
records, the errors that name the id and what to do, and the classifiers' default checkpoints."""

import hashlib
import os
import subprocess
import sys
import textwrap

import httpx2
import huggingface_hub
import numpy as np
import pytest
from fake_hub import CLIP_ID, SD_ID, TIMM_IDS, VLM_ID
from flax import nnx
from huggingface_hub import errors as hf_errors
from safetensors.numpy import load_file

from bobjax import config_lib
from bobjax.classify import backbones
from bobjax.errors import ConfigError
from bobjax.models import hub, weights
from bobjax.models.sd.pipeline import resolve_stable_diffusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a user's program does with the ids, offline, in a fresh process that knows nothing but the environment.
LIBRARIES_READ_THE_CACHE = textwrap.dedent(f"""
    import timm, transformers
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import snapshot_download
    from bobjax.caption.vlm import load_processor

    for repo_id in {[SD_ID, VLM_ID, CLIP_ID, TIMM_IDS[0]]!r}:
        print(repo_id, snapshot_download(repo_id))
    print(type(StableDiffusionPipeline.from_pretrained({SD_ID!r}).unet).__name__)
    print(type(transformers.CLIPModel.from_pretrained({CLIP_ID!r})).__name__)
    print(transformers.CLIPTokenizer.from_pretrained({CLIP_ID!r})("a bird").input_ids)
    print(type(transformers.AutoModelForImageTextToText.from_pretrained({VLM_ID!r})).__name__)
    print(type(load_processor({VLM_ID!r})).__name__)
    print(type(timm.create_model("hf-hub:{TIMM_IDS[0]}", pretrained=True)).__name__)
""")


def test_hub_libraries_resolve_the_fake_cache_offline(fake_hub):
    fake_hub.add(SD_ID, VLM_ID, CLIP_ID, TIMM_IDS[0])
    env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", LIBRARIES_READ_THE_CACHE], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for repo_id, line in zip([SD_ID, VLM_ID, CLIP_ID, TIMM_IDS[0]], lines):
        assert line == f"{repo_id} {fake_hub.snapshots[repo_id]}"
    assert lines[4:] == ["UNet2DConditionModel", "CLIPModel", "[49406, 320, 3329, 49407]",
                         "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "ResNet"]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_hub_record_names_the_revision_and_the_blob_hashes(fake_hub):
    fake_hub.add(SD_ID)
    storage = os.path.dirname(os.path.dirname(fake_hub.snapshots[SD_ID]))
    with open(os.path.join(storage, "refs", "main")) as f:
        commit = f.read()
    resolved = resolve_stable_diffusion(SD_ID)
    record = resolved.record()
    assert (record["name"], record["source"], record["revision"]) == (SD_ID, "hub", commit)
    assert resolved.path == os.path.join(storage, "snapshots", commit)
    assert "model_index.json" in record["files"] and "text_encoder/model.safetensors" in record["files"]
    with open(os.path.join(resolved.path, "unet", "diffusion_pytorch_model.safetensors"), "rb") as f:
        unet = f.read()
    with open(os.path.join(resolved.path, "unet", "config.json"), "rb") as f:
        config = f.read()
    assert record["files"]["unet/diffusion_pytorch_model.safetensors"] == {
        "size": len(unet), "sha256": hashlib.sha256(unet).hexdigest()}
    assert record["files"]["unet/config.json"] == {"size": len(config), "git_sha1": git_blob_sha1(config)}


def test_local_record_hashes_small_files_and_dates_large_ones(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"0123456789" * 10)
    (tmp_path / "notes.md").write_text("not part of a model")
    monkeypatch.setattr(hub, "HASH_LIMIT", 50)
    record = hub.resolve(str(tmp_path), hub.model_patterns, what="config.x").record()
    assert (record["source"], record["revision"], sorted(record["files"])) == ("local", None,
                                                                             ["config.json", "model.safetensors"])
    assert record["files"]["config.json"] == {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    large = record["files"]["model.safetensors"]
    assert large["size"] == 100 and "sha256" not in large and large["mtime"].startswith("20")


def test_offline_id_not_in_the_cache_names_it_and_what_to_do(empty_hub):
    with pytest.raises(hub.WeightsError, match=r"config.model.sd 'someone/tiny-sd' is not in the Hugging Face cache "
                                               r".*HF_HUB_OFFLINE is set.*set HF_HOME to a cache that holds it"):
        resolve_stable_diffusion("someone/tiny-sd", what="config.model.sd")


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(hub.WeightsError, match=f"config.x '{tmp_path}/nothing' does not exist"):
        hub.resolve(str(tmp_path / "nothing"), hub.model_patterns, what="config.x")


def _hub_error(kind):
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/name"))
    return kind("from the hub", response=response)


@pytest.mark.parametrize("error, message", [
    (hf_errors.GatedRepoError, r"'org/name' is gated on the Hugging Face hub: accept its licence"),
    (hf_errors.RepositoryNotFoundError, r"'org/name' is neither a local folder nor a model on the Hugging Face hub"),
    (hf_errors.RevisionNotFoundError, r"'org/name' has no revision 'v9' on the Hugging Face hub"),
])  # fmt: skip
def test_hub_refusals_are_one_user_error_each(monkeypatch, error, message):
    def refuse(*args, **kwargs):
        raise _hub_error(error)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(hub.WeightsError, match=message):
        hub.resolve("org/name", hub.model_patterns, what="config.x", revision="v9")


def classify_config(backbone, checkpoint):
    cfg = config_lib.base_config().classify
    cfg.backbone, cfg.checkpoint, cfg.image_size = backbone, checkpoint, 32
    return cfg


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet18"])
def test_backbone_without_pretrained_default_says_to_ask_for_random(backbone):
    with pytest.raises(ConfigError, match=f"backbone='{backbone}' has no pretrained default.*checkpoint='random'"):
        backbones.resolve_checkpoint(classify_config(backbone, "default"))
    assert backbones.resolve_checkpoint(classify_config(backbone, "random")) is None


def test_empty_checkpoint_is_refused_not_taken_for_random():
    with pytest.raises(ConfigError, match="config.classify.checkpoint is empty; expected 'default'.*'random'"):
        backbones.resolve_checkpoint(classify_config("resnet50", ""))


@pytest.mark.parametrize("backbone", [
    "resnet50", pytest.param("vit_b16", marks=pytest.mark.fullsize),
    pytest.param("mae_vit_b16", marks=pytest.mark.fullsize),
])  # fmt: skip
def test_default_checkpoint_comes_from_the_hub_and_loads(fake_hub, backbone):
    """Full-size models (bobjax's presets are the real architectures): ViT-B takes ~20 s, hence fullsize."""
    repo_id = backbones.DEFAULT_CHECKPOINTS[backbone]
    fake_hub.add(repo_id)
    cfg = classify_config(backbone, "default")
    checkpoint = backbones.resolve_checkpoint(cfg)
    assert (checkpoint.name, checkpoint.path) == (repo_id, fake_hub.snapshots[repo_id])
    model = backbones.build(cfg, checkpoint, ["a", "b"], "bird", rngs=nnx.Rngs(0)).model
    saved = load_file(os.path.join(checkpoint.path, "model.safetensors"))
    loaded = weights.export_state_dict(model)
    first = "conv1.weight" if backbone == "resnet50" else "patch_embed.proj.weight"
    np.testing.assert_array_equal(loaded[first], saved[first])


def test_classify_stage_fails_first_naming_weights_it_cannot_fetch(empty_hub, tmp_path):
    from classify_run import small_config

    from bobjax import classify

    config = small_config(**{"classify.backbone": "resnet50", "classify.checkpoint": "default"})
    with pytest.raises(hub.WeightsError, match=r"config.classify.checkpoint \(the default of resnet50\) "
                                               r"'timm/resnet50.tv_in1k' is not in the Hugging Face cache"):
        classify.run(config, str(tmp_path))
    assert os.listdir(tmp_path) == []
