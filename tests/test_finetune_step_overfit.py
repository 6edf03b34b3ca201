"""A tiny model memorises a handful of images: the real jitted LoRA step halves its training loss.

Four 16 px images (the tiny SD 1.x pipeline, rank-8 adapters, lr 3e-2 with cosine decay, 40 steps), one batch of all four, repeated exactly: the step draws its posterior sample, noise and
timesteps from ``fold_in(key(seed), state.step)``, so feeding it its state with the step counter held at 0
repeats the same training example every step (AdamW's own count, and with it the learning-rate schedule,
still advances). With fresh noise every step a random tiny UNet's loss falls only slowly (there is nothing
to memorise); with the example fixed, attention and text-encoder adapters alone can fit it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bobjax import config_lib, parallel
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training import optim
from tiny_sd import make_tiny_sd

STEPS = 40


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_stable_diffusion(make_tiny_sd(tmp_path_factory.mktemp("sd1"), "sd1"))


@pytest.mark.slow
def test_training_loss_of_the_real_step_falls_by_half_on_four_images(sd):
    c = config_lib.base_config().finetune
    c.lora_rank, c.lora_alpha, c.lora_dropout = 8, 8.0, 0.0
    c.learning_rate, c.warmup_steps, c.weight_decay = 3e-2, 0, 0.0
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    unet, text_encoder = add_adapters(sd, lora_configs(c), seed=0)
    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    optimizer, lr = optim.make_optimizer(c, STEPS)
    step_fn = lora_step.make_train_step(graphs, NoiseSchedule.from_config(sd.scheduler_config), optimizer, lr,
                                        seed=0, lora_dropout=0.0)
    state = lora_step.init_state(trainable, optimizer)
    train_step = lora_step.jit_train_step(step_fn, state, frozen, mesh, 4)

    rng = np.random.default_rng(0)
    prompts = ["a bird photo of a crow", "a bird photo of a gull", "a bird photo of an owl", "a bird photo of a wren"]
    batch = {"pixels": jnp.asarray(rng.uniform(-1, 1, size=(4, 16, 16, 3)), jnp.float32),
             "input_ids": jnp.asarray(sd.tokenize(prompts))}
    losses = []
    for _ in range(STEPS):
        state, metrics = train_step(state.replace(step=jnp.zeros_like(state.step)), frozen, batch)
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] <= 0.5 * losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {STEPS} steps"
