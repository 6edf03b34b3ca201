"""load_stable_diffusion on tiny diffusers folders saved by diffusers itself, against the torch pipeline.

Forward parity tolerance: max |ours - torch| <= 1e-4 * max(1, max |torch|) in fp32. Loading variants (.bin,
fp16, shards, hub cache) are checked by exact equality of every parameter with the torch pipeline's.
"""

import json
import os
import shutil

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
from compiled_call import compiled
from parity import close
import pytest
import torch
from diffusers import StableDiffusionPipeline
from fake_hub import add_repo
from flax import nnx
from tiny_sd import TEXT_LENGTH, make_tiny_sd, tiny_sd_pipeline

from bobjax.models import weights
from bobjax.models.hub import WeightsError
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.pipeline import hub_allow_patterns

PROMPTS = ["a photo of a laysan albatross on a rock", "a bird"]


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_sd")


@pytest.fixture(scope="module")
def sd1_path(root):
    return make_tiny_sd(root / "sd1", "sd1")


def assert_same_weights(sd, pipe):
    """Every parameter we loaded equals the torch pipeline's (exactly, after upcasting to fp32)."""
    for ours, ref in ((sd.unet, pipe.unet), (sd.vae, pipe.vae), (sd.text_encoder, pipe.text_encoder)):
        exported = weights.export_state_dict(ours)
        expected = ref.state_dict()
        assert sorted(exported) == sorted(expected), type(ref).__name__
        for key, value in expected.items():
            np.testing.assert_array_equal(exported[key].astype(np.float32), value.float().numpy(), err_msg=key)


@pytest.mark.parametrize("style, prediction_type", [("sd1", "epsilon"), ("sd2", "v_prediction")])
def test_components_match_torch_pipeline(root, sd1_path, style, prediction_type):
    path = sd1_path if style == "sd1" else make_tiny_sd(root / style, style, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline.from_pretrained(path)
    sd = load_stable_diffusion(path)
    for module in (sd.unet, sd.vae, sd.text_encoder):
        hash(nnx.graphdef(module))  # graphdefs must be hashable to be static jit arguments (split/merge + jax.jit)

    assert sd.scheduler_config["prediction_type"] == prediction_type
    for key, value in sd.scheduler_config.items():
        if not key.startswith("_"):
            assert pipe.scheduler.config[key] == value, key
    tokens = sd.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    expected_tokens = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(tokens.input_ids, expected_tokens.input_ids)

    with torch.no_grad():
        text = pipe.text_encoder(torch.from_numpy(tokens.input_ids))
    close(compiled(sd.text_encoder)(jnp.asarray(tokens.input_ids)), text.last_hidden_state)
    close(compiled(sd.text_encoder, "encode")(jnp.asarray(tokens.input_ids)).pooler_output, text.pooler_output)

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    latents = rng.normal(size=(2, 4, 8, 8)).astype(np.float32)
    timesteps = np.array([10, 700])
    with torch.no_grad():
        mean = pipe.vae.encode(torch.from_numpy(images)).latent_dist.mean
        decoded = pipe.vae.decode(torch.from_numpy(latents)).sample
        noise_pred = pipe.unet(torch.from_numpy(latents), torch.from_numpy(timesteps), text.last_hidden_state).sample
    close(compiled(sd.vae, "encode")(nhwc(images)), nhwc(mean))
    close(compiled(sd.vae, "decode")(nhwc(latents)), nhwc(decoded))
    hidden = jnp.asarray(text.last_hidden_state.numpy())
    close(compiled(sd.unet)(nhwc(latents), jnp.asarray(timesteps), hidden), nhwc(noise_pred))


def test_bin_fallback_with_hub_text_encoder_layout(root):
    """.bin only, and the text encoder as SD 1.x hub repos store it (text_model. prefix, position_ids)."""
    path = make_tiny_sd(root / "bin", "sd1", safe_serialization=False)
    assert sorted(os.listdir(os.path.join(path, "text_encoder"))) == ["config.json", "pytorch_model.bin"]
    assert_same_weights(load_stable_diffusion(path), tiny_sd_pipeline("sd1"))


def test_fp16_variant(root):
    path = make_tiny_sd(root / "fp16", "sd1", variant="fp16")
    sd = load_stable_diffusion(path, variant="fp16")
    assert sd.unet.conv_in.kernel.get_value().dtype == jnp.float32  # fp16 files, cast to the requested dtype
    assert_same_weights(sd, tiny_sd_pipeline("sd1").to(torch.float16))
    with pytest.raises(FileNotFoundError, match=r"no weights in .*unet.*diffusion_pytorch_model\.fp16\.safetensors"):
        load_stable_diffusion(path)  # only variant files exist


def test_sharded_checkpoint(root):
    path = make_tiny_sd(root / "sharded", "sd1", max_shard_size="300KB")
    assert "diffusion_pytorch_model.safetensors.index.json" in os.listdir(os.path.join(path, "unet"))
    assert_same_weights(load_stable_diffusion(path), tiny_sd_pipeline("sd1"))


def test_bf16_cast_runs_close_to_torch_fp32(sd1_path):
    """bf16 weights and compute: outputs within 5% of the output range of torch's fp32 pipeline (bf16 keeps
    8 mantissa bits; measured: 1-1.6%)."""
    pipe = StableDiffusionPipeline.from_pretrained(sd1_path)
    sd = load_stable_diffusion(sd1_path, jnp.bfloat16)
    dtypes = {v.dtype for m in (sd.unet, sd.vae, sd.text_encoder) for v in jax.tree.leaves(nnx.state(m))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    ids = sd.tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="np").input_ids
    latents = np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32)
    timesteps = np.array([10, 700])
    with torch.no_grad():
        text = pipe.text_encoder(torch.from_numpy(ids)).last_hidden_state
        decoded = pipe.vae.decode(torch.from_numpy(latents)).sample
        noise_pred = pipe.unet(torch.from_numpy(latents), torch.from_numpy(timesteps), text).sample
    hidden = compiled(sd.text_encoder)(jnp.asarray(ids))
    outputs = [
        (hidden, text),
        (compiled(sd.vae, "decode")(nhwc(latents)), nhwc(decoded)),
        (compiled(sd.unet)(nhwc(latents), jnp.asarray(timesteps), hidden), nhwc(noise_pred)),
    ]
    for ours, ref in outputs:
        assert ours.dtype == jnp.bfloat16
        close(ours, ref, rel=5e-2)


