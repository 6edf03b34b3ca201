"""The peers' generation modes against diffusers on the same tiny weights: real-guided sampling (SDEdit) against
``StableDiffusionImg2ImgPipeline``, MVC's mixed caption embeddings against ``prompt_embeds``, and negative prompts,
which replace the empty prompt of the unconditional branch only when guidance is on."""

import diffusers
import numpy as np
import pytest
import torch
from test_generate_stage import DIFFUSERS_SCHEDULERS, PROMPTS, mesh_of, resolution
from tiny_sd import make_tiny_sd

from bobjax.models.sd.text_to_image import TextToImage
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.schedulers.sampling import skipped_steps

STEPS = 4


@pytest.fixture(scope="module")
def tiny_sd_path(tmp_path_factory):
    # Built here, with tiny_sd (torch, diffusers) imported at collection: importing torch after JAX has run in the
    # process can crash it (triton's import under torch._dynamo).
    return str(make_tiny_sd(tmp_path_factory.mktemp("sd") / "sd1", style="sd1"))


def pipeline(cls, path, scheduler):
    pipe = cls.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = getattr(diffusers, DIFFUSERS_SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler,strength,guidance", [("pndm", 0.5, 2.0), ("pndm", 0.75, 2.0), ("ddim", 0.6, 1.0),
                                                          ("dpmpp_2m", 0.5, 3.0), ("euler", 0.8, 2.0)])
def test_real_guided_images_match_the_img2img_pipeline(tiny_sd_path, scheduler, strength, guidance):
    """Same weights, image and noises. diffusers draws the VAE posterior's noise and then the diffusion noise from
    its generator; we draw both from a seeded torch generator in that order and pass them to both sides, so the
    comparison uses the true posterior sample (not its mean) and is exact up to float32 arithmetic."""
    sd = load_stable_diffusion(tiny_sd_path)
    size = resolution(sd)
    ours = TextToImage(sd, scheduler=scheduler, steps=STEPS, guidance_scale=guidance, resolution=size, mesh=mesh_of(1),
                       negative_prompt="blurry", strength=strength)
    images = np.random.default_rng(1).uniform(size=(2, size, size, 3)).astype(np.float32)
    shape = (2, ours.latent_shape[2], *ours.latent_shape[:2])
    generator = torch.Generator().manual_seed(3)
    posterior_noise, noise = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    mine = ours.generate_float(PROMPTS, latents=noise.numpy().transpose(0, 2, 3, 1), images=images * 2 - 1,
                               posterior_noise=posterior_noise.numpy().transpose(0, 2, 3, 1))
    pipe = pipeline(diffusers.StableDiffusionImg2ImgPipeline, tiny_sd_path, scheduler)
    with torch.no_grad():
        reference = pipe(PROMPTS, image=images, strength=strength, num_inference_steps=STEPS, guidance_scale=guidance,
                         negative_prompt=["blurry"] * 2, generator=torch.Generator().manual_seed(3),
                         output_type="np").images
    assert ours.sampler.num_steps < STEPS + (scheduler == "pndm"), "the strength must skip steps to test the tail"
    # The tolerance of the text-to-image parity test: images in [0, 1] agree to 1e-3 (fp32, few steps).
    np.testing.assert_allclose(mine, reference, atol=1e-3)
    # The start image matters (random weights reconstruct nothing, so no closeness to it is asked for): other start
    # images, same noises, through the same program.
    elsewhere = ours.generate_float(PROMPTS, latents=noise.numpy().transpose(0, 2, 3, 1), images=1 - images * 2,
                                    posterior_noise=posterior_noise.numpy().transpose(0, 2, 3, 1))
    assert np.abs(mine - elsewhere).max() > 1e-2


def test_real_guided_noise_comes_from_each_images_seed(tiny_sd_path):
    sd = load_stable_diffusion(tiny_sd_path)
    size = resolution(sd)
    generator = TextToImage(sd, scheduler="pndm", steps=STEPS, guidance_scale=2.0, resolution=size, mesh=mesh_of(1),
                            strength=0.5)
    images = np.random.default_rng(2).uniform(-1, 1, size=(3, size, size, 3)).astype(np.float32)
    together = generator.generate_float(PROMPTS + PROMPTS[:1], seeds=[5, 6, 7], images=images)
    # The second image again, first in a batch of other seeds and images (of the same size: the same program).
    elsewhere = generator.generate_float(PROMPTS[1:] + PROMPTS, seeds=[6, 8, 9], images=images[[1, 2, 0]])
    np.testing.assert_allclose(elsewhere[0], together[1], atol=1e-5)
    with pytest.raises(ValueError, match="needs the images"):
        generator.generate_float(PROMPTS, seeds=[1, 2])


