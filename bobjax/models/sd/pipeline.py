"""``load_stable_diffusion``: a diffusers Stable Diffusion folder or hub id -> bobjax Flax NNX modules.

Modules are built abstractly (``nnx.eval_shape``) and filled straight from the checkpoint, so a 1B-parameter
model never pays for a random init. Reads the diffusers layout: ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, each with a ``config.json`` and safetensors (preferred), ``.bin``, an fp16
``variant``, or a sharded ``*.index.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import CLIPTokenizer

from bobjax.models import hub, weights
from bobjax.models.clip import tokenize_prompts
from bobjax.models.clip_text import CLIPTextModel, load_clip_text_weights
from bobjax.models.sd.unet import UNet2DConditionModel
from bobjax.models.sd.vae import AutoencoderKL, load_vae_weights

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# Classes model_index.json may name for each component we load (others would need other modules).
_SUPPORTED_CLASSES = {
    "unet": ("UNet2DConditionModel",),
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel", "CLIPTextModelWithProjection"),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
}
# Weight file stems in preference order: diffusers names both formats diffusion_pytorch_model, transformers
# uses model.safetensors and pytorch_model.bin.
_WEIGHT_STEMS = {
    "safetensors": ("diffusion_pytorch_model", "model"),
    "bin": ("diffusion_pytorch_model", "pytorch_model"),
}
_WEIGHTED = ("unet", "vae", "text_encoder")


@dataclasses.dataclass
class StableDiffusion:
    """The loaded pipeline parts; configs are the checkpoint's config.json dicts."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler_config: dict[str, Any]
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_encoder_config: dict[str, Any]
    path: str  # the local folder the pipeline was read from

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """int32 token ids [N, L] of ``prompts``, padded and truncated to L = the text encoder's
        ``max_position_embeddings``: the length it was trained for and the most it can read. Not the tokenizer's
        ``model_max_length``, which a tokenizer saved without it reports as 1e30."""
        return tokenize_prompts(self.tokenizer, prompts, self.text_encoder.max_position_embeddings).astype(np.int32)


def load_stable_diffusion(
    name_or_path: str | os.PathLike,
    dtype=jnp.float32,
    *,
    param_dtype=None,
    attention: str = "auto",
    variant: str | None = None,
    revision: str | None = None,
    remat: bool = False,
) -> StableDiffusion:
    """Loads a Stable Diffusion 1.x/2.x pipeline from a local diffusers folder or a Hugging Face hub id.

    ``dtype`` is the computation dtype; ``param_dtype`` (default: ``dtype``) the dtype weights are cast to.
    ``variant="fp16"`` reads ``*.fp16.safetensors`` files; ``revision`` picks a hub branch/commit.
    ``attention`` picks the kernel of every attention layer; ``remat`` makes the UNet recompute activations in
    the backward pass (fine-tuning memory).
    """
    param_dtype = dtype if param_dtype is None else param_dtype
    folder = resolve_stable_diffusion(name_or_path, variant=variant, revision=revision).path
    _check_model_index(folder)
    for component in COMPONENTS:
        if not os.path.isdir(os.path.join(folder, component)):
            needed = ", ".join(COMPONENTS)
            raise FileNotFoundError(f"{folder} has no '{component}' folder: a diffusers SD folder needs {needed}")
    configs = read_configs(folder)
    build = module_builders(configs, dtype=dtype, param_dtype=param_dtype, attention=attention, remat=remat)
    loaders = {"unet": weights.load_state_dict, "vae": load_vae_weights, "text_encoder": load_clip_text_weights}
    modules = {c: _load_module(folder, c, variant, build[c], loaders[c]) for c in _WEIGHTED}
    return StableDiffusion(
        **modules,
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")),
        scheduler_config=configs["scheduler"],
        unet_config=configs["unet"],
        vae_config=configs["vae"],
        text_encoder_config=configs["text_encoder"],
        path=folder,
    )


def read_configs(folder: str) -> dict[str, dict[str, Any]]:
    """The config.json of each weighted component and the scheduler's config: all that a model's shapes need."""
    configs = {component: _read_json(folder, component, "config.json") for component in _WEIGHTED}
    return {**configs, "scheduler": _read_json(folder, "scheduler", "scheduler_config.json")}


