"""The toy world's perfect generator: each synthetic image is the planned (class, background, pose), drawn by
the toy world itself, with no diffusion model (and no finetune stage) involved."""

import numpy as np
import pytest
from demo_run import demo_config

from bobjax import run_folder
from bobjax import toyworld
from bobjax.caption import stage as caption_stage
from bobjax.data.tfds_writer import read_dataset
from bobjax.errors import ConfigError
from bobjax.generate import stage as generate


def renderer_config(**overrides):
    return demo_config(**{"generate.renderer": "toyworld", "generate.plan": "bob", "generate.images_per_class": 4,
                          "generate.resolution": 32, "generate.batch_size_per_device": 3, **overrides})


def test_each_image_is_its_planned_class_background_and_pose(tmp_path):
    config = renderer_config()
    caption_stage.run(config, str(tmp_path))
    generate.run(config, str(tmp_path))  # No finetune/ in the workdir: the renderer needs no LoRA.

    _, planned = generate.plan_run(config, str(tmp_path))
    source = read_dataset(run_folder.stage_dir(str(tmp_path), "generate"))
    assert len(source) == len(planned) == 4 * config.data.toyworld.num_classes
    classes = toyworld.toy_classes(config.data.toyworld.num_classes)
    by_id = {p.image_id: p for p in planned}
    backgrounds = set()
    for i in range(len(source)):
        record = source[i]
        item = by_id[record["image_id"].decode()]
        assert record["background"].decode() == item.background and record["label"] == item.label
        want = toyworld.render(classes[item.label], item.background, item.pose, 32,
                               np.random.default_rng([item.seed, item.label, item.index]))
        np.testing.assert_array_equal(record["image"], want)
        backgrounds.add(item.background)
    assert len(backgrounds) > 2, "BOB's plan spreads the classes over the bank's backgrounds"


@pytest.mark.parametrize("overrides,message", [
    ({"generate.plan": "class_only"}, r"generate.plan='class_only' does not give"),
    ({"data.source": "folder"}, r"config.data.source is 'folder'"),
    ({"generate.renderer": "gan"}, r"config.generate.renderer must be 'diffusion' or 'toyworld', got 'gan'"),
    ({"generate.real_guidance": "same_class"}, r"cannot start from real images \(config.generate.real_guidance\)"),
])
def test_bad_renderer_settings_are_named(tmp_path, overrides, message):
    config = renderer_config(**overrides)
    with pytest.raises(ConfigError, match=message):
        generate.make_generate_fn(config, str(tmp_path), mesh=None, train_source=None)
