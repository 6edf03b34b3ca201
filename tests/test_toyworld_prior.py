"""The toy-world prior: the shipped folder loads in bobjax and in diffusers (same numbers), pre-training runs and
resumes exactly, and its export round-trips."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from bobjax import config_lib, toyworld
from bobjax.models import weights
from bobjax.models.sd import load_stable_diffusion
from bobjax.models.sd.pipeline import weight_files
from bobjax.toyworld.prior import data, export, models, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRIOR_CONFIG = os.path.join(ROOT, "configs", "toyworld_prior.py")


def tiny_config(**overrides):
    config = config_lib.load_config_file(PRIOR_CONFIG, "tiny=True")
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def read_components(folder):
    """{component: state dict} of an exported folder's weights, as stored."""
    return {c: weights.read_state_dict(weight_files(os.path.join(folder, c))) for c in ("unet", "vae", "text_encoder")}


def _close(ours, ref, rtol=1e-4):
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rtol * scale)


def test_shipped_prior_matches_diffusers_pipeline():
    from diffusers import StableDiffusionPipeline

    sd = load_stable_diffusion("bobjax:toyworld_prior")
    pipe = StableDiffusionPipeline.from_pretrained(sd.path, dtype=torch.float32)
    prompt = ["a bird photo of a bird in the blue sky background with the diving downward pose", ""]
    ids = sd.tokenizer(prompt, padding="max_length", max_length=sd.tokenizer.model_max_length,
                       return_tensors="np").input_ids
    ref_ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="np").input_ids
    np.testing.assert_array_equal(ids, ref_ids)
    assert ids.shape[1] == 77

    context = np.asarray(sd.text_encoder(jnp.asarray(ids, jnp.int32)))
    size, channels = sd.unet_config["sample_size"], sd.unet_config["in_channels"]
    latents = np.random.default_rng(0).standard_normal((2, size, size, channels)).astype(np.float32)
    timesteps = np.array([999, 20])
    ours = np.asarray(sd.unet(jnp.asarray(latents), jnp.asarray(timesteps), jnp.asarray(context)))
    images = np.asarray(sd.vae.decode(jnp.asarray(latents)))
    with torch.no_grad():
        ref_context = pipe.text_encoder(torch.from_numpy(ref_ids).long())[0].numpy()
        ref = pipe.unet(torch.from_numpy(latents.transpose(0, 3, 1, 2)), torch.from_numpy(timesteps),
                        torch.from_numpy(ref_context)).sample.numpy().transpose(0, 2, 3, 1)
        ref_images = pipe.vae.decode(torch.from_numpy(latents.transpose(0, 3, 1, 2))).sample.numpy()
    _close(context, ref_context)
    _close(ours, ref)
    _close(images, ref_images.transpose(0, 2, 3, 1))
    assert pipe.vae.config.scaling_factor == sd.vae.scaling_factor != 1.0  # measured after training, not left at 1


@pytest.mark.slow
def test_shipped_prior_draws_the_look_it_is_told_and_nothing_for_a_species_name(one_device):
    """Like SD with "a red bird", the prior draws the crest colour a description names; a species name, which it
    never saw, gives no class at all: the starting point BOB's LoRA needs (issue 17). Judged by the toy-world
    oracle on 8 images per class (fixed seeds and contexts), against the binomial chance bound.

    Slow (about 4.5 minutes of a 2-core CPU, issue 38): a 64-px oracle for the six classes and 96 images of 20
    guided steps of the shipped prior. No faster test checks what the shipped weights draw."""
    from scipy import stats

    from bobjax import parallel
    from bobjax.models.sd.text_to_image import TextToImage
    from bobjax.toyworld import fidelity

    spec = toyworld.ToyWorldSpec()
    classes = toyworld.toy_classes(spec.num_classes)
    sd = load_stable_diffusion(os.path.join(ROOT, "bobjax", "assets", "toyworld_prior"))
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
    generate = TextToImage(sd, scheduler="pndm", steps=20, guidance_scale=2.0, resolution=64, mesh=mesh)
    oracle = fidelity.train_oracle(spec, per_class=100, steps=150, seed=0)
    assert oracle.test_top1 > 90, oracle.test_top1  # A judge that knows the classes.
    rng = np.random.default_rng(0)
    per_class = 8
    contexts = [(toyworld.BACKGROUNDS[rng.integers(6)], toyworld.POSES[rng.integers(4)]) for _ in range(per_class)]
    labels = np.repeat(np.arange(len(classes)), per_class)
    chance_high = stats.binom.ppf(0.999, len(labels), 1 / len(classes)) / len(labels) * 100
    scores = {}
    for kind in ("described", "species"):
        prompts = [f"a bird photo of a {cls.descriptions('bird')[i] if kind == 'described' else cls.name} in the "
                   f"{background} background with the {pose} pose"
                   for cls in classes for i, (background, pose) in enumerate(contexts)]
        images = np.concatenate([generate(prompts[k:k + 16], seeds=list(range(16))) for k in range(0, len(prompts), 16)])
        scores[kind] = fidelity.class_fidelity(oracle, images, labels, len(classes))["top1"]
    print("fidelity", scores, "chance bound", chance_high)
    assert scores["described"] > chance_high > scores["species"], (scores, chance_high)


