"""Writes the config files (no weights) of a Stable Diffusion architecture of ``sd_setup.CONFIGS`` as a diffusers
folder: what ``python -m bobjax.aot`` reads of a checkpoint, for a machine that cannot reach the hub.

    python benchmarks/sd_configs.py sd21base /tmp/sd21base   # then --config.model.sd=/tmp/sd21base

The models are built on PyTorch's meta device, so nothing is allocated; ``save_config`` writes each config.json.
"""

from __future__ import annotations

import json
import os
import sys

from sd_setup import CONFIGS


def save_configs(name: str, folder: str) -> str:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    spec = CONFIGS[name]
    levels = len(spec["vae"]["block_out_channels"])
    with torch.device("meta"):
        UNet2DConditionModel(**spec["unet"]).save_config(os.path.join(folder, "unet"))
        AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * levels,
                      up_block_types=("UpDecoderBlock2D",) * levels,
                      **spec["vae"]).save_config(os.path.join(folder, "vae"))
    text = CLIPTextConfig(**{"vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                             "eos_token_id": 49407, "bos_token_id": 49406, "pad_token_id": 49407, **spec["text"]})
    text.architectures = ["CLIPTextModel"]
    text.save_pretrained(os.path.join(folder, "text_encoder"))
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                  steps_offset=1, set_alpha_to_one=False).save_config(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                   "scheduler": ["diffusers", "PNDMScheduler"]}, f, indent=1)
    return folder


if __name__ == "__main__":
    print(save_configs(sys.argv[1], sys.argv[2]))