def module_builders(configs, *, dtype, param_dtype, attention: str, remat: bool) -> dict[str, Callable]:
    """``rngs -> module`` for the UNet, VAE and text encoder, as the loader builds them (``bobjax.aot`` builds the
    same ones abstractly, from the configs alone)."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, attention=attention)
    return {"unet": lambda rngs: UNet2DConditionModel(configs["unet"], remat=remat, rngs=rngs, **kw),
            "vae": lambda rngs: AutoencoderKL(configs["vae"], rngs=rngs, **kw),
            "text_encoder": lambda rngs: CLIPTextModel(configs["text_encoder"], rngs=rngs, **kw)}


def _load_module(folder: str, component: str, variant: str | None, build: Callable, load: Callable) -> nnx.Module:
    """Builds the module without allocating parameters, then fills it from the component's weight files."""
    module = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    files = weight_files(os.path.join(folder, component), variant)
    load(module, weights.read_state_dict(files), source=os.path.join(folder, component))
    abstract = [
        ".".join(map(str, path))
        for path, value in jax.tree_util.tree_leaves_with_path(nnx.state(module))
        if isinstance(value, jax.ShapeDtypeStruct)
    ]
    if abstract:  # a variable the checkpoint does not hold (e.g. a buffer) would otherwise stay shape-only
        raise ValueError(f"{component}: these variables are not parameters and were not filled: {abstract}")
    return module


def weight_files(component_dir: str, variant: str | None = None) -> list[str]:
    """The weight files of one component folder: safetensors before .bin, single file before a sharded index."""
    candidates = [
        _with_variant(name, variant)
        for fmt, stems in _WEIGHT_STEMS.items()
        for stem in stems
        for name in (f"{stem}.{fmt}", f"{stem}.{fmt}.index.json")
    ]
    for name in candidates:
        path = os.path.join(component_dir, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".json"):
            return [path]
        with open(path) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(component_dir, shard) for shard in shards]
    present = sorted(os.listdir(component_dir)) if os.path.isdir(component_dir) else []
    raise FileNotFoundError(f"no weights in {component_dir}: looked for {', '.join(candidates)}; found {present}")


def _with_variant(name: str, variant: str | None) -> str:
    """model.safetensors -> model.fp16.safetensors; x.safetensors.index.json -> x.safetensors.index.fp16.json."""
    if not variant:
        return name
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def _read_json(folder: str, component: str, name: str) -> dict[str, Any]:
    path = os.path.join(folder, component, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing {component}/{name} in {folder}")
    with open(path) as f:
        return json.load(f)


def _check_model_index(folder: str) -> None:
    path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(path):
        return  # optional: a folder assembled by hand may lack it; the component folders are what we read
    with open(path) as f:
        index = json.load(f)
    for component, supported in _SUPPORTED_CLASSES.items():
        entry = index.get(component)
        class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
        if class_name is not None and class_name not in supported:
            raise ValueError(f"{path}: {component} is a {class_name}; bobjax loads {' or '.join(supported)}")


def resolve_stable_diffusion(name_or_path: str | os.PathLike, *, variant: str | None = None,
                             revision: str | None = None, what: str = "Stable Diffusion") -> hub.Resolved:
    """A local diffusers folder as is; ``bobjax:NAME`` a folder shipped in the package; otherwise a hub id, fetched
    (only the files we load, one weight format) into the HF cache. ``what`` names the weights in errors."""
    return hub.resolve(os.fspath(name_or_path), lambda fmt: hub_allow_patterns(fmt, variant), what=what,
                       revision=revision,
                       complete=lambda folder: not any(_has_no_weights(folder, c, variant) for c in _WEIGHTED))


def hub_allow_patterns(fmt: str, variant: str | None) -> list[str]:
    """Configs, tokenizer and one weight format of the components we load (not safety_checker, not other variants)."""
    suffix = f".{variant}" if variant else ""
    patterns = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/*"]
    for component in _WEIGHTED:
        patterns.append(f"{component}/config.json")
        for stem in _WEIGHT_STEMS[fmt]:
            patterns += [
                f"{component}/{stem}{suffix}.{fmt}",
                f"{component}/{stem}{suffix}-*.{fmt}",
                f"{component}/{stem}.{fmt}.index{suffix}.json",
            ]
    return patterns


def _has_no_weights(folder: str, component: str, variant: str | None) -> bool:
    try:
        weight_files(os.path.join(folder, component), variant)
    except FileNotFoundError:
        return True
    return False
