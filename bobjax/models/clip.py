"""CLIP as BOB's classifier: image tower, text tower, and logits = logit_scale x cosine(image, class prompt).

Names mirror transformers' ``CLIPModel`` (``vision_model.*``, ``text_model.*``, ``visual_projection``,
``text_projection``, ``logit_scale``) so its checkpoints load key for key. The text tower is Stable Diffusion's
(:mod:`bobjax.models.clip_text`), the transformer stack of both towers is :mod:`bobjax.models.clip_encoder`.
The class prompts ("a {descriptor} photo of a {class}") are tokenised once and kept in the model as
non-trainable ``PromptIds``, so the text tower (with its LoRA) runs on them at every step. ``dtype`` is the
computation dtype of both towers and projections; parameters stay float32, LayerNorms compute in float32 (see
:mod:`~bobjax.models.clip_encoder`), and so do the cosine logits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from bobjax.models import weights
from bobjax.models.clip_encoder import CLIPEncoder, activation
from bobjax.models.clip_text import CLIPTextModel
from bobjax.models.sd.norms import layer_norm
from bobjax.models.vit import resample_pos_embed

# transformers' CLIPVisionConfig defaults are ViT-B/32; these are the ViT-B/16 of openai/clip-vit-base-patch16.
VISION_B16 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "patch_size": 16, "image_size": 224, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
TEXT_B16 = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
            "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            "eos_token_id": 49407}
CLIP_B16 = {"vision_config": VISION_B16, "text_config": TEXT_B16, "projection_dim": 512,
            "logit_scale_init_value": 2.6592}
# CLIP's own input normalisation (OpenAI), for images in [0, 1].
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class PromptIds(nnx.Variable):
    """Token ids of the class prompts: model state, never trained, not in the checkpoint."""


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, config: Mapping[str, Any], image_size: int, dtype, rngs: nnx.Rngs):
        width, patch = config["hidden_size"], config["patch_size"]
        if image_size % patch:
            raise ValueError(f"config.classify.image_size={image_size} is not a multiple of CLIP's patch size {patch}")
        self.patch_embedding = nnx.Conv(3, width, (patch, patch), strides=patch, padding="VALID", use_bias=False,
                                        dtype=dtype, rngs=rngs)
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (width,)) * width ** -0.5)
        self.position_embedding = nnx.Embed((image_size // patch) ** 2 + 1, width, rngs=rngs)

    def __call__(self, images):
        x = self.patch_embedding(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...], (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
        return jnp.concatenate([cls, x], axis=1) + self.position_embedding.embedding[...][None].astype(x.dtype)


class CLIPVisionTransformer(nnx.Module):
    """Patches -> pre-LayerNorm -> encoder -> post-LayerNorm of the class token (transformers' pooled output)."""

    def __init__(self, config: Mapping[str, Any], image_size: int, *, attention: str, dtype, rngs: nnx.Rngs):
        activation(config["hidden_act"])
        width, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = CLIPVisionEmbeddings(config, image_size, dtype, rngs)
        self.pre_layrnorm = layer_norm(width, eps, param_dtype=jnp.float32, rngs=rngs)  # sic: transformers' name
        self.encoder = CLIPEncoder(config, dtype=dtype, param_dtype=jnp.float32, attention=attention, rngs=rngs)
        self.post_layernorm = layer_norm(width, eps, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, images):
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(images)))
        return self.post_layernorm(hidden[:, 0])


def _normalize(x):
    """Unit vectors in float32: the logit scale (up to 100) would magnify bfloat16's rounding of the cosines."""
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _spread_over_devices(input_ids):
    """The prompts split over every device of the mesh in context (padded with copies of the first to a multiple of
    the devices), so that each device encodes its share: left replicated, the class prompts (200 for CUB) ran through
    the text tower, forward and backward, on every device at every step."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return input_ids
    pad = -input_ids.shape[0] % mesh.size
    padded = jnp.concatenate([input_ids, jnp.broadcast_to(input_ids[:1], (pad, input_ids.shape[1]))])
    return jax.lax.with_sharding_constraint(padded, PartitionSpec(mesh.axis_names))


class CLIPClassifier(nnx.Module):
    def __init__(self, config: Mapping[str, Any], prompt_ids: np.ndarray, image_size: int, *,
                 attention: str = "auto", dtype=jnp.float32, rngs: nnx.Rngs):
        vision, text, dim = {**VISION_B16, **config["vision_config"]}, {**TEXT_B16, **config["text_config"]}, config["projection_dim"]
        self.vision_model = CLIPVisionTransformer(vision, image_size, attention=attention, dtype=dtype, rngs=rngs)
        self.text_model = CLIPTextModel(text, dtype=dtype, attention=attention, with_projection=False, rngs=rngs)
        self.visual_projection = nnx.Linear(vision["hidden_size"], dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.text_projection = nnx.Linear(text["hidden_size"], dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(config.get("logit_scale_init_value", 2.6592), jnp.float32))
        self.prompt_ids = PromptIds(jnp.asarray(prompt_ids, jnp.int32))

    def image_embeds(self, images):
        return _normalize(self.visual_projection(self.vision_model(images)))

    def text_embeds(self, input_ids):
        count = input_ids.shape[0]
        input_ids = _spread_over_devices(input_ids)
        return _normalize(self.text_projection(self.text_model.encode(input_ids).pooler_output))[:count]

    def __call__(self, images):
        """NHWC images (CLIP-normalised) -> class logits [B, num_prompts]."""
        return jnp.exp(self.logit_scale[...]) * self.image_embeds(images) @ self.text_embeds(self.prompt_ids[...]).T


def read_config(folder: str) -> dict:
    """A transformers CLIP folder's ``config.json`` (CLIPConfig), or ViT-B/16's when there is none."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return CLIP_B16
    with open(path) as f:
        config = json.load(f)
    if "vision_config" not in config or "text_config" not in config:
        raise ValueError(f"{path} is not a CLIPModel config (no vision_config / text_config)")
    return config


def tokenize_prompts(tokenizer, prompts: Sequence[str], max_length: int) -> np.ndarray:
    return np.asarray(tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True)["input_ids"])


def _checkpoint_key(key: str) -> str | None:
    """transformers CLIPModel key -> ours: the position-id buffers are not parameters."""
    return None if key.endswith("embeddings.position_ids") else key


def load_clip_weights(model: CLIPClassifier, state_dict: Mapping[str, np.ndarray], *, source: str) -> None:
    """Copies a transformers CLIPModel state dict into ``model`` (strict); position embeddings of another image
    size are resized as timm resizes ViT's."""
    state = dict(state_dict)
    key = "vision_model.embeddings.position_embedding.weight"
    tokens = model.vision_model.embeddings.position_embedding.embedding[...].shape[0]
    if key in state and state[key].shape[0] != tokens:
        state[key] = resample_pos_embed(np.asarray(state[key], np.float32)[None], tokens)[0]
    weights.load_state_dict(model, state, rename=_checkpoint_key, source=source)
