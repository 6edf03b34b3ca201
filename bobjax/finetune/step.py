"""One jitted LoRA fine-tuning step of Stable Diffusion, sharded over the mesh: what diffusers' LoRA training
scripts do per step, as one XLA program.

Per step: sample the VAE posterior at the batch's crops, add DDPM noise at uniform timesteps, encode the
prompts (through the text encoder's adapters when it has them), MSE of the UNet's output against epsilon or
velocity (the checkpoint's ``prediction_type``), gradients for the adapters only, clipping + AdamW.

Why the VAE runs inside the step rather than once up front: the crops and flips are random and new every
epoch, so latents cannot be cached without freezing the augmentation, and sampling the posterior each step
(as diffusers does) needs the moments at each crop anyway. The encoder's forward pass costs far less than the
UNet's forward and backward.

All randomness of step ``s`` comes from ``fold_in(key(seed), s)``, so a resumed run repeats the killed one,
and (with jax's partitionable threefry) a sharded run draws the same numbers as a single-device one.
A non-finite loss leaves the adapters and optimizer unchanged; the loop reports it and stops.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from bobjax import parallel
from bobjax.models import lora
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training import optim
from bobjax.training.denoising import denoising_loss, noised_inputs


class TrainState(struct.PyTreeNode):
    """What a checkpoint holds: the step, the adapters (``{"unet": State, "text_encoder": State}``), AdamW's moments."""

    step: jax.Array
    lora: dict[str, nnx.State]
    opt_state: Any


class Frozen(struct.PyTreeNode):
    """The parameters that do not train: the base UNet and text encoder under their adapters, and the VAE."""

    unet: nnx.State
    text_encoder: nnx.State
    vae: nnx.State


@struct.dataclass
class Graphs:
    """The static structure of the three models (``nnx.split``'s graph definitions)."""

    unet: Any = struct.field(pytree_node=False)
    text_encoder: Any = struct.field(pytree_node=False)
    vae: Any = struct.field(pytree_node=False)


def split_models(unet: nnx.Module, text_encoder: nnx.Module, vae: nnx.Module) -> tuple[Graphs, dict, Frozen]:
    """Models (with adapters already added) -> (graphs, trainable adapters, frozen parameters).

    A text encoder without adapters contributes no trainable entry; it still runs in the step.
    """
    g_unet, unet_lora, unet_rest = nnx.split(unet, nnx.LoRAParam, ...)
    g_text, text_lora, text_rest = nnx.split(text_encoder, nnx.LoRAParam, ...)
    g_vae, vae_state = nnx.split(vae)
    trainable = {"unet": unet_lora}
    if jax.tree.leaves(text_lora):
        trainable["text_encoder"] = text_lora
    return Graphs(g_unet, g_text, g_vae), trainable, Frozen(unet_rest, text_rest, vae_state)


def merge_models(graphs: Graphs, trainable: dict, frozen: Frozen) -> tuple[nnx.Module, nnx.Module, nnx.Module]:
    """Inverse of :func:`split_models` (inside or outside jit)."""
    unet = nnx.merge(graphs.unet, trainable["unet"], frozen.unet)
    text_state = (trainable["text_encoder"],) if "text_encoder" in trainable else ()
    text_encoder = nnx.merge(graphs.text_encoder, *text_state, frozen.text_encoder)
    return unet, text_encoder, nnx.merge(graphs.vae, frozen.vae)


def training_inputs(vae: nnx.Module, pixels: jax.Array, key: jax.Array, num_train_timesteps: int):
    """Pixels in [-1, 1] -> (scaled latents sampled from the VAE posterior, noise, timesteps), as diffusers."""
    mean, logvar = vae.encode_moments(pixels)
    return noised_inputs(mean, logvar, vae.scaling_factor, key, num_train_timesteps)


def init_state(trainable: dict, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), lora=trainable, opt_state=optimizer.init(trainable))


