"""The DDPM training objective that LoRA fine-tuning and the toy-world prior's pre-training share, so the prior
is trained on exactly the objective it is later fine-tuned on (as diffusers' training scripts compute it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def noised_inputs(mean: jax.Array, logvar: jax.Array, scaling_factor: float, key: jax.Array,
                  num_train_timesteps: int):
    """VAE posterior moments -> (scaled latent sample, noise, timesteps), as diffusers draws them. Fine-tuning
    encodes each batch's crops first; the prior's pre-training caches the moments of its images."""
    k_posterior, k_noise, k_time = jax.random.split(key, 3)
    posterior = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_posterior, mean.shape, mean.dtype)
    latents = jax.lax.stop_gradient(posterior.astype(jnp.float32) * scaling_factor)
    noise = jax.random.normal(k_noise, latents.shape, jnp.float32)
    timesteps = jax.random.randint(k_time, (latents.shape[0],), 0, num_train_timesteps)
    return latents, noise, timesteps


def denoising_loss(unet, text_encoder, schedule, latents, input_ids, noise, timesteps) -> jax.Array:
    """MSE (float32, mean over everything) between the UNet's prediction and the schedule's training target."""
    context = text_encoder(input_ids)
    noisy = schedule.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, context)
    target = schedule.training_target(latents, noise, timesteps)
    return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)))
