"""The stages' models built abstractly (``nnx.eval_shape``): every parameter a ``jax.ShapeDtypeStruct``, nothing
allocated, from a checkpoint's config files alone.

The modules are the loader's own (``models.sd.pipeline.module_builders``, ``classify.backbones.build``), built with
the config's dtype, attention and remat, and the adapters are added as the stages add them; only the weights' values
are missing, which no compiler needs.
"""

from __future__ import annotations

import functools
import os

import jax.numpy as jnp
from flax import nnx

from bobjax import assets
from bobjax.models import hub

# A diffusers pipeline's files that fix its shapes: a few KB instead of GBs of weights.
SD_CONFIG_FILES = ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                   "scheduler/scheduler_config.json"]


def sd_configs(name: str) -> dict:
    """``config.model.sd`` (a local folder, ``bobjax:NAME`` or a hub id) -> the config dicts of its components,
    fetching only the config files of a hub checkpoint."""
    from bobjax.models.sd.pipeline import read_configs

    resolved = hub.resolve(assets.resolve(name), lambda fmt: SD_CONFIG_FILES, what="config.model.sd",
                           complete=lambda folder: os.path.isfile(os.path.join(folder, "unet", "config.json")))
    return read_configs(resolved.path)


class AbstractSD:
    """What the stages read of a loaded ``StableDiffusion``, with abstract modules; ``tokenize`` gives ids of the
    right shape from CLIP's own vocabulary (a checkpoint's tokenizer changes values, not shapes)."""

    def __init__(self, configs: dict, *, dtype, attention: str, remat: bool, adapters=None, seed: int = 0):
        from bobjax.models.sd.pipeline import module_builders

        self.unet_config, self.vae_config = configs["unet"], configs["vae"]
        self.text_encoder_config, self.scheduler_config = configs["text_encoder"], configs["scheduler"]
        build = module_builders(configs, dtype=dtype, param_dtype=dtype, attention=attention, remat=remat)

        def models():
            rngs = nnx.Rngs(0)
            self.unet, self.vae, self.text_encoder = (build[c](rngs) for c in ("unet", "vae", "text_encoder"))
            if adapters is None:
                return self.unet, self.vae, self.text_encoder
            from bobjax.finetune.adapters import add_adapters

            unet, text_encoder = add_adapters(self, adapters, seed)
            return unet, self.vae, text_encoder

        self.unet, self.vae, self.text_encoder = nnx.eval_shape(models)

    def tokenize(self, prompts):
        from bobjax.models.clip import tokenize_prompts

        length = self.text_encoder_config.get("max_position_embeddings", 77)
        return tokenize_prompts(clip_tokenizer(), prompts, length).astype("int32")


@functools.cache
def clip_tokenizer():
    """CLIP's own vocabulary (shipped with bobjax): the ids' shapes are what a compile needs."""
    from bobjax.models.clip_tokenizer import load_clip_tokenizer

    return load_clip_tokenizer("")


def classifier(cfg, class_names: list[str], descriptor: str, dtype):
    """``classify.backbones.build`` on abstract weights: (model in training mode, evaluation graph, what trains,
    mean, std, LoRA dropout). ResNets and ViTs are their presets (``resnet.PRESETS``, ``vit.PRESETS``); CLIP's config
    is a local checkpoint folder's, else ViT-B/16's (``clip.CLIP_B16``, the default checkpoint's): no weights are
    read or fetched."""
    from bobjax.classify import backbones

    checkpoint = None
    if cfg.backbone == "clip_vit_b16" and os.path.isdir(cfg.checkpoint):
        checkpoint = hub.Resolved(cfg.checkpoint, cfg.checkpoint, ())
    box = {}

    def build():
        box["classifier"] = built = backbones.build(cfg, checkpoint, class_names, descriptor, dtype=jnp.dtype(dtype),
                                                    rngs=nnx.Rngs(0), load_weights=False)
        return built.model

    model = nnx.eval_shape(build)
    built = box["classifier"]
    return model, built.eval_graph, built.trainable, built.mean, built.std, built.lora_dropout
