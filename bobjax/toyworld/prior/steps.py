"""The two jitted pre-training steps of the prior: the autoencoder, then the UNet on its cached latents.

Both draw their randomness from ``fold_in(key(seed), step)``, so a resumed run repeats the killed one. The
UNet step uses the DDPM objective that fine-tuning uses (:mod:`bobjax.training.denoising`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from bobjax.training.denoising import denoising_loss, noised_inputs


class TrainState(struct.PyTreeNode):
    """What a checkpoint holds: the step, the trained parameters and the optimizer's moments."""

    step: jax.Array
    params: nnx.State
    opt_state: Any


def init_state(params: nnx.State, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def _update(state: TrainState, optimizer, loss, grads, metrics: dict) -> tuple[TrainState, dict]:
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads), **metrics}


def make_vae_step(graph, optimizer, *, kl_weight: float, seed: int):
    """``(state, pixels [B, H, W, 3] in [-1, 1], *frozen) -> (state, metrics)``: L1 + L2 reconstruction of a
    posterior sample, plus ``kl_weight`` x the KL to N(0, I) per latent element (small: it only keeps latents
    tame). ``frozen``: the states ``graph`` also needs that do not train (the encoder, when only the decoder does)."""

    def step(state: TrainState, pixels: jax.Array, *frozen: nnx.State):
        key = jax.random.fold_in(jax.random.key(seed), state.step)

        def loss_fn(params):
            vae = nnx.merge(graph, params, *frozen)
            mean, logvar = vae.encode_moments(pixels)
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
            error = vae.decode(z) - pixels
            l1, l2 = jnp.mean(jnp.abs(error)), jnp.mean(jnp.square(error))
            kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
            return l1 + l2 + kl_weight * kl, {"l1": l1, "l2": l2, "kl": kl}

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _update(state, optimizer, loss, grads, metrics)

    return jax.jit(step, donate_argnums=(0,))


def make_unet_step(graph, text_graph, schedule, optimizer, *, scaling_factor: float, seed: int):
    """``(state, text_state, batch) -> (state, metrics)``; ``batch``: cached VAE ``mean``/``logvar`` and the
    captions' ``input_ids``. The text encoder is frozen."""

    def step(state: TrainState, text_state: nnx.State, batch: dict):
        key = jax.random.fold_in(jax.random.key(seed), state.step)
        latents, noise, timesteps = noised_inputs(batch["mean"], batch["logvar"], scaling_factor, key,
                                                  schedule.num_train_timesteps)
        input_ids = batch["input_ids"]
        text_encoder = nnx.merge(text_graph, text_state)

        def loss_fn(params):
            unet = nnx.merge(graph, params)
            return denoising_loss(unet, text_encoder, schedule, latents, input_ids, noise, timesteps)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return _update(state, optimizer, loss, grads, {})

    return jax.jit(step, donate_argnums=(0,))


def make_encode(graph):
    """``(vae params, pixels) -> (mean, logvar)``, jitted: caches the pool's posterior moments once."""
    return jax.jit(lambda params, pixels: nnx.merge(graph, params).encode_moments(pixels))
