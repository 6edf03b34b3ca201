"""The peers' modes as plan additions: real sources of the right classes with Diff-Mix's soft label, MVC's second
prompt of the same class, the plain plan's draws untouched; and the generate stage writing them, each image the
one the real-guided sampler draws from its planned source."""

import collections

import numpy as np
import pytest
from test_generate_stage import mesh_of, stage_config
from test_generate_plan import make
from tiny_sd import make_tiny_sd

from bobjax import run_folder
from bobjax.data.image_ops import resize_and_center_crop
from bobjax.data import make_splits
from bobjax.data.tfds_writer import read_dataset
from bobjax.errors import ConfigError
from bobjax.generate import stage as generate
from bobjax.generate.guidance import add_guidance
from bobjax.models.sd.text_to_image import TextToImage
from bobjax.models.sd import load_stable_diffusion

TRAIN_LABELS = np.repeat(np.arange(3), 5)


@pytest.fixture(scope="module")
def tiny_sd_path(tmp_path_factory):
    # Built here, with tiny_sd (torch, diffusers) imported at collection: importing torch after JAX has run in the
    # process can crash it (triton's import under torch._dynamo).
    return str(make_tiny_sd(tmp_path_factory.mktemp("sd") / "sd1", style="sd1"))


def guided(plan="bob", counts=(200, 200, 200), **kw):
    return add_guidance(make(plan, counts=counts), seed=0, train_labels=TRAIN_LABELS, **kw)


def test_same_class_sources_are_uniform_over_the_class_and_keep_a_hard_label():
    images = guided(real_guidance="same_class", strength=0.5, gamma=0.8)
    for label in range(3):
        sources = [im.source_index for im in images if im.label == label]
        assert set(sources) == set(np.flatnonzero(TRAIN_LABELS == label))
        assert min(collections.Counter(sources).values()) > 200 / 5 / 2
    assert all(im.source_label == im.label for im in images)


def test_other_class_sources_carry_diff_mix_soft_label():
    images = guided(real_guidance="other_class", strength=0.7, gamma=0.8)
    assert all(TRAIN_LABELS[im.source_index] == im.source_label != im.label for im in images)
    # Diff-Mix: the target class gets s ** gamma, the source class the rest.
    assert {round(im.source_weight, 6) for im in images} == {round(1 - 0.7 ** 0.8, 6)}
    for label in range(3):
        assert {im.source_label for im in images if im.label == label} == set(range(3)) - {label}


def test_additions_leave_the_plans_own_draws_and_depend_on_the_image_only():
    plain = make("bob", counts=(50, 50, 50))
    images = guided(counts=(50, 50, 50), real_guidance="other_class", strength=0.5, mvc_weight=0.5)
    assert [(p.prompt, p.seed) for p in plain] == [(im.prompt, im.seed) for im in images]
    fewer = guided(counts=(10, 10, 10), real_guidance="other_class", strength=0.5, mvc_weight=0.5)
    by_id = {im.image_id: im for im in images}
    assert all(by_id[im.image_id].source_index == im.source_index for im in fewer)


def test_mvc_mixes_with_another_prompt_of_the_same_class():
    images = guided(plan="within_class", mvc_weight=0.5)
    prompts = collections.defaultdict(set)
    for im in images:
        prompts[im.label].add(im.prompt)
    assert all(im.mix_prompt in prompts[im.label] for im in images)
    assert np.mean([im.mix_prompt != im.prompt for im in images]) > 0.8
    assert all(im.source_index == -1 and im.source_weight == 0.0 for im in images)


@pytest.mark.parametrize("kw,message", [
    (dict(real_guidance="sdedit"), r"config.generate.real_guidance is 'sdedit'"),
    (dict(real_guidance="same_class", strength=0.0), r"config.generate.strength must be in \(0, 1\]"),
    (dict(mvc_weight=0.0), r"config.generate.mvc_weight must be in \(0, 1\]"),
])
def test_bad_settings_are_named(kw, message):
    with pytest.raises(ConfigError, match=message):
        guided(**kw)


