"""Preview images during fine-tuning: a short DDIM run with the current adapters for fixed prompts, as a grid.

The adapters are folded into the kernels of throw-away copies inside the jitted function (``merge_lora``), so
LoRA dropout, which qwix applies whenever the rate is positive, has nothing left to drop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bobjax import parallel
from bobjax.finetune.step import Frozen, Graphs, merge_models
from bobjax.grid import image_grid, to_uint8
from bobjax.models import lora
from bobjax.models.sd.schedulers import make_sampler, sample_loop

NUM_PREVIEWS = 4


def make_preview_fn(graphs: Graphs, configs: dict[str, lora.LoraConfig], scheduler_config: dict, *,
                    num_steps: int, guidance_scale: float):
    """``(trainable, frozen, noise, input_ids, uncond_ids) -> images`` in [-1, 1], NHWC (jit it)."""
    sampler = make_sampler("ddim", scheduler_config, num_steps)

    def preview(trainable: dict, frozen: Frozen, noise: jax.Array, input_ids: jax.Array, uncond_ids: jax.Array):
        unet, text_encoder, vae = merge_models(graphs, trainable, frozen)
        lora.merge_lora(unet, configs["unet"])
        if "text_encoder" in trainable:
            lora.merge_lora(text_encoder, configs["text_encoder"])
            lora.set_dropout_rng(text_encoder, jax.random.key(0))
        context = text_encoder(jnp.concatenate([uncond_ids, input_ids]))

        unet_graph, unet_state = nnx.split(unet)

        def denoise(sample, t):
            # A fresh module inside the loop's trace: nnx objects cannot be mutated across trace levels.
            unet = nnx.merge(unet_graph, unet_state)
            lora.set_dropout_rng(unet, jax.random.key(0))
            both = unet(jnp.concatenate([sample, sample]), jnp.full((2 * sample.shape[0],), t), context)
            uncond, cond = jnp.split(both, 2)
            return uncond + guidance_scale * (cond - uncond)

        latents = sample_loop(sampler, denoise, noise * sampler.init_noise_sigma)
        return vae.decode(latents / vae.scaling_factor)

    return preview


class Previews:
    """Fixed noise and the first ``NUM_PREVIEWS`` training prompts, so grids of different steps compare. One
    compiled sampler serves every LoRA of a per-class run (their prompts are an argument)."""

    def __init__(self, config, sd, graphs: Graphs, configs: dict[str, lora.LoraConfig], mesh):
        c = config.finetune
        factor = 2 ** (len(sd.vae_config["block_out_channels"]) - 1)
        size = c.resolution // factor
        self.noise = jax.random.normal(jax.random.key(config.seed),
                                       (NUM_PREVIEWS, size, size, sd.unet_config["in_channels"]))
        self.uncond_ids = jnp.asarray(sd.tokenize([""] * NUM_PREVIEWS))
        fn = make_preview_fn(graphs, configs, sd.scheduler_config, num_steps=c.sample_steps,
                             guidance_scale=config.generate.guidance_scale)
        self.fn = jax.jit(fn, out_shardings=parallel.replicated(mesh))

    def __call__(self, trainable: dict, frozen: Frozen, input_ids: np.ndarray) -> np.ndarray:
        """One uint8 grid of the previews of the first prompts of ``input_ids`` with the adapters ``trainable``."""
        n = min(NUM_PREVIEWS, len(input_ids))
        images = self.fn(trainable, frozen, self.noise[:n], jnp.asarray(input_ids[:n]), self.uncond_ids[:n])
        return image_grid(to_uint8(parallel.to_host(images)))
