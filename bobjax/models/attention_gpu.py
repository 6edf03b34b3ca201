"""cuDNN's flash attention through JAX, with its refusals named before the first step.

JAX checks what cuDNN takes while tracing, and the gradient's check differs from the forward's: the gradient
needs even query and key lengths (see :mod:`bobjax.models.attention_choice`). Whether a gradient will be taken is
only known when it is, so that check runs in this custom VJP's forward rule, which JAX calls only when it
differentiates: an explicit ``cudnn`` can still serve a 77-key cross-attention in generation, and a training step
that would send it a gradient stops with an error that names the call and what to set.
"""

from __future__ import annotations

import functools

import jax

from bobjax.models import attention_choice


def cudnn_attention(query, key, value, mask, device, call: attention_choice.Call):
    """``jax.nn.dot_product_attention(implementation="cudnn")`` on ``[batch, length, heads, head_dim]`` arrays."""
    return _attention(query, key, value, mask, (device, call))


def _cudnn(query, key, value, mask):
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(query, key, value, mask, about):
    return _cudnn(query, key, value, mask)


def _attention_fwd(query, key, value, mask, about):
    device, call = about
    refusal = attention_choice.cudnn_refusal(device, call)
    if refusal:
        raise attention_choice.refused("cudnn", device, call, 1, refusal, what="the gradient of ")
    out, pullback = jax.vjp(_cudnn, query, key, value, mask)
    return out, pullback


def _attention_bwd(about, pullback, d_out):
    return pullback(d_out)


_attention.defvjp(_attention_fwd, _attention_bwd)
