"""LoRA adapters on bobjax models (through google's qwix); the diffusers/peft file they export to is
:mod:`bobjax.models.lora_file`.

Why qwix rather than ``flax.nnx.LoRA``: qwix's ``LoraProvider`` intercepts the ``dot_general`` of the modules
whose path matches a regex and adds ``alpha / rank * dropout(x) @ A @ B`` - exactly peft's LoRA (same scaling,
dropout on the adapter's input only, any initialiser for A). Its parameters live beside the frozen kernel as
``<module>.kernel_lora_a`` / ``kernel_lora_b`` (``nnx.LoRAParam``), so the base parameter paths, and with them
:mod:`bobjax.models.weights`, are untouched, and each adapter's path is its peft key. ``nnx.LoRA`` has no
alpha scaling and no dropout, and wrapping a Linear in it renames the base kernel (``base_module.kernel``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

from bobjax.models import weights

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
INITS = ("gaussian", "default")  # peft's init_lora_weights="gaussian" and init_lora_weights=True.
_A, _B = "kernel_lora_a", "kernel_lora_b"


class LoraFormatError(ValueError):
    """A LoRA file or state dict does not fit the model; the message names the file and the keys."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """One part's adapters: peft's ``LoraConfig`` fields under their bobjax names."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    dropout: float = 0.0
    init: str = "gaussian"

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(sorted(set(self.targets))))  # Order-free, like peft's set.
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.init not in INITS:
            raise ValueError(f"unsupported LoRA init {self.init!r}: supported are {INITS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("LoRA targets are empty: name at least one module (e.g. 'to_q')")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def peft_metadata(self) -> dict:
        return {"r": self.rank, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "init_lora_weights": self.init if self.init == "gaussian" else True,
                "target_modules": list(self.targets), "bias": "none", "use_rslora": False, "use_dora": False}

    @classmethod
    def from_peft_metadata(cls, meta: Mapping, source: str) -> LoraConfig:
        unsupported = {k: meta[k] for k in ("use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "lora_bias")
                       if meta.get(k)}
        if unsupported:
            raise LoraFormatError(f"{source}: unsupported LoRA options {unsupported} (plain LoRA only)")
        init = meta.get("init_lora_weights", True)
        targets = meta.get("target_modules") or ()
        return cls(rank=int(meta["r"]), alpha=float(meta.get("lora_alpha", meta["r"])),
                   targets=tuple([targets] if isinstance(targets, str) else targets),
                   dropout=float(meta.get("lora_dropout", 0.0)), init="gaussian" if init == "gaussian" else "default")


def _module_regex(targets) -> str:
    """qwix matches module paths joined by '/': ``to_out.0`` is the module at ``.../to_out/0``."""
    names = "|".join(re.escape(t).replace(r"\.", "/") for t in targets)
    return rf"(.*/)?({names})"


def _a_initializer(config: LoraConfig):
    if config.init == "gaussian":  # peft: normal(std = 1 / rank) on A.
        return jax.nn.initializers.normal(1.0 / config.rank)
    # peft's default is torch's kaiming_uniform_(a=sqrt(5)) on A [rank, in]: U(+-1/sqrt(in)).
    return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def add_lora(model: nnx.Module, config: LoraConfig, *example_inputs, rngs: nnx.Rngs,
             param_dtype=jnp.float32) -> nnx.Module:
    """A copy of ``model`` with adapters on the modules ``config.targets`` names; the base stays as it is.

    qwix creates the adapters by running the model once on ``example_inputs`` (any small inputs of the right
    ranks; they are traced, not run eagerly). The adapters are ``nnx.LoRAParam`` in ``param_dtype`` (float32 even over a bf16 base), B is zero.
    A target that matches no Linear of the model is an error.
    """
    provider = qwix.LoraProvider(module_path=_module_regex(config.targets), rank=config.rank, alpha=config.alpha,
                                 dropout=config.dropout, lora_a_initializer=_a_initializer(config))
    # qwix would run the model eagerly to create the adapters (op by op: tens of seconds even for a tiny
    # UNet); one jitted call creates them in a fraction of that.
    lora_model = qwix.apply_lora_to_model(model, provider, *example_inputs, rngs=rngs, skip_nnx_init=True)
    lora_model.set_attributes(qwix_rngs=rngs, raise_if_not_found=False)
    # Adapters created inside a rematerialised block would not reach the model (remat writes back only
    # changed Variables, see sd.unet_blocks.call_module), so this call runs without remat.
    rematerialised = [m for _, m in nnx.iter_modules(lora_model) if getattr(m, "remat", False)]
    for m in rematerialised:
        m.remat = False
    try:
        nnx.jit(lambda m, *inputs: m(*inputs))(lora_model, *example_inputs)
    finally:
        for m in rematerialised:
            m.remat = True
    lora_model.set_attributes(qwix_rngs=None, disable_quant_stats_update=False, raise_if_not_found=False)
    if not adapter_paths(lora_model):
        raise ValueError(f"LoRA targets {list(config.targets)} match no module of {type(model).__name__}")
    state = nnx.state(lora_model, nnx.LoRAParam)
    nnx.update(lora_model, jax.tree.map(lambda x: x.astype(param_dtype), state))
    return lora_model


def target_name(module_key: str) -> str:
    """``...attn1.to_out.0`` -> ``to_out.0``; ``...self_attn.q_proj`` -> ``q_proj`` (peft's target names)."""
    parts = module_key.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def adapter_paths(model: nnx.Module) -> list[tuple]:
    """Paths of the adapted modules (e.g. ``('down_blocks', 0, ..., 'to_q')``), sorted."""
    return sorted({path[:-1] for path, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))}, key=str)


