"""DiffCoRe-Mix's real/synthetic mixing and Diff-Mix's soft labels in the classifier's input: the stream pairs real
slots with synthetic images of their class, the device mixes each pair at the pixel or patch level with labels mixed
by the same weight, and soft labels (or their absence in older synthetic sets) reach the targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from classify_run import small_config
from synthetic_data import write_synthetic

from bobjax import classify
from bobjax.classify import input as input_lib
from bobjax.classify import mixing, realmix, step
from bobjax.classify import stage as classify_stage
from bobjax.data import make_splits

REAL = np.repeat(np.arange(4), 5)
SYN = np.repeat(np.arange(4), 25)


def take(ds, n):
    return [ds[i] for i in range(n)]


def test_realmix_pairs_real_slots_with_synthetic_images_of_their_class():
    refs = take(mixing.realmix_stream(REAL, SYN, 0.3, 0.5, seed=0), 4000)
    real = [r for r in refs if r[0] == mixing.REAL]
    paired = [r for r in real if r[2] != mixing.NO_PARTNER]
    assert abs(len(paired) / len(real) - 0.5) < 0.04
    assert all(SYN[r[2]] == REAL[r[1]] for r in paired)
    assert all(r[2] == mixing.NO_PARTNER for r in refs if r[0] == mixing.SYNTHETIC)
    # The slots are SGIA's alpha stream with the same seed.
    assert [r[:2] for r in refs[:200]] == take(mixing.alpha_stream(REAL, SYN, 0.3, seed=0), 200)


def test_realmix_probability_is_named():
    with pytest.raises(Exception, match=r"config.classify.realmix_prob must be in \[0, 1\]"):
        mixing.realmix_stream(REAL, SYN, 0.3, 1.5, seed=0)


def test_mixed_rows_blend_pixels_or_paste_a_patch_and_mix_labels_by_the_same_weight():
    n, classes = 256, 4
    images, partners = jnp.zeros((n, 16, 16, 3)), jnp.ones((n, 16, 16, 3))
    targets = jax.nn.one_hot(jnp.zeros(n, jnp.int32), classes)
    partner_targets = jax.nn.one_hot(jnp.ones(n, jnp.int32), classes)
    mixed = jnp.arange(n) % 4 != 0
    out, out_targets = realmix.mix_rows(jax.random.key(0), images, targets, partners, partner_targets, mixed)
    out, out_targets = np.asarray(out), np.asarray(out_targets)
    # A black real image and a white partner: the partner's share of the pixels is the partner's share of the label.
    np.testing.assert_allclose(out_targets[:, 1], out.mean(axis=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(out_targets.sum(1), 1.0, atol=1e-6)
    assert (out[~np.asarray(mixed)] == 0).all() and (out_targets[~np.asarray(mixed), 0] == 1).all()
    patch = [np.isin(o, (0.0, 1.0)).all() and 0 < o.mean() < 1 for o in out[np.asarray(mixed)]]
    assert 0.3 < np.mean(patch) < 0.7, "pixel and patch level with even odds"


def test_soft_targets_are_diff_mix_labels_and_hard_without_a_source():
    targets = step.soft_targets(jnp.array([2, 1]), jnp.array([0, -1]), jnp.array([0.25, 0.0]), 3)
    np.testing.assert_allclose(np.asarray(targets), [[0.25, 0, 0.75], [0, 1, 0]])


@pytest.mark.parametrize("old_format", [False, True])
def test_realmix_batches_carry_partners_and_soft_labels(tmp_path, old_format):
    """Synthetic images with Diff-Mix soft labels, or a set written before those fields (hard labels)."""
    config = small_config(**{"classify.mixing": "realmix", "classify.alpha": 0.3, "classify.realmix_prob": 1.0})
    splits = make_splits(config.data, config.seed)
    labels = np.repeat(np.arange(len(splits.class_names)), 4)
    rng = np.random.default_rng(0)
    write_synthetic(str(tmp_path), splits.class_names, rng.integers(0, 256, (len(labels), 40, 48, 3), np.uint8),
                    labels, source_labels=(labels + 1) % len(splits.class_names),
                    source_weights=np.full(len(labels), 0.4), old_format=old_format)
    synthetic = classify_stage._synthetic(config, str(tmp_path))
    (phase,) = input_lib.TrainInput(config.classify, splits.train, synthetic, config.seed, 32).phases
    batch = phase.batch(0)
    real = ~batch["synthetic"]
    assert real.any() and batch["mixed"][real].all() and not batch["mixed"][~real].any()
    assert batch["partner"].shape == batch["image"].shape == (8, 32, 32, 3)
    assert (batch["partner_label"][real] == batch["label"][real]).all()
    weight = 0.0 if old_format else 0.4
    np.testing.assert_allclose(batch["partner_source_weight"][real], weight)
    np.testing.assert_allclose(batch["source_weight"][~real], weight)
    assert (batch["source_label"][real] == -1).all()


def test_classifier_trains_on_the_realmix_stream(tmp_path, one_device):
    config = small_config(**{"classify.mixing": "realmix", "classify.epochs": 1})
    splits = make_splits(config.data, config.seed)
    labels = np.repeat(np.arange(len(splits.class_names)), 4)
    write_synthetic(str(tmp_path), splits.class_names,
                    np.random.default_rng(1).integers(0, 256, (len(labels), 40, 48, 3), np.uint8), labels)
    result = classify.run(config, str(tmp_path))
    assert result["mixing"] == "realmix" and result["steps"] == 3 and np.isfinite(result["test"]["top1"])
