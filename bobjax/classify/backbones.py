"""The classify stage's backbones by name: construction, checkpoint import, input normalisation, layer depth.

``config.classify.backbone`` picks one; ``config.classify.checkpoint`` names its weights in the backbone's
PyTorch format: ``"default"`` the backbone's pretrained weights on the Hugging Face hub (:data:`DEFAULT_CHECKPOINTS`),
``"random"`` random initialisation (the demo's tiny ResNet trains from scratch), or a hub id, a file, or a folder
holding ``model.safetensors`` / ``pytorch_model.bin`` as timm and transformers save them.
ResNets and ViTs are fine-tuned whole with a new head; CLIP keeps its weights frozen and trains LoRA adapters
(rank, alpha, dropout from the config) on ``q_proj`` and ``v_proj`` of both towers.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import jax.numpy as jnp
from flax import nnx

from bobjax.errors import ConfigError
from bobjax.models import clip, clip_tokenizer, hub, lora, resnet, vit, weights
from bobjax.prompt_templates import class_prompts

RESNETS = tuple(resnet.PRESETS)
VITS = ("vit_b16", "mae_vit_b16")
BACKBONES = RESNETS + VITS + ("clip_vit_b16",)
CLIP_LORA_TARGETS = ("q_proj", "v_proj")
# timm's ImageNet normalisation, which the ResNet and ViT checkpoints were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")
# The weights of config.classify.checkpoint="default": timm repos (config.json, model.safetensors,
# pytorch_model.bin) and transformers' CLIPModel (config.json, weights, tokenizer files).
DEFAULT_CHECKPOINTS = {
    "clip_vit_b16": "openai/clip-vit-base-patch16",
    "resnet50": "timm/resnet50.tv_in1k",
    "vit_b16": "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "mae_vit_b16": "timm/vit_base_patch16_224.mae",
}


@dataclasses.dataclass
class Classifier:
    """A backbone ready to train: the model (training mode), the graph of its evaluation mode (same state
    layout: BatchNorm reads its statistics, LoRA dropout is off), what is trained, and its input statistics."""

    model: nnx.Module
    eval_graph: nnx.GraphDef
    trainable: type  # nnx.Param (full fine-tuning) or nnx.LoRAParam (adapters only)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    lora_dropout: float = 0.0


def resolve_checkpoint(cfg) -> hub.Resolved | None:
    """``config.classify.checkpoint`` -> its weights, fetched from the hub if needed; None for ``"random"``."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"config.classify.backbone is {cfg.backbone!r}; expected one of {BACKBONES}")
    name, what = cfg.checkpoint, "config.classify.checkpoint"
    if name == "random":
        return None
    if name == "default":
        if cfg.backbone not in DEFAULT_CHECKPOINTS:
            raise ConfigError(f"config.classify.backbone={cfg.backbone!r} has no pretrained default weights (only "
                              f"{', '.join(DEFAULT_CHECKPOINTS)} do): set config.classify.checkpoint='random' to train "
                              "it from scratch, or to a hub id, file or folder of its timm weights")
        name, what = DEFAULT_CHECKPOINTS[cfg.backbone], f"{what} (the default of {cfg.backbone})"
    elif not name:
        raise ConfigError("config.classify.checkpoint is empty; expected 'default' (the backbone's pretrained "
                          "weights), 'random' (train from scratch), a hub id, or a local file or folder")
    return hub.resolve(name, hub.model_patterns, what=what)


