"""Devices, hosts and the named mesh every stage shards over.

One mesh with axes ``("data", "fsdp")`` per stage: batches split over both (every device sees different examples)
or, where a stage's batch is smaller than the slice, over ``data`` only; parameters either replicated or split over
``fsdp``. The mesh is built with ``jax.sharding.Mesh`` (Auto axes), so jit propagates shardings from the inputs'
``NamedSharding``s; bobjax never uses pmap.

Multi-host: :func:`initialize` calls ``jax.distributed.initialize()`` when the environment describes a cluster
(a Cloud TPU VM, SLURM, or explicit ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``), and
each host feeds the rows of the global batch that its devices hold (:func:`host_rows`, :func:`global_batch`), so
the global batch is the same for any number of hosts. Stages meet at :func:`wait_for_every_host` barriers where one
host's writes must be seen by the others (``bobjax.main.run_stage``), and every host takes part in every collective.

Which host this is, and the barrier :func:`wait_for_every_host`, come from the cluster's coordination service
where no JAX backend has started yet, so that they do not start one: a backend takes 75 % of the GPU's memory
when it starts, which the caption stage's VLM needs first (see :mod:`bobjax.caption.stage`). Both read the
state ``jax.distributed`` keeps in ``jax._src.distributed``, as ``jax.experimental.multihost_utils`` does.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import numpy as np
from absl import logging
from jax._src import cloud_tpu_init, distributed, xla_bridge
from jax._src import mesh as mesh_lib
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bobjax import cluster
from bobjax.errors import ConfigError

AXES = ("data", "fsdp")
REPLICATED = PartitionSpec()


def _in_cluster() -> bool:
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return True
    # A Cloud TPU VM (JAX reads its hosts from the VM's metadata; one host joins a cluster of one), or a GKE TPU
    # node pool, which lists every worker here. Without joining, every host of a pod would take itself for host 0
    # until its backend starts, and caption the whole dataset into the same files.
    return cloud_tpu_init.running_in_cloud_tpu_vm or len(
        [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize() -> None:
    """Joins the cluster when there is one; a no-op on a single machine. Call before touching devices.

    JAX finds SLURM jobs and Cloud TPU pods by itself, but of the explicit form it reads only
    ``JAX_COORDINATOR_ADDRESS``: the process count and this process's index come from ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` here (as the ``torchrun``-style launchers of plain GPU clusters set them). Under SLURM each
    process drives every GPU of its task (:func:`bobjax.cluster.slurm_local_device_ids`), not JAX's one GPU per
    process."""
    if not _in_cluster() or jax.distributed.is_initialized():
        return
    num_processes, process_id = cluster.env_int("JAX_NUM_PROCESSES"), cluster.env_int("JAX_PROCESS_ID")
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ and "SLURM_JOB_ID" not in os.environ \
        and "TPU_WORKER_HOSTNAMES" not in os.environ
    if explicit and (num_processes is None or process_id is None):
        raise ConfigError("JAX_COORDINATOR_ADDRESS is set, so bobjax joins a cluster, but JAX_NUM_PROCESSES and "
                          "JAX_PROCESS_ID (the number of processes and this one's index, 0 on the coordinator) "
                          f"are not both set (JAX_NUM_PROCESSES={num_processes}, JAX_PROCESS_ID={process_id})")
    jax.distributed.initialize(num_processes=num_processes, process_id=process_id,
                               local_device_ids=cluster.slurm_local_device_ids())
    state = distributed.global_state
    logging.info("joined the cluster at %s as process %d of %d", state.coordinator_address, state.process_id,
                 state.num_processes)


def is_main_process() -> bool:
    """Whether this is host 0: the coordination service's answer until a backend has started (so asking starts
    none), the backend's after."""
    if xla_bridge.backends_are_initialized():
        return jax.process_index() == 0
    return distributed.global_state.process_id == 0


def wait_for_every_host(name: str, timeout_s: int) -> None:
    """Returns once every host has called it with ``name`` (a no-op on one host). A barrier of the coordination
    service, not of the devices: hosts whose backend has not started can wait, and for longer than the few
    minutes a starting backend waits for the other hosts' backends."""
    client = distributed.global_state.client
    if client is not None:
        client.wait_at_barrier(name, timeout_s * 1000)


