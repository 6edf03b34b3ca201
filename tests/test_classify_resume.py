"""The classify stage's one sharded step and its checkpoints: 8 forced host devices give the single-device
result (fp32, 1e-5 relative), and a run killed after an epoch resumes to exactly the uninterrupted result."""

import jax
import numpy as np
from flax import nnx  # noqa: F401  (orbax restores nnx.State leaves as plain arrays)

from bobjax import classify, parallel
from classify_run import enable_compilation_cache, saved_state, small_config


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def test_eight_devices_equal_one_device_after_three_steps(tmp_path):
    assert jax.device_count() == 8
    config = small_config(**{"classify.epochs": 1})  # 3 steps: MixUp/CutMix on every batch, BatchNorm, AdamW.
    one = parallel.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    classify.run(config, str(tmp_path / "one"), mesh=one)
    classify.run(config, str(tmp_path / "eight"))  # config.mesh: every device on the data axis.
    single, sharded = saved_state(str(tmp_path / "one")), saved_state(str(tmp_path / "eight"))
    assert int(single["step"]) == int(sharded["step"]) == 3
    for (path, a), (_, b) in zip(_leaves(single), _leaves(sharded), strict=True):
        scale = max(float(np.abs(a).max()), 1e-6)
        assert float(np.abs(a - b).max()) / scale < 1e-5, jax.tree_util.keystr(path)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    enable_compilation_cache(str(tmp_path / "xla_cache"))
    config = small_config()
    killed = str(tmp_path / "killed")
    assert classify.run(config, killed, stop_after_epoch=1) is None
    assert int(saved_state(killed)["step"]) == 3
    resumed = classify.run(config, killed)
    uninterrupted = classify.run(config, str(tmp_path / "uninterrupted"))
    for (path, a), (_, b) in zip(_leaves(saved_state(killed)), _leaves(saved_state(str(tmp_path / "uninterrupted"))),
                                 strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert resumed == uninterrupted
