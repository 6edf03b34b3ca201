"""The classify stage's backbones by name: construction, checkpoint import, input normalisation, layer depth.

``config.classify.backbone`` picks one; ``config.classify.checkpoint`` names its weights in the backbone's
PyTorch format (a file, or a folder holding ``model.safetensors`` / ``pytorch_model.bin``, as timm saves them);
empty means random initialisation (the tiny demo ResNet trains from scratch).
"""

from __future__ import annotations

import glob
import os

from flax import nnx

from bobjax.errors import ConfigError
from bobjax.models import resnet, vit, weights

RESNETS = ("resnet_tiny", "resnet18", "resnet50")
VITS = ("vit_b16", "mae_vit_b16")
BACKBONES = RESNETS + VITS
# timm's ImageNet normalisation, which the ResNet and ViT checkpoints were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def build(backbone: str, num_classes: int, image_size: int, *, rngs: nnx.Rngs) -> nnx.Module:
    if backbone in RESNETS:
        return resnet.resnet(backbone, num_classes, rngs=rngs)
    if backbone in VITS:
        return vit.vit(backbone, num_classes, image_size, rngs=rngs)
    if backbone == "clip_vit_b16":
        raise ConfigError("config.classify.backbone 'clip_vit_b16' is not built yet (it waits for the shared CLIP text "
                          f"encoder and LoRA modules); choose one of {BACKBONES}")
    raise ConfigError(f"config.classify.backbone is {backbone!r}; expected one of {BACKBONES + ('clip_vit_b16',)}")


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
    raise ConfigError(f"config.classify.checkpoint {path!r} is neither a file nor a folder (hub ids are not resolved "
                      "here: download the timm weights and pass their folder)")


def load_pretrained(model: nnx.Module, backbone: str, path: str) -> None:
    """Loads a timm checkpoint into ``model`` with a new head (the classifier's classes are not ImageNet's)."""
    state = weights.read_state_dict(checkpoint_files(path))
    if backbone in RESNETS:
        resnet.load_timm_resnet(model, state, new_head=True, source=path)
    else:
        vit.load_timm_vit(model, state, new_head=True, source=path)


def input_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the backbone's input normalisation, for images in [0, 1]."""
    del backbone  # Every backbone built so far is a timm ImageNet model.
    return IMAGENET_MEAN, IMAGENET_STD


def layer_depth(backbone: str, path: tuple) -> tuple[int, int]:
    """(depth of the parameter at ``path``, number of depths) for layer-wise learning-rate decay.

    ViT: embeddings 0, block i at i + 1, final norm and head at depth + 1 (BEiT/MAE's rule). ResNet: stem 0,
    stage k at k, head 5.
    """
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