def set_dropout_rng(model: nnx.Module, key: jax.Array) -> None:
    """Gives the adapters' dropout its randomness for the next call (a key per step keeps runs reproducible)."""
    model.set_attributes(qwix_rngs=nnx.Rngs(dropout=key), raise_if_not_found=False)


def lora_state_dict(model: nnx.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """The adapters in peft layout: ``{prefix}<module>.lora_A.weight`` [rank, in], ``lora_B.weight`` [out, rank]."""
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
        *module, leaf = (str(p) for p in path)
        name = {_A: "lora_A", _B: "lora_B"}[leaf]
        out[f"{prefix}{'.'.join(module)}.{name}.weight"] = np.asarray(jax.device_get(variable.get_value())).T
    return out


def load_lora_state_dict(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, source: str) -> None:
    """Copies peft-layout adapters into ``model`` (strict: every adapter, no extra key, same shapes)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
    expected = {}
    for path, variable in flat:
        *module, leaf = (str(p) for p in path)
        expected[f"{'.'.join(module)}.{'lora_A' if leaf == _A else 'lora_B'}.weight"] = variable
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [f"{k}: file {tuple(np.shape(state_dict[k]))[::-1]} vs model {v.get_value().shape}"
                  for k, v in expected.items() if k in state_dict and np.shape(state_dict[k])[::-1] != v.get_value().shape]
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if keys]
    if problems:
        raise LoraFormatError(f"LoRA weights in {source} do not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
    for key, variable in expected.items():
        variable.set_value(jnp.asarray(np.asarray(state_dict[key]).T, variable.get_value().dtype))


def merge_lora(model: nnx.Module, config: LoraConfig, scale: float = 1.0) -> None:
    """Folds ``scale`` x each of the model's own adapters into its kernel and zeroes B, in place: the same function,
    no adapter cost (:func:`fold_into_base`'s sum, on the adapters the model carries; traceable, so a jitted preview
    folds throw-away copies).

    Used for sampling (dropout then has nothing to drop) and before handing the base to generation.
    """
    for module_path in adapter_paths(model):
        module = model
        for p in module_path:
            module = module[p] if isinstance(p, int) else getattr(module, p)
        a, b = getattr(module, _A), getattr(module, _B)
        _add_to_kernel(module.kernel, a.get_value(), b.get_value(), config.scale * scale)
        b.set_value(jnp.zeros_like(b.get_value()))


def _add_to_kernel(kernel: nnx.Variable, a, b, factor: float) -> None:
    """kernel += factor x a @ b, in float32, kept in the kernel's dtype: the one way a LoRA is folded. ``a`` [in, rank]
    and ``b`` [rank, out] are in our kernels' layout (peft's ``lora_A`` / ``lora_B`` transposed)."""
    delta = (a.astype(jnp.float32) @ b.astype(jnp.float32)) * factor
    kernel.set_value((kernel.get_value().astype(jnp.float32) + delta).astype(kernel.get_value().dtype))


def fold_into_base(model: nnx.Module, state_dict: Mapping[str, np.ndarray], config: LoraConfig, *, scale: float = 1.0,
                   source: str) -> None:
    """Adds ``scale`` x a peft-layout LoRA straight into the base kernels, in place, creating no adapter.

    For sampling with a LoRA trained here or elsewhere: the merged model runs at the base model's speed. Each
    ``<module>.lora_A.weight`` [rank, in] / ``lora_B.weight`` [out, rank] pair must name a Linear of ``model``.
    """
    kernels = {weights.torch_key(path): variable for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))
               if path[-1] == "kernel"}
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in state_dict})
    unknown = [m for m in modules if f"{m}.weight" not in kernels
               or f"{m}.lora_A.weight" not in state_dict or f"{m}.lora_B.weight" not in state_dict]
    if unknown:
        raise LoraFormatError(f"LoRA weights in {source} name modules {type(model).__name__} lacks, or lack an A/B "
                              f"half: {', '.join(unknown[:20])}")
    for module in modules:
        a = np.asarray(state_dict[f"{module}.lora_A.weight"], np.float32)
        b = np.asarray(state_dict[f"{module}.lora_B.weight"], np.float32)
        kernel = kernels[f"{module}.weight"]
        base = kernel.get_value()
        if (a.shape[1], b.shape[0]) != base.shape or a.shape[0] != b.shape[1]:
            raise LoraFormatError(f"LoRA {module} in {source} has shape {(b.shape[0], a.shape[1])}; the model's is "
                                  f"{base.shape[::-1]}")
        _add_to_kernel(kernel, a.T, b.T, config.scale * scale)
