"""The LoRA adapters BOB trains on Stable Diffusion, and how they are attached (qwix) to the loaded models."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from bobjax.models import lora


def lora_configs(finetune_config) -> dict[str, lora.LoraConfig]:
    """The adapters BOB trains: UNet attention, and (``text_encoder_lora``) the CLIP text encoder's."""
    c = finetune_config
    common = dict(rank=c.lora_rank, alpha=c.lora_alpha, dropout=c.lora_dropout, init=c.lora_init)
    configs = {"unet": lora.LoraConfig(targets=lora.UNET_TARGETS, **common)}
    if c.text_encoder_lora:
        configs["text_encoder"] = lora.LoraConfig(targets=lora.TEXT_ENCODER_TARGETS, **common)
    return configs


def add_adapters(sd, configs: dict[str, lora.LoraConfig], seed: int):
    """(unet, text_encoder) with adapters; qwix traces each once on tiny inputs to create them."""
    rngs = nnx.Rngs(seed)  # One default stream: adapter init, and the dropout qwix draws during that first call.
    down = 2 ** (len(sd.unet_config["block_out_channels"]) - 1)
    example = (jnp.zeros((1, down, down, sd.unet_config["in_channels"])), jnp.zeros((1,), jnp.int32),
               jnp.zeros((1, 1, sd.unet_config["cross_attention_dim"])))
    unet = lora.add_lora(sd.unet, configs["unet"], *example, rngs=rngs)
    text_encoder = sd.text_encoder
    if "text_encoder" in configs:
        text_encoder = lora.add_lora(text_encoder, configs["text_encoder"], jnp.zeros((1, 2), jnp.int32), rngs=rngs)
    return unet, text_encoder