def make_train_step(graphs: Graphs, schedule, optimizer: optax.GradientTransformation,
                    learning_rate: optax.Schedule, *, seed: int, lora_dropout: float):
    """The step function ``(state, frozen, batch) -> (state, metrics)`` (not jitted; see :func:`jit_train_step`).

    ``batch``: ``pixels`` [B, H, W, 3] float in [-1, 1] and ``input_ids`` [B, L] int.
    """

    def step(state: TrainState, frozen: Frozen, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.key(seed), state.step)
        k_inputs, k_dropout = jax.random.split(key)
        vae = nnx.merge(graphs.vae, frozen.vae)
        latents, noise, timesteps = training_inputs(vae, batch["pixels"], k_inputs, schedule.num_train_timesteps)

        def loss_fn(trainable):
            unet, text_encoder, _ = merge_models(graphs, trainable, frozen)
            if lora_dropout > 0:
                k_unet, k_text = jax.random.split(k_dropout)
                lora.set_dropout_rng(unet, k_unet)
                lora.set_dropout_rng(text_encoder, k_text)
            return denoising_loss(unet, text_encoder, schedule, latents, batch["input_ids"], noise, timesteps)

        loss, grads = jax.value_and_grad(loss_fn)(state.lora)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.lora)
        new_lora = optax.apply_updates(state.lora, updates)
        finite = jnp.isfinite(loss)
        keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = TrainState(step=state.step + 1, lora=keep_if_finite(new_lora, state.lora),
                               opt_state=keep_if_finite(opt_state, state.opt_state))
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "learning_rate": learning_rate(state.step)}
        return new_state, metrics

    return step


def frozen_sharding(frozen: Frozen, mesh: Mesh) -> Frozen:
    """Replicated frozen weights, or FSDP over the mesh's ``fsdp`` axis when it has more than one device."""
    return jax.tree.map(lambda x: parallel.fsdp_sharding(x.shape, mesh), frozen)


def jit_train_step(step_fn, state: TrainState, frozen: Frozen, mesh: Mesh, batch_size: int):
    """One ``jax.jit`` with named shardings: the global batch of ``batch_size`` over the devices
    (``parallel.batch_sharding``), adapters and AdamW state replicated, frozen weights replicated or FSDP; the
    state's buffers are donated to the next state."""
    replicated = parallel.replicated(mesh)
    state_sharding = jax.tree.map(lambda _: replicated, state)
    batch_sharding = parallel.batch_sharding(mesh, batch_size)
    return jax.jit(
        parallel.under_mesh(mesh, step_fn),
        in_shardings=(state_sharding, frozen_sharding(frozen, mesh), batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )



def build_step(finetune_config, unet: nnx.Module, text_encoder: nnx.Module, vae: nnx.Module, scheduler_config: dict,
               num_steps: int, mesh: Mesh, *, seed: int):
    """The fine-tuning stage's step for models with adapters: ``(graphs, trainable, frozen, optimizer, jitted step)``.

    The one place the stage (:class:`bobjax.finetune.stage.LoraTrainer`) and ``bobjax.aot`` (which passes abstract
    models, to compile the step for a target without its weights) build the step, so both compile the same program.
    """
    c = finetune_config
    graphs, trainable, frozen = split_models(unet, text_encoder, vae)
    optimizer, learning_rate = optim.make_optimizer(c, num_steps)
    step_fn = make_train_step(graphs, NoiseSchedule.from_config(scheduler_config), optimizer, learning_rate, seed=seed,
                              lora_dropout=c.lora_dropout)
    state_template = jax.eval_shape(lambda t: init_state(t, optimizer), trainable)
    return graphs, trainable, frozen, optimizer, jit_train_step(step_fn, state_template, frozen, mesh, c.batch_size)


def batch_shapes(finetune_config, text_length: int) -> dict:
    """The global batch one step takes, as ``jax.ShapeDtypeStruct``s (what :func:`bobjax.finetune.input
    .finetune_batches` yields, every host's rows together)."""
    c = finetune_config
    return {"pixels": jax.ShapeDtypeStruct((c.batch_size, c.resolution, c.resolution, 3), jnp.float32),
            "input_ids": jax.ShapeDtypeStruct((c.batch_size, text_length), jnp.int32)}
