"""dot_product_attention against a float64 numpy softmax and torch's scaled_dot_product_attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bobjax.errors import ConfigError
from bobjax.models import attention as attention_lib
from bobjax.models.attention import dot_product_attention

CPU_IMPLEMENTATIONS = ("xla", "chunked")
TOL = 1e-5


def numpy_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v in float64, [B, L, H, D] in and out."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def torch_attention(q, k, v, mask=None):
    to_torch = lambda x: torch.from_numpy(x).permute(0, 2, 1, 3)  # noqa: E731  [B, H, L, D]
    m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
    out = torch.nn.functional.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v), attn_mask=m)
    return out.permute(0, 2, 1, 3).numpy()


def random_qkv(batch, q_len, kv_len, heads, head_dim, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, q_len, heads, head_dim)).astype(np.float32)
    k = rng.normal(size=(batch, kv_len, heads, head_dim)).astype(np.float32)
    v = rng.normal(size=(batch, kv_len, heads, head_dim)).astype(np.float32)
    return q, k, v


def random_mask(batch, heads, q_len, kv_len, seed=1):
    mask = np.random.default_rng(seed).random((batch, heads, q_len, kv_len)) > 0.3
    mask[..., 0] = True  # every query sees at least one key (torch returns NaN for an empty row)
    return mask


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "q_len,kv_len,chunk_size",
    [(37, 37, 8), (37, 11, 16), (64, 77, 64), (5, 9, 256), (40, 40, 7)],  # odd lengths, exact, one chunk, prime
)
def test_matches_reference_and_torch(implementation, q_len, kv_len, chunk_size):
    q, k, v = random_qkv(2, q_len, kv_len, 3, 8)
    got = np.asarray(dot_product_attention(q, k, v, implementation=implementation, chunk_size=chunk_size))
    np.testing.assert_allclose(got, numpy_attention(q, k, v), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got, torch_attention(q, k, v), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize("mask_shape", ["full", "key_padding", "heads_broadcast"])
def test_mask_matches_reference_and_torch(implementation, mask_shape):
    batch, heads, q_len, kv_len = 2, 3, 21, 13
    q, k, v = random_qkv(batch, q_len, kv_len, heads, 4, seed=2)
    mask = random_mask(batch, heads, q_len, kv_len)
    if mask_shape == "key_padding":
        mask = mask[:, :1, :1, :]  # [B, 1, 1, Lk]
    elif mask_shape == "heads_broadcast":
        mask = mask[:, :1]  # [B, 1, Lq, Lk]
    got = np.asarray(dot_product_attention(q, k, v, implementation=implementation, mask=mask, chunk_size=8))
    np.testing.assert_allclose(got, numpy_attention(q, k, v, mask), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got, torch_attention(q, k, v, mask), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_match_torch(implementation, masked):
    """Our attention has a hand-written (flash-style) gradient: it must equal torch autograd's."""
    q, k, v = random_qkv(2, 19, 10, 2, 4, seed=3)
    mask = random_mask(2, 2, 19, 10) if masked else None

    def loss(q, k, v):
        out = dot_product_attention(q, k, v, implementation=implementation, mask=mask, chunk_size=6)
        return jnp.sum(out * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size)

    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    tq, tk, tv = (torch.from_numpy(x).permute(0, 2, 1, 3).requires_grad_() for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask)
    )
    out = out.permute(0, 2, 1, 3)
    (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape) / out.numel()).sum().backward()
    for ours, theirs in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(np.asarray(ours), theirs.grad.permute(0, 2, 1, 3).numpy(), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_bfloat16_inputs_stay_close_and_keep_dtype(implementation):
    q, k, v = random_qkv(1, 33, 33, 2, 16, seed=4)
    expected = numpy_attention(*(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32) for x in (q, k, v)))
    for upcast in (False, True):
        got = dot_product_attention(
            *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), implementation=implementation, upcast=upcast
        )
        assert got.dtype == jnp.bfloat16
        # bf16 keeps 8 bits of mantissa: 2**-8 relative, on outputs of magnitude <= ~3.
        np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=3e-2)


def test_unknown_implementation_names_it_and_the_choices():
    q, k, v = random_qkv(1, 4, 4, 1, 4)
    with pytest.raises(ValueError, match=r"'flash'.*'auto', 'xla', 'cudnn', 'chunked', 'pallas'"):
        dot_product_attention(q, k, v, implementation="flash")


@pytest.mark.parametrize("q_len,kv_len,kernel", [(9, 7, "_whole_sequences"), (1100, 1000, "_chunked")])
def test_auto_on_cpu_runs_the_kernel_for_the_size(q_len, kv_len, kernel, monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU choice")
    ran = []
    real = getattr(attention_lib, kernel)
    monkeypatch.setattr(attention_lib, kernel, lambda *args: ran.append(kernel) or real(*args))
    q, k, v = random_qkv(1, q_len, kv_len, 2, 8)
    mask = np.random.default_rng(0).random((1, 1, q_len, kv_len)) > 0.3
    out = dot_product_attention(q, k, v, mask=jnp.asarray(mask))
    assert ran == [kernel]
    np.testing.assert_allclose(out, numpy_attention(q, k, v, mask), atol=TOL)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the refusal on machines without cuDNN")
def test_cudnn_without_gpu_says_what_it_needs():
    q, k, v = random_qkv(1, 4, 4, 1, 8)
    with pytest.raises(ConfigError, match=r"attention='cudnn' cannot serve the self-attention of 4 queries .*"
                                          r"cuDNN runs on NVIDIA GPUs; this program compiles for cpu .*'auto'"):
        dot_product_attention(q, k, v, implementation="cudnn")


def test_bad_shapes_and_mask_are_reported():
    q, k, v = random_qkv(1, 4, 5, 2, 4)
    with pytest.raises(ValueError, match=r"\[batch, length, heads, head_dim\]"):
        dot_product_attention(q[0], k, v)
    with pytest.raises(ValueError, match="heads=2"):
        dot_product_attention(q, k[:, :, :1], v[:, :, :1])
    with pytest.raises(ValueError, match="boolean"):
        dot_product_attention(q, k, v, mask=np.ones((1, 2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        dot_product_attention(q, k, v, mask=np.ones((1, 2, 4, 4), bool))
