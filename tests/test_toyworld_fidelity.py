"""The toy-world oracle behind the report's class fidelity: trained on balanced real toy images it labels the
run's test split far above chance, and fidelity counts an image as faithful only when the oracle's label is the
image's own class (images labelled with another class score near zero)."""

import numpy as np
import pytest
from toy_oracle import trained_oracle

from bobjax import toyworld
from bobjax.toyworld import fidelity

SPEC = toyworld.ToyWorldSpec(num_classes=3, image_size=32, test_per_class=20)


@pytest.fixture(scope="module")
def oracle():
    return trained_oracle(SPEC, per_class=40, steps=60)  # The report tests' oracle: one per process.


def _test_images():
    split = toyworld.ToyWorldSplit(SPEC, "test")
    return split.images(), split.labels()


def test_oracle_reads_the_class_detail_of_real_images(oracle):
    assert oracle.test_top1 >= 90.0  # Chance is 33 %: the plumage colour is what it must read.


def test_fidelity_counts_only_the_intended_class(oracle):
    images, labels = _test_images()
    faithful = fidelity.class_fidelity(oracle, images, labels, SPEC.num_classes)
    assert faithful["top1"] == pytest.approx(oracle.test_top1)
    assert len(faithful["per_class"]) == 3 and min(faithful["per_class"]) >= 70.0
    mislabelled = fidelity.class_fidelity(oracle, images, (labels + 1) % 3, SPEC.num_classes)
    assert mislabelled["top1"] <= 10.0


def test_images_of_another_size_are_resized(oracle):
    images, labels = _test_images()
    larger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # 64 px, the same pictures.
    assert fidelity.class_fidelity(oracle, larger, labels, 3)["top1"] >= 80.0
