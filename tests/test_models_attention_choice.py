"""attention ``auto``: per call, a kernel that accepts the call in both directions on the device compiled for.

The shapes are Stable Diffusion's at 512 px (64x64 latents), batch 8: SD 2.x's heads are 64 wide at every UNet
level (5, 10, 20 heads), SD 1.5's are 8 heads of 40, 80 and 160; cross-attention has the text's 77 keys; the
VAE's mid-block attends 4096 positions with one head of 512; the text towers are causal (masked) over 77 tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bobjax import parallel
from bobjax.errors import ConfigError
from bobjax.models import attention_choice
from bobjax.models.attention import dot_product_attention
from bobjax.models.attention_choice import Call

H100 = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu")
A100 = jax.sharding.AbstractDevice(device_kind="NVIDIA A100-SXM4-40GB", num_cores=108, platform="gpu")
V5E = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")


def sd_calls(heads_and_widths, text_heads):
    """name -> Call for one SD UNet (heads, head size per level), its VAE mid-block and its text tower."""
    calls = {}
    for tokens, (heads, width) in zip((4096, 1024, 256, 64), heads_and_widths):
        calls[f"unet {tokens} self"] = Call(8, tokens, tokens, heads, width, "bfloat16", False)
        calls[f"unet {tokens} cross"] = Call(8, tokens, 77, heads, width, "bfloat16", False)
    calls["vae mid-block"] = Call(8, 4096, 4096, 1, 512, "bfloat16", False)
    calls["text tower"] = Call(8, 77, 77, text_heads, 64, "bfloat16", True)
    return calls


SD2 = sd_calls([(5, 64), (10, 64), (20, 64), (20, 64)], text_heads=16)  # SD 2.1-base, OpenCLIP ViT-H text
SD15 = sd_calls([(8, 40), (8, 80), (8, 160), (8, 160)], text_heads=12)  # SD 1.5, CLIP ViT-L text

# What auto sends where (the docs' table). On the GPU: cuDNN for every self-attention with a head size it takes;
# xla for the 77-key cross-attention (cuDNN's gradient refuses it), SD 1.5's 160-wide heads, the VAE's 512-wide
# head and the masked text towers. On TPU: Pallas from 1024 queries on, xla below and for masked calls.
EXPECTED_H100 = {
    "sd2": {"unet 4096 self": "cudnn", "unet 1024 self": "cudnn", "unet 256 self": "cudnn", "unet 64 self": "cudnn"},
    "sd15": {"unet 4096 self": "cudnn", "unet 1024 self": "cudnn"},
}
EXPECTED_V5E = {"unet 4096 self", "unet 4096 cross", "unet 1024 self", "unet 1024 cross", "vae mid-block"}


@pytest.mark.parametrize("device", [H100, A100], ids=["h100", "a100"])
@pytest.mark.parametrize("model,calls", [("sd2", SD2), ("sd15", SD15)])
def test_auto_on_nvidia_never_sends_a_call_cudnn_cannot_train(device, model, calls):
    """Issue 32: with 77 keys JAX's cuDNN gradient raises 'Unsupported sequence length Q 4096, KV 77'."""
    for name, call in calls.items():
        expected = EXPECTED_H100[model].get(name, "xla")
        assert attention_choice.choose(device, call, shards=1) == expected, name
    for tokens in (4096, 1024, 256, 64):
        assert attention_choice.choose(device, calls[f"unet {tokens} cross"], shards=1) != "cudnn"


@pytest.mark.parametrize("calls", [SD2, SD15], ids=["sd2", "sd15"])
def test_auto_on_tpu_sends_the_long_attentions_to_pallas(calls):
    for name, call in calls.items():
        expected = "pallas" if name in EXPECTED_V5E else "xla"
        assert attention_choice.choose(V5E, call, shards=8) == expected, name


def test_auto_on_tpu_keeps_xla_where_pallas_cannot_run_and_says_why(caplog):
    call = Call(6, 4096, 4096, 5, 64, "bfloat16", False)
    caplog.set_level("INFO")
    assert attention_choice.choose(V5E, call, shards=4) == "xla"  # 6 examples do not split over 4 devices
    assert attention_choice.choose(V5E, call, shards=None) == "xla"  # several devices, no mesh in context
    assert attention_choice.choose(V5E, call, shards=2) == "pallas"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "batch of 6 does not split over the 4 devices" in logged
    assert "no mesh in context" in logged and "Pallas flash attention" in logged


def test_auto_on_cpu_and_other_devices_is_unchanged():
    cpu = jax.sharding.AbstractDevice(device_kind="cpu", num_cores=None, platform="cpu")
    amd = jax.sharding.AbstractDevice(device_kind="AMD Instinct MI300X", num_cores=None, platform="gpu")
    assert attention_choice.choose(cpu, SD2["unet 4096 self"], 1) == "chunked"
    assert attention_choice.choose(cpu, Call(1, 197, 197, 12, 64, "float32", False), 1) == "xla"
    assert attention_choice.choose(amd, SD2["unet 4096 self"], 1) == "xla"
    assert attention_choice.choose(H100, Call(8, 4096, 4096, 5, 64, "float32", False), 1) == "xla"


@pytest.fixture
def compiling_for(monkeypatch):
    """Makes the attention choose for ``device`` as when tracing under a mesh of that kind."""
    def use(device):
        monkeypatch.setattr(parallel, "target_device", lambda: device)
    return use


def test_explicit_cudnn_that_cannot_take_the_gradient_names_the_call_and_what_to_set(compiling_for):
    """The forward pass of a 77-key call is cuDNN's to serve (generation); its gradient stops the trace."""
    compiling_for(H100)
    q = jnp.zeros((2, 64, 2, 8), jnp.bfloat16)
    kv = jnp.zeros((2, 77, 2, 8), jnp.bfloat16)

    def loss(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v, implementation="cudnn").astype(jnp.float32))

    with pytest.raises(ConfigError, match=r"attention='cudnn' cannot serve the gradient of the cross-attention of 64 "
                                          r"queries over 77 keys \(2 x 2 heads of 8, bfloat16\) on gpu \(NVIDIA H100 "
                                          r"80GB HBM3\): JAX's cuDNN gradient needs even .* to 'auto', which sends "
                                          r"this call to 'xla', or to 'xla'"):
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv)
    with pytest.raises(ConfigError, match=r"cannot serve the self-attention .*head sizes that are multiples of 8 up "
                                          r"to 128, got 160"):
        dot_product_attention(*(jnp.zeros((1, 4, 1, 160), jnp.bfloat16),) * 3, implementation="cudnn")


def test_auto_on_an_nvidia_target_runs_the_77_key_call_on_xla(compiling_for):
    compiling_for(H100)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in [(1, 6, 2, 8), (1, 77, 2, 8), (1, 77, 2, 8)])
    grads = jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(q, k, v).astype(jnp.float32)),
                     argnums=(0, 1, 2))(q, k, v)
    assert all(bool(jnp.isfinite(g.astype(jnp.float32)).all()) for g in grads)


def test_explicit_pallas_off_tpu_names_the_device(compiling_for):
    q = jnp.zeros((1, 8, 1, 8), jnp.float32)
    with pytest.raises(ConfigError, match=r"attention='pallas' cannot serve .* the Pallas kernel runs on TPUs; "
                                          r"this program compiles for cpu"):
        dot_product_attention(q, q, q, implementation="pallas")
