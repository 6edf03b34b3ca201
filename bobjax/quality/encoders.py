"""The feature spaces of the quality metrics and the filters, by ``config.quality.encoder``.

- a CLIP image tower (a transformers ``CLIPModel`` by hub id or folder; ``default`` on real datasets is
  ``openai/clip-vit-base-patch16``, the weights of BOB's CLIP classifier): the unit-norm projected image embedding,
  its zero-shot logits against the class prompts ("a {descriptor} photo of a {class}"), and the text tower for
  prompts (CLIP score, the text half of the hard-cosine filter);
- ``toyworld_oracle`` (``default`` on the toy world, which must run offline on a fresh machine): the penultimate
  features of the report's class-fidelity oracle (:mod:`bobjax.toyworld.fidelity`) and its head as the
  "zero-shot" classifier. It has no text tower.

Every number the report prints names the encoder (:attr:`Encoder.name`): an FD in one space says nothing about an FD
in another.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bobjax.data.image_ops import resize_and_center_crop
from bobjax.errors import ConfigError
from bobjax.prompt_templates import class_prompts

ORACLE = "toyworld_oracle"
DEFAULT_CLIP = "openai/clip-vit-base-patch16"


@dataclasses.dataclass
class Encoder:
    name: str  # Printed beside every number measured in this space.
    image_size: int  # Images are resized (shorter side, bicubic) and centre-cropped to this first.
    batch_size: int
    features: Callable[[np.ndarray], np.ndarray]  # uint8 [B, S, S, 3] -> float32 [B, D]
    class_logits: Callable[[np.ndarray], np.ndarray]  # features -> zero-shot logits [B, classes]
    # prompts -> unit text embeddings [N, D] in the image features' space; None: no text tower.
    text_features: Callable[[Sequence[str]], np.ndarray] | None = None
    class_text: np.ndarray | None = None  # Unit embeddings of the class prompts [classes, D], with a text tower.

    def encode(self, source, indices: Sequence[int] | None = None) -> tuple[np.ndarray, list[dict]]:
        """(features [N, D], the other fields of each record) of ``source``'s records (all, or ``indices``), read and
        encoded ``batch_size`` at a time: a synthetic set of 20,000 512-px images never sits in memory."""
        indices = range(len(source)) if indices is None else indices
        features, fields = [], []
        for start in range(0, len(indices), self.batch_size):
            records = [source[int(i)] for i in indices[start:start + self.batch_size]]
            images = np.stack([resize_and_center_crop(np.asarray(r["image"]), self.image_size) for r in records])
            count = len(images)
            if count < self.batch_size:  # One compiled shape for every batch.
                images = np.concatenate([images, np.repeat(images[-1:], self.batch_size - count, axis=0)])
            features.append(np.asarray(self.features(images), np.float32)[:count])
            fields += [{k: v for k, v in r.items() if k != "image"} for r in records]
        width = features[0].shape[1] if features else 0
        return (np.concatenate(features) if features else np.zeros((0, width), np.float32)), fields


def encoder_name(config) -> str:
    """``config.quality.encoder`` with ``default`` resolved for the dataset."""
    name = config.quality.encoder
    if not name:
        raise ConfigError("config.quality.encoder is empty; expected 'default', 'toyworld_oracle', or a hub id or "
                          "folder of a transformers CLIPModel")
    if name == "default":
        return ORACLE if config.data.source == "toyworld" else DEFAULT_CLIP
    return name


def make_encoder(config, class_names: Sequence[str], descriptor: str, oracle=None) -> Encoder:
    """The encoder ``config.quality.encoder`` names, for ``class_names``. ``oracle``: a trained toy-world oracle to
    reuse (the report's); without one, ``toyworld_oracle`` trains its own (``config.report.oracle_*``, seed
    ``config.seed``)."""
    name, batch_size = encoder_name(config), config.quality.batch_size
    if batch_size < 1:
        raise ConfigError(f"config.quality.batch_size must be at least 1, got {batch_size}")
    if name == ORACLE:
        if config.data.source != "toyworld":
            raise ConfigError(f"config.quality.encoder={name!r} exists only on the toy world (config.data.source="
                              f"{config.data.source!r}); use 'default' or a CLIP hub id or folder")
        if oracle is None:
            oracle = _train_oracle(config)
        return Encoder(f"toy-world oracle (resnet_tiny penultimate features, {oracle.model.num_features}-d)",
                       oracle.image_size, batch_size, oracle.features, oracle.logits)
    return _clip_encoder(name, class_names, descriptor, batch_size)


def _train_oracle(config):
    from bobjax import toyworld
    from bobjax.toyworld import fidelity

    if config.report.oracle_steps < 1:
        raise ConfigError(f"config.quality.encoder={ORACLE!r} needs the oracle: config.report.oracle_steps must be at "
                          f"least 1, got {config.report.oracle_steps}")
    return fidelity.train_oracle(toyworld.spec_from_config(config.data.toyworld),
                                 per_class=config.report.oracle_per_class, steps=config.report.oracle_steps,
                                 seed=config.seed)


@functools.partial(jax.jit, static_argnums=0)
def image_embeds(graphdef, state, images):
    """The CLIP encoder's one compiled program per batch shape: float32 images [B, S, S, 3] -> unit embeddings;
    ``bobjax.aot`` compiles it on abstract weights for a target."""
    return nnx.merge(graphdef, state).image_embeds(images)


@functools.partial(jax.jit, static_argnums=0)
def _text_embeds(graphdef, state, ids):
    return nnx.merge(graphdef, state).text_embeds(ids)


def clip_model(config: dict, prompt_ids: np.ndarray, image_size: int):
    """The encoder's CLIP model (random weights; built inside ``nnx.eval_shape`` by ``bobjax.aot``)."""
    from bobjax.models import clip

    return clip.CLIPClassifier(config, prompt_ids, image_size, rngs=nnx.Rngs(0))


