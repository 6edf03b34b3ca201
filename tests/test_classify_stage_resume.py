"""The classify stage's checkpoints: a run killed after an epoch resumes to exactly the uninterrupted result."""

import jax
import numpy as np
import pytest

from bobjax import classify
from bobjax.classify.stage import checkpoints
from bobjax.errors import ConfigError
from bobjax.training import loop
from classify_run import compilation_cache, saved_state, small_config


class _Killed(Exception):
    pass


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, one_device, monkeypatch, fake_accelerator):
    """Also: the uninterrupted run is on a (fake) accelerator, so it runs the train step it compiled ahead for its
    fit check, and the killed one the jitted step; both end with the same state."""
    config = small_config()
    killed = str(tmp_path / "killed")
    with compilation_cache(str(tmp_path / "xla_cache")):
        with monkeypatch.context() as patch:  # Killed right after the first epoch's checkpoint is saved.
            save = loop.Checkpoints.save

            def save_then_die(self, *args, **kwargs):
                save(self, *args, **kwargs)
                raise _Killed

            patch.setattr(loop.Checkpoints, "save", save_then_die)
            with pytest.raises(_Killed):
                classify.run(config, killed)
        assert int(saved_state(killed)["step"]) == 3
        resumed = classify.run(config, killed)
        fake_accelerator(64)
        uninterrupted = classify.run(config, str(tmp_path / "uninterrupted"))
    for (path, a), (_, b) in zip(_leaves(saved_state(killed)), _leaves(saved_state(str(tmp_path / "uninterrupted"))),
                                 strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert resumed == uninterrupted


def test_a_train_step_that_cannot_fit_stops_the_stage_before_its_first_step(tmp_path, one_device, fake_accelerator):
    fake_accelerator(1e-5)  # 10 KiB
    with pytest.raises(ConfigError, match=r"the classifier's train step needs .* GiB per device .*classify.batch"):
        classify.run(small_config(), str(tmp_path))
    assert checkpoints(str(tmp_path)).restore({"state": None}) is None  # No step was taken.
