"""The classify stage's one sharded step: 8 forced host devices give the single-device result after 3 steps
(fp32, every parameter, BatchNorm statistic and Adam moment to 1e-3 of its largest entry)."""

import pytest
import functools

import jax
import numpy as np

from bobjax import classify, meshes
from classify_run import saved_state, small_config


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


@pytest.mark.slow
def test_eight_devices_equal_one_device_after_three_steps(tmp_path, monkeypatch):
    assert jax.device_count() == 8
    config = small_config(**{"classify.epochs": 1})  # 3 steps: MixUp/CutMix on every batch, BatchNorm, AdamW.
    classify.run(config, str(tmp_path / "eight"))  # config.mesh: every device on the data axis.
    monkeypatch.setattr(meshes, "stage_mesh", functools.partial(meshes.stage_mesh, devices=jax.devices()[:1]))
    classify.run(config, str(tmp_path / "one"))
    single, sharded = saved_state(str(tmp_path / "one")), saved_state(str(tmp_path / "eight"))
    assert int(single["step"]) == int(sharded["step"]) == 3
    for (path, a), (_, b) in zip(_leaves(single), _leaves(sharded), strict=True):
        name = jax.tree_util.keystr(path)
        # Sharded reductions sum in another order, and Adam divides by the root of the squared gradients, which
        # magnifies that rounding for near-zero gradients (a bias 3 steps from zero differs by 1.2e-5 of its
        # size; on the plumage-tinted toy world one leaf of Adam's moments differs by 1.3e-4 of its largest entry).
        # A wrong reduction or a device that drops its shard differs by order one. One element whose gradient is
        # rounding noise can move by up to Adam's bound (the learning rate, 1e-3, a step) in either run: a few such
        # elements (two, or 5 % of a leaf: BatchNorm biases of deep layers had 1 and 2) may differ by
        # that much, no more.
        scale = max(float(np.abs(a).max()), 1e-30)
        off = np.abs(a - b) > 1e-3 * scale
        assert off.sum() <= max(2, off.size // 20) and float(np.abs(a - b)[off].max(initial=0)) <= 2 * 3 * 1e-3, name