def resolve_clip(name: str):
    """The CLIP weights ``name`` names, fetched from the hub if needed (before any stage: :mod:`bobjax.pretrained`)."""
    from bobjax.models import hub

    return hub.resolve(name, hub.model_patterns, what="config.quality.encoder")


def _clip_encoder(name: str, class_names: Sequence[str], descriptor: str, batch_size: int) -> Encoder:
    from bobjax.models import clip, weights
    from bobjax.models.clip_tokenizer import load_clip_tokenizer

    resolved = resolve_clip(name)
    folder = resolved.path
    files = [os.path.join(folder, f) for f in resolved.files if f.endswith((".safetensors", ".bin"))]
    if not os.path.isdir(folder) or not files:
        raise ConfigError(f"config.quality.encoder={name!r} must be a transformers CLIPModel folder or hub id (config"
                          f".json and its weights), or {ORACLE!r} on the toy world")
    config = clip.read_config(folder)
    size = {**clip.VISION_B16, **config["vision_config"]}["image_size"]
    max_length = {**clip.TEXT_B16, **config["text_config"]}["max_position_embeddings"]
    tokenizer = load_clip_tokenizer(folder)
    prompts = class_prompts(descriptor, class_names)
    model = clip_model(config, clip.tokenize_prompts(tokenizer, prompts, max_length), size)
    clip.load_clip_weights(model, weights.read_state_dict(files), source=resolved.name)
    graphdef, state = nnx.split(model)
    mean, std = np.asarray(clip.CLIP_MEAN, np.float32), np.asarray(clip.CLIP_STD, np.float32)
    scale = float(np.exp(np.asarray(model.logit_scale[...])))

    def texts(prompts: Sequence[str]) -> np.ndarray:
        ids = clip.tokenize_prompts(tokenizer, list(prompts), max_length)
        out = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
            out.append(np.asarray(_text_embeds(graphdef, state, jnp.asarray(padded)))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, config["projection_dim"]), np.float32)

    class_text = texts(prompts)
    return Encoder(
        f"CLIP {name} (unit image embeddings, {config['projection_dim']}-d)", size, batch_size,
        features=lambda images: np.asarray(image_embeds(graphdef, state, jnp.asarray((images / 255.0 - mean) / std,
                                                                                    jnp.float32))),
        class_logits=lambda features: scale * features @ class_text.T, text_features=texts, class_text=class_text)
