"""Text-to-image sampling with classifier-free guidance, as one jitted function sharded over the mesh: the generate
stage's sampler, and the toy-world prior's sample grid (here below both, as diffusers' pipelines sit beside its models).

Text encoding, the whole denoising loop (one ``lax.fori_loop``) and the VAE decode compile together, so a batch
is a single device program. Each image's initial noise comes from its own seed (``jax.random.key(seed)``), so
an image does not depend on its batch, the device count or a restart. Numerics mirror diffusers'
``StableDiffusionPipeline`` (guidance is skipped at scale <= 1; images are rounded from [-1, 1] to uint8).

Two variants of the peers that BOB is compared with:

- ``strength`` set: real-guided sampling (SDEdit; DA-Fusion, DISEF, Diff-Mix), diffusers'
  ``StableDiffusionImg2ImgPipeline``: a given image is encoded by the VAE (a sample of its latent Gaussian), noised
  to the timestep where the last ``int(steps * strength)`` steps begin, and denoised from there.
- ``mix_weight < 1``: MVC's mixing of caption embeddings: each image is conditioned on
  ``w * E(prompt) + (1 - w) * E(mix_prompt)``, E the text encoder's last hidden state.
"""

from __future__ import annotations

import functools
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
        strength: float | None = None,
        mix_weight: float = 1.0,
        place_weights: bool = True,
    ):
        """``place_weights=False`` leaves the weights where they are: ``bobjax.aot`` builds the sampler on abstract
        models and compiles :meth:`lower`'s program for a target without placing any weights."""
        self.sd, self.mesh = sd, mesh
        self.guided_by_images = strength is not None
        self.sampler = make_sampler(scheduler, sd.scheduler_config, steps, 1.0 if strength is None else strength)
        if not 0.0 <= mix_weight <= 1.0:
            raise ValueError(f"mix_weight must be in [0, 1], got {mix_weight}")
        self.mix_weight = float(mix_weight)
        factor = 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
        if resolution % factor:
            raise ValueError(f"resolution {resolution} is not a multiple of the VAE's downsampling factor {factor}")
        self.latent_shape = (resolution // factor, resolution // factor, sd.unet_config.get("in_channels", 4))
        self.guidance_scale = float(guidance_scale)
        self.negative_ids = sd.tokenize([negative_prompt])
        self._graphdef = nnx.graphdef((sd.unet, sd.vae, sd.text_encoder))
        # Calls are padded to a multiple of the device count (:meth:`_padded`), so they split over every device.
        self._replicated, self._batch = parallel.replicated(mesh), parallel.batch_sharding(mesh, mesh.size)
        if place_weights:
            self.refresh_weights()
        # Every per-image input (a dict) is split over the devices: one sharding serves the whole dict.
        self.jitted = jax.jit(parallel.under_mesh(mesh, self._pure_generate),
                              in_shardings=(self._replicated, self._batch, self._replicated), out_shardings=self._batch)
        self._programs = {}  # padded batch size -> the program :meth:`use_program` gave for it

    def refresh_weights(self) -> None:
        """Reads the pipeline's weights again (after another LoRA was folded in); the graph is the same, so
        nothing recompiles."""
        state = nnx.state((self.sd.unet, self.sd.vae, self.sd.text_encoder))
        self._state = jax.device_put(state, self._replicated)

    def lower(self, batch_size: int):
        """The jitted call for ``batch_size`` prompts, lowered on abstract inputs (``jax.stages.Lowered``): the
        weights, the per-image inputs :meth:`generate_float` builds (padded to the device count) and the negative
        prompt's ids."""
        padded = self._padded(batch_size)
        text_length = self.negative_ids.shape[1]
        spec = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct((padded, *shape), dtype)  # noqa: E731
        batch = {"ids": spec((text_length,), jnp.int32), "noise": spec(self.latent_shape)}
        if self.guided_by_images:
            size = self.latent_shape[0] * 2 ** (len(self.sd.vae_config["block_out_channels"]) - 1)
            batch |= {"images": spec((size, size, 3)), "posterior_noise": spec(self.latent_shape)}
        if self.mix_weight < 1.0:
            batch["mix_ids"] = spec((text_length,), jnp.int32)
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                             nnx.state((self.sd.unet, self.sd.vae, self.sd.text_encoder)))
        negative = jax.ShapeDtypeStruct(self.negative_ids.shape, jnp.int32)
        return self.jitted.lower(state, batch, negative)

    def _padded(self, batch_size: int) -> int:
        """The rows a call of ``batch_size`` prompts runs: a multiple of the device count."""
        return -(-batch_size // self.mesh.size) * self.mesh.size

    def use_program(self, batch_size: int, program) -> None:
        """Calls padded to ``batch_size``'s rows run ``program`` (the :meth:`lower` program compiled ahead, or
        :attr:`jitted`); other sizes run :attr:`jitted`."""
        self._programs[self._padded(batch_size)] = program

    def initial_noise(self, seeds: Sequence[int], stream: int = 0) -> jax.Array:
        """One standard-normal latent per seed, independent of batch composition; ``stream`` 1 is the VAE
        posterior's noise of real-guided sampling, apart from the diffusion noise (stream 0)."""
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.uint32))
        if stream:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)
        return jax.vmap(lambda k: jax.random.normal(k, self.latent_shape, jnp.float32))(keys)

    def _pure_generate(self, state, batch, negative_ids):
        unet, vae, text_encoder = nnx.merge(self._graphdef, state)
        context = text_encoder(batch["ids"])
        compute_dtype = context.dtype
        if "mix_ids" in batch:
            context = (self.mix_weight * context.astype(jnp.float32)
                       + (1 - self.mix_weight) * text_encoder(batch["mix_ids"]).astype(jnp.float32)).astype(compute_dtype)
        if self.guidance_scale > 1.0:
            negative = jnp.broadcast_to(text_encoder(negative_ids), context.shape)
            context = jnp.concatenate([negative, context])
        denoise = functools.partial(self._denoise, unet, context)
        if "images" in batch:
            mean, logvar = vae.encode_moments(batch["images"].astype(compute_dtype))
            x0 = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * batch["posterior_noise"]
            start = self.sampler.add_noise(vae.scaling_factor * x0, batch["noise"])
        else:
            start = self.sampler.init_noise_sigma * batch["noise"]
        x = sample_loop(self.sampler, denoise, start)
        images = vae.decode((x / vae.scaling_factor).astype(compute_dtype)).astype(jnp.float32)
        return jnp.clip(images / 2 + 0.5, 0.0, 1.0)

    def _denoise(self, unet, context, x, t):
        """One evaluation of the guided model: the sampler loop's body (``context``: negative then positive rows
        when guided)."""
        x = x.astype(context.dtype)
        if self.guidance_scale <= 1.0:
            return unet(x, jnp.broadcast_to(t, (x.shape[0],)), context).astype(jnp.float32)
        out = unet(jnp.concatenate([x, x]), jnp.broadcast_to(t, (2 * x.shape[0],)), context).astype(jnp.float32)
        uncond, cond = jnp.split(out, 2)
        return uncond + self.guidance_scale * (cond - uncond)

    def lower_denoise(self, batch_size: int):
        """One step of the loop alone, lowered as :meth:`lower` lowers the call: XLA's cost analysis counts a loop's
        body once, so ``bobjax.aot`` adds this program's cost ``num_steps - 1`` more times."""
        padded = self._padded(batch_size)
        graphdef = nnx.graphdef(self.sd.unet)
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state(self.sd.unet))
        rows = 2 * padded if self.guidance_scale > 1.0 else padded
        width = self.sd.unet_config["cross_attention_dim"]
        context = jax.ShapeDtypeStruct((rows, self.negative_ids.shape[1], width), self.sd.unet.dtype)
        x = jax.ShapeDtypeStruct((padded, *self.latent_shape), jnp.float32)
        t = jax.ShapeDtypeStruct((), self.sampler.timesteps.dtype)
        step = jax.jit(parallel.under_mesh(
            self.mesh, lambda state, context, x, t: self._denoise(nnx.merge(graphdef, state), context, x, t)),
                       in_shardings=(self._replicated, self._batch, self._batch, self._replicated),
                       out_shardings=self._batch)
        return step.lower(state, context, x, t)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int] | None = None, latents=None,
                 **inputs) -> np.ndarray:
        """uint8 images for ``prompts``, rounded as diffusers rounds them (see :meth:`generate_float`)."""
        return np.round(self.generate_float(prompts, seeds, latents, **inputs) * 255).astype(np.uint8)

    def generate_float(self, prompts: Sequence[str], seeds: Sequence[int] | None = None, latents=None, *,
                       images=None, posterior_noise=None, mix_prompts: Sequence[str] | None = None) -> np.ndarray:
        """Images in [0, 1] for ``prompts``; noise from ``seeds`` or explicit ``latents`` [B, h, w, C].

        Real-guided (``strength`` set): ``images`` [B, H, W, 3] in [-1, 1] at the resolution, and the VAE posterior's
        noise from ``seeds`` or explicit ``posterior_noise`` (shaped like the latents). MVC (``mix_weight < 1``):
        ``mix_prompts``, one per prompt. The batch is padded to a multiple of the device count and the padding
        dropped afterwards.
        """
        n = len(prompts)
        if (seeds is None) == (latents is None):
            raise ValueError("pass exactly one of seeds or latents")
        batch = {"ids": self.sd.tokenize(prompts),
                 "noise": self.initial_noise(seeds) if latents is None else jnp.asarray(latents, jnp.float32)}
        if self.guided_by_images:
            if images is None:
                raise ValueError("real-guided sampling (strength set) needs the images to start from")
            batch["images"] = jnp.asarray(images, jnp.float32)
            batch["posterior_noise"] = (self.initial_noise(seeds, stream=1) if posterior_noise is None
                                        else jnp.asarray(posterior_noise, jnp.float32))
        if self.mix_weight < 1.0:
            if mix_prompts is None or len(mix_prompts) != n:
                raise ValueError("mixing caption embeddings (mix_weight < 1) needs one mix prompt per prompt")
            batch["mix_ids"] = self.sd.tokenize(mix_prompts)
        padded = self._padded(n)
        if padded != n:
            batch = {k: jnp.concatenate([v, jnp.repeat(v[-1:], padded - n, axis=0)]) for k, v in batch.items()}
        # Placed explicitly: on more than one host, jit refuses host (numpy) inputs for a sharded argument, even
        # on a mesh of this host's devices (generation runs per host, each on its own shards of the plan).
        images = self._programs.get(padded, self.jitted)(self._state, jax.device_put(batch, self._batch),
                                                            jax.device_put(self.negative_ids, self._replicated))
        return np.asarray(jax.device_get(images))[:n]