def test_mvc_needs_more_than_one_prompt_per_class():
    with pytest.raises(ConfigError, match="use a plan with contexts"):
        add_guidance(make("class_only", prompt="a {descriptor} photo of a {class_name}", counts=(3, 3, 3)), seed=0,
                     train_labels=TRAIN_LABELS, mvc_weight=0.5)


def test_a_class_without_source_images_is_named():
    with pytest.raises(ConfigError, match="class 'gamma' has no own train image"):
        add_guidance(make("bob", counts=(2, 2, 2)), seed=0, train_labels=np.array([0, 1]), real_guidance="same_class")


@pytest.mark.slow
def test_stage_writes_diff_mix_images_from_their_planned_sources(tiny_sd_path, tmp_path):
    config = stage_config(tiny_sd_path, **{"generate.real_guidance": "other_class", "generate.strength": 0.7,
                                           "generate.steps": 4, "generate.negative_prompt": "blurry"})
    generate.run(config, str(tmp_path))
    splits, planned = generate.plan_run(config, str(tmp_path))
    source = read_dataset(run_folder.stage_dir(str(tmp_path), "generate"))
    records = {source[i]["image_id"].decode(): source[i] for i in range(len(source))}
    g = config.generate
    sampler = TextToImage(load_stable_diffusion(tiny_sd_path), scheduler=g.scheduler, steps=g.steps,
                          guidance_scale=g.guidance_scale, resolution=g.resolution, mesh=mesh_of(1),
                          negative_prompt="blurry", strength=0.7)
    starts = np.stack([resize_and_center_crop(np.asarray(splits.train[p.source_index]["image"]), g.resolution)
                       for p in planned]).astype(np.float32) / 127.5 - 1
    # One image a call, as the stage drew them (generate.batch_size_per_device=1): the program it compiled.
    want = np.concatenate([sampler([p.prompt], seeds=[p.seed], images=start[None])
                           for p, start in zip(planned, starts, strict=True)])
    for item, image in zip(planned, want):
        record = records[item.image_id]
        assert record["source_label"] == item.source_label != record["label"]
        assert record["source_weight"] == pytest.approx(1 - 0.7 ** 0.8)
        assert np.abs(record["image"].astype(int) - image.astype(int)).max() <= 1  # uint8 rounding of float noise.
    assert make_splits(config.data, config.seed).train.labels()[planned[0].source_index] == planned[0].source_label


def test_peer_presets_set_their_modes_and_compare_accepts_them():
    from bobjax import compare, config_lib

    got = {m: config_lib.apply_method(config_lib.base_config(), m) for m in config_lib.PEER_METHODS}
    assert got["real_guided"].generate.real_guidance == "same_class" and got["real_guided"].generate.plan == "class_only"
    assert (got["diff_mix"].generate.real_guidance, got["diff_mix"].generate.strength) == ("other_class", 0.7)
    assert got["mvc"].generate.mvc_weight == 0.5 and got["mvc"].generate.plan == "within_class"
    assert got["diffcore"].classify.mixing == "realmix" and got["diffcore"].generate.negative_prompt
    assert all(c.method == m for m, c in got.items())
    config = config_lib.base_config()
    config.compare.methods = "bob," + ",".join(config_lib.PEER_METHODS)
    assert compare.methods(config) == ["bob", *config_lib.PEER_METHODS]


def test_fixed_noise_grid_keeps_each_templates_start_image_and_mixes_its_own_prompt():
    from bobjax import config_lib
    from bobjax.generate.plan import fixed_noise_plan
    from test_generate_plan import CLASSES

    planned = guided(counts=(3, 3, 3), real_guidance="other_class", strength=0.5, mvc_weight=0.5)
    grid = fixed_noise_plan(planned, CLASSES, "bird", config_lib.BOB_PROMPT, rows=2)
    assert [g.source_index for g in grid] == [t.source_index for t in planned[:2]] * 3
    assert all(g.mix_prompt == g.prompt and g.class_name in g.prompt for g in grid)
