"""The toy world is deterministic, spuriously correlated in train when asked, and balanced in test."""

import collections

import numpy as np
import pytest

from bobjax import toyworld
from bobjax.errors import ConfigError


def test_same_seed_same_images_other_seed_other_images():
    a = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(seed=3), "train")
    b = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(seed=3), "train")
    c = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(seed=4), "train")
    for i in (0, 7, 100):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        assert a[i]["background"] == b[i]["background"] and a[i]["pose"] == b[i]["pose"]
    assert any(not np.array_equal(a[i]["image"], c[i]["image"]) for i in range(5))


def test_records_carry_class_context_and_image():
    spec = toyworld.ToyWorldSpec(num_classes=4, image_size=32)
    split = toyworld.ToyWorldSplit(spec, "test")
    record = split[5]
    assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
    assert record["label"] == 5 % 4
    assert record["class_name"] == toyworld.toy_classes(4)[record["label"]].name
    assert record["background"] in toyworld.BACKGROUNDS and record["pose"] in toyworld.POSES
    assert len(set(split.image_ids())) == len(split)


def test_classes_differ_only_in_details():
    classes = toyworld.toy_classes(12)
    assert len({c.name for c in classes}) == 12
    with pytest.raises(ValueError, match="num_classes"):
        toyworld.toy_classes(1)


def test_correlated_train_and_balanced_test():
    spec = toyworld.ToyWorldSpec(num_classes=6, train_per_class=200, test_per_class=24, correlation=0.9)
    train = toyworld.ToyWorldSplit(spec, "train")
    own = 0
    for i in range(len(train)):
        label = train.label(i)
        background = toyworld.BACKGROUNDS.index(train.context(i)[0])
        own += background in {label % 6, (label + 1) % 6}
    # 90% forced into the class's own two backgrounds, plus a third of the remaining 10% by chance.
    assert own / len(train) == pytest.approx(0.9 + 0.1 * 2 / 6, abs=0.03)

    test = toyworld.ToyWorldSplit(spec, "test")
    cells = collections.Counter((test.label(i), *test.context(i)) for i in range(len(test)))
    # 24 images per class = 6 backgrounds x 4 poses: every (class, background, pose) cell exactly once.
    assert len(cells) == 6 * 6 * 4 and set(cells.values()) == {1}


def test_uncorrelated_train_is_context_independent():
    spec = toyworld.ToyWorldSpec(num_classes=3, train_per_class=600, correlated=False)
    train = toyworld.ToyWorldSplit(spec, "train")
    counts = np.zeros((3, 6))
    for i in range(len(train)):
        counts[train.label(i), toyworld.BACKGROUNDS.index(train.context(i)[0])] += 1
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30.6  # chi-square 99.9% quantile, 10 degrees of freedom.


def test_bad_spec_is_named():
    with pytest.raises(ConfigError, match="num_backgrounds"):
        toyworld.ToyWorldSpec(num_backgrounds=9)
    with pytest.raises(ValueError, match="splits"):
        toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(), "val")
