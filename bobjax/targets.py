"""The chips users rent, as JAX devices on this machine: targets for compiling ahead of time without the hardware.

A target is named by what one rents:

- a Cloud TPU slice, ``GENERATION:TOPOLOGY`` as Cloud TPU names them: ``v5e:2x4`` (a v5e-8: one host, 8 chips),
  ``v5e:4x4`` (a v5e-16: 4 hosts of 4 chips, so its devices carry process indices 0-3), ``v6e:2x4``,
  ``v4:2x2x1``, ``v5p:2x2x1``. libtpu (``pip install 'jax[tpu]'``) describes the slice;
- NVIDIA GPUs, ``[NODESx][GPUSx]CARD``: ``h100`` (one GPU), ``8xh100`` (one node of 8), ``2x8xh100`` (2 nodes of
  8), ``a100-40gb``, ``8xa100-40gb``, ``a100-80gb``, ``h200``. The CUDA plugin compiles for a card described by
  one of XLA's GPU target descriptions, shipped in ``bobjax/assets/gpu_targets`` (source named in each file).
  The plugin (``jax-cuda13-plugin``/``jax-cuda13-pjrt``) must be importable when JAX starts; on a machine
  without a GPU run with ``JAX_PLATFORMS=cpu`` so that it does not look for one.

``get(name).devices`` are devices to build a mesh on (:func:`mesh`); a step traced under ``jax.set_mesh`` of that
mesh on ``jax.ShapeDtypeStruct`` inputs and compiled answers ``memory_analysis()`` and ``cost_analysis()`` for the
target. Kernels are chosen from those devices (:func:`bobjax.parallel.target_device`), not from this machine's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re

import jax
from jax.experimental import topologies

from bobjax import assets, parallel
from bobjax.errors import ConfigError

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published figures of one chip (a whole chip: a v4 chip shows as 2 devices), for roofline and fit checks."""

    platform: str  # jax.Device.platform of its devices
    device_kind: str  # jax.Device.device_kind of its devices
    hbm_bytes: float
    peak_bf16_flops: float  # dense, per second
    hbm_bytes_per_s: float


# Units as each source writes them (GiB where it says GiB, else decimal GB).
CHIPS = {
    # Cloud TPU docs, TPU v4 (cloud.google.com/tpu/docs/v4): "275 teraflops (bf16 or int8)", HBM2 "32 GiB, 1200 GBps".
    "v4": Chip("tpu", "TPU v4", 32 * GiB, 275e12, 1200e9),
    # Cloud TPU docs, TPU v5e (cloud.google.com/tpu/docs/v5e): 197 TFLOPs bf16, HBM2 "16 GB, 819 GBps".
    "v5e": Chip("tpu", "TPU v5 lite", 16e9, 197e12, 819e9),
    # Cloud TPU docs, TPU v5p (cloud.google.com/tpu/docs/v5p): 459 TFLOPs bf16, HBM2e "95 GB, 2765 GBps".
    "v5p": Chip("tpu", "TPU v5", 95e9, 459e12, 2765e9),
    # Cloud TPU docs, TPU v6e (cloud.google.com/tpu/docs/v6e): 918 TFLOPs bf16, HBM 32 GB, 1638 GBps.
    "v6e": Chip("tpu", "TPU v6 lite", 32e9, 918e12, 1638e9),
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 1,979 TFLOPS with sparsity (half dense), 80 GB, 3.35 TB/s.
    "h100": Chip("gpu", "NVIDIA H100 80GB HBM3", 80e9, 989.5e12, 3.35e12),
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BF16 1,979 TFLOPS with sparsity, 141 GB, 4.8 TB/s.
    "h200": Chip("gpu", "NVIDIA H200 141GB HBM3e", 141e9, 989.5e12, 4.8e12),
    # NVIDIA A100 Tensor Core GPU datasheet, A100 40GB SXM: BF16 312 TFLOPS (dense), 40 GB HBM2, 1,555 GB/s.
    "a100-40gb": Chip("gpu", "NVIDIA A100-SXM4-40GB", 40e9, 312e12, 1555e9),
    # Same datasheet, A100 80GB SXM: BF16 312 TFLOPS, 80 GB HBM2e, 2,039 GB/s.
    "a100-80gb": Chip("gpu", "NVIDIA A100-SXM4-80GB", 80e9, 312e12, 2039e9),
}
# XLA's GPU target descriptions, shipped as package assets.
_GPU_SPECS = {"h100": "h100_sxm.txtpb", "h200": "h200.txtpb", "a100-40gb": "a100_sxm_40.txtpb",
              "a100-80gb": "a100_sxm_80.txtpb"}
