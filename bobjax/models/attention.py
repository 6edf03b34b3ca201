"""The one attention function every bobjax model calls, with a kernel chosen by config.

Arrays are ``[batch, length, heads, head_dim]`` (the layout the projections produce, so callers never
transpose). Implementations:

- ``xla``: one einsum-softmax-einsum graph. On CPU this beats ``jax.nn.dot_product_attention`` (which
  vmaps over head groups), and the softmax is normalised after the value product, on ``[B, Lq, H, D]``
  instead of on the ``[B, H, Lq, Lk]`` probabilities.
- ``cudnn``: ``jax.nn.dot_product_attention(implementation="cudnn")``, the fused flash kernel on NVIDIA
  GPUs; it needs float16/bfloat16 inputs and computes its softmax in float32 itself.
- ``chunked``: the same maths over blocks of ``chunk_size`` queries (and one batch element at a time),
  so the ``[Lq, Lk]`` scores never exist whole. Each block is rematerialised in the backward pass, so
  training memory stays at one block too. On CPU it is also the fastest: a block's scores stay in cache.

Logits and softmax are always accumulated in float32; ``upcast=True`` additionally runs the value
product in float32 (diffusers' ``upcast_attention``, for SD 2.x in half precision).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "chunked")
DEFAULT_CHUNK_SIZE = 256


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    implementation: str = "xla",
    mask: jax.Array | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    upcast: bool = False,
) -> jax.Array:
    """Softmax attention with scale ``head_dim ** -0.5``; returns ``[batch, q_length, heads, head_dim]``.

    ``mask`` is boolean, True where a query may attend a key, broadcastable to
    ``[batch, heads, q_length, kv_length]``. The output has the dtype of ``query``.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
    _check_shapes(query, key, value, mask)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"attention chunk_size must be a positive int, got {chunk_size!r}")
    out_dtype = query.dtype
    if upcast and implementation != "cudnn":  # cudnn accumulates in float32 itself and refuses float32 inputs
        query, key, value = (x.astype(jnp.promote_types(x.dtype, jnp.float32)) for x in (query, key, value))
    if implementation == "cudnn":
        out = _cudnn(query, key, value, mask)
    elif implementation == "chunked":
        out = _chunked(query, key, value, mask, chunk_size)
    else:
        out = _einsum_softmax(query, key, value, mask)
    return out.astype(out_dtype)


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


def _einsum_softmax(query, key, value, mask):
    """Scaled, masked softmax attention; normalisation is applied to the output, not the probabilities."""
    scale = jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query * scale, key, preferred_element_type=jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    logits_max = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    weights = jnp.exp(logits - logits_max)
    denominator = weights.sum(axis=-1)  # [b, h, q]
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value, preferred_element_type=jnp.float32)
    return out / jnp.swapaxes(denominator, 1, 2)[..., None]


def _chunked(query, key, value, mask, chunk_size):
    """Query blocks of one batch element at a time, each rematerialised for the backward pass."""
    batch, q_len, heads, _ = query.shape
    kv_len = key.shape[1]
    num_chunks = -(-q_len // chunk_size)
    chunk = -(-q_len // num_chunks)  # equal blocks, padding at most num_chunks - 1 queries
    padded = num_chunks * chunk
    query = jnp.pad(query, ((0, 0), (0, padded - q_len), (0, 0), (0, 0)))
    query = query.reshape(batch, num_chunks, chunk, *query.shape[2:])
    if mask is not None:
        mask = jnp.broadcast_to(mask, (batch, mask.shape[-3] if mask.ndim >= 3 else 1, q_len, kv_len))
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, padded - q_len), (0, 0)), constant_values=True)
        mask = mask.reshape(batch, mask.shape[1], num_chunks, chunk, kv_len).swapaxes(1, 2)

    @jax.checkpoint
    def one_block(q, k, v, m):
        return _einsum_softmax(q[None], k[None], v[None], None if m is None else m[None])[0]

    def one_element(args):
        q, k, v, m = args  # m is None (an empty pytree) when there is no mask
        return jax.lax.map(lambda block: one_block(block[0], k, v, block[1]), (q, m))

    out = jax.lax.map(one_element, (query, key, value, mask))
    return out.reshape(batch, padded, *out.shape[3:])[:, :q_len]


def _cudnn(query, key, value, mask):
    if jax.default_backend() != "gpu" or query.dtype not in (jnp.float16, jnp.bfloat16):
        raise ValueError(
            "attention implementation 'cudnn' needs an NVIDIA GPU and float16/bfloat16 inputs; got backend "
            f"{jax.default_backend()!r} and dtype {query.dtype} (use 'xla' or 'chunked' here)"
        )
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
