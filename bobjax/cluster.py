"""Which GPUs each process of a SLURM job drives: every GPU of every node, each once.

bobjax's layout is one process per node driving all of that node's GPUs (``launch/slurm_gpu.sbatch``:
``--ntasks-per-node=1 --gpus-per-node=8``), as on a Cloud TPU VM and in the multi-host tests: each host feeds its
own slice of every batch, host 0 captions and writes the small artifacts, and the data pipeline, TensorFlow and the
caption VLM are loaded once per node, not once per GPU.

JAX's SLURM detection assumes one process per GPU instead: given no ``local_device_ids``, it restricts each process
to the GPU numbered ``SLURM_LOCALID`` (``jax/_src/clusters/cluster.py``), so one task per node drives GPU 0 only.
:func:`slurm_local_device_ids` gives each task its share of the GPUs SLURM made visible to it
(``CUDA_VISIBLE_DEVICES``): all of them where it has them to itself (one task per node, or GPUs bound per task with
``--gpus-per-task``), and a consecutive ``1/tasks`` of them where the tasks of a node share the node's GPUs
(``--ntasks-per-node=8 --gpus-per-node=8``: GPU ``SLURM_LOCALID``, JAX's own choice).
"""

from __future__ import annotations

import os

from jax._src import cloud_tpu_init
from jax._src.clusters import slurm_cluster

from bobjax.errors import ConfigError


def env_int(name: str) -> int | None:
    """An integer environment variable, None where unset."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def slurm_local_device_ids() -> list[int] | None:
    """This SLURM task's GPUs as indices into its ``CUDA_VISIBLE_DEVICES`` (what ``local_device_ids`` of
    ``jax.distributed.initialize`` means), or None outside SLURM, on a TPU VM or where SLURM gave the task no GPUs
    (JAX's default then applies; on a CPU it has no effect), or where ``JAX_LOCAL_DEVICE_IDS`` chooses them."""
    if (not slurm_cluster.SlurmCluster.is_env_present() or cloud_tpu_init.running_in_cloud_tpu_vm
            or "JAX_LOCAL_DEVICE_IDS" in os.environ):
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible:
        return None
    tasks, nodes = env_int("SLURM_NTASKS"), env_int("SLURM_STEP_NUM_NODES") or env_int("SLURM_NNODES") or 1
    on_node = env_int("SLURM_GPUS_ON_NODE")
    shared = tasks > nodes and on_node in (None, len(visible))
    if not shared:
        return list(range(len(visible)))
    per_node, local = tasks // nodes, env_int("SLURM_LOCALID")
    if tasks % nodes or len(visible) % per_node:
        raise ConfigError(f"SLURM job of {tasks} tasks on {nodes} nodes whose tasks share the {len(visible)} GPUs "
                          f"of a node (CUDA_VISIBLE_DEVICES={','.join(visible)}): the GPUs do not split "
                          "evenly over the tasks; use --ntasks-per-node=1 (launch/slurm_gpu.sbatch) or one task per "
                          "GPU")
    share = len(visible) // per_node
    return list(range(local * share, (local + 1) * share))
