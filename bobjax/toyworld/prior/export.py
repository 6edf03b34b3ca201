"""The trained prior as a diffusers Stable Diffusion folder, written without torch.

The layout is ``StableDiffusionPipeline.save_pretrained``'s: ``model_index.json`` and one folder per component
with its config JSON, weights as safetensors (``weights.export_state_dict``: checkpoint key names and layouts),
and the tokenizer files rebuilt from the shipped CLIP BPE vocabulary. Weights are stored as float16 to keep the
shipped asset small; both ``load_stable_diffusion`` and diffusers upcast them to the dtype they compute in.
The folder appears atomically (temporary folder, then rename).
"""

from __future__ import annotations

import json
import os

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from bobjax import artifacts
from bobjax.models import weights
from bobjax.models.clip_tokenizer import BOS_TOKEN, EOS_TOKEN, write_clip_tokenizer_files
from bobjax.toyworld.prior import models

DIFFUSERS_VERSION = "0.30.0"  # The folder format's version (unchanged since); diffusers only logs a mismatch.
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_tokenizer(folder: str) -> str:
    """``CLIPTokenizer`` files: vocab.json and merges.txt (real CLIP BPE), padding to 77 tokens with EOS (SD 1.x)."""
    write_clip_tokenizer_files(folder)
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    _write_json(os.path.join(folder, "special_tokens_map.json"), special)
    _write_json(os.path.join(folder, "tokenizer_config.json"), {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": models.TEXT_LENGTH, "do_lower_case": True,
        "errors": "replace", "add_prefix_space": False, "clean_up_tokenization_spaces": True, **special})
    return folder


def export_diffusers(path: str, config, unet: nnx.Module, vae: nnx.Module, text_encoder: nnx.Module, *,
                     scaling_factor: float, dtype=np.float16) -> str:
    """Writes the prior (built from ``config``, see :mod:`bobjax.toyworld.prior.models`) to the diffusers folder ``path``."""
    scheduler = {k: v for k, v in config.scheduler.items()}
    if scheduler.get("_class_name") != MODEL_INDEX["scheduler"][1]:
        raise ValueError(f"config.scheduler._class_name must be {MODEL_INDEX['scheduler'][1]!r}, got "
                         f"{scheduler.get('_class_name')!r}")
    text_state = {f"text_model.{k}": v for k, v in weights.export_state_dict(text_encoder).items()}
    parts = {
        "unet": (models.unet_config(config), "diffusion_pytorch_model.safetensors", weights.export_state_dict(unet)),
        "vae": (models.vae_config(config, scaling_factor), "diffusion_pytorch_model.safetensors",
                weights.export_state_dict(vae)),
        "text_encoder": ({**models.text_encoder_config(config), "dtype": np.dtype(dtype).name},
                         "model.safetensors", text_state),
    }
    with artifacts.atomic_dir(path, marker="model_index.json") as tmp:
        _write_json(os.path.join(tmp, "model_index.json"), MODEL_INDEX)
        for component, (component_config, weight_file, state) in parts.items():
            folder = os.path.join(tmp, component)
            os.makedirs(folder)
            if component != "text_encoder":
                component_config = {**component_config, "_diffusers_version": DIFFUSERS_VERSION}
            _write_json(os.path.join(folder, "config.json"), component_config)
            save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in state.items()},
                      os.path.join(folder, weight_file), metadata={"format": "pt"})
        write_tokenizer(os.path.join(tmp, "tokenizer"))
        os.makedirs(os.path.join(tmp, "scheduler"))
        _write_json(os.path.join(tmp, "scheduler", "scheduler_config.json"),
                    {**scheduler, "_diffusers_version": DIFFUSERS_VERSION})
    return path


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
