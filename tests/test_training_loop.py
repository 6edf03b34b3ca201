"""The pieces every training loop shares: checkpoints restored onto the run's current mesh, the periodic-action
rule, the divergence error, and metric windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bobjax import parallel
from bobjax.training import loop


def test_due_every_n_steps_and_after_the_last():
    assert [d for d in range(1, 26) if loop.due(d, 10, 25)] == [10, 20, 25]
    assert not any(loop.due(d, 0, 25) for d in range(1, 26))  # 0: never, not even at the end.


def test_divergence_names_what_the_step_and_the_last_checkpoint(tmp_path):
    checkpoints = loop.Checkpoints(str(tmp_path / "checkpoints"))
    loop.check_finite(1.5, what="fine-tuning", step=3, checkpoints=checkpoints, hint="lower the lr")
    with pytest.raises(loop.TrainingDivergedError,
                       match=r"^fine-tuning loss is nan at step 3: stopped; .*checkpoints \(lower the lr\)$"):
        loop.check_finite(float("nan"), what="fine-tuning", step=3, checkpoints=checkpoints, hint="lower the lr")


def test_checkpoint_saved_on_eight_devices_restores_onto_one(tmp_path):
    eight = parallel.make_mesh({"data": 4, "fsdp": 2})
    sharded = NamedSharding(eight, PartitionSpec(("data", "fsdp")))
    state = {"w": jax.device_put(jnp.arange(16.0).reshape(8, 2), sharded), "step": jnp.asarray(7)}
    folder = str(tmp_path / "checkpoints")
    with loop.Checkpoints(folder) as checkpoints:
        assert checkpoints.restore({"state": state}) is None
        checkpoints.save(7, {"state": state}, json={"meta": {"epoch": 2}})

    one = parallel.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    template = jax.device_put({"w": jnp.zeros((8, 2)), "step": jnp.asarray(0)}, parallel.replicated(one))
    restored = loop.Checkpoints(folder).restore({"state": template}, json=("meta",))
    np.testing.assert_array_equal(restored["state"]["w"], np.arange(16.0).reshape(8, 2))
    assert int(restored["state"]["step"]) == 7 and restored["meta"] == {"epoch": 2}
    assert restored["state"]["w"].sharding == template["w"].sharding  # Placed as the run now wants it.


def test_metric_window_averages_the_steps_since_the_last_call():
    window = loop.MetricWindow()
    assert window.mean() == {}
    for loss in (1.0, 2.0, 6.0):
        window.add({"loss": jnp.asarray(loss)})
    scalars = window.mean()
    assert scalars["loss"] == pytest.approx(3.0) and scalars["steps_per_sec"] > 0
    window.add({"loss": jnp.asarray(10.0)})
    assert window.mean()["loss"] == pytest.approx(10.0)
