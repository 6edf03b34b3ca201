"""The prior's three models, built by bobjax's own NNX classes from the diffusers / transformers config dicts
that the export writes, so what trains is exactly what ``load_stable_diffusion`` later rebuilds.

The text encoder stays at its random initialisation. Why: every token, including the class-name words the prior
never sees, keeps an embedding of the same statistics, so the finetune stage's text-encoder LoRA starts from
in-distribution features for the class names (a jointly trained encoder would move only the ~30 caption
tokens); the UNet's cross-attention learns to read the frozen features, as SD reads frozen CLIP; and its
backward pass costs nothing.
"""

from __future__ import annotations

from flax import nnx

from bobjax.errors import ConfigError
from bobjax.models.clip_text import CLIPTextModel
from bobjax.models.clip_tokenizer import VOCAB_SIZE
from bobjax.models.sd.unet import UNet2DConditionModel
from bobjax.models.sd.vae import AutoencoderKL

TEXT_LENGTH = 77  # CLIP's context length; the tokenizer pads every prompt to it.
BOS_TOKEN_ID, EOS_TOKEN_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1


def vae_config(config, scaling_factor: float = 1.0) -> dict:
    """diffusers ``AutoencoderKL`` config.json from ``config.vae``; ``scaling_factor`` is measured after training."""
    c = config.vae
    levels = len(c.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(c.block_out_channels),
        "layers_per_block": c.layers_per_block,
        "act_fn": "silu",
        "latent_channels": c.latent_channels,
        "norm_num_groups": c.norm_num_groups,
        "sample_size": config.data.image_size,
        "scaling_factor": float(scaling_factor),
    }


def unet_config(config) -> dict:
    """diffusers ``UNet2DConditionModel`` config.json; ``config.unet.attention`` says which levels attend."""
    c = config.unet
    levels = len(c.block_out_channels)
    if len(c.attention) != levels:
        raise ConfigError(f"config.unet.attention {list(c.attention)} needs one bool per level of "
                          f"config.unet.block_out_channels {list(c.block_out_channels)}")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in c.attention]
    up = [name.replace("Down", "Up") for name in reversed(down)]
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": config.data.image_size // 2 ** (len(config.vae.block_out_channels) - 1),
        "in_channels": config.vae.latent_channels,
        "out_channels": config.vae.latent_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": list(c.block_out_channels),
        "layers_per_block": c.layers_per_block,
        "attention_head_dim": c.attention_head_dim,
        "norm_num_groups": c.norm_num_groups,
        "cross_attention_dim": config.text_encoder.hidden_size,
    }


def text_encoder_config(config) -> dict:
    """transformers ``CLIPTextModel`` config.json on the real CLIP vocabulary (SD 2.x style: gelu, eos 49407)."""
    c = config.text_encoder
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "projection_dim": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "max_position_embeddings": TEXT_LENGTH,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": EOS_TOKEN_ID,
    }


def build(config, scaling_factor: float = 1.0) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """Freshly initialised (unet, vae, text_encoder), float32, seeded by ``config.seed``."""
    rngs = nnx.Rngs(config.seed)
    unet = UNet2DConditionModel(unet_config(config), rngs=rngs)
    vae = AutoencoderKL(vae_config(config, scaling_factor), rngs=rngs)
    text_encoder = CLIPTextModel(text_encoder_config(config), rngs=rngs)
    return unet, vae, text_encoder
