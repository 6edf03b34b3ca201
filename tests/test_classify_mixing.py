"""Real/synthetic mixing: the proportions of SGIA's alpha stream, BOB's lambda streams, and BTL's phases."""

import numpy as np
import pytest
from scipy import stats

from bobjax.classify import mixing
from bobjax.errors import ConfigError

REAL = np.repeat(np.arange(4), 5)  # 4 classes x 5 shots.
SYN = np.repeat(np.arange(4), 100)  # 100 synthetic images per class.


def take(stream, n):
    return [stream[i] for i in range(n)]


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_alpha_stream_synthetic_fraction_is_binomial(alpha):
    n = 4000
    refs = take(mixing.alpha_stream(REAL, SYN, alpha, seed=0), n)
    synthetic = sum(kind == mixing.SYNTHETIC for kind, _ in refs)
    low, high = stats.binom.interval(0.999, n, alpha)
    assert low <= synthetic <= high, f"{synthetic} synthetic of {n} outside the 99.9% interval [{low}, {high}]"


def test_alpha_stream_swaps_within_the_class():
    refs = take(mixing.alpha_stream(REAL, SYN, 0.5, seed=1), 2000)
    seen_real_classes = {int(REAL[i]) for kind, i in refs if kind == mixing.REAL}
    assert seen_real_classes == {0, 1, 2, 3}
    # Slot order follows the repeated real stream; a swapped slot keeps its real image's class.
    base = take(mixing.alpha_stream(REAL, SYN, 0.0, seed=1), 2000)
    for (kind, index), (_, real_index) in zip(refs, base):
        if kind == mixing.SYNTHETIC:
            assert SYN[index] == REAL[real_index]


def test_lambda_streams_balance_real_and_synthetic_per_class():
    repeated = mixing.repeated_real_indices(REAL, SYN)
    assert np.bincount(REAL[repeated]).tolist() == [100] * 4  # 5 shots x floor(100 / 5)
    real, synthetic = mixing.lambda_streams(REAL, SYN, seed=0)
    first_epoch = [i for _, i in take(synthetic, len(SYN))]
    assert sorted(first_epoch) == list(range(len(SYN)))
    assert all(kind == mixing.REAL for kind, _ in take(real, 50))


def test_repeated_real_indices_at_uneven_counts_and_cub_size():
    """Each real image floor(n_syn_c / n_real_c) times, at least once, in order; linear time: CUB's full train split
    (5,994 images) against 20,000 synthetic took 0.2 s when each image recounted its class."""
    real = np.array([2, 0, 2, 1, 2, 5])  # Class 5 has no synthetic image, class 3 no real one.
    synthetic = np.array([0] * 7 + [2] * 8 + [3] * 4 + [1])
    assert mixing.repeated_real_indices(real, synthetic).tolist() == [0, 0, 1] + [1] * 6 + [2, 2, 3, 4, 4, 5]
    assert mixing.repeated_real_indices(np.zeros(0, np.int64), synthetic).tolist() == []
    cub_real = np.random.default_rng(0).integers(0, 200, 5994)
    import time

    start = time.perf_counter()
    repeated = mixing.repeated_real_indices(cub_real, np.repeat(np.arange(200), 100))
    assert time.perf_counter() - start < 0.05
    counts = np.bincount(cub_real, minlength=200)
    np.testing.assert_array_equal(np.bincount(repeated, minlength=5994), np.maximum(1, 100 // counts[cub_real]))


def test_btl_second_phase_sees_no_synthetic_image():
    assert mixing.phases("btl", 10, 3) == [("alpha", 10), ("real_only", 3)]
    refs = take(mixing.real_stream(REAL, seed=0), 500)
    assert {kind for kind, _ in refs} == {mixing.REAL}


def test_streams_are_deterministic_by_seed():
    a = take(mixing.alpha_stream(REAL, SYN, 0.5, seed=3), 100)
    b = take(mixing.alpha_stream(REAL, SYN, 0.5, seed=3), 100)
    c = take(mixing.alpha_stream(REAL, SYN, 0.5, seed=4), 100)
    assert a == b and a != c


def test_materialize_reads_both_sources():
    real = [{"image": np.zeros((2, 2, 3), np.uint8), "label": int(l)} for l in REAL]
    syn = [{"image": np.ones((2, 2, 3), np.uint8), "label": int(l)} for l in SYN]
    records = mixing.materialize(mixing.alpha_stream(REAL, SYN, 0.5, seed=0), real, syn)
    for i in range(50):
        r = records[i]
        assert bool(r["image"].max()) == r["synthetic"]


def test_bad_mixing_is_named():
    with pytest.raises(ConfigError, match="'mixup'"):
        mixing.phases("mixup", 1, 1)
    with pytest.raises(ConfigError, match="alpha"):
        mixing.alpha_stream(REAL, SYN, 1.5, seed=0)
    with pytest.raises(ConfigError, match=r"classes \[3\]"):
        mixing.alpha_stream(REAL, SYN[SYN < 3], 0.5, seed=0)
