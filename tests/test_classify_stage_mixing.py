"""The classify stage on a synthetic dataset as the generate stage writes it: lambda batches are half real,
half synthetic in the layout the loss weights assume; BTL runs its alpha phase, then its real-only phase."""

import numpy as np
import pytest
from absl import flags

from bobjax import classify
from bobjax.classify import input as input_lib
from bobjax.classify import mixing
from bobjax.classify import stage as classify_stage
from bobjax.data import make_splits
from bobjax.errors import ConfigError
from classify_run import small_config
from synthetic_data import write_synthetic

PER_CLASS = 4


def _write_synthetic(workdir: str, class_names) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(class_names)), PER_CLASS)
    write_synthetic(workdir, class_names, rng.integers(0, 256, size=(len(labels), 40, 48, 3), dtype=np.uint8), labels)


@pytest.fixture
def workdir(tmp_path):
    config = small_config()
    _write_synthetic(str(tmp_path), make_splits(config.data, config.seed).class_names)
    return str(tmp_path)


def test_lambda_batches_are_half_real_half_synthetic(workdir):
    config = small_config(**{"classify.mixing": "lambda"})
    splits = make_splits(config.data, config.seed)
    synthetic = classify_stage._synthetic(config, workdir)
    data = input_lib.TrainInput(config.classify, splits.train, synthetic, config.seed, 32)
    (phase,) = data.phases
    # An epoch: real images repeated floor(4 / 3) = 1 time (18) plus 24 synthetic, in batches of 8.
    assert phase.steps_per_epoch == 6
    real_rows, synthetic_rows = data.parts(phase)
    real_refs, syn_refs = mixing.lambda_streams(splits.train.labels(), synthetic.labels(), config.seed)
    for step in range(3):
        batch = phase.batch(step)
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert not batch["synthetic"][real_rows].any() and batch["synthetic"][synthetic_rows].all()
        want_real = [splits.train.labels()[real_refs[step * 4 + j][1]] for j in range(4)]
        want_syn = [synthetic.labels()[syn_refs[step * 4 + j][1]] for j in range(4)]
        assert batch["label"][real_rows].tolist() == want_real
        assert batch["label"][synthetic_rows].tolist() == want_syn


@pytest.mark.parametrize("kind", ["lambda", "alpha"])
def test_hosts_read_consecutive_slices_of_the_one_host_batch(workdir, kind):
    """Two hosts' batches, host 0's rows then host 1's, are one host's batch row by row (augmentation and MixUp draw
    by row, so a different layout would train differently on a different number of hosts)."""
    config = small_config(**{"classify.mixing": kind})
    splits = make_splits(config.data, config.seed)
    synthetic = classify_stage._synthetic(config, workdir)

    def batches(rows=None):
        (phase,) = input_lib.TrainInput(config.classify, splits.train, synthetic, config.seed, 32, rows).phases
        return [phase.batch(step) for step in range(3)]

    half = config.classify.batch_size // 2
    one, hosts = batches(), [batches(np.arange(p * half, (p + 1) * half)) for p in range(2)]
    for step in range(3):
        for key in ("image", "label", "synthetic"):
            np.testing.assert_array_equal(np.concatenate([h[step][key] for h in hosts]), one[step][key])


def test_btl_trains_both_phases(workdir, one_device):
    config = small_config(**{"classify.mixing": "btl", "classify.epochs": 1, "classify.real_only_epochs": 1})
    result = classify.run(config, workdir)
    assert result["steps"] == 3 + 3 and result["epochs"] == 2  # alpha phase over 18 slots, then 18 real images
    assert len(result["validation_history"]) == 2


def test_fixed_steps_per_epoch_matches_budgets_across_mixings(workdir):
    """With ``steps_per_epoch`` set, real-only and real + synthetic runs take the same number of steps, and the
    real-only stream cycles through its few images rather than stopping after one pass."""
    splits = make_splits(small_config().data, 0)
    synthetic = classify_stage._synthetic(small_config(**{"classify.mixing": "lambda"}), workdir)
    for mixing_kind in ("real_only", "lambda", "alpha"):
        config = small_config(**{"classify.mixing": mixing_kind, "classify.steps_per_epoch": 7})
        data = input_lib.TrainInput(config.classify, splits.train, synthetic, config.seed, 32)
        (phase,) = data.phases
        assert phase.steps_per_epoch == 7 and data.total_steps == 7 * config.classify.epochs, mixing_kind
    config = small_config(**{"classify.mixing": "real_only", "classify.steps_per_epoch": 7})
    data = input_lib.TrainInput(config.classify, splits.train, None, config.seed, 32)
    labels = np.concatenate([data.phases[0].batch(step)["label"] for step in range(7)])
    counts = np.bincount(labels, minlength=len(splits.class_names))
    assert counts.min() >= (len(labels) // len(splits.train)) * np.bincount(splits.train.labels()).min()


def test_negative_steps_per_epoch_is_named(workdir):
    config = small_config(**{"classify.mixing": "real_only", "classify.steps_per_epoch": -1})
    with pytest.raises(ConfigError, match="config.classify.steps_per_epoch"):
        input_lib.TrainInput(config.classify, make_splits(config.data, 0).train, None, config.seed, 32)


def test_resumed_and_multi_worker_input_sees_the_same_augmented_images(workdir):
    """BTL's two phases with every augmentation on: batches from step 0 in this process, from a restart inside each
    phase, and from two worker processes are the same pixels (rows draw by (seed, global step, row))."""
    config = small_config(**{"classify.mixing": "btl", "classify.epochs": 1, "classify.real_only_epochs": 1,
                             "classify.randaugment": True, "classify.color_augment": True})
    splits = make_splits(config.data, config.seed)
    synthetic = classify_stage._synthetic(config, workdir)

    def images(start: int, workers: int) -> list[np.ndarray]:
        data = input_lib.TrainInput(config.classify, splits.train, synthetic, config.seed, 32, workers=workers)
        return [batch["image"] for batch in data.batches(start)]

    first = images(0, 0)
    if not flags.FLAGS.is_parsed():  # As bobjax.main has before grain starts its workers (they read grain's flags).
        flags.FLAGS.mark_as_parsed()
    assert len(first) == 6 and not np.array_equal(first[0], first[3])  # alpha phase: 3 steps, real only: 3
    for start in (1, 4):
        for want, got in zip(first[start:], images(start, 0), strict=True):
            np.testing.assert_array_equal(got, want)
    for want, got in zip(first, images(0, 2), strict=True):
        np.testing.assert_array_equal(got, want)


def test_input_workers_setting():
    assert input_lib.worker_count(-1, "cpu") == 0 and input_lib.worker_count(3, "tpu") == 3
    assert 1 <= input_lib.worker_count(-1, "tpu") <= 32
    with pytest.raises(ConfigError, match="config.classify.input_workers"):
        input_lib.worker_count(-2, "gpu")
