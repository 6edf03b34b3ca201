"""Every GPU of every node, each once: bobjax's cluster start under the variables SLURM gives the tasks of a
2-node x 8-GPU job, with JAX's own SLURM detection, stopped where JAX would connect to the coordinator.

The variables are those SLURM sets for ``launch/slurm_gpu.sbatch`` (``--ntasks-per-node=1 --gpus-per-node=8``)
and for the two one-process-per-GPU layouts (the 8 tasks of a node sharing its GPUs, or bound one each with
``--gpus-per-task=1``). A process's GPU is ``CUDA_VISIBLE_DEVICES[i]`` for each ``i`` of the
``jax_cuda_visible_devices`` that ``jax.distributed.initialize`` sets before connecting.
"""

import collections
import os

import pytest
from jax._src import distributed, xla_bridge

from bobjax import parallel
from bobjax.errors import ConfigError

NODES, GPUS = 2, 8
ALL_GPUS = ",".join(map(str, range(GPUS)))


class _Connecting(Exception):
    """Raised where JAX would start the coordination service or connect to it."""


def _task_env(layout: str, tasks_per_node: int, node: int, local: int) -> dict[str, str]:
    """What SLURM puts in the environment of task ``local`` on node ``node`` of the job."""
    if layout == "bound":  # --gpus-per-task=1: SLURM binds one GPU to each task.
        visible = str(local)
    else:  # --gpus-per-node=8: every task of the node sees all of them.
        visible = ALL_GPUS
    return {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": str(NODES), "SLURM_NNODES": str(NODES),
            "SLURM_STEP_NUM_NODES": str(NODES), "SLURM_NODELIST": "gpu[01-02]", "SLURM_STEP_NODELIST": "gpu[01-02]",
            "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NTASKS": str(NODES * tasks_per_node),
            "SLURM_NPROCS": str(NODES * tasks_per_node), "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
            "SLURM_TASKS_PER_NODE": f"{tasks_per_node}(x{NODES})", "SLURM_NODEID": str(node),
            "SLURM_PROCID": str(node * tasks_per_node + local), "SLURM_LOCALID": str(local),
            "SLURMD_NODENAME": f"gpu0{node + 1}", "SLURM_GPUS_ON_NODE": str(GPUS), "SLURM_JOB_GPUS": ALL_GPUS,
            "CUDA_VISIBLE_DEVICES": visible}


@pytest.fixture
def start_without_connecting(monkeypatch):
    """``start(env)`` runs ``parallel.initialize()`` in ``env`` as a fresh process would (no backend yet) and
    returns what JAX had chosen when it would have connected: coordinator, process id and visible CUDA devices."""
    cluster_variables = ("SLURM", "JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE",
                         "TPU_WORKER", "CUDA_VISIBLE")
    for name in [n for n in os.environ if n.startswith(cluster_variables)]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    for attribute in ("coordinator_address", "process_id", "num_processes"):
        monkeypatch.setattr(distributed.global_state, attribute, getattr(distributed.global_state, attribute))
    chosen = {}

    def stop(*args, **kwargs):
        state = distributed.global_state
        chosen.update(address=state.coordinator_address, process_id=state.process_id,
                      visible=xla_bridge.CUDA_VISIBLE_DEVICES.value)
        raise _Connecting

    monkeypatch.setattr(distributed._jax, "get_distributed_runtime_service", stop)
    monkeypatch.setattr(distributed._jax, "get_distributed_runtime_client", stop)

    def start(env):
        chosen.clear()
        with monkeypatch.context() as task:
            for name, value in env.items():
                task.setenv(name, value)
            try:
                with pytest.raises(_Connecting):
                    parallel.initialize()
            finally:
                xla_bridge.CUDA_VISIBLE_DEVICES._set("all")
                xla_bridge._ROCM_VISIBLE_DEVICES._set("all")
        return dict(chosen)

    return start


@pytest.mark.parametrize("layout,tasks_per_node", [("sbatch", 1), ("shared", GPUS), ("bound", GPUS)])
def test_each_gpu_of_each_node_once(start_without_connecting, layout, tasks_per_node):
    used = collections.Counter()
    for node in range(NODES):
        for local in range(tasks_per_node):
            env = _task_env(layout, tasks_per_node, node, local)
            chosen = start_without_connecting(env)
            assert chosen["address"].startswith("gpu01:") and chosen["process_id"] == int(env["SLURM_PROCID"])
            visible = env["CUDA_VISIBLE_DEVICES"].split(",")
            used.update((node, int(visible[int(i)])) for i in chosen["visible"].split(","))
    assert used == collections.Counter((node, gpu) for node in range(NODES) for gpu in range(GPUS))


def test_gpus_that_do_not_split_over_the_tasks_are_named(start_without_connecting):
    env = _task_env("shared", 3, 0, 0)
    with pytest.raises(ConfigError, match="do not split evenly over the tasks"):
        start_without_connecting(env)