def mesh_shape(mesh_config, num_devices: int, batch_size: int | None = None) -> dict[str, int]:
    """``config.mesh`` over ``num_devices`` -> ``{"data": ..., "fsdp": ...}``, arithmetic only.

    Both -1 (the default): the stage's mesh is chosen for its global batch: ``data`` is the largest divisor of
    ``batch_size`` that divides the device count, ``fsdp`` the rest (every device when there is no batch). One -1:
    that axis takes the devices the other leaves. The batch is not checked here (:func:`batch_axes` does)."""
    sizes = {axis: int(mesh_config[axis]) for axis in AXES}
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise ConfigError(f"config.mesh {sizes}: sizes are positive, or -1")
    if all(s == -1 for s in sizes.values()):
        data = num_devices if batch_size is None else math.gcd(int(batch_size), num_devices)
        return {"data": data, "fsdp": num_devices // data}
    known = math.prod(s for s in sizes.values() if s != -1)
    if num_devices % known:
        raise ConfigError(f"config.mesh {sizes} does not divide the {num_devices} available devices")
    sizes = {axis: num_devices // known if s == -1 else s for axis, s in sizes.items()}
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(f"config.mesh {sizes} uses {math.prod(sizes.values())} devices; {num_devices} are available")
    return sizes


def make_mesh(mesh_config, devices=None, batch_size: int | None = None) -> Mesh:
    """``config.mesh`` (:func:`mesh_shape`; ``batch_size``: the global batch the mesh is for) -> a device mesh.
    Stages get theirs from :func:`bobjax.meshes.stage_mesh`."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_config, len(devices), batch_size)
    grid = np.asarray(devices).reshape([sizes[a] for a in AXES])
    return Mesh(grid, AXES)


def target_device():
    """The kind of device the program being traced will run on: ``.platform`` and ``.device_kind``.

    Kernels are chosen from it at trace time. It is the first device of the mesh set with ``jax.set_mesh`` (an
    ahead-of-time compile for a target from :mod:`bobjax.targets` traces under it), else that of a legacy ``with
    mesh:``, else this process's first device (a stage running on the hardware it compiles for).
    ``jax.default_backend()`` would answer "cpu" when compiling here for a TPU or GPU target.
    """
    abstract = jax.sharding.get_abstract_mesh()
    if not abstract.empty and abstract.abstract_device is not None:
        return abstract.abstract_device
    legacy = mesh_lib.thread_resources.env.physical_mesh
    if not legacy.empty:
        return legacy.devices.flat[0]
    return jax.devices()[0]


def under_mesh(mesh: Mesh, fun):
    """``fun`` traced with ``mesh`` as the mesh in context: wrap a step in it before ``jax.jit``.

    Jit does not tell the traced code which mesh its inputs live on. Under this, :func:`target_device` answers
    for ``mesh``'s devices, and kernels that XLA cannot partition (Pallas TPU attention) run per device in a
    ``shard_map`` over it. ``jax.set_mesh`` around the jitted call does the same from outside.
    """

    @functools.wraps(fun)
    def traced_under_mesh(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fun(*args, **kwargs)

    return traced_under_mesh


def batch_axes(batch_size: int, shape: dict[str, int]) -> tuple[str, ...] | None:
    """The mesh axes a global batch of ``batch_size`` rows splits over (``shape``: the mesh's axis sizes): every
    device when it can, else ``data`` only (a stage whose batch is smaller than the slice holds the rest of the
    devices on ``fsdp``: its rows repeat over that axis); None when not even ``data`` divides it."""
    if batch_size % math.prod(shape.values()) == 0:
        return AXES
    if batch_size % shape["data"] == 0:
        return ("data",)
    return None


def batch_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    """Where a global batch of ``batch_size`` rows lives (:func:`batch_axes`)."""
    axes = batch_axes(batch_size, dict(mesh.shape))
    if axes is None:
        raise ConfigError(f"a global batch of {batch_size} does not split over the mesh's data axis of "
                          f"{mesh.shape['data']} (config.mesh {dict(mesh.shape)})")
    return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, REPLICATED)


def fsdp_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """Fully-sharded data parallel rule for one parameter: its largest dimension that the ``fsdp`` axis divides
    is split over ``fsdp``; parameters too small to split (and every parameter on an ``fsdp`` axis of size 1)
    are replicated. Jit gathers them where they are used."""
    size = mesh.shape["fsdp"]
    candidates = [d for d in range(len(shape)) if size > 1 and shape[d] % size == 0 and shape[d] >= size]
    if not candidates:
        return replicated(mesh)
    axis = max(candidates, key=lambda d: shape[d])
    return NamedSharding(mesh, PartitionSpec(*[("fsdp" if d == axis else None) for d in range(len(shape))]))


def host_rows(batch_size: int, mesh: Mesh) -> np.ndarray:
    """The rows of a global batch of ``batch_size`` that this host feeds, in order: those of its devices' shards.
    A host whose devices hold only part of the ``data`` axis feeds only that part; hosts whose devices share
    ``data`` positions (the axis spans fewer hosts than there are processes) feed the same rows."""
    indices = batch_sharding(mesh, batch_size).addressable_devices_indices_map((batch_size,))
    return np.asarray(sorted({row for index in indices.values() for row in range(*index[0].indices(batch_size))}))


def local_batch_size(batch_size: int, mesh: Mesh) -> int:
    """How many rows of a global batch this host feeds (:func:`host_rows`)."""
    return len(host_rows(batch_size, mesh))


def global_batch(local_batch, mesh: Mesh, batch_size: int):
    """This host's rows (:func:`host_rows`) of a global batch of ``batch_size`` (a pytree of numpy arrays,
    batch-major) -> global ``jax.Array``s."""
    sharding = batch_sharding(mesh, batch_size)

    def to_global(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))

    return jax.tree.map(to_global, local_batch)


def to_host(tree):
    """Fully-addressable numpy copies of (possibly sharded, possibly multi-host) arrays."""
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)