def build(cfg, checkpoint: hub.Resolved | None, class_names: list[str], descriptor: str, *, dtype=jnp.float32,
          rngs: nnx.Rngs, load_weights: bool = True) -> Classifier:
    """``config.classify`` -> the classifier for ``class_names``, with ``checkpoint`` (from :func:`resolve_checkpoint`;
    None: random initialisation) loaded; it computes in ``dtype`` (parameters stay float32). ``load_weights=False``
    reads only a CLIP checkpoint's config (``bobjax.aot`` builds the model abstractly)."""
    backbone, size = cfg.backbone, cfg.image_size
    if backbone == "clip_vit_b16":
        return _build_clip(cfg, checkpoint, class_names, descriptor, dtype, rngs, load_weights)
    if backbone in RESNETS:
        model = resnet.resnet(backbone, len(class_names), dtype=dtype, rngs=rngs)
    elif backbone in VITS:
        model = vit.vit(backbone, len(class_names), size, dtype=dtype, rngs=rngs)
    else:
        raise ConfigError(f"config.classify.backbone is {backbone!r}; expected one of {BACKBONES}")
    if checkpoint is not None and load_weights:
        state = weights.read_state_dict(checkpoint_files(checkpoint.path))
        loader = resnet.load_timm_resnet if backbone in RESNETS else vit.load_timm_vit
        loader(model, state, new_head=True, source=checkpoint.name)
    model.eval()
    eval_graph = nnx.graphdef(model)
    model.train()
    return Classifier(model, eval_graph, nnx.Param, IMAGENET_MEAN, IMAGENET_STD)


def _build_clip(cfg, checkpoint, class_names, descriptor, dtype, rngs, load_weights=True) -> Classifier:
    if cfg.layer_decay != 1.0:
        raise ConfigError("config.classify.layer_decay applies to ResNet and ViT fine-tuning; CLIP trains LoRA "
                          "adapters only, so set it to 1.0")
    folder = checkpoint.path if checkpoint else ""
    if folder and not os.path.isdir(folder):
        raise ConfigError(f"config.classify.checkpoint for clip_vit_b16 must be a transformers CLIPModel folder (or "
                          f"its hub id), got {checkpoint.name!r}")
    config = clip.read_config(folder) if folder else clip.CLIP_B16
    max_length = {**clip.TEXT_B16, **config["text_config"]}["max_position_embeddings"]
    ids = clip.tokenize_prompts(clip_tokenizer.load_clip_tokenizer(folder), class_prompts(descriptor, class_names),
                                max_length)
    model = clip.CLIPClassifier(config, ids, cfg.image_size, dtype=dtype, rngs=rngs)
    if folder and load_weights:
        clip.load_clip_weights(model, weights.read_state_dict(checkpoint_files(folder)), source=checkpoint.name)
    example = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    adapters = lambda dropout: lora.LoraConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=CLIP_LORA_TARGETS,  # noqa: E731
                                               dropout=dropout)
    train_model = lora.add_lora(model, adapters(cfg.lora_dropout), example, rngs=rngs)
    eval_model = lora.add_lora(model, adapters(0.0), example, rngs=rngs)
    return Classifier(train_model, nnx.graphdef(eval_model), nnx.LoRAParam, clip.CLIP_MEAN, clip.CLIP_STD,
                      cfg.lora_dropout)


def checkpoint_files(path: str) -> list[str]:
    """The weight file(s) of a checkpoint file or folder; a missing one is an error naming the path."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        for name in _CHECKPOINT_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return [os.path.join(path, name)]
        shards = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if shards:
            return shards
        raise ConfigError(f"config.classify.checkpoint folder {path} holds none of {_CHECKPOINT_FILES} or *.safetensors")
    raise ConfigError(f"config.classify.checkpoint {path!r} is neither a file nor a folder")


def layer_depth(backbone: str, path: tuple) -> tuple[int, int]:
    """(depth of the parameter at ``path``, number of depths) for layer-wise learning-rate decay.

    ViT: embeddings 0, block i at i + 1, final norm and head at depth + 1 (BEiT/MAE's rule). ResNet: stem 0,
    stage k at k, head 5.
    """
    if backbone not in RESNETS + VITS:
        raise ConfigError(f"layer-wise lr decay is defined for ResNet and ViT backbones, not {backbone!r}")
    top = str(path[0])
    if backbone in VITS:
        depth = vit.PRESETS[backbone].depth
        if top in ("patch_embed", "cls_token", "pos_embed"):
            return 0, depth + 2
        if top == "blocks":
            return int(path[1]) + 1, depth + 2
        return depth + 1, depth + 2
    if top.startswith("layer"):
        return int(top[len("layer"):]), 6
    return (5, 6) if top == "fc" else (0, 6)