_TPU_NAME = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")
_GPU_NAME = re.compile(r"^(?:(\d+)x)?(?:(\d+)x)?([a-z0-9-]+)$")
# v5e and v6e hosts hold 8 chips in single-host slices (up to 2x4) and 4 (2x2) in multi-host slices; libtpu's
# default is 2x2 everywhere, which would split a v5e-8 over two hosts.
_SINGLE_HOST_CHIPS = {"v5e": 8, "v6e": 8}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    chip: Chip
    num_chips: int
    devices: tuple  # jax Devices that exist for compiling only

    @property
    def platform(self) -> str:
        return self.chip.platform

    @property
    def num_hosts(self) -> int:
        return len({d.process_index for d in self.devices})

    @property
    def hbm_bytes_per_device(self) -> float:
        return self.chip.hbm_bytes * self.num_chips / len(self.devices)


def names() -> str:
    """Examples of every form, for error messages."""
    return "v5e:2x4, v5e:4x4, v6e:2x4, v4:2x2x1, v5p:2x2x1, h100, 8xh100, 2x8xh100, a100-40gb, 8xa100-40gb"


def compile_flags(name: str) -> str:
    """The XLA flags that compiling for ``name`` without its hardware needs (for ``XLA_FLAGS``, set before JAX's
    backends start). Without a GPU XLA cannot autotune, and its Triton GEMM emitter then fails on some matmuls
    ("Couldn't find output tile sizes"; the classifier's and SD's backward passes on an A100 or H100), so cuBLAS
    takes every GEMM: what a GPU's autotuner falls back to, with the same buffers around it."""
    gpu = _GPU_NAME.match(name)
    return "--xla_gpu_enable_triton_gemm=false" if gpu and gpu.group(3) in _GPU_SPECS else ""


@functools.cache
def get(name: str) -> Target:
    """The target called ``name`` (see the module docstring), with its devices."""
    tpu = _TPU_NAME.match(name)
    if tpu:
        return _tpu_target(name, tpu.group(1), [int(s) for s in tpu.group(2).split("x")])
    gpu = _GPU_NAME.match(name)
    if gpu and gpu.group(3) in _GPU_SPECS:
        counts = [int(c) for c in gpu.groups()[:2] if c is not None]
        nodes, per_node = ([1] + counts)[-2:] if counts else (1, 1)
        if nodes < 1 or per_node < 1:
            raise ConfigError(f"target {name!r}: node and GPU counts must be at least 1")
        return _gpu_target(name, gpu.group(3), nodes, per_node)
    raise ConfigError(f"unknown target {name!r}: expected a Cloud TPU slice GENERATION:TOPOLOGY with GENERATION one "
                      f"of v4, v5e, v5p, v6e, or [NODESx][GPUSx]CARD with CARD one of {sorted(_GPU_SPECS)}; "
                      f"e.g. {names()}")


def mesh(target: Target | str, mesh_config=None) -> jax.sharding.Mesh:
    """The stages' ``("data", "fsdp")`` mesh over the target's devices (``config.mesh``; default: all on data)."""
    target = get(target) if isinstance(target, str) else target
    return parallel.make_mesh(mesh_config or {"data": -1, "fsdp": 1}, target.devices)


def _tpu_target(name: str, generation: str, shape: list[int]) -> Target:
    chips = math.prod(shape)
    kwargs = {}
    if generation in _SINGLE_HOST_CHIPS and chips <= _SINGLE_HOST_CHIPS[generation]:
        kwargs["chips_per_host_bounds"] = (shape + [1])[:3]
    # libtpu takes /tmp/libtpu_lockfile when it loads, so that two processes do not drive one TPU; without a TPU
    # that only stops a second compile on the same machine ("Internal error when accessing libtpu multi-process
    # lockfile"). The variable is read when libtpu loads, i.e. on the first TPU target of a process.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        topology = topologies.get_topology_desc(name, platform="tpu", **kwargs)
    except (RuntimeError, ValueError) as e:  # no libtpu, or a topology libtpu does not know
        raise ConfigError(f"target {name!r}: libtpu cannot describe this slice ({e}); TPU targets need "
                          "`pip install 'jax[tpu]==0.10.2'` (the bobjax[tpu] extra)") from None
    return Target(name, CHIPS[generation], chips, tuple(topology.devices))


def _gpu_target(name: str, card: str, nodes: int, per_node: int) -> Target:
    config = open(assets.resolve(f"bobjax:gpu_targets/{_GPU_SPECS[card]}")).read()
    try:
        topology = topologies.get_topology_desc(name, "cuda", target_config=config,
                                                topology=f"1x{nodes}x{per_node}")
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(
            f"target {name!r}: cannot describe NVIDIA devices without JAX's CUDA plugin ({e}); install it "
            "(`pip install 'jax-cuda13-plugin==0.10.2' 'jax-cuda13-pjrt==0.10.2'`, about 4 GB with its NVIDIA "
            "libraries; or into a folder with --target and put that on PYTHONPATH) and, on a machine without a "
            "GPU, run with JAX_PLATFORMS=cpu") from None
    return Target(name, CHIPS[card], nodes * per_node, tuple(topology.devices))
