"""``finetune.remat``: LoRA training steps and the plain UNet give the same numbers with and without remat.

Remat used to fail under ``jax.grad`` whenever frozen weights were closed over (TraceContextError), i.e.
at every LoRA step. Tolerances (float32), as the L2 norm of the difference over the L2 norm without remat:
1e-5 for losses, gradient norms, each adapter's gradient and UNet outputs (measured: 3e-6 at most); 1e-2
for the adapters' updates after two AdamW steps, because Adam divides each element by its own gradient's
magnitude, so elements whose gradient is near float32 rounding noise amplify it (measured: 4e-4 at most).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bobjax import config_lib
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.models import lora
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training import optim
from tiny_sd import make_tiny_sd

RTOL = 1e-5
UPDATE_RTOL = 1e-2
PROMPTS = ["a bird photo of a crow in the grass background", "a red car"]


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd1"), "sd1", minimal=True)


@pytest.fixture(scope="module")
def twins(sd_path):
    """(config, {remat: (sd, graphs, trainable, frozen)}): the same adapters on both, with B random so every
    adapter gets a gradient. LoRA dropout is on: remat must also write back the dropout stream's count, or the
    two runs would draw different masks."""
    c = config_lib.base_config().finetune
    c.lora_rank, c.lora_alpha, c.lora_dropout = 4, 8.0, 0.1
    c.warmup_steps, c.learning_rate = 0, 1e-2  # The first update is not zero and moves the second step's loss.
    models = {}
    for remat in (False, True):
        sd = load_stable_diffusion(sd_path, remat=remat)
        unet, text_encoder = add_adapters(sd, lora_configs(c), seed=0)
        graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
        rng = np.random.default_rng(1)  # On the host: jax.random here would compile a program per adapter shape.
        noisy = jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + 0.1 * rng.normal(size=x.shape), x.dtype),
                             trainable)
        models[remat] = sd, graphs, noisy, frozen
    jax.tree.map(np.testing.assert_array_equal, models[True][2], models[False][2])
    return c, models


def _batch(sd):
    pixels = np.random.default_rng(0).uniform(-1, 1, size=(len(PROMPTS), 16, 16, 3)).astype(np.float32)
    return {"pixels": jnp.asarray(pixels), "input_ids": jnp.asarray(sd.tokenize(PROMPTS))}


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _max_relative(tree, reference) -> float:
    assert jax.tree.structure(tree) == jax.tree.structure(reference)
    return max(_relative(a, b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True))


def _loss_and_grads(config, sd, graphs, trainable, frozen):
    """The step's loss (dropout keys included) and its gradients, on fixed latents, noise and timesteps."""
    batch = _batch(sd)
    latents, noise, timesteps = lora_step.training_inputs(sd.vae, batch["pixels"], jax.random.key(2), 1000)
    schedule = NoiseSchedule.from_config(sd.scheduler_config)

    def loss_fn(trainable):
        unet, text_encoder, _ = lora_step.merge_models(graphs, trainable, frozen)
        if config.lora_dropout:
            lora.set_dropout_rng(unet, jax.random.key(3))
            lora.set_dropout_rng(text_encoder, jax.random.key(4))
        return lora_step.denoising_loss(unet, text_encoder, schedule, latents, batch["input_ids"], noise, timesteps)

    return jax.jit(jax.value_and_grad(loss_fn))(trainable)


def _two_steps(config, sd, graphs, trainable, frozen):
    """(state, metrics of each step) after two jitted training steps."""
    optimizer, lr = optim.make_optimizer(config, total_steps=2)
    step = jax.jit(lora_step.make_train_step(graphs, NoiseSchedule.from_config(sd.scheduler_config), optimizer, lr,
                                             seed=0, lora_dropout=config.lora_dropout))
    state, metrics = lora_step.init_state(trainable, optimizer), []
    for _ in range(2):
        state, m = step(state, frozen, _batch(sd))
        metrics.append(m)
    return state, metrics


@pytest.mark.slow
def test_lora_loss_and_gradients_match_without_remat(twins):
    config, models = twins
    (loss, grads), (loss_remat, grads_remat) = (_loss_and_grads(config, *models[remat]) for remat in (False, True))
    assert _relative(loss_remat, loss) <= RTOL
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert len(norms) > 10 and min(norms) > 0  # Every adapter takes part.
    assert _max_relative(grads_remat, grads) <= RTOL


@pytest.mark.slow
def test_two_lora_train_steps_match_without_remat(twins):
    """The jitted training step itself: losses, gradient norms and the adapters' updates."""
    config, models = twins
    (state, metrics), (state_remat, metrics_remat) = (_two_steps(config, *models[remat]) for remat in (False, True))
    for m, m_remat in zip(metrics, metrics_remat, strict=True):
        assert np.isfinite(float(m["loss"]))
        assert _relative(m_remat["loss"], m["loss"]) <= RTOL
        assert _relative(m_remat["grad_norm"], m["grad_norm"]) <= RTOL
    initial = models[False][2]
    updates = jax.tree.map(jnp.subtract, state.lora, initial)
    updates_remat = jax.tree.map(jnp.subtract, state_remat.lora, initial)
    assert _max_relative(updates_remat, updates) <= UPDATE_RTOL


def _plain_unet(sd_path, remat: bool, latents, timesteps):
    """(two chained UNet calls inside a jitted loop, as the samplers make them; gradients of ``conv_in`` with
    the other weights closed over)."""
    sd = load_stable_diffusion(sd_path, remat=remat)
    context = sd.text_encoder(jnp.asarray(sd.tokenize(PROMPTS)))
    graphdef, trained, rest = nnx.split(sd.unet, nnx.PathContains("conv_in"), ...)

    def sample(trained, rest):
        unet = nnx.merge(graphdef, trained, rest)
        return jax.lax.fori_loop(0, 2, lambda _, x: unet(x, timesteps, context), latents)

    def loss(trained, rest):
        return jnp.mean(nnx.merge(graphdef, trained, rest)(latents, timesteps, context) ** 2)

    return jax.jit(sample)(trained, rest), jax.jit(jax.grad(loss))(trained, rest)


@pytest.mark.slow
def test_plain_unet_matches_without_remat(sd_path):
    """No LoRA: generation (no grad) and training of some weights."""
    latents = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 4)).astype(np.float32))
    timesteps = jnp.array([5, 600])
    (samples, grads), (samples_remat, grads_remat) = (_plain_unet(sd_path, remat, latents, timesteps)
                                                      for remat in (False, True))
    assert _relative(samples_remat, samples) <= RTOL
    assert _max_relative(grads_remat, grads) <= RTOL
