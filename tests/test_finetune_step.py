"""One LoRA training step against the PyTorch reference, and our exported LoRA inside a diffusers pipeline.

Reference: the tiny diffusers pipeline's UNet and CLIP text encoder with peft adapters (gaussian init, then
random B so the adapters matter), the same base weights, adapters, latents, noise, timesteps and prompts.
Tolerances (float32): loss 1e-4 relative; each adapter gradient 1e-3 relative (L2 norm of the difference
over the L2 norm of the reference); UNet outputs 1e-4 relative to their largest magnitude.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from flax import nnx
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model_state_dict, inject_adapter_in_model

from bobjax import config_lib
from bobjax.finetune import step as lora_step
from bobjax.finetune.adapters import add_adapters, lora_configs
from bobjax.models import lora, lora_file
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers import NoiseSchedule
from bobjax.training.denoising import denoising_loss
from tiny_sd import make_tiny_sd

PROMPTS = ["a bird photo of a crow in the grass background", "a red car"]
TIMESTEPS = [10, 700]


def _finetune_config():
    c = config_lib.base_config().finetune
    c.lora_rank, c.lora_alpha = 4, 8.0
    return c


def _peft(module, config: lora.LoraConfig, seed: int):
    targets = [t for t in config.targets if any(n.endswith(t) for n, _ in module.named_modules())]
    module = inject_adapter_in_model(PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=targets,
                                                    init_lora_weights="gaussian"), module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return module


def _peft_state(module, adapter: str = "default") -> dict:
    return {k: v.detach().numpy() for k, v in get_peft_model_state_dict(module, adapter_name=adapter).items()}


@pytest.fixture(scope="module", params=[("sd1", "epsilon"), ("sd2", "v_prediction")], ids=["sd1-eps", "sd2-v"])
def twins(request, tmp_path_factory):
    style, prediction = request.param
    path = make_tiny_sd(tmp_path_factory.mktemp(style), style, prediction_type=prediction)
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    configs = lora_configs(_finetune_config())
    pipe.unet = _peft(pipe.unet, configs["unet"], 1)
    pipe.text_encoder = _peft(pipe.text_encoder, configs["text_encoder"], 2)

    sd = load_stable_diffusion(path)
    unet, text_encoder = add_adapters(sd, configs, seed=0)
    lora.load_lora_state_dict(unet, _peft_state(pipe.unet), source="peft unet")
    lora.load_lora_state_dict(text_encoder, _peft_state(pipe.text_encoder), source="peft text encoder")
    return path, pipe, sd, unet, text_encoder, configs


def _inputs(sd):
    rng = np.random.default_rng(0)
    shape = (len(PROMPTS), 8, 8, 4)
    latents, noise = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
    return latents, noise, np.asarray(TIMESTEPS), sd.tokenize(PROMPTS)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_loss_and_lora_gradients_match_diffusers_with_peft(twins):
    _, pipe, sd, unet, text_encoder, _ = twins
    latents, noise, timesteps, ids = _inputs(sd)

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    t = torch.from_numpy(timesteps)
    pipe.unet.zero_grad()
    pipe.text_encoder.zero_grad()
    context = pipe.text_encoder(torch.from_numpy(ids).long())[0]
    noisy = scheduler.add_noise(_nchw(latents), _nchw(noise), t)
    prediction = pipe.unet(noisy, t, context).sample
    target = (_nchw(noise) if scheduler.config.prediction_type == "epsilon"
              else scheduler.get_velocity(_nchw(latents), _nchw(noise), t))
    loss_ref = torch.nn.functional.mse_loss(prediction.float(), target.float())
    loss_ref.backward()
    grads_ref = {f"{part}.{k.replace('.default', '')}": p.grad.numpy()
                 for part, m in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder))
                 for k, p in m.named_parameters() if "lora_" in k}

    graphs, trainable, frozen = lora_step.split_models(unet, text_encoder, sd.vae)
    schedule = NoiseSchedule.from_config(sd.scheduler_config)

    def loss_fn(trainable):
        u, te, _ = lora_step.merge_models(graphs, trainable, frozen)
        return denoising_loss(u, te, schedule, jnp.asarray(latents), jnp.asarray(ids), jnp.asarray(noise),
                                        jnp.asarray(timesteps))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable)
    grad_unet, grad_text, _ = lora_step.merge_models(graphs, grads, frozen)
    ours = {**lora.lora_state_dict(grad_unet, "unet."), **lora.lora_state_dict(grad_text, "text_encoder.")}

    assert abs(float(loss) - loss_ref.item()) <= 1e-4 * loss_ref.item()
    assert set(ours) == set(grads_ref)
    for key, ref in grads_ref.items():
        error = np.linalg.norm(ours[key] - ref) / np.linalg.norm(ref)
        assert error <= 1e-3, f"{key}: relative gradient error {error:.2e}"


def test_latents_are_scaled_samples_of_the_vae_posterior(twins):
    """mean + std * eps from diffusers' encoder moments, times the scaling factor, with the step's own eps."""
    _, pipe, sd, *_ = twins
    pixels = np.random.default_rng(1).uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32)
    key = jax.random.key(5)
    # Jitted as in the step: run eagerly, every operation of the VAE's encoder would compile on its own.
    inputs = nnx.jit(lambda vae, pixels, key: lora_step.training_inputs(vae, pixels, key, 1000))
    latents, noise, timesteps = inputs(sd.vae, jnp.asarray(pixels), key)

    with torch.no_grad():
        posterior = pipe.vae.encode(_nchw(pixels)).latent_dist
    mean, std = (x.numpy().transpose(0, 2, 3, 1) for x in (posterior.mean, posterior.std))
    eps = np.asarray(jax.random.normal(jax.random.split(key, 3)[0], mean.shape))
    expected = (mean + std * eps) * pipe.vae.config.scaling_factor
    np.testing.assert_allclose(latents, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert noise.shape == latents.shape and timesteps.shape == (2,)
    assert int(timesteps.min()) >= 0 and int(timesteps.max()) < 1000


def test_exported_lora_loads_into_diffusers_and_gives_our_unet_output(twins, tmp_path, caplog):
    path, _, sd, unet, text_encoder, configs = twins
    file = str(tmp_path / "pytorch_lora_weights.safetensors")
    lora_file.save_diffusers_lora(file, {"unet": (unet, configs["unet"]),
                                         "text_encoder": (text_encoder, configs["text_encoder"])})

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    with caplog.at_level("WARNING"):
        pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert not [r for r in caplog.records if "unexpected" in r.getMessage() or "missing" in r.getMessage()]
    for module, ours in ((pipe.unet, unet), (pipe.text_encoder, text_encoder)):
        loaded = _peft_state(module, adapter="default_0")
        assert set(loaded) == set(lora.lora_state_dict(ours))

    latents, _, timesteps, ids = _inputs(sd)
    with torch.no_grad():
        context = pipe.text_encoder(torch.from_numpy(ids).long())[0]
        ref = pipe.unet(_nchw(latents), torch.from_numpy(timesteps), context).sample.numpy().transpose(0, 2, 3, 1)
    # Jitted: run eagerly, every operation of the two models would compile on its own.
    ours = nnx.jit(lambda u, te, *inputs: u(*inputs[:2], te(inputs[2])))(
        unet, text_encoder, jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(ids))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_imported_lora_file_gives_the_same_adapters(twins, tmp_path):
    _, _, sd, unet, text_encoder, configs = twins
    file = str(tmp_path / "lora.safetensors")
    lora_file.save_diffusers_lora(file, {"unet": (unet, configs["unet"]),
                                         "text_encoder": (text_encoder, configs["text_encoder"])})
    parts = lora_file.read_diffusers_lora(file)
    assert {k: c for k, (_, c) in parts.items()} == configs
    fresh_unet, fresh_text = add_adapters(sd, configs, seed=9)
    lora.load_lora_state_dict(fresh_unet, parts["unet"][0], source=file)
    lora.load_lora_state_dict(fresh_text, parts["text_encoder"][0], source=file)
    for a, b in ((fresh_unet, unet), (fresh_text, text_encoder)):
        for key, value in lora.lora_state_dict(b).items():
            np.testing.assert_array_equal(lora.lora_state_dict(a)[key], value)
