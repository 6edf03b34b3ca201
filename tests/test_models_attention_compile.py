"""The attention kernels ``auto`` picks, compiled for rented chips without them (bobjax.targets).

TPU (CI: libtpu comes with the test extra): the tiny SD UNet's gradient for a v5e-8 holds the Pallas kernel's
Mosaic custom calls, and at 512 px (64x64 latents) one attention's forward and backward needs far less temporary
memory than with ``xla``, by the compiler's own ``memory_analysis``. NVIDIA (opt-in, needs JAX's CUDA plugin:
see tests/helpers/target_compile.py): the tiny SD's bf16 LoRA step compiles for an H100 with ``auto`` and holds cuDNN's
flash attention forward and backward; with ``cudnn`` forced the UNet's forward compiles (77-key cross-attention
included) and its gradient stops there with a named error; SD 2.1's and SD 1.5's attentions compile for H100 and
A100 forward and backward.
"""

import pytest
import target_compile

from tiny_sd import make_tiny_sd

# Per-device temporaries of one attention's forward and backward at 512 px, batch 8 over a v5e-8 (one example
# per chip). xla's float32 scores alone are heads x 4096 x 4096 x 4 B: 320 MiB for SD 2.x's 5 heads.
BOUND_BYTES = 64 << 20

_TPU = """
import json, jax, jax.numpy as jnp
from flax import nnx
from bobjax import targets
from bobjax.models.attention import dot_product_attention
from bobjax.models.sd import load_stable_diffusion

mesh = targets.mesh("v5e:2x4")
batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
out = {}

unet = load_stable_diffusion(SD_PATH, dtype=jnp.bfloat16).unet
graph, params = nnx.split(unet)
def loss(params, latents, context):
    return jnp.mean(nnx.merge(graph, params)(latents, 500, context).astype(jnp.float32) ** 2)
args = (jax.eval_shape(lambda p: p, params), jax.ShapeDtypeStruct((8, 32, 32, 4), jnp.bfloat16),
        jax.ShapeDtypeStruct((8, 77, 48), jnp.bfloat16))
with jax.set_mesh(mesh):
    text = jax.jit(jax.grad(loss), in_shardings=(replicated, batch, batch)).trace(*args).lower().compile().as_text()
out["unet_mosaic_calls"] = text.count('custom_call_target="tpu_custom_call"')

for name, heads, width in (("sd2", 5, 64), ("sd15", 8, 40)):
    for implementation in ("auto", "xla"):
        def attention_loss(q, k, v):
            return jnp.sum(dot_product_attention(q, k, v, implementation=implementation).astype(jnp.float32))
        shape = jax.ShapeDtypeStruct((8, 4096, heads, width), jnp.bfloat16)
        with jax.set_mesh(mesh):
            compiled = jax.jit(jax.grad(attention_loss, argnums=(0, 1, 2)), in_shardings=batch).trace(
                shape, shape, shape).lower().compile()
        out[f"{name}_{implementation}_temp"] = compiled.memory_analysis().temp_size_in_bytes
        out[f"{name}_{implementation}_mosaic"] = "tpu_custom_call" in compiled.as_text()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd2"), "sd2", minimal=True)


@pytest.fixture(scope="module")
def tpu(tiny_sd2):
    return target_compile.run(f"SD_PATH = {tiny_sd2!r}\n" + _TPU)


@pytest.mark.slow
def test_unet_gradient_for_a_v5e_runs_the_pallas_kernel(tpu):
    # 8 attentions at 32x32 latents (4 transformers), each a forward kernel and two backward ones (dk/dv, dq).
    assert tpu["unet_mosaic_calls"] == 3 * 8


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sd2", "sd15"])
def test_512px_attention_on_a_v5e_keeps_its_scores_out_of_memory(tpu, model):
    assert tpu[f"{model}_auto_mosaic"] and not tpu[f"{model}_xla_mosaic"]
    assert tpu[f"{model}_auto_temp"] < BOUND_BYTES < tpu[f"{model}_xla_temp"], tpu


_NVIDIA = """
import json, re, jax, jax.numpy as jnp
from flax import nnx
import tiny_lora_step
from bobjax import targets
from bobjax.errors import ConfigError
from bobjax.models.attention import dot_product_attention
from bobjax.models.sd import load_stable_diffusion

