"""A tiny random transformers ``CLIPModel`` (quick_gelu, CLIP's 49408-token vocabulary), saved as the hub's
``openai/clip-vit-*`` folders are: weights, config, tokenizer and image-processor files."""

from __future__ import annotations

import torch
import transformers

from bobjax.models.clip_tokenizer import VOCAB_SIZE, write_clip_tokenizer_files

EOS = VOCAB_SIZE - 1
IMAGE_SIZE = 32


def tiny_clip_config() -> transformers.CLIPConfig:
    return transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=16, vocab_size=VOCAB_SIZE, eos_token_id=EOS, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=8, image_size=IMAGE_SIZE, hidden_act="quick_gelu"),
        projection_dim=24)


def tiny_clip_model(seed: int = 0) -> transformers.CLIPModel:
    """Every weight random: transformers initialises some to constants, which would hide loading errors."""
    torch.manual_seed(seed)
    model = transformers.CLIPModel(tiny_clip_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def make_tiny_clip(folder: str, seed: int = 0) -> str:
    """Saves :func:`tiny_clip_model` with the real CLIP tokenizer and an image processor in ``folder``."""
    tiny_clip_model(seed).save_pretrained(folder)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder))
    tokenizer.save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                    crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder
