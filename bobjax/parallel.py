"""Devices, hosts and the named mesh every stage shards over.

One mesh with axes ``("data", "fsdp")``: batches split over both (every device sees different examples),
parameters either replicated or split over ``fsdp``. The mesh is built with ``jax.sharding.Mesh`` (Auto axes),
so jit propagates shardings from the inputs' ``NamedSharding``s; bobjax never uses pmap.

Multi-host: :func:`initialize` calls ``jax.distributed.initialize()`` when the environment describes a cluster
(a Cloud TPU VM, SLURM, or explicit ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``), and
each host feeds its own consecutive slice of the global batch through :func:`global_batch`, so the global batch is
the same for any number of hosts. Stages meet at :func:`wait_for_every_host` barriers where one host's writes
must be seen by the others (``bobjax.main.run_stage``), and every host takes part in every collective.

Which host this is, and the barrier :func:`wait_for_every_host`, come from the cluster's coordination service
where no JAX backend has started yet, so that they do not start one: a backend takes 75 % of the GPU's memory
when it starts, which the caption stage's VLM needs first (see :mod:`bobjax.caption.stage`). Both read the
state ``jax.distributed`` keeps in ``jax._src.distributed``, as ``jax.experimental.multihost_utils`` does.
"""

from __future__ import annotations

import functools
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
BATCH = PartitionSpec(AXES)  # Leading (batch) dimension over every device.
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


def make_mesh(mesh_config, devices=None) -> Mesh:
    """``config.mesh`` (``data``, ``fsdp`` sizes; one may be -1 for "the rest") -> a device mesh."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {axis: int(mesh_config[axis]) for axis in AXES}
    unknown = [axis for axis, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ConfigError(f"config.mesh: at most one axis may be -1, got {sizes}")
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    if any(s == 0 or s < -1 for s in sizes.values()) or len(devices) % known:
        raise ConfigError(f"config.mesh {sizes} does not divide the {len(devices)} available devices")
    if unknown:
        sizes[unknown[0]] = len(devices) // known
    if int(np.prod(list(sizes.values()))) != len(devices):
        raise ConfigError(f"config.mesh {sizes} uses {int(np.prod(list(sizes.values())))} devices; "
                          f"{len(devices)} are available")
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH)


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


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """The part of a global batch this host feeds; the batch must split evenly over the devices."""
    if global_batch_size % mesh.size:
        raise ConfigError(f"global batch size {global_batch_size} does not split over {mesh.size} devices")
    return global_batch_size // jax.process_count()


def global_batch(local_batch, mesh: Mesh):
    """This host's slice of a batch (a pytree of numpy arrays, batch-major) -> global ``jax.Array``s."""
    sharding = batch_sharding(mesh)

    def to_global(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(to_global, local_batch)


def to_host(tree):
    """Fully-addressable numpy copies of (possibly sharded, possibly multi-host) arrays."""
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)