out = {}
text = tiny_lora_step.compile_lora_step(SD_PATH, "h100").as_text()
out["lora_step_calls"] = sorted(set(re.findall(r'custom_call_target="([^"]+)"', text)))
# Forced cudnn: the UNet's forward (generation) compiles, cross-attention included; its gradient stops.
unet = load_stable_diffusion(SD_PATH, dtype=jnp.bfloat16, attention="cudnn").unet
graph, params = nnx.split(unet)
forward = lambda params, latents, context: nnx.merge(graph, params)(latents, 500, context)
args = (jax.eval_shape(lambda p: p, params), jax.ShapeDtypeStruct((2, 32, 32, 4), jnp.bfloat16),
        jax.ShapeDtypeStruct((2, 77, 48), jnp.bfloat16))
with jax.set_mesh(targets.mesh("h100")):
    text = jax.jit(forward).trace(*args).lower().compile().as_text()
    out["forced_cudnn_forward_calls"] = text.count('custom_call_target="__cudnn$fmhaSoftmax"')
    try:
        jax.jit(jax.grad(lambda *a: jnp.mean(forward(*a).astype(jnp.float32) ** 2))).trace(*args)
    except ConfigError as e:
        out["forced_cudnn_error"] = str(e)

for target in ("h100", "a100-40gb"):
    mesh = targets.mesh(target)
    for name, heads, width in (("sd2", 5, 64), ("sd15", 8, 40), ("sd15", 8, 80), ("sd15", 8, 160)):
        for keys in (4096, 77):
            q = jax.ShapeDtypeStruct((2, 4096, heads, width), jnp.bfloat16)
            kv = jax.ShapeDtypeStruct((2, keys, heads, width), jnp.bfloat16)
            loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v).astype(jnp.float32))
            with jax.set_mesh(mesh):
                text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv).lower().compile().as_text()
            out[f"{target} {name} {width} {keys}"] = sorted(set(re.findall(r'__cudnn\\$fmha\\w+', text)))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def nvidia(tiny_sd2):
    if reason := target_compile.cuda_plugin_missing():
        pytest.skip(reason)
    return target_compile.run(f"SD_PATH = {tiny_sd2!r}\n" + _NVIDIA, cuda=True)


def test_lora_step_for_an_h100_uses_cudnn_for_self_attention(nvidia):
    assert {"__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"} <= set(nvidia["lora_step_calls"])


def test_forced_cudnn_serves_generation_and_names_the_gradient_it_cannot_take(nvidia):
    assert nvidia["forced_cudnn_forward_calls"] == 8  # 4 transformers' self- and cross-attention (77 keys)
    assert nvidia["forced_cudnn_error"].startswith(
        "attention='cudnn' cannot serve the gradient of the cross-attention of 1024 queries over 77 keys (2 x 2 "
        "heads of 16, bfloat16) on gpu (NVIDIA H100 80GB HBM3): JAX's cuDNN gradient needs even query and key "
        "lengths")
    assert nvidia["forced_cudnn_error"].endswith("to 'auto', which sends this call to 'xla', or to 'xla'")


@pytest.mark.parametrize("target", ["h100", "a100-40gb"])
def test_sd_attentions_compile_for_nvidia_forward_and_backward(nvidia, target):
    both = ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"]
    for width in (64, 40, 80):
        name = "sd2" if width == 64 else "sd15"
        assert nvidia[f"{target} {name} {width} 4096"] == both  # self-attention on cuDNN
        assert nvidia[f"{target} {name} {width} 77"] == []  # cross-attention on xla
    assert nvidia[f"{target} sd15 160 4096"] == []  # SD 1.5's 160-wide heads: xla
