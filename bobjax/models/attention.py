"""The one attention function every bobjax model calls, with a kernel chosen by config.

Arrays are ``[batch, length, heads, head_dim]`` (the layout the projections produce, so callers never
transpose). Implementations:

- ``xla``: one matmul-softmax-matmul graph over whole sequences. On CPU it beats
  ``jax.nn.dot_product_attention`` (which vmaps over head groups and normalises the probabilities rather
  than the output).
- ``cudnn``: ``jax.nn.dot_product_attention(implementation="cudnn")``, the fused flash kernel on NVIDIA
  GPUs; it needs float16/bfloat16 inputs and computes its softmax in float32 itself.
- ``chunked``: the same maths over blocks of ``chunk_size`` queries (and one batch element at a time),
  so the ``[Lq, Lk]`` scores never exist whole. On CPU it is also the fastest, by 5-8x at 1024 tokens: a
  block's scores stay in cache instead of going through freshly allocated memory. ``chunk_size=None``
  sizes blocks so that one block's float32 scores (all heads) take about 4 MiB.
- ``pallas``: JAX's Pallas flash attention kernel for TPUs (:mod:`bobjax.models.attention_tpu`), forward and
  backward; on a CPU only in Pallas' TPU interpret mode (tests).
- ``auto`` (the default): per call, the fastest kernel that accepts the call in both directions on the device the
  program compiles for (:mod:`bobjax.models.attention_choice`): ``cudnn`` on NVIDIA GPUs in half precision
  (head sizes up to 128, even lengths: the 77-key cross-attention stays on ``xla``), ``pallas`` on TPUs from
  1024 queries on, ``chunked`` on CPU where one example's scores outgrow the cache (a medium UNet's forward ran at
  1.27x torch's speed with it, 0.50x with ``xla``), ``xla`` otherwise; logged once per case with the reason.
  An explicit ``cudnn`` or ``pallas`` that cannot serve a call stops the trace with a named error.

Both ``xla`` and ``chunked`` have a flash-style gradient that recomputes the probabilities, so training
memory holds no ``[Lq, Lk]`` array either. Logits and softmax are always accumulated in float32; ``upcast=True``
additionally runs the value product in float32 in ``xla`` and ``chunked`` (diffusers' ``upcast_attention``, for
SD 2.x in half precision; the fused kernels accumulate in float32 themselves and multiply the values in the input
dtype, as diffusers does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bobjax import parallel
from bobjax.models import attention_choice, attention_gpu, attention_tpu

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "chunked", "pallas")


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    implementation: str = "auto",
    mask: jax.Array | None = None,
    chunk_size: int | None = None,
    upcast: bool = False,
) -> jax.Array:
    """Softmax attention with scale ``head_dim ** -0.5``; returns ``[batch, q_length, heads, head_dim]``.

    ``mask`` is boolean, True where a query may attend a key, broadcastable to
    ``[batch, heads, q_length, kv_length]``. The output has the dtype of ``query``.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
    _check_shapes(query, key, value, mask)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"attention chunk_size must be a positive int or None (automatic), got {chunk_size!r}")
    out_dtype = query.dtype
    batch, q_len, heads, head_dim = query.shape
    call = attention_choice.Call(batch, q_len, key.shape[1], heads, head_dim, jnp.dtype(query.dtype).name,
                                 mask is not None)
    device, shards = parallel.target_device(), _shards()
    if implementation == "auto":
        implementation = attention_choice.choose(device, call, shards)
    elif implementation in ("cudnn", "pallas"):
        attention_choice.check_explicit(implementation, device, call, shards)
    if upcast and implementation in ("xla", "chunked"):
        query, key, value = (x.astype(jnp.promote_types(x.dtype, jnp.float32)) for x in (query, key, value))
    if implementation == "cudnn":
        out = attention_gpu.cudnn_attention(query, key, value, mask, device, call)
    elif implementation == "pallas":
        out = attention_tpu.flash_attention(query, key, value)
    elif implementation == "chunked":
        out = _chunked(query, key, value, mask, chunk_size)
    else:
        out = _whole_sequences(query, key, value, mask)
    return out.astype(out_dtype)


