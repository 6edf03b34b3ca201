"""The fine-tuning stage's LoRA step on a tiny SD, compiled for a target (bobjax.targets) without its hardware.

Built as :class:`bobjax.finetune.stage.LoraTrainer` builds it (adapters, optimizer, ``make_train_step``,
``jit_train_step``), traced on abstract inputs under ``jax.set_mesh`` of the target's mesh, so every attention
chooses its kernel for the target's devices. Runs inside a :mod:`target_compile` subprocess.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bobjax import config_lib, targets
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training import optim


def compile_lora_step(sd_path: str, target: str, *, attention: str = "auto", resolution: int = 64,
                      batch_size: int = 8, dtype=jnp.bfloat16):
    """The compiled step (``jax.stages.Compiled``) for ``batch_size`` images of ``resolution`` px."""
    c = config_lib.base_config().finetune
    sd = load_stable_diffusion(sd_path, dtype=dtype, attention=attention, remat=True)
    unet, text_encoder = add_adapters(sd, lora_configs(c), seed=0)
    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    optimizer, learning_rate = optim.make_optimizer(c, 100)
    step_fn = lora_step.make_train_step(graphs, NoiseSchedule.from_config(sd.scheduler_config), optimizer,
                                        learning_rate, seed=0, lora_dropout=c.lora_dropout)
    state = jax.eval_shape(lambda t: lora_step.init_state(t, optimizer), trainable)
    frozen = jax.eval_shape(lambda f: f, frozen)
    mesh = targets.mesh(target)
    batch = {"pixels": jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32),
             "input_ids": jax.ShapeDtypeStruct((batch_size, 77), jnp.int32)}
    with jax.set_mesh(mesh):
        jitted = lora_step.jit_train_step(step_fn, state, frozen, mesh, batch_size)
        return jitted.trace(state, frozen, batch).lower().compile()
