"""Fine-tuning input: prompts from the caption bank, crops, and batch order as a function of (seed, step)."""

import itertools

import numpy as np
import pytest

from bobjax import config_lib
from bobjax.errors import ConfigError
from bobjax.finetune.input import finetune_batches, resize_crop_flip, training_prompts

IMAGES = [np.random.default_rng(i).integers(0, 256, size=(30 + i, 40, 3), dtype=np.uint8) for i in range(7)]
IDS = np.arange(7, dtype=np.int32)[:, None].repeat(4, axis=1)


def _batches(n, **kw):
    args = dict(resolution=24, random_flip=True, seed=3, batch_size=2)
    args.update(kw)
    return [{k: v.copy() for k, v in b.items()} for b in itertools.islice(finetune_batches(IMAGES.__getitem__, IDS, **args), n)]


def test_prompts_bob_and_class_only():
    contexts = {"a.jpg": ("grass, sky", "A bird soars"), "b.jpg": ("water", "perched")}
    bob = training_prompts(config_lib.BOB_PROMPT, "bird", ["Crow", "Gull"], ["a.jpg", "b.jpg"], contexts)
    assert bob == ["a bird photo of a Crow in the grass, sky background with the A bird soars pose",
                   "a bird photo of a Gull in the water background with the perched pose"]
    assert training_prompts(config_lib.CLASS_PROMPT, "bird", ["Crow"], ["a.jpg"], None) == ["a bird photo of a Crow"]
    with pytest.raises(ConfigError, match="needs the caption bank"):
        training_prompts(config_lib.BOB_PROMPT, "bird", ["Crow"], ["a.jpg"], None)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        training_prompts("a {colour} {class_name}", "bird", ["Crow"], ["a.jpg"], None)
    with pytest.raises(ConfigError, match="'c.jpg'"):
        training_prompts(config_lib.BOB_PROMPT, "bird", ["Crow"], ["c.jpg"], contexts)


def test_crop_is_a_window_of_the_bilinear_resize_in_minus_one_one():
    from PIL import Image

    image = IMAGES[3]  # 33 x 40: short side (height) -> 24, width -> 29
    crop = resize_crop_flip(image, 24, np.random.default_rng(0), random_flip=False)
    resized = np.asarray(Image.fromarray(image).resize((29, 24), Image.BILINEAR)).astype(np.float32) / 127.5 - 1
    assert crop.shape == (24, 24, 3) and crop.dtype == np.float32
    windows = [resized[:, x:x + 24] for x in range(29 - 24 + 1)]
    assert any(np.array_equal(crop, w) for w in windows)
    assert crop.min() >= -1 and crop.max() <= 1


def test_every_image_once_per_epoch_and_a_new_order_each_epoch():
    batches = _batches(14)  # 4 epochs of 7 images with batch 2
    order = np.concatenate([b["input_ids"][:, 0] for b in batches])
    epochs = [order[i * 7:(i + 1) * 7] for i in range(4)]
    for e in epochs:
        assert sorted(e) == list(range(7))
    assert any(not np.array_equal(epochs[0], e) for e in epochs[1:])


def test_resumed_stream_is_the_same_stream():
    full = _batches(9)
    resumed = _batches(4, start_step=5)
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["pixels"], b["pixels"])
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    other_seed = _batches(3, seed=4)
    assert not all(np.array_equal(a["pixels"], b["pixels"]) for a, b in zip(full, other_seed))


def test_processes_split_each_global_batch_in_order():
    """Two hosts feeding 2 rows each make, host 0's then host 1's, exactly the batches one host feeding 4 makes,
    pixels included (the training step's noise follows an example's position in the global batch); a host whose
    devices hold rows 1 and 3 of a stage's mesh gets exactly those."""
    single = _batches(5, batch_size=4)
    hosts = [_batches(5, batch_size=4, rows=[2 * p, 2 * p + 1]) for p in range(2)]
    scattered = _batches(5, batch_size=4, rows=[1, 3])
    for step in range(5):
        for key in ("input_ids", "pixels"):
            np.testing.assert_array_equal(np.concatenate([h[step][key] for h in hosts]), single[step][key])
            np.testing.assert_array_equal(scattered[step][key], single[step][key][[1, 3]])
