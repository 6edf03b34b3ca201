"""Text-to-image sampling with classifier-free guidance, as one jitted function sharded over the mesh.

Text encoding, the whole denoising loop (one ``lax.fori_loop``) and the VAE decode compile together, so a batch
is a single device program. Each image's initial noise comes from its own seed (``jax.random.key(seed)``), so
an image does not depend on its batch, the device count or a restart. Numerics mirror diffusers'
``StableDiffusionPipeline`` (guidance is skipped at scale <= 1; images are rounded from [-1, 1] to uint8).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from bobjax import parallel
from bobjax.models.sd.schedulers import make_sampler, sample_loop


class TextToImage:
    """``generator(prompts, seeds) -> uint8 images [B, H, W, 3]`` for a loaded Stable Diffusion."""

    def __init__(
        self,
        sd,
        *,
        scheduler: str,
        steps: int,
        guidance_scale: float,
        resolution: int,
        mesh: Mesh,
        negative_prompt: str = "",
    ):
        self.sd, self.mesh = sd, mesh
        self.sampler = make_sampler(scheduler, sd.scheduler_config, steps)
        factor = 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
        if resolution % factor:
            raise ValueError(f"resolution {resolution} is not a multiple of the VAE's downsampling factor {factor}")
        self.latent_shape = (resolution // factor, resolution // factor, sd.unet_config.get("in_channels", 4))
        self.guidance_scale = float(guidance_scale)
        self.negative_ids = sd.tokenize([negative_prompt])
        self._graphdef = nnx.graphdef((sd.unet, sd.vae, sd.text_encoder))
        self._replicated, self._batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        self.refresh_weights()
        self._generate = jax.jit(
            self._pure_generate,
            in_shardings=(self._replicated, self._batch, self._replicated, self._batch),
            out_shardings=self._batch,
        )

    def refresh_weights(self) -> None:
        """Reads the pipeline's weights again (after another LoRA was folded in); the graph is the same, so
        nothing recompiles."""
        state = nnx.state((self.sd.unet, self.sd.vae, self.sd.text_encoder))
        self._state = jax.device_put(state, self._replicated)

    def initial_noise(self, seeds: Sequence[int]) -> jax.Array:
        """One standard-normal latent per seed, independent of batch composition."""
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.uint32))
        return jax.vmap(lambda k: jax.random.normal(k, self.latent_shape, jnp.float32))(keys)

    def _pure_generate(self, state, ids, negative_ids, latents):
        unet, vae, text_encoder = nnx.merge(self._graphdef, state)
        context = text_encoder(ids)
        compute_dtype = context.dtype
        guided = self.guidance_scale > 1.0
        if guided:
            negative = jnp.broadcast_to(text_encoder(negative_ids), context.shape)
            context = jnp.concatenate([negative, context])

        def denoise(x, t):
            x = x.astype(compute_dtype)
            if not guided:
                return unet(x, jnp.broadcast_to(t, (x.shape[0],)), context).astype(jnp.float32)
            out = unet(jnp.concatenate([x, x]), jnp.broadcast_to(t, (2 * x.shape[0],)), context).astype(jnp.float32)
            uncond, cond = jnp.split(out, 2)
            return uncond + self.guidance_scale * (cond - uncond)

        x = sample_loop(self.sampler, denoise, self.sampler.init_noise_sigma * latents)
        images = vae.decode((x / vae.scaling_factor).astype(compute_dtype)).astype(jnp.float32)
        return jnp.clip(images / 2 + 0.5, 0.0, 1.0)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int] | None = None, latents=None) -> np.ndarray:
        """uint8 images for ``prompts``, rounded as diffusers rounds them (see :meth:`generate_float`)."""
        return np.round(self.generate_float(prompts, seeds, latents) * 255).astype(np.uint8)

    def generate_float(self, prompts: Sequence[str], seeds: Sequence[int] | None = None, latents=None) -> np.ndarray:
        """Images in [0, 1] for ``prompts``; noise from ``seeds`` or explicit ``latents`` [B, h, w, C].

        The batch is padded to a multiple of the device count and the padding dropped afterwards.
        """
        n = len(prompts)
        if (seeds is None) == (latents is None):
            raise ValueError("pass exactly one of seeds or latents")
        latents = self.initial_noise(seeds) if latents is None else jnp.asarray(latents, jnp.float32)
        ids = self.sd.tokenize(prompts)
        padded = -(-n // self.mesh.size) * self.mesh.size
        if padded != n:
            ids = np.concatenate([ids, np.repeat(ids[-1:], padded - n, axis=0)])
            latents = jnp.concatenate([latents, jnp.repeat(latents[-1:], padded - n, axis=0)])
        # Placed explicitly: on more than one host, jit refuses host (numpy) inputs for a sharded argument, even
        # on a mesh of this host's devices (generation runs per host, each on its own shards of the plan).
        images = self._generate(self._state, jax.device_put(ids, self._batch),
                                jax.device_put(self.negative_ids, self._replicated), jax.device_put(latents, self._batch))
        return np.asarray(jax.device_get(images))[:n]
