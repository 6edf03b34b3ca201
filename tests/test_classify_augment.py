"""Classifier augmentation: shapes, ranges, determinism by key, the probabilities of the random operations
(binomial intervals), the crop against a direct resize, and RandAugment's operations against torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as TF

from bobjax.classify import augment, mixup, randaugment

SPEC = augment.AugmentSpec(image_size=32)
ALL_OFF = augment.AugmentSpec(image_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0,
                              grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)


def _images(n=8, size=40, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))


def test_shapes_range_and_determinism():
    images = _images()
    out = augment.augment_batch(jax.random.key(0), images, augment.AugmentSpec(image_size=32, randaugment=True))
    assert out.shape == (8, 32, 32, 3) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    again = augment.augment_batch(jax.random.key(0), images, augment.AugmentSpec(image_size=32, randaugment=True))
    np.testing.assert_array_equal(out, again)
    other = augment.augment_batch(jax.random.key(1), images, augment.AugmentSpec(image_size=32, randaugment=True))
    assert not np.allclose(out, other)


def test_full_box_crop_is_a_bicubic_resize():
    image = np.asarray(_images(1, 32))[0]
    spec = augment.AugmentSpec(image_size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    out = augment.random_resized_crop(jax.random.key(0), jnp.asarray(image, jnp.float32), spec)
    want = jax.image.resize(jnp.asarray(image, jnp.float32), (16, 16, 3), "bicubic")
    np.testing.assert_allclose(out, want, atol=1e-3)


def _fraction(spec, predicate, n=400):
    flat = np.full((n, 32, 32, 3), 90, np.uint8)
    flat[..., 0] = 200  # A coloured image: grayscale and solarize change it visibly.
    out = np.asarray(augment.augment_batch(jax.random.key(3), jnp.asarray(flat), spec))
    return int(sum(predicate(o) for o in out)), n


@pytest.mark.parametrize("field,prob,predicate", [
    ("grayscale_prob", 0.2, lambda o: np.allclose(o[..., 0], o[..., 1], atol=1e-5)),
    ("solarize_prob", 0.2, lambda o: o[..., 0].mean() < 0.5),  # red 200/255 > threshold -> 55/255
    ("jitter_prob", 0.8, lambda o: not np.allclose(o, np.array([200, 90, 90]) / 255.0, atol=2e-3)),
])
def test_probabilities_within_binomial_interval(field, prob, predicate):
    spec = augment.AugmentSpec(**{**ALL_OFF.__dict__, field: prob})
    hits, n = _fraction(spec, predicate)
    low, high = stats.binom.interval(0.999, n, prob)
    assert low <= hits <= high, f"{field}: {hits}/{n} outside [{low}, {high}]"


def test_resize_and_center_crop_matches_pil():
    from bobjax.data.image_ops import resize_and_center_crop

    image = np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    out = resize_and_center_crop(image, 20)
    resized = np.asarray(Image.fromarray(image).resize((33, 20), Image.BICUBIC))
    np.testing.assert_array_equal(out, resized[:, 6:26])


@pytest.mark.parametrize("ours,theirs,uint8", [
    (lambda x: jax.vmap(randaugment._equalize_channel, in_axes=2, out_axes=2)(x), TF.equalize, True),
    (randaugment._posterize, lambda x: TF.posterize(x, randaugment.POSTERIZE_BITS), True),
    (randaugment._autocontrast, TF.autocontrast, False),
    (lambda x: randaugment._sharpness(x, 1.27), lambda x: TF.adjust_sharpness(x, 1.27), False),
    (lambda x: randaugment._blend(x, randaugment._gray(x), 0.73), lambda x: TF.adjust_saturation(x, 0.73), False),
    (lambda x: randaugment._blend(x, jnp.mean(randaugment._gray(x)) * jnp.ones_like(x), 1.27),
     lambda x: TF.adjust_contrast(x, 1.27), False),
], ids=["equalize", "posterize", "autocontrast", "sharpness", "colour", "contrast"])
def test_randaugment_operations_match_torchvision(ours, theirs, uint8):
    levels = np.round(np.random.default_rng(0).beta(2, 5, size=(24, 24, 3)) * 255)
    got = np.asarray(ours(jnp.asarray(levels / 255.0, jnp.float32)))
    if uint8:  # torchvision's equalize and posterize take uint8 only: same levels exactly.
        want = theirs(torch.from_numpy(levels.astype(np.uint8)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), want)
    else:
        want = theirs(torch.from_numpy((levels / 255.0).astype(np.float32)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_mixup_and_cutmix_targets_follow_the_pixels():
    images = jax.random.uniform(jax.random.key(0), (6, 16, 16, 3))
    targets = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    seen = set()
    for seed in range(40):
        mixed, soft = mixup.mix_part(jax.random.key(seed), images, targets, prob=1.0)
        lam = float(soft[0, 0])  # Row 0 is class 0; its partner, row 5, is class 2.
        partner_share = np.asarray(mixed[0] - images[0]) / np.asarray(images[5] - images[0])
        if np.allclose(partner_share, partner_share.mean(), atol=1e-4):  # MixUp: one weight everywhere
            seen.add("mixup")
            assert partner_share.mean() == pytest.approx(1 - lam, abs=1e-4)
        else:  # CutMix: each pixel from one of the two images, partner area = 1 - lam
            seen.add("cutmix")
            from_partner = np.all(np.isclose(np.asarray(mixed[0]), np.asarray(images[5])), axis=-1)
            from_self = np.all(np.isclose(np.asarray(mixed[0]), np.asarray(images[0])), axis=-1)
            assert np.all(from_partner | from_self)
            assert from_partner.mean() == pytest.approx(1 - lam, abs=1e-6)
        np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    assert seen == {"mixup", "cutmix"}


def test_mix_probability_and_parts_stay_separate():
    images = jnp.concatenate([jnp.zeros((4, 8, 8, 3)), jnp.ones((4, 8, 8, 3))])
    targets = jax.nn.one_hot(jnp.array([0, 1, 0, 1, 2, 3, 2, 3]), 4)
    parts = [np.arange(4), np.arange(4, 8)]
    n, mixed_count = 300, 0
    for seed in range(n):
        out_images, out_targets = mixup.mix_batch(jax.random.key(seed), images, targets, parts, prob=0.2)
        np.testing.assert_array_equal(out_images, images)  # Each part mixes only with itself (constant parts).
        assert float(out_targets[:4, 2:].sum()) == 0.0 and float(out_targets[4:, :2].sum()) == 0.0
        mixed_count += int(not np.allclose(out_targets[:4], targets[:4]))
    low, high = stats.binom.interval(0.999, n, 0.2)
    assert low <= mixed_count <= high
