"""A bf16 LoRA step (the default ``model.dtype`` on GPU/TPU) against the same step in float32.

bf16 keeps 8 bits of mantissa (2**-8 relative per operation), and errors add up through the network; the adapters
stay float32 master weights. Measured (same adapters, latents, noise, timesteps and prompts): loss 2e-4 relative,
adapter gradients 0.8 % relative (L2 of the difference over L2 of float32's), cosine 0.99997 on the two-level tiny
SD 2.x (2026-11-30); 1.7e-4 / 0.56 % / 0.99998 on the minimal one this test uses (2026-12-07: one UNet level, one
text layer, the same SD 2.x choices: linear projections, upcast attention, gelu; it compiles in half the time);
0.1 % / 2.4 % / 0.9999 on the shipped toy-world prior. Tolerances: loss 2e-3, gradients 5e-2, cosine 0.999. An
adapter in bf16, or a step that dropped its float32 upcasts, fails them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bobjax import config_lib
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.models import lora
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training.denoising import denoising_loss
from tiny_sd import make_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd2"), "sd2", prediction_type="v_prediction", minimal=True)


def _with_adapters(path, dtype, adapters=None):
    """(sd, unet, text_encoder) in ``dtype`` with the adapters ``adapters`` ({"unet": state dict, ...}); without
    them, random ones with non-zero B, as after some training, so every adapter has a gradient."""
    sd = load_stable_diffusion(path, dtype=dtype)
    unet, text_encoder = add_adapters(sd, lora_configs(config_lib.base_config().finetune), seed=0)
    models = {"unet": unet, "text_encoder": text_encoder}
    if adapters is None:
        rng = np.random.default_rng(3)
        adapters = {name: {k: (0.05 * rng.normal(size=v.shape)).astype(np.float32)
                           for k, v in lora.lora_state_dict(model).items()}
                    for name, model in models.items()}
    for name, model in models.items():
        lora.load_lora_state_dict(model, adapters[name], source=f"random {name} adapters")
    return sd, unet, text_encoder, adapters


def _loss_and_grads(sd, unet, text_encoder):
    rng = np.random.default_rng(0)
    latents, noise = (rng.normal(size=(4, 8, 8, 4)).astype(np.float32) for _ in range(2))
    ids = sd.tokenize(["a bird photo of a crow in the grass background with the perched pose"] * 4)
    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    schedule = NoiseSchedule.from_config(sd.scheduler_config)

    def loss_fn(trainable):
        u, te, _ = lora_step.merge_models(graphs, trainable, frozen)
        return denoising_loss(u, te, schedule, jnp.asarray(latents), jnp.asarray(ids), jnp.asarray(noise),
                              jnp.asarray([10, 300, 600, 900]))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable)
    leaves = jax.tree.leaves(grads)
    assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(jnp.float32)}  # Master weights.
    return float(loss), np.concatenate([np.asarray(x, np.float32).ravel() for x in leaves])


@pytest.mark.slow
def test_bf16_lora_step_stays_close_to_float32(tiny_sd2):
    *float32, adapters = _with_adapters(tiny_sd2, jnp.float32)
    loss32, grads32 = _loss_and_grads(*float32)
    loss16, grads16 = _loss_and_grads(*_with_adapters(tiny_sd2, jnp.bfloat16, adapters)[:3])
    assert abs(loss16 - loss32) <= 2e-3 * loss32
    assert np.linalg.norm(grads16 - grads32) <= 5e-2 * np.linalg.norm(grads32)
    assert grads16 @ grads32 >= 0.999 * np.linalg.norm(grads16) * np.linalg.norm(grads32)
