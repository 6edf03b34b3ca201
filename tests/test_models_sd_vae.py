"""Our AutoencoderKL against diffusers' on the same random weights (NCHW torch vs NHWC ours).

Tolerance: max |ours - torch| <= 1e-4 * max(1, max |torch|), fp32.
"""

import json

import diffusers
import jax.numpy as jnp
import numpy as np
from compiled_call import compiled
from parity import close
import pytest
import torch
from flax import nnx

from bobjax.models import weights
from bobjax.models.sd.vae import AutoencoderKL, load_vae_weights

CONFIGS = {
    # SD-like: 3 levels (two asymmetric-padded downsamples), attention in both mid blocks, quant convs.
    "sd": dict(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4, latent_channels=4),
    # Options SD variants flip: no mid attention, no quant convs, 1 layer per block, other scaling factor.
    "variant": dict(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=3,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.13,
    ),  # fmt: skip
}


def torch_vae(name):
    blocks = len(CONFIGS[name]["block_out_channels"])
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        **CONFIGS[name],
    ).eval()
    with torch.no_grad():  # the default init leaves biases ~0 and norms at 1: randomise so every term shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, json.loads(json.dumps(dict(model.config)))  # as from config.json: lists, no tuples


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_decode_match_diffusers(name):
    ref, config = torch_vae(name)
    ours = AutoencoderKL(config, rngs=nnx.Rngs(0))
    load_vae_weights(ours, {k: v.numpy() for k, v in ref.state_dict().items()})
    assert ours.scaling_factor == ref.config.scaling_factor
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 3, 15, 18)).astype(np.float32)  # odd size: exercises the asymmetric padding
    latents = rng.normal(size=(2, config["latent_channels"], 5, 6)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(images)).latent_dist
        decoded = ref.decode(torch.from_numpy(latents)).sample
    mean, logvar = compiled(ours, "encode_moments")(nhwc(images))
    close(nchw(mean), dist.mean)
    close(nchw(logvar), dist.logvar)
    close(nchw(compiled(ours, "encode")(nhwc(images))), dist.mean)
    close(nchw(compiled(ours, "decode")(nhwc(latents))), decoded)


def test_deprecated_attention_names_load():
    """Some hub VAEs still store mid-block attention as query/key/value/proj_attn; diffusers renames them."""
    ref, config = torch_vae("sd")
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in ref.state_dict().items():
        for new, old in renames.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        state[key] = value.numpy()
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in state
    ours = AutoencoderKL(config, rngs=nnx.Rngs(0))
    load_vae_weights(ours, state)
    latents = np.random.default_rng(1).normal(size=(1, 4, 4, 4)).astype(np.float32)
    with torch.no_grad():
        close(nchw(ours.decode(nhwc(latents))), ref.decode(torch.from_numpy(latents)).sample)


def test_mismatched_checkpoint_lists_keys():
    ref, config = torch_vae("sd")
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    del state["decoder.conv_out.bias"]
    state["encoder.conv_in.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    state["decoder.extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(weights.CheckpointMismatchError) as info:
        load_vae_weights(AutoencoderKL(config, rngs=nnx.Rngs(0)), state, source="vae.safetensors")
    for key in ("decoder.conv_out.bias", "encoder.conv_in.weight", "decoder.extra.weight", "vae.safetensors"):
        assert key in str(info.value)


@pytest.mark.parametrize(
    "option, pattern",
    [
        ({"act_fn": "gelu"}, r"act_fn='gelu'.*'silu'"),
        (
            {"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]},
            "down_block_types.*DownEncoderBlock2D",
        ),
        ({"shift_factor": 0.0609}, "shift_factor=0.0609"),
        ({"norm_type": "spatial"}, r"unknown AutoencoderKL config option\(s\) \['norm_type'\]"),
        ({"block_out_channels": [8]}, "down_block_types has 2 entries but block_out_channels has 1"),
    ],
)
def test_unsupported_config_is_named(option, pattern):
    _, config = torch_vae("variant")
    with pytest.raises(ValueError, match=pattern):
        AutoencoderKL({**config, **option}, rngs=nnx.Rngs(0))


def test_bad_input_shape_is_named():
    _, config = torch_vae("variant")
    vae = AutoencoderKL(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"images must be NHWC with 3 channels, got shape \(1, 3, 8, 8\)"):
        vae.encode(jnp.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="latents must be NHWC with 3 channels"):
        vae.decode(jnp.zeros((1, 4, 4, 4)))
