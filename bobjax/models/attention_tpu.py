"""Attention on TPU through the Pallas flash attention kernel that ships with JAX.

``jax.experimental.pallas.ops.tpu.flash_attention`` computes softmax attention block by block in VMEM, so the
``[Lq, Lk]`` scores never reach HBM, and has its own flash backward (a custom VJP): SD's 64x64-latent
self-attention would otherwise write ``heads x 4096 x 4096`` float32 scores per image.

What the kernel takes, and what this wrapper does about the rest:

- key blocks are multiples of 128 that divide the key length. Keys are padded to a multiple of 128 and the pads
  masked out with segment ids (real keys 1, pads 0; every query is 1): the cross-attention's 77 text tokens
  become 128 keys of which 51 are never attended. Queries are padded to a multiple of 128 too and the extra rows
  dropped (their gradient is zero).
- head sizes up to 128, or multiples of 128. SD 2.x's 64 and SD 1.5's 40 and 80 are taken as they are; SD 1.5's
  160 and other sizes above 128 are padded with zeros to the next multiple of 128 (as MaxDiffusion does): zero
  columns add nothing to ``q . k`` and give zero output columns, which are dropped; the softmax scale stays
  ``head_dim ** -0.5`` of the real size.
- no general boolean mask (only segment ids): a masked call is not sent here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

_LANES = 128  # the kernel's key-block and wide-head granularity
_BLOCKS = (512, 256, 128)  # larger blocks first: fewer grid steps; a 512x512 float32 block of scores is 1 MiB


def padded_head_dim(head_dim: int) -> int:
    """The head size the kernel runs at: as is up to 128, else the next multiple of 128."""
    return head_dim if head_dim <= _LANES else -(-head_dim // _LANES) * _LANES


def _padded_length(length: int) -> int:
    return -(-length // _LANES) * _LANES


def _block(length: int) -> int:
    return next(b for b in _BLOCKS if length % b == 0)


def block_sizes(q_len: int, kv_len: int) -> pallas_flash.BlockSizes:
    """Forward and backward blocks for (padded) lengths that are multiples of 128."""
    bq, bk = _block(q_len), _block(kv_len)
    return pallas_flash.BlockSizes(
        block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
        block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk, block_q_dkv=bq,
        block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq,
    )


def flash_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """Softmax attention with scale ``head_dim ** -0.5`` on ``[batch, length, heads, head_dim]`` arrays.

    XLA cannot partition a Mosaic kernel: over a mesh (``jax.set_mesh``) of several devices it runs per device in
    a ``shard_map`` that splits the batch over every mesh axis, as the stages lay batches out (:func:`shards`).
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _flash_attention(query, key, value)
    spec = jax.sharding.PartitionSpec(mesh.axis_names)
    return jax.shard_map(_flash_attention, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                         check_vma=False)(query, key, value)


def _flash_attention(query, key, value):
    batch, q_len, heads, head_dim = query.shape
    kv_len = key.shape[1]
    q_pad, kv_pad, d_pad = _padded_length(q_len), _padded_length(kv_len), padded_head_dim(head_dim)

    def heads_first(x, length):  # [B, L, H, D] -> [B, H, L', D'] with zero padding
        x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_pad - head_dim)))
        return x.swapaxes(1, 2)

    q, k, v = heads_first(query, q_pad), heads_first(key, kv_pad), heads_first(value, kv_pad)
    segment_ids = None
    if kv_pad != kv_len:
        kv_ids = jnp.broadcast_to((jnp.arange(kv_pad) < kv_len).astype(jnp.int32), (batch, kv_pad))
        segment_ids = pallas_flash.SegmentIds(q=jnp.ones((batch, q_pad), jnp.int32), kv=kv_ids)
    out = pallas_flash.flash_attention(q, k, v, segment_ids=segment_ids, sm_scale=head_dim**-0.5,
                                       block_sizes=block_sizes(q_pad, kv_pad))
    return out.swapaxes(1, 2)[:, :q_len, :, :head_dim]
