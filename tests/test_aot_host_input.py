"""``python -m bobjax.aot``'s host-input line (bobjax/aot/host_input.py): the cores a host needs to feed its chips at
the classifier train step's bound, from the cost of one row measured here (bobjax/classify/host_cost.py)."""

import os

from bobjax import config_lib
from bobjax.aot import host_input
from bobjax.classify import augment, host_cost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(path: str):
    return config_lib.load_config_file(os.path.join(ROOT, "configs", path))


def _train_step(bound_s: float) -> dict:
    return {"stage": "classify", "program": "train step", "bound_s": bound_s}


def test_a_host_needs_the_images_its_chips_take_at_the_bound_times_a_rows_cost():
    config = _config("cub.py")
    one = host_input.figures(config, [_train_step(0.1)], hosts=1, row_ms=10.0)
    # 64 images every 0.1 s on one host, 10 ms of a core each: 640 images/s, 6.4 cores.
    assert config.classify.batch_size == 64
    assert abs(one["images_per_s"] - 640) < 1e-9 and abs(one["cores"] - 6.4) < 1e-9
    four = host_input.figures(config, [_train_step(0.1)], hosts=4, row_ms=10.0)
    assert abs(four["cores"] - 1.6) < 1e-9  # Four hosts share the global batch.
    assert host_input.figures(config, [{"stage": "classify", "program": "eval step", "bound_s": 0.1}], 1) is None


def test_the_line_says_when_the_input_workers_cannot_keep_up():
    config = _config("cub.py")
    enough = host_input.figures(config, [_train_step(0.1)], hosts=1, row_ms=10.0)
    assert "6.4 cores per host" in host_input.line(config, enough, 1)
    assert "input_workers" not in host_input.line(config, enough, 1)
    starved = host_input.figures(config, [_train_step(0.01)], hosts=1, row_ms=10.0)  # 64 cores.
    assert "set it to 65" in host_input.line(config, starved, 1)


def test_a_pack_of_points_reads_one_stream_at_its_own_steps_bound():
    """A packed step of 8 points takes 4 times a lone step's 0.1 s: the host feeds one stream at a quarter of the
    rate, for all 8 points."""
    config = _config("cub.py")
    packed = {"stage": "classify", "program": "packed train step", "bound_s": 0.4, "points": 8}
    f = host_input.figures(config, [_train_step(0.1), packed], hosts=1, row_ms=10.0)
    assert abs(f["packed"]["images_per_s"] - 160) < 1e-9 and abs(f["packed"]["cores"] - 1.6) < 1e-9
    line = host_input.line(config, f, 1)
    assert "a pack of 8 sweep points reads one stream: 160 images/s, 1.6 cores per host" in line
    assert host_input.figures(config, [_train_step(0.1)], hosts=1, row_ms=10.0)["packed"] is None


def test_only_methods_with_synthetic_images_pay_for_decoding():
    real_only = _config("cub.py")
    real_only.classify.mixing = "real_only"
    assert not host_input.trains_on_synthetic(real_only)
    bob = _config("cub.py")
    assert bob.classify.mixing != "real_only" and host_input.trains_on_synthetic(bob)
    comparison = _config("demo.py")  # real only, DataDream and BOB side by side
    assert "real_only" in comparison.compare.methods and host_input.trains_on_synthetic(comparison)
    spec = augment.spec_from_config(real_only.classify)
    plain, with_decode = host_cost.row_ms(spec, False, count=4), host_cost.row_ms(spec, True, count=4)
    assert 0 < plain < with_decode
