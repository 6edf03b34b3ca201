"""The named mesh on 8 forced host devices, each stage's mesh for its batch, and host-local -> global batches (also
over 4 processes whose data axis spans 2 hosts per position)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from bobjax import config_lib, meshes, parallel
from bobjax.errors import ConfigError


def test_eight_forced_devices_are_there():
    assert jax.device_count() == 8, "tests/conftest.py forces 8 host devices"


@pytest.mark.parametrize("data,fsdp,shape", [(-1, 1, (8, 1)), (2, 4, (2, 4)), (2, -1, (2, 4)), (8, 1, (8, 1)),
                                             (-1, -1, (8, 1))])
def test_mesh_shapes(data, fsdp, shape):
    mesh = parallel.make_mesh(ConfigDict(dict(data=data, fsdp=fsdp)))
    assert mesh.axis_names == ("data", "fsdp")
    assert mesh.devices.shape == shape


@pytest.mark.parametrize("data,fsdp", [(3, 1), (4, 4), (0, 8), (-2, 4)])
def test_bad_mesh_is_named(data, fsdp):
    with pytest.raises(ConfigError, match="config.mesh"):
        parallel.make_mesh(ConfigDict(dict(data=data, fsdp=fsdp)))


@pytest.mark.parametrize("batch,devices,shape", [
    (8, 16, {"data": 8, "fsdp": 2}),  # CUB's LoRA step on a v5e-16: the IndivisibleError
    (8, 64, {"data": 8, "fsdp": 8}),
    (64, 16, {"data": 16, "fsdp": 1}),
    (12, 8, {"data": 4, "fsdp": 2}),  # the largest divisor of 12 that divides 8
    (7, 8, {"data": 1, "fsdp": 8}),
    (None, 8, {"data": 8, "fsdp": 1}),
])
def test_the_default_mesh_puts_the_largest_divisor_of_the_batch_on_data(batch, devices, shape):
    assert parallel.mesh_shape(ConfigDict(dict(data=-1, fsdp=-1)), devices, batch) == shape
    assert parallel.batch_axes(batch or devices, shape) == (("data", "fsdp") if shape["fsdp"] == 1 else ("data",))


def test_single_device_mesh():
    mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=1)), devices=jax.devices()[:1])
    assert mesh.size == 1


def test_global_batch_splits_over_every_device():
    mesh = parallel.make_mesh(ConfigDict(dict(data=2, fsdp=4)))
    local = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "label": np.arange(16)}
    batch = parallel.global_batch(local, mesh, 16)
    assert batch["image"].shape == (16, 3)
    assert len(batch["image"].addressable_shards) == 8
    assert {s.data.shape for s in batch["image"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(parallel.to_host(batch)["label"], np.arange(16))
    doubled = jax.jit(lambda x: x * 2)(batch["image"])
    assert doubled.sharding.is_equivalent_to(parallel.batch_sharding(mesh, 16), 2)
    with pytest.raises(ConfigError, match="does not split"):
        parallel.local_batch_size(7, mesh)


def test_a_batch_smaller_than_the_mesh_splits_over_data_and_repeats_over_fsdp():
    mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=-1)), batch_size=4)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    assert parallel.local_batch_size(4, mesh) == 4 and parallel.host_rows(4, mesh).tolist() == [0, 1, 2, 3]
    batch = parallel.global_batch(np.arange(4 * 3).reshape(4, 3), mesh, 4)
    assert {s.data.shape for s in batch.addressable_shards} == {(1, 3)} and len(batch.addressable_shards) == 8
    np.testing.assert_array_equal(parallel.to_host(batch), np.arange(12).reshape(4, 3))


def test_each_stage_gets_a_mesh_for_its_batch():
    config = config_lib.load_config_file("configs/cub.py")
    config.finetune.batch_size, config.classify.batch_size, config.generate.batch_size_per_device = 4, 16, 3
    shapes = {stage: dict(meshes.stage_mesh(config, stage).shape) for stage in meshes.MESH_STAGES}
    assert shapes == {"finetune": {"data": 4, "fsdp": 2}, "generate": {"data": 8, "fsdp": 1},
                      "classify": {"data": 8, "fsdp": 1}}
    assert meshes.stage_batch(config, "generate", 8) == 24


def test_an_explicit_mesh_that_cannot_hold_a_batch_stops_with_one_line_naming_what_to_change():
    config = config_lib.load_config_file("configs/cub.py")
    config.finetune.batch_size = 4
    config.mesh.data, config.mesh.fsdp = -1, 1  # every device on data: 8
    with pytest.raises(ConfigError) as error:
        meshes.check([(config, "caption"), (config, "classify"), (config, "finetune")])
    message = str(error.value)
    assert "\n" not in message
    for part in ("stage finetune", "8 devices", "global batch of 4", "config.finetune.batch_size",
                 "config.mesh.data=-1 and config.mesh.fsdp=-1"):
        assert part in message, message
    config.mesh.data, config.mesh.fsdp = 3, -1
    with pytest.raises(ConfigError, match=r"stage classify: 8 devices: config.mesh .* does not divide"):
        meshes.check([(config, "classify")])


_HOSTS = """
import json, numpy as np, jax
from ml_collections import ConfigDict
from bobjax import parallel
parallel.initialize()
mesh = parallel.make_mesh(ConfigDict(dict(data=-1, fsdp=-1)), batch_size=2)
rows = parallel.host_rows(2, mesh)
full = np.arange(2 * 3).reshape(2, 3)
batch = parallel.global_batch(full[rows], mesh, 2)
sums = jax.jit(lambda x: x.sum(axis=1), out_shardings=parallel.replicated(mesh))(batch)
print(json.dumps({"mesh": dict(mesh.shape), "rows": rows.tolist(), "sums": parallel.to_host(sums).tolist(),
                  "batch": parallel.to_host(batch).tolist()}))
"""


def test_hosts_that_share_a_data_position_feed_the_same_rows():
    """4 processes of one device, a batch of 2: data 2 x fsdp 2, so each row lives on two hosts' devices and both
    feed it (a host count above the data axis: fine-tuning's batch of 8 on a v5e-64's 16 hosts)."""
    from multihost import _env, _free_port, cluster_env

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _HOSTS], env=_env(1, cluster_env("explicit", 4, i, port)),
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err[-2000:] for _, err in outs)
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["rows"] for r in results] == [[0], [0], [1], [1]]
    for r in results:
        assert r["mesh"] == {"data": 2, "fsdp": 2}
        assert r["batch"] == [[0, 1, 2], [3, 4, 5]] and r["sums"] == [3, 12]


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