def test_shipped_prior_is_small():
    folder = os.path.join(ROOT, "bobjax", "assets", "toyworld_prior")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
    assert 0 < total < 25 * 2**20


def test_export_round_trips(tmp_path):
    config = tiny_config()
    unet, vae, text_encoder = models.build(config)
    path = export.export_diffusers(str(tmp_path / "prior"), config, unet, vae, text_encoder, scaling_factor=0.5)
    sd = load_stable_diffusion(path)
    assert sd.vae.scaling_factor == 0.5
    for ours, loaded in ((unet, sd.unet), (vae, sd.vae), (text_encoder, sd.text_encoder)):
        expected = nnx.to_flat_state(nnx.state(ours, nnx.Param))
        got = dict(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
        assert len(expected) == len(got)
        for key, variable in expected:  # stored as float16
            value = np.asarray(variable.get_value())
            np.testing.assert_array_equal(np.asarray(got[key].get_value()), value.astype(np.float16).astype(np.float32))


def test_captions_name_context_and_look_but_never_a_class():
    config = tiny_config()
    classes = toyworld.toy_classes(toyworld.MAX_CLASSES)
    rng = np.random.default_rng(0)
    captions = [data.caption(config.data, rng, classes[i % len(classes)], context=i % 28) for i in range(4000)]
    share = lambda test: np.mean([bool(test(c)) for c in captions])  # noqa: E731
    assert 0.07 < share(lambda c: c == "") < 0.13
    assert 0.07 < share(lambda c: c.startswith("a bird photo of a") and "background" not in c and c) < 0.13
    described = share(lambda c: any(w in c for w in ("crested", "head")))
    assert 0.6 < described / share(lambda c: c != "") < 0.8
    assert "a bird photo of a bird in the blue sky background with the perched on a branch pose" in captions
    # Context 1 = (blue sky, perched); class 0 is crimson, forked, unbarred.
    assert data.caption(config.data, np.random.default_rng(5), classes[0], context=1) in {
        f"a bird photo of a {d} in the blue sky background with the perched on a branch pose"
        for d in classes[0].descriptions("bird")} | {"a bird photo of a bird in the blue sky background with the "
                                                      "perched on a branch pose", "", "a bird photo of a bird"}
    species = {word for c in classes for word in c.name.split() if word != "finch"}
    assert not any(word in c.split() for c in captions for word in species)
    words = set(" ".join(captions).replace("-", " ").split())
    for cls in classes:  # Every class's look is described, in every synonym of its colour.
        assert set(toyworld.COLOUR_WORDS[cls.crest]) <= words


def test_descriptions_name_what_the_renderer_draws():
    classes = toyworld.toy_classes(toyworld.MAX_CLASSES)
    for cls in classes:
        text = " ".join(cls.descriptions("bird"))
        assert ("wing bar" in text or "barred" in text) == cls.wing_bar
        assert all(any(w in d for w in toyworld.COLOUR_WORDS[cls.crest]) for d in cls.descriptions("bird"))
        other = {"forked": "fan", "fan": "forked"}[cls.tail]
        assert cls.tail in text and other not in text
        assert not any(word in cls.name.lower() for words in toyworld.COLOUR_WORDS.values() for word in words)


def pretraining_config(**overrides):
    """The tiny prior of every pre-training test, 4 + 4 + 2 steps: one step count per phase, so that each phase's
    program (its schedule is baked in) is compiled once and the session's compilation cache serves the others."""
    config = tiny_config(**{"vae.steps": 4, "unet.steps": 4, **overrides})
    config.sample_steps = 0
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted pre-training: the kill test's reference and the continuation tests' init."""
    return pretrain.run(pretraining_config(), str(tmp_path_factory.mktemp("prior") / "a"))


@pytest.mark.slow
def test_pretraining_kill_and_resume_equals_uninterrupted(reference, tmp_path, monkeypatch):
    config = pretraining_config()
    for phase in ("vae", "unet", "decoder"):
        assert np.isfinite(reference.final_metrics[phase]["loss"])

    unet_batch = data.unet_batch

    def killed_at_step_3(*args):  # (moments, pool, data_config, seed, step, ...)
        if args[4] == 3:  # step
            raise KeyboardInterrupt
        return unet_batch(*args)

    monkeypatch.setattr(data, "unet_batch", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(config, str(tmp_path / "b"))
    monkeypatch.setattr(data, "unet_batch", unet_batch)
    resumed = pretrain.run(config, str(tmp_path / "b"))
    assert resumed.final_metrics["vae"] == {}  # the VAE phase was complete and did not run again

    trained = read_components(reference.path)
    assert trained.keys() == read_components(resumed.path).keys()
    for component, state in read_components(resumed.path).items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, trained[component][key], err_msg=f"{component}: {key}")
    untrained = read_components(
        export.export_diffusers(str(tmp_path / "untrained"), config, *models.build(config), scaling_factor=1.0))
    assert any(not np.array_equal(v, untrained["unet"][k]) for k, v in trained["unet"].items())


def test_prior_config_errors_name_the_field():
    config = tiny_config(**{"unet.attention": [True, False]})
    with pytest.raises(ValueError, match="config.unet.attention"):
        models.unet_config(config)
    config = tiny_config(**{"data.prompt": "a {descriptor} photo of a {kind}"})
    with pytest.raises(ValueError, match="config.data.prompt"):
        data.check_prompts(config.data)
    with pytest.raises(ValueError, match="config.data.attribute_prompt_prob"):
        data.check_prompts(tiny_config(**{"data.attribute_prompt_prob": 1.5}).data)


@pytest.mark.slow
def test_continuing_from_an_exported_prior_keeps_its_autoencoder(reference, tmp_path):
    first = reference
    more = pretraining_config(**{"vae.steps": 0, "decoder.steps": 0})
    more.init = first.path
    second = pretrain.run(more, str(tmp_path / "second"))
    before, after = read_components(first.path), read_components(second.path)
    for key, value in before["vae"].items():
        np.testing.assert_array_equal(after["vae"][key], value, err_msg=key)
    assert any(not np.array_equal(after["unet"][k], v) for k, v in before["unet"].items())
    with open(os.path.join(first.path, "vae", "config.json")) as f, \
            open(os.path.join(second.path, "vae", "config.json")) as g:
        assert f.read() == g.read()  # The same scaling factor: the UNet keeps the latent scale it learnt.

    other = tiny_config(**{"vae.steps": 0, "unet.block_out_channels": (16,)})
    other.init = first.path
    with pytest.raises(ValueError, match=r"config.init .* unet differs .*block_out_channels"):
        pretrain.run(other, str(tmp_path / "third"))

    # A fresh UNet, of another architecture, on the init's autoencoder and text encoder.
    other.init_unet = False
    other.unet.steps, other.decoder.steps, other.sample_steps = 1, 0, 0
    fresh = read_components(pretrain.run(other, str(tmp_path / "fresh")).path)
    for component in ("vae", "text_encoder"):
        for key, value in before[component].items():
            np.testing.assert_array_equal(fresh[component][key], value, err_msg=f"{component}: {key}")
    with open(os.path.join(first.path, "unet", "config.json")) as f:
        assert json.load(f)["block_out_channels"] == [32]
    with open(os.path.join(tmp_path / "fresh" / "toyworld_prior", "unet", "config.json")) as f:
        assert json.load(f)["block_out_channels"] == [16]
    wider = tiny_config(**{"vae.steps": 0, "text_encoder.hidden_size": 32})
    wider.init, wider.init_unet = first.path, False
    with pytest.raises(ValueError, match=r"config.init .* text_encoder differs .*hidden_size"):
        pretrain.run(wider, str(tmp_path / "wider"))