def _shards() -> int | None:
    """Devices of the mesh in context; 1 on a one-device machine; None for no mesh on several devices."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh.size
    return 1 if jax.device_count() == 1 else None


def _check_shapes(query, key, value, mask) -> None:
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(
            "attention expects query, key, value as [batch, length, heads, head_dim]; got shapes "
            f"{query.shape}, {key.shape}, {value.shape}"
        )
    batch, _, heads, head_dim = query.shape
    if key.shape != value.shape or key.shape[0] != batch or key.shape[2:] != (heads, head_dim):
        raise ValueError(
            f"attention key {key.shape} and value {value.shape} must equal [batch={batch}, kv_length, "
            f"heads={heads}, head_dim={head_dim}] to match query {query.shape}"
        )
    if mask is not None:
        if mask.dtype != jnp.bool_:
            raise ValueError(f"attention mask must be boolean (True = attend), got dtype {mask.dtype}")
        try:
            jnp.broadcast_shapes(mask.shape, (batch, heads, query.shape[1], key.shape[1]))
        except ValueError:
            raise ValueError(
                f"attention mask of shape {mask.shape} does not broadcast to [batch, heads, q_length, kv_length]"
                f" = {(batch, heads, query.shape[1], key.shape[1])}"
            ) from None


_MATMUL = (((3,), (2,)), ((0, 1), (0, 1)))  # [B, H, m, k] x [B, H, k, n] -> [B, H, m, n]


def _matmul(a, b):
    """Batched matmul contracting the minor dim of ``a`` and the major (non-batch) dim of ``b``.

    Every product below is written in this one form, transposing the small [L, D] operands instead:
    XLA:CPU otherwise copies the large [Lq, Lk] operand into another layout, or runs a slow kernel
    (a transposed-operand product took ~40x longer than this form at 1024 tokens).
    """
    return jax.lax.dot_general(a, b, _MATMUL, preferred_element_type=jnp.float32)


def _logits(query, key, mask):
    scale = jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
    logits = _matmul(query * scale, key.swapaxes(2, 3))
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return logits


@jax.custom_vjp
def _softmax_attention(query, key, value, mask):
    """Masked softmax attention on [B, H, L, D] arrays; returns [B, H, Lq, D] in float32.

    A flash-style custom gradient: the backward pass recomputes the probabilities from the saved
    log-sum-exp instead of storing [Lq, Lk] of them, and keeps every product in the fast layout.
    """
    return _attention_forward(query, key, value, mask)[0]


def _attention_forward(query, key, value, mask):
    logits = _logits(query, key, mask)
    logits_max = logits.max(axis=-1, keepdims=True)
    weights = jnp.exp(logits - logits_max)
    denominator = weights.sum(axis=-1, keepdims=True)
    out = _matmul(weights.astype(value.dtype), value) / denominator  # normalise [Lq, D], not [Lq, Lk]
    return out, logits_max + jnp.log(denominator)


def _attention_fwd(query, key, value, mask):
    out, log_sum_exp = _attention_forward(query, key, value, mask)
    return out, (query, key, value, mask, out, log_sum_exp)


def _attention_bwd(residuals, d_out):
    query, key, value, mask, out, log_sum_exp = residuals
    scale = query.shape[-1] ** -0.5
    probs = jnp.exp(_logits(query, key, mask) - log_sum_exp)
    d_probs = _matmul(d_out.astype(value.dtype), value.swapaxes(2, 3))
    d_logits = probs * (d_probs - jnp.sum(d_out * out, axis=-1, keepdims=True))
    d_query = _matmul(d_logits.astype(key.dtype), key) * scale
    d_key = _matmul(query.swapaxes(2, 3), d_logits.astype(query.dtype)).swapaxes(2, 3) * scale
    d_value = _matmul(d_out.astype(value.dtype).swapaxes(2, 3), probs.astype(value.dtype)).swapaxes(2, 3)
    return d_query.astype(query.dtype), d_key.astype(key.dtype), d_value.astype(value.dtype), None


_softmax_attention.defvjp(_attention_fwd, _attention_bwd)


def _heads_first(*arrays):
    return tuple(x.swapaxes(1, 2) for x in arrays)  # [B, L, H, D] <-> [B, H, L, D]


def _whole_sequences(query, key, value, mask):
    return _softmax_attention(*_heads_first(query, key, value), mask).swapaxes(1, 2)


def _chunked(query, key, value, mask, chunk_size):
    """Query blocks of one batch element at a time; the gradient of a block needs only the block."""
    batch, q_len, heads, head_dim = query.shape
    kv_len = key.shape[1]
    if chunk_size is None:  # a block's float32 scores take about CHUNK_SCORES_BYTES: they stay in cache
        chunk_size = max(16, attention_choice.CHUNK_SCORES_BYTES // (4 * heads * kv_len))
    num_chunks = -(-q_len // chunk_size)
    chunk = -(-q_len // num_chunks)  # equal blocks, padding at most num_chunks - 1 queries
    padded = num_chunks * chunk
    query, key, value = _heads_first(query, key, value)
    query = jnp.pad(query, ((0, 0), (0, 0), (0, padded - q_len), (0, 0)))
    query = query.reshape(batch, heads, num_chunks, chunk, head_dim).swapaxes(1, 2)  # [B, n, H, c, D]
    if mask is not None:
        mask = jnp.broadcast_to(mask, (batch, mask.shape[-3] if mask.ndim >= 3 else 1, q_len, kv_len))
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, padded - q_len), (0, 0)), constant_values=True)
        mask = mask.reshape(batch, mask.shape[1], num_chunks, chunk, kv_len).swapaxes(1, 2)

    def one_block(q, k, v, m):
        return _softmax_attention(q[None], k[None], v[None], None if m is None else m[None])[0]

    def one_element(args):
        q, k, v, m = args  # m is None (an empty pytree) when there is no mask
        return jax.lax.map(lambda block: one_block(block[0], k, v, block[1]), (q, m))

    out = jax.lax.map(one_element, (query, key, value, mask))  # [B, n, H, c, D]
    out = out.swapaxes(2, 3).reshape(batch, padded, heads, head_dim)
    return out[:, :q_len]
