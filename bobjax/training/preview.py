"""Preview images during fine-tuning: a short DDIM run with the current adapters for fixed prompts, as a grid.

The adapters are folded into the kernels of throw-away copies inside the jitted function (``merge_lora``), so
LoRA dropout, which qwix applies whenever the rate is positive, has nothing left to drop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bobjax.models import lora
from bobjax.models.sd.schedulers import make_sampler, sample_loop
from bobjax.training.lora_step import Frozen, Graphs, merge_models


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


def image_grid(images: np.ndarray, columns: int = 4) -> np.ndarray:
    """[N, H, W, 3] in [-1, 1] -> one uint8 grid image [rows * H, columns * W, 3] (blank cells padded)."""
    images = np.clip((np.asarray(images, np.float32) + 1) * 127.5, 0, 255).round().astype(np.uint8)
    n, h, w, c = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid
