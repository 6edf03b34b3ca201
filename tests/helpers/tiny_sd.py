"""Tiny random Stable Diffusion pipelines in the real diffusers/transformers architectures, saved locally.

Tests load these through the same code path as real hub checkpoints, without a model hub. ``sd1`` mirrors
SD 1.x choices (conv proj_in/out, attention_head_dim meaning 8 heads, quick_gelu text tower, legacy
eos_token_id=2); ``sd2`` mirrors SD 2.x (linear proj, per-block head counts, upcast attention, gelu text
tower, '!' padding, optional v-prediction). ``minimal=True`` keeps the style's choices but only one UNet and
one VAE resolution level and one text layer: the smallest graph the loader accepts, for the loop tests that
compile the whole training step once per mesh.
"""

from __future__ import annotations

import os
import tempfile

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from bobjax.models.clip_tokenizer import VOCAB_SIZE, write_clip_tokenizer_files

SEED = 0
TEXT_LENGTH = 77


def _unet(style: str, text_width: int, minimal: bool) -> UNet2DConditionModel:
    levels = 1 if minimal else 2
    common = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64)[:levels],
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=text_width,
    )
    if style == "sd1":
        return UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D")[:levels],
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")[-levels:],
            attention_head_dim=8,
            **common,
        )
    return UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        attention_head_dim=(2, 4)[:levels],
        use_linear_projection=True,
        upcast_attention=True,
        **common,
    )


def _vae(minimal: bool) -> AutoencoderKL:
    levels = 1 if minimal else 2
    return AutoencoderKL(
        block_out_channels=(8, 16)[:levels],
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
    )


def _text_encoder(style: str, minimal: bool) -> CLIPTextModel:
    sd1 = style == "sd1"
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32 if sd1 else 48,
            intermediate_size=37,
            num_hidden_layers=1 if minimal else 2,
            num_attention_heads=4,
            max_position_embeddings=TEXT_LENGTH,
            hidden_act="quick_gelu" if sd1 else "gelu",
            projection_dim=16,
            bos_token_id=49406,
            eos_token_id=2 if sd1 else 49407,
            pad_token_id=1,
        )
    )


def tiny_sd_pipeline(style: str = "sd1", prediction_type: str = "epsilon", minimal: bool = False) -> StableDiffusionPipeline:
    """A freshly seeded tiny pipeline (torch, fp32, eval mode)."""
    if style not in ("sd1", "sd2"):
        raise ValueError(f"style must be 'sd1' or 'sd2', got {style!r}")
    if style == "sd1" and prediction_type != "epsilon":
        raise ValueError("SD 1.x checkpoints predict epsilon; v_prediction is an sd2 option")
    torch.manual_seed(SEED)
    text_encoder = _text_encoder(style, minimal)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer = CLIPTokenizer.from_pretrained(
            write_clip_tokenizer_files(tokenizer_dir),
            model_max_length=TEXT_LENGTH,
            **({"pad_token": "!"} if style == "sd2" else {}),
        )
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(minimal),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_unet(style, text_encoder.config.hidden_size, minimal),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_tiny_sd(
    path: str | os.PathLike,
    style: str = "sd1",
    *,
    prediction_type: str = "epsilon",
    safe_serialization: bool = True,
    variant: str | None = None,
    max_shard_size: str | None = None,
    minimal: bool = False,
) -> str:
    """Saves :func:`tiny_sd_pipeline` as a diffusers folder at ``path`` and returns the path.

    ``variant="fp16"`` stores half-precision weights under the ``*.fp16.*`` file names, as hub repos do;
    ``safe_serialization=False`` writes ``.bin`` pickles; ``max_shard_size`` shards with an index file.
    """
    pipe = tiny_sd_pipeline(style, prediction_type, minimal)
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(path, safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size)
    if not safe_serialization:
        _text_encoder_as_hub_bin(os.path.join(path, "text_encoder"), variant)
    return os.fspath(path)


def save_with_components(path: str | os.PathLike, style: str = "sd2", **components) -> str:
    """Saves the minimal tiny pipeline of ``style`` with ``components`` (e.g. a full-size ``unet``) in place of its
    own, so that a full-size model is read by ``load_stable_diffusion`` as from a hub checkpoint while the other
    parts stay tiny. Returns the path."""
    pipe = tiny_sd_pipeline(style, minimal=True)
    StableDiffusionPipeline(**{**pipe.components, **components}, requires_safety_checker=False).save_pretrained(path)
    return os.fspath(path)


def _text_encoder_as_hub_bin(folder: str, variant: str | None) -> None:
    """transformers v5 always saves safetensors; rewrite the text encoder as the hub's SD 1.x checkpoints store it:
    ``pytorch_model.bin`` with ``text_model.``-prefixed keys and the ``position_ids`` buffer."""
    suffix = f".{variant}" if variant else ""
    source = os.path.join(folder, f"model{suffix}.safetensors")
    state = {f"text_model.{k}": v for k, v in load_file(source).items()}
    state["text_model.embeddings.position_ids"] = torch.arange(TEXT_LENGTH)[None]
    torch.save(state, os.path.join(folder, f"pytorch_model{suffix}.bin"))
    os.remove(source)
