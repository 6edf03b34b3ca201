"""The Pallas TPU flash attention, run on this CPU in Pallas' TPU interpret mode, chosen by ``auto`` as on a v5e.

Every call here goes through ``dot_product_attention(implementation="auto")`` while the program is traced for a
TPU v5e (``parallel.target_device`` patched) over a 2-device mesh, so ``auto`` must pick the kernel, and it must
run per device in its ``shard_map``; each test checks the kernel is in the program, so a quiet fall-back to
``xla`` fails. Inputs are float32; the reference is float64 numpy. Interpret mode runs the kernel's own blocks,
padding and masking, but its float32 arithmetic is the CPU's. Measured (2026-12-06) largest errors: 2e-7 to
2.5e-6 on values up to 3.6 (the worst: dk with 160-wide heads over 77 keys); the tolerance is 1e-5 absolute plus
1e-5 relative.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from bobjax import parallel
from bobjax.models import attention_choice, attention_tpu
from bobjax.models.attention import dot_product_attention
from bobjax.models.sd import load_stable_diffusion
from tiny_sd import make_tiny_sd

V5E = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def on_tpu(monkeypatch):
    """Traces as for a 2-chip v5e: the mesh in context has 2 devices (this CPU's forced host devices)."""
    monkeypatch.setattr(parallel, "target_device", lambda: V5E)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("data",))
    with jax.set_mesh(mesh), pltpu.force_tpu_interpret_mode():
        yield


def reference(q, k, v, d_out):
    """Output and q, k, v gradients of sum(out * d_out) for softmax attention, in float64; [B, L, H, D] arrays."""
    q, k, v, d_out = (np.asarray(x, np.float64).transpose(0, 2, 1, 3) for x in (q, k, v, d_out))
    scale = q.shape[-1] ** -0.5
    s = q @ k.swapaxes(-1, -2) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = d_out @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    grads = (ds @ k * scale, ds.swapaxes(-1, -2) @ q * scale, p.swapaxes(-1, -2) @ d_out)
    return [x.transpose(0, 2, 1, 3) for x in (p @ v, *grads)]


def pallas_calls(fun, *args) -> int:
    return str(jax.make_jaxpr(fun)(*args)).count("pallas_call")


@pytest.mark.parametrize("kv_len,heads,head_dim", [
    (1024, 1, 64),  # SD 2.x self-attention at 32x32 latents
    (1024, 1, 40),  # SD 1.5's level-0 heads
    (77, 2, 64),  # cross-attention over the text: keys padded to 128 and masked
    (77, 1, 80),
    (77, 1, 160),  # head padded to 256
])
def test_kernel_output_and_gradients_match_float64(on_tpu, kv_len, heads, head_dim):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 1024, heads, head_dim)).astype(np.float32)
    k, v = (rng.normal(size=(2, kv_len, heads, head_dim)).astype(np.float32) for _ in range(2))
    d_out = rng.normal(size=q.shape).astype(np.float32)
    # A padded batch: the second example is all zeros, as a global batch padded to the device count would be.
    q[1], k[1], v[1] = 0, 0, 0

    def loss(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v) * d_out)

    out = jax.jit(dot_product_attention)(q, k, v)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    assert pallas_calls(dot_product_attention, q, k, v) == 1
    assert pallas_calls(jax.grad(loss, argnums=(0, 1, 2)), q, k, v) == 3  # forward, dk/dv, dq
    for got, want, name in zip((out, *grads), reference(q, k, v, d_out), ("out", "dq", "dk", "dv")):
        np.testing.assert_allclose(np.asarray(got), want, **TOL, err_msg=name)


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd2"), "sd2", minimal=True)


@pytest.mark.slow
def test_tiny_unet_forward_and_backward_with_the_kernel_match_xla(on_tpu, tiny_sd2, monkeypatch):
    """The one-level UNet at 16x16 latents: 256 positions, with auto's threshold lowered to them (auto's choice at
    its real threshold, 1024 queries, is the kernel tests'): a quarter of the positions of 32x32 latents, a sixteenth
    of the interpreted kernel's work."""
    monkeypatch.setattr(attention_choice, "PALLAS_MIN_QUERIES", 256)
    # A fresh memo of the choices for this test: none made at the real threshold is reused, none made here outlives it.
    monkeypatch.setattr(attention_choice, "_choose", functools.cache(attention_choice._choose.__wrapped__))
    traced = []
    kernel = attention_tpu.flash_attention
    monkeypatch.setattr(attention_tpu, "flash_attention", lambda *a: traced.append(a[0].shape) or kernel(*a))
    rng = np.random.default_rng(1)
    latents = jnp.asarray(rng.normal(size=(2, 16, 16, 4)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(2, 77, 48)), jnp.float32)
    results = {}
    for attention in ("auto", "xla"):
        unet = load_stable_diffusion(tiny_sd2, attention=attention).unet
        graph, params = nnx.split(unet)

        def loss(params):
            return jnp.mean(nnx.merge(graph, params)(latents, 500, context) ** 2)

        results[attention] = jax.jit(jax.value_and_grad(loss))(params)
    # Self- and cross-attention of its 4 transformers (1 down, 1 mid, 2 up).
    assert traced == [(2, 256, 2, 16)] * 8
    (loss_pallas, grads_pallas), (loss_xla, grads_xla) = results["auto"], results["xla"]
    np.testing.assert_allclose(loss_pallas, loss_xla, rtol=1e-5)
    flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (grads_pallas, grads_xla)]
    assert np.linalg.norm(flat[0] - flat[1]) <= 1e-5 * np.linalg.norm(flat[1])