def test_missing_component_folder_is_named(root, sd1_path):
    broken = shutil.copytree(sd1_path, root / "no_vae")
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match="has no 'vae' folder"):
        load_stable_diffusion(broken)
    with pytest.raises(WeightsError, match="Stable Diffusion '/nonexistent/sd' does not exist"):
        load_stable_diffusion("/nonexistent/sd")


def test_unsupported_component_class_is_named(root, sd1_path):
    other = shutil.copytree(sd1_path, root / "t5")
    index = (other / "model_index.json").read_text().replace('"CLIPTextModel"', '"T5EncoderModel"')
    (other / "model_index.json").write_text(index)
    with pytest.raises(ValueError, match="text_encoder is a T5EncoderModel; bobjax loads CLIPTextModel"):
        load_stable_diffusion(other)


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_hub_id_says_what_to_do(offline_hub_cache):
    with pytest.raises(WeightsError, match=r"'someone/tiny-sd' is not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        load_stable_diffusion("someone/tiny-sd")


def test_hub_id_served_from_offline_cache(offline_hub_cache, sd1_path):
    """A hub id resolves through huggingface_hub's cache layout (models--owner--name/snapshots/<commit>)."""
    snapshot = add_repo(str(offline_hub_cache), "someone/tiny-sd", sd1_path)
    sd = load_stable_diffusion("someone/tiny-sd")
    assert sd.path == snapshot
    assert_same_weights(sd, tiny_sd_pipeline("sd1"))


# The file listing of a typical hub SD 1.x repo (runwayml/stable-diffusion-v1-5 layout).
HUB_FILES = [
    "model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned-emaonly.safetensors",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json", "safety_checker/model.safetensors", "safety_checker/pytorch_model.bin",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
]  # fmt: skip
NEEDED = [
    "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
    "unet/config.json", "vae/config.json",
]  # fmt: skip


@pytest.mark.parametrize(
    "fmt, variant, weights_fetched",
    [
        ("safetensors", None, ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                               "vae/diffusion_pytorch_model.safetensors"]),
        ("safetensors", "fp16", ["text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                                 "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
                                 "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                                 "vae/diffusion_pytorch_model.fp16.safetensors"]),
        ("bin", None, ["text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin",
                       "vae/diffusion_pytorch_model.bin"]),
    ],
)  # fmt: skip
def test_hub_download_fetches_only_what_is_loaded(fmt, variant, weights_fetched):
    """No safety checker, no original .ckpt, no other variants: the patterns snapshot_download is given."""
    fetched = huggingface_hub.utils.filter_repo_objects(HUB_FILES, allow_patterns=hub_allow_patterns(fmt, variant))
    assert sorted(fetched) == sorted(NEEDED + weights_fetched)


def test_prompts_are_padded_to_the_text_encoders_length_when_the_tokenizer_records_none(root):
    """A tokenizer saved without ``model_max_length`` reports 1e30; padding to it killed fine-tuning with
    ``OverflowError: int too big to convert``. Every stage pads to the text encoder's position table instead."""
    path = make_tiny_sd(root / "no_max_length", "sd1", minimal=True)
    config_path = os.path.join(path, "tokenizer", "tokenizer_config.json")
    with open(config_path) as f:
        tokenizer_config = json.load(f)
    del tokenizer_config["model_max_length"]
    with open(config_path, "w") as f:
        json.dump(tokenizer_config, f)
    sd = load_stable_diffusion(path)
    assert sd.tokenizer.model_max_length > 1e29  # The trap is set.

    prompts = [PROMPTS[0], " ".join(["bird"] * 100)]
    ids = sd.tokenize(prompts)
    assert ids.dtype == np.int32 and ids.shape == (2, TEXT_LENGTH)
    expected = sd.tokenizer(prompts, padding="max_length", max_length=TEXT_LENGTH, truncation=True).input_ids
    np.testing.assert_array_equal(ids, expected)
    assert ids[1, -1] == sd.tokenizer.eos_token_id  # Truncated, still ended as CLIP ends a prompt.
    assert sd.text_encoder(jnp.asarray(ids)).shape[:2] == (2, TEXT_LENGTH)
