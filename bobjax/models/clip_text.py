"""CLIP text tower in Flax NNX, loading transformers ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` weights.

Used as Stable Diffusion's text encoder and by the CLIP classifier. Parameter names mirror transformers without
the ``text_model.`` prefix; :func:`checkpoint_key` maps both checkpoint layouts (hub SD checkpoints carry the
prefix, transformers v5 ``save_pretrained`` of ``CLIPTextModel`` does not) onto them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bobjax.models import weights
from bobjax.models.clip_encoder import CLIPEncoder, activation, causal_mask
from bobjax.models.sd.norms import layer_norm

# transformers' CLIPTextConfig defaults, for keys an older config.json leaves out.
TEXT_CONFIG_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
# Legacy CLIP configs (e.g. openai/clip-vit-large-patch14, SD 1.x) say eos_token_id=2; their EOS is the
# highest id in each row, so pooling takes the argmax position, as transformers does for them.
_LEGACY_EOS_TOKEN_ID = 2


@struct.dataclass
class CLIPTextOutput:
    last_hidden_state: jax.Array  # [B, L, hidden_size], after final_layer_norm
    pooler_output: jax.Array  # [B, hidden_size], the EOS token's state
    text_embeds: jax.Array | None = None  # [B, projection_dim] when the model has a text_projection


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in and the options this implementation depends on validated."""
    config = {**TEXT_CONFIG_DEFAULTS, **config}
    activation(config["hidden_act"])
    eos = config["eos_token_id"]
    if not isinstance(eos, int):
        raise ValueError(f"CLIP text config eos_token_id must be one int, got {eos!r}")
    return config


class CLIPTextEmbeddings(nnx.Module):
    """Token and position embeddings, looked up in the parameters' dtype and then cast to ``dtype``: an ``nnx.Embed``
    with a compute dtype casts its whole table first, which for CLIP's 49,408 x 512 vocabulary read and wrote 0.15 GB
    per device per classifier step on a v5e-8 to gather a few thousand rows (``benchmarks/step_bytes.py``)."""

    def __init__(self, config: Mapping[str, Any], *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=param_dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.token_embedding = nnx.Embed(config["vocab_size"], config["hidden_size"], **kw)
        self.position_embedding = nnx.Embed(config["max_position_embeddings"], config["hidden_size"], **kw)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])
        tokens, places = self.token_embedding(input_ids), self.position_embedding(positions)[None]
        return tokens.astype(self.dtype) + places.astype(self.dtype)


class CLIPTextModel(nnx.Module):
    """Token ids -> causal transformer -> final LayerNorm; ``encode`` also pools (and projects) the EOS state.

    ``with_projection`` adds ``text_projection`` (CLIPTextModelWithProjection); by default it is read from the
    config's ``architectures``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        attention: str = "auto",
        with_projection: bool | None = None,
        rngs: nnx.Rngs,
    ):
        config = text_config(config)
        # Only hashable scalars are kept as attributes, so the graphdef can be a static jit argument.
        self.max_position_embeddings: int = config["max_position_embeddings"]
        self.eos_token_id: int = config["eos_token_id"]
        self.dtype = dtype
        if with_projection is None:
            with_projection = "CLIPTextModelWithProjection" in (config.get("architectures") or ())
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = CLIPTextEmbeddings(config, **kw)
        self.encoder = CLIPEncoder(config, attention=attention, **kw)
        self.final_layer_norm = layer_norm(
            config["hidden_size"], config["layer_norm_eps"], param_dtype=param_dtype, rngs=rngs
        )
        self.text_projection = (
            nnx.Linear(config["hidden_size"], config["projection_dim"], use_bias=False, **kw)
            if with_projection
            else None
        )

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """[B, L] int ids (optional [B, L] 0/1 padding mask) -> last hidden state [B, L, hidden_size]."""
        return self.encode(input_ids, attention_mask).last_hidden_state

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> CLIPTextOutput:
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(
                f"input_ids must be a [batch, length] integer array, got {input_ids.dtype}{input_ids.shape}"
            )
        length, max_length = input_ids.shape[1], self.max_position_embeddings
        if length > max_length:
            raise ValueError(f"input_ids length {length} exceeds max_position_embeddings {max_length}")
        hidden = self.embeddings(input_ids)
        hidden = self.encoder(hidden, causal_mask(length, attention_mask))
        hidden = self.final_layer_norm(hidden).astype(self.dtype)

        eos = self.eos_token_id
        eos_index = jnp.argmax(input_ids if eos == _LEGACY_EOS_TOKEN_ID else input_ids == eos, axis=-1)
        pooled = jnp.take_along_axis(hidden, eos_index[:, None, None], axis=1)[:, 0]
        projected = self.text_projection(pooled) if self.text_projection is not None else None
        return CLIPTextOutput(last_hidden_state=hidden, pooler_output=pooled, text_embeds=projected)


def checkpoint_key(key: str) -> str | None:
    """Checkpoint key -> our key: drops the ``text_model.`` prefix and the non-parameter position_ids buffer."""
    key = key.removeprefix("text_model.")
    return None if key == "embeddings.position_ids" else key


def load_clip_text_weights(model: CLIPTextModel, state_dict: Mapping, *, source: str = "checkpoint") -> None:
    """Fills ``model`` from a transformers CLIP text checkpoint in either key layout (strict)."""
    weights.load_state_dict(model, state_dict, rename=checkpoint_key, source=source)
