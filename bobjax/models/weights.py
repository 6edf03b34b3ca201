"""PyTorch state dicts <-> Flax NNX modules, by one naming convention.

Every bobjax model names its submodules exactly as the PyTorch checkpoint does (diffusers, transformers,
timm), so that one rule maps each NNX parameter path to a checkpoint key:

  ('down_blocks', 0, 'resnets', 1, 'conv1', 'kernel')  <->  'down_blocks.0.resnets.1.conv1.weight'

Leaf names: ``kernel`` <-> ``weight`` (Linear kernels transposed, conv kernels OIHW -> HWIO), ``scale`` and
``embedding`` <-> ``weight``, anything else keeps its name. Layout conversion happens here, once, so the
models themselves are plain NHWC Flax.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists every missing, unexpected and mis-shaped key."""


def read_state_dict(files: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Reads one or more ``.safetensors`` or ``.bin`` files into numpy arrays (float tensors kept as stored).

    ``.bin`` files are pickles and need torch; safetensors needs nothing but the ``safetensors`` package.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    state: dict[str, np.ndarray] = {}
    for file in files:
        file = os.fspath(file)
        if not os.path.exists(file):
            raise FileNotFoundError(f"checkpoint file not found: {file}")
        if file.endswith(".safetensors"):
            from safetensors.numpy import load_file

            try:
                state.update(load_file(file))
            except Exception as e:  # safetensors stores bf16, which numpy lacks: fall back to torch.
                if "bfloat16" not in str(e) and "bf16" not in str(e).lower():
                    raise ValueError(f"cannot read safetensors file {file}: {e}") from e
                state.update(_read_with_torch(file))
        elif file.endswith((".bin", ".pt", ".pth", ".ckpt")):
            state.update(_read_with_torch(file))
        else:
            raise ValueError(f"unknown checkpoint format for {file}: expected .safetensors or .bin")
    return state


def _read_with_torch(file: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {file} needs torch (pip install 'bobjax[torch]'), or convert it to .safetensors"
        ) from e
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        tensors = load_file(file)
    else:
        tensors = torch.load(file, map_location="cpu", weights_only=True)
        if "state_dict" in tensors and isinstance(tensors["state_dict"], Mapping):
            tensors = tensors["state_dict"]
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in tensors.items()}


def torch_key(path: tuple) -> str:
    """The checkpoint key of an NNX parameter path."""
    *parents, leaf = (str(p) for p in path)
    return ".".join([*parents, _LEAF_TO_TORCH.get(leaf, leaf)])


def to_flax_layout(path: tuple, tensor: np.ndarray) -> np.ndarray:
    """Converts a checkpoint tensor to the layout of the NNX parameter at ``path``."""
    if path[-1] == "kernel":
        if tensor.ndim == 2:  # Linear: (out, in) -> (in, out)
            return tensor.T
        if tensor.ndim == 4:  # Conv2d: (O, I, H, W) -> (H, W, I, O)
            return tensor.transpose(2, 3, 1, 0)
        if tensor.ndim == 3:  # Conv1d: (O, I, W) -> (W, I, O)
            return tensor.transpose(2, 1, 0)
    return tensor


def to_torch_layout(path: tuple, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_flax_layout`."""
    if path[-1] == "kernel":
        if array.ndim == 2:
            return array.T
        if array.ndim == 4:
            return array.transpose(3, 2, 0, 1)
        if array.ndim == 3:
            return array.transpose(2, 1, 0)
    return array


def load_state_dict(
    module: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    dtype: jnp.dtype | None = None,
    rename: Callable[[str], str | None] | None = None,
    variable_type: type = nnx.Param,
    strict: bool = True,
    source: str = "checkpoint",
) -> None:
    """Copies ``state_dict`` into ``module`` in place.

    ``rename`` maps checkpoint keys to the model's keys (return None to drop a key). With ``strict``, any
    key of the model missing from the checkpoint, any checkpoint key the model lacks, and any shape mismatch
    is reported together in one :class:`CheckpointMismatchError` naming ``source``.
    """
    if rename is not None:
        renamed = {}
        for key, value in state_dict.items():
            new_key = rename(key)
            if new_key is not None:
                renamed[new_key] = value
        state_dict = renamed

    state = nnx.state(module, variable_type)
    flat = nnx.to_flat_state(state)
    missing, mismatched, updates = [], [], []
    used = set()
    for path, variable in flat:
        key = torch_key(path)
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        tensor = to_flax_layout(path, np.asarray(state_dict[key]))
        target = variable.get_value()
        if tuple(tensor.shape) != tuple(target.shape):
            mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(target.shape)}")
            continue
        updates.append((path, variable, tensor))
    unexpected = sorted(set(state_dict) - used)
    problems = []
    if missing:
        problems.append(f"missing from {source} ({len(missing)}): {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected in {source} ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): {'; '.join(mismatched)}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit {type(module).__name__}:\n  " + "\n  ".join(problems))
    for path, variable, tensor in updates:
        target_dtype = dtype or variable.get_value().dtype
        variable.set_value(jnp.asarray(tensor, dtype=target_dtype))


def export_state_dict(module: nnx.Module, variable_type: type = nnx.Param) -> dict[str, np.ndarray]:
    """The module's parameters as a checkpoint-layout state dict (numpy, on host)."""
    flat = nnx.to_flat_state(nnx.state(module, variable_type))
    return {torch_key(path): to_torch_layout(path, np.asarray(jax.device_get(v.get_value()))) for path, v in flat}
