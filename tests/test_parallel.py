"""The named mesh on 8 forced host devices, and host-local -> global batches."""

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from bobjax import parallel
from bobjax.errors import ConfigError


def test_eight_forced_devices_are_there():
    assert jax.device_count() == 8, "tests/conftest.py forces 8 host devices"


@pytest.mark.parametrize("data,fsdp,shape", [(-1, 1, (8, 1)), (2, 4, (2, 4)), (2, -1, (2, 4)), (8, 1, (8, 1))])
def test_mesh_shapes(data, fsdp, shape):
    mesh = parallel.make_mesh(ConfigDict(dict(data=data, fsdp=fsdp)))
    assert mesh.axis_names == ("data", "fsdp")
    assert mesh.devices.shape == shape


@pytest.mark.parametrize("data,fsdp", [(3, 1), (-1, -1), (4, 4), (0, 8)])
def test_bad_mesh_is_named(data, fsdp):
    with pytest.raises(ConfigError, match="config.mesh"):
        parallel.make_mesh(ConfigDict(dict(data=data, fsdp=fsdp)))


def test_single_device_mesh():
    mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)), devices=jax.devices()[:1])
    assert mesh.size == 1


def test_global_batch_splits_over_every_device():
    mesh = parallel.make_mesh(ConfigDict(dict(data=2, fsdp=4)))
    local = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "label": np.arange(16)}
    batch = parallel.global_batch(local, mesh)
    assert batch["image"].shape == (16, 3)
    assert len(batch["image"].addressable_shards) == 8
    assert {s.data.shape for s in batch["image"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(parallel.to_host(batch)["label"], np.arange(16))
    doubled = jax.jit(lambda x: x * 2)(batch["image"])
    assert doubled.sharding.is_equivalent_to(parallel.batch_sharding(mesh), 2)
    with pytest.raises(ConfigError, match="does not split"):
        parallel.local_batch_size(12, mesh)


def test_explicit_cluster_without_process_count_is_named(monkeypatch):
    """JAX reads only the coordinator's address from the environment; without the count and index bobjax names
    the variables it needs (jax would stop with "Number of processes must be defined")."""
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
        parallel.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        parallel.initialize()