@pytest.mark.parametrize("strength,steps,skipped", [(1.0, 50, 0), (0.5, 50, 25), (0.75, 4, 1), (0.3, 10, 7)])
def test_skipped_steps_follow_diffusers_get_timesteps(strength, steps, skipped):
    assert skipped_steps(steps, strength) == skipped


def test_a_strength_that_keeps_no_step_is_an_error():
    with pytest.raises(ValueError, match="keeps no step"):
        skipped_steps(4, 0.2)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        skipped_steps(4, 1.5)


def test_mixed_caption_embeddings_match_diffusers_prompt_embeds(tiny_sd_path):
    """MVC: the condition is w E(a) + (1 - w) E(b); diffusers gets that mix as ``prompt_embeds``."""
    sd = load_stable_diffusion(tiny_sd_path)
    size, weight = resolution(sd), 0.3
    generator = TextToImage(sd, scheduler="pndm", steps=STEPS, guidance_scale=2.0, resolution=size, mesh=mesh_of(1),
                            negative_prompt="blurry", mix_weight=weight)
    latents = np.random.default_rng(4).normal(size=(2, *generator.latent_shape)).astype(np.float32)
    mine = generator.generate_float(PROMPTS, latents=latents, mix_prompts=PROMPTS[::-1])
    pipe = pipeline(diffusers.StableDiffusionPipeline, tiny_sd_path, "pndm")
    with torch.no_grad():
        first = pipe.encode_prompt(PROMPTS, "cpu", 1, False)[0]
        second = pipe.encode_prompt(PROMPTS[::-1], "cpu", 1, False)[0]
        reference = pipe(prompt_embeds=weight * first + (1 - weight) * second, negative_prompt=["blurry"] * 2,
                         num_inference_steps=STEPS, guidance_scale=2.0, height=size, width=size, output_type="np",
                         latents=torch.from_numpy(latents.transpose(0, 3, 1, 2))).images
        unmixed = pipe(PROMPTS, negative_prompt=["blurry"] * 2, num_inference_steps=STEPS, guidance_scale=2.0,
                       height=size, width=size, output_type="np",
                       latents=torch.from_numpy(latents.transpose(0, 3, 1, 2))).images
    assert np.abs(reference - unmixed).max() > 1e-2, "the mix must change the images for this test to mean anything"
    np.testing.assert_allclose(mine, reference, atol=1e-3)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_negative_prompt_replaces_the_unconditional_branch_as_in_diffusers(tiny_sd_path, guidance):
    """With guidance on, the negative prompt is the unconditional branch's text (the images change, as diffusers'
    do); at guidance 1 there is no unconditional branch, so it changes nothing, as in diffusers."""
    sd = load_stable_diffusion(tiny_sd_path)
    size = resolution(sd)
    latents = np.random.default_rng(5).normal(size=(2, size // 2, size // 2, 4)).astype(np.float32)
    pipe = pipeline(diffusers.StableDiffusionPipeline, tiny_sd_path, "ddim")
    drawn = {}
    for negative in ("", "a blurry photo of a crimson forkedtail"):
        ours = TextToImage(sd, scheduler="ddim", steps=STEPS, guidance_scale=guidance, resolution=size,
                           mesh=mesh_of(1), negative_prompt=negative).generate_float(PROMPTS, latents=latents)
        with torch.no_grad():
            reference = pipe(PROMPTS, negative_prompt=[negative] * 2, num_inference_steps=STEPS,
                             guidance_scale=guidance, height=size, width=size, output_type="np",
                             latents=torch.from_numpy(latents.transpose(0, 3, 1, 2))).images
        np.testing.assert_allclose(ours, reference, atol=1e-3)
        drawn[negative] = ours
    change = np.abs(drawn[""] - drawn["a blurry photo of a crimson forkedtail"]).max()
    assert change > 1e-2 if guidance > 1 else change == 0.0
