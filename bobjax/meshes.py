"""The mesh each JAX stage runs on: ``config.mesh`` over the stage's devices, chosen for the stage's global batch.

A stage's batch is what one call of its program takes, over the stage's devices:

- ``finetune``: ``config.finetune.batch_size`` over every device of every host;
- ``classify``: ``config.classify.batch_size`` over every device (training and evaluation batches alike);
- ``generate``: each host draws its own shards on its own devices, ``config.generate.batch_size_per_device`` images
  per device per sampler call (classifier-free guidance runs the UNet on twice the rows, which splits as well).

The quality metrics' and filters' CLIP encoder runs on one device of host 0 (``bobjax.quality.encoders``): no mesh.
With the default ``config.mesh`` (both axes -1) a stage puts on ``data`` the largest divisor of its batch that
divides its device count and the rest on ``fsdp`` (``bobjax.parallel.mesh_shape``), so any slice holds any batch; an
explicit ``config.mesh`` that cannot hold a stage's batch is a one-line error, raised for every stage of a run before
the first (``bobjax.main``, ``bobjax.aot``).
"""

from __future__ import annotations

import jax
from absl import logging
from jax.sharding import Mesh

from bobjax import parallel
from bobjax.errors import ConfigError

MESH_STAGES = ("finetune", "generate", "classify")
_SETTINGS = {"finetune": "config.finetune.batch_size", "generate": "config.generate.batch_size_per_device",
             "classify": "config.classify.batch_size"}


def stage_batch(config, stage: str, num_devices: int) -> int:
    """The global batch of one call of ``stage``'s program over ``num_devices`` (the stage's devices)."""
    if stage == "finetune":
        return config.finetune.batch_size
    if stage == "classify":
        return config.classify.batch_size
    if stage == "generate":
        return generation_batch(config, num_devices)
    raise ValueError(f"stage {stage!r} has no mesh; mesh stages: {MESH_STAGES}")


def generation_batch(config, num_devices: int) -> int:
    """Images per sampler call on a host of ``num_devices`` devices: the batch fills every chip, and an image does
    not depend on its batch (its noise comes from its own seed), so the synthetic set is the same on any slice."""
    per_device = config.generate.batch_size_per_device
    if per_device < 1:
        raise ConfigError(f"config.generate.batch_size_per_device must be at least 1, got {per_device}")
    return per_device * num_devices


def stage_devices(stage: str, devices=None) -> list:
    """The devices ``stage`` runs on, of ``devices`` (every device of the run: ``jax.devices()`` or a target's):
    generation one host's (this process's, or the target's first host's)."""
    if devices is None:
        return list(jax.local_devices() if stage == "generate" else jax.devices())
    devices = list(devices)
    return [d for d in devices if d.process_index == devices[0].process_index] if stage == "generate" else devices


def stage_mesh(config, stage: str, devices=None) -> Mesh:
    """``stage``'s mesh over its devices (:func:`stage_devices`), for its batch (:func:`stage_batch`); a
    ``config.mesh`` that cannot hold the batch is a one-line ``ConfigError`` naming the stage and what to change."""
    devices = stage_devices(stage, devices)
    batch = stage_batch(config, stage, len(devices))
    where = f"stage {stage}: {len(devices)} devices{' (one host)' if stage == 'generate' else ''}"
    try:
        shape = parallel.mesh_shape(config.mesh, len(devices), batch)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}; set config.mesh.data=-1 and config.mesh.fsdp=-1 (each stage chooses)") \
            from None
    if parallel.batch_axes(batch, shape) is None:
        raise ConfigError(
            f"{where}: its global batch of {batch} ({_SETTINGS[stage]}) does not split over the data axis of "
            f"{shape['data']} that config.mesh {dict(config.mesh)} makes; set config.mesh.data=-1 and "
            f"config.mesh.fsdp=-1 (each stage puts the largest divisor of its batch on data, the rest on fsdp), or "
            f"{_SETTINGS[stage]} to a multiple of {shape['data']}")
    logging.info("%s: mesh data %d x fsdp %d for a global batch of %d (over %s)", where, shape["data"], shape["fsdp"],
                 batch, "+".join(parallel.batch_axes(batch, shape)))
    return parallel.make_mesh(config.mesh, devices, batch)


def check(configs_and_stages, devices=None) -> None:
    """Builds the mesh of every ``(config, stage)`` given (stages without a mesh are skipped), so a setting that
    cannot hold some stage's batch stops a run before its first stage rather than hours into it."""
    for config, stage in configs_and_stages:
        if stage in MESH_STAGES:
            stage_mesh(config, stage, devices)
