"""MixUp/CutMix on the device: targets follow the pixels, the probability of a mixed batch, parts kept apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bobjax.classify import mixup


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


def test_parts_must_be_consecutive_rows_in_order():
    """Parts are sliced (a gather-free program), so rows given out of order must not be silently re-read."""
    images, targets = jnp.zeros((4, 2, 2, 3)), jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="consecutive rows"):
        mixup.mix_batch(jax.random.key(0), images, targets, [np.array([0, 2]), np.array([1, 3])], prob=1.0)
