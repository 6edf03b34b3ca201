"""The classify stage's checkpoints: a run killed after an epoch resumes to exactly the uninterrupted result."""

import jax
import numpy as np

from bobjax import classify, parallel
from classify_run import compilation_cache, saved_state, small_config


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    config = small_config()
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    killed = str(tmp_path / "killed")
    with compilation_cache(str(tmp_path / "xla_cache")):
        assert classify.run(config, killed, mesh=mesh, stop_after_epoch=1) is None
        assert int(saved_state(killed)["step"]) == 3
        resumed = classify.run(config, killed, mesh=mesh)
        uninterrupted = classify.run(config, str(tmp_path / "uninterrupted"), mesh=mesh)
    for (path, a), (_, b) in zip(_leaves(saved_state(killed)), _leaves(saved_state(str(tmp_path / "uninterrupted"))),
                                 strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert resumed == uninterrupted
