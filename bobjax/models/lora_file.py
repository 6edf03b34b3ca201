"""The diffusers / peft LoRA file: what ``StableDiffusionPipeline.load_lora_weights`` reads and writes, so a LoRA
trained here loads into a PyTorch pipeline and one trained there folds into ours.

File format (what ``StableDiffusionPipeline.load_lora_weights`` reads): safetensors keys
``unet.<module>.lora_A.weight`` [rank, in] and ``.lora_B.weight`` [out, rank] (``text_encoder.`` for the text
encoder), and the peft ``LoraConfig`` of each part (rank, alpha, ...) as JSON in the ``lora_adapter_metadata``
header entry, keys prefixed ``unet.`` / ``text_encoder.``. Files without that header mean alpha = rank, as
diffusers assumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from etils import epath
from flax import nnx

from bobjax import artifacts
from bobjax.models.lora import LoraConfig, LoraFormatError, fold_into_base, lora_state_dict, target_name

METADATA_KEY = "lora_adapter_metadata"


def save_diffusers_lora(path: str, parts: Mapping[str, tuple[nnx.Module, LoraConfig]]) -> None:
    """Writes ``{"unet": (model, config), "text_encoder": ...}`` as one diffusers LoRA safetensors file, atomically."""
    from safetensors.numpy import save_file

    tensors, metadata = {}, {}
    for prefix, (model, config) in parts.items():
        tensors.update({k: np.ascontiguousarray(v, np.float32)
                        for k, v in lora_state_dict(model, f"{prefix}.").items()})
        metadata.update({f"{prefix}.{k}": v for k, v in config.peft_metadata().items()})
    with artifacts.atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def read_diffusers_lora(path: str, prefixes=("unet", "text_encoder")) -> dict[str, tuple[dict, LoraConfig]]:
    """A diffusers / peft LoRA file -> ``{part: (peft state dict without the prefix, LoraConfig)}``.

    Accepts what current diffusers writes and the older layouts in the wild: the ``text_model.`` prefix of
    transformers v4 text encoders and peft's ``.default`` adapter name are dropped. Without metadata, the
    rank comes from the shapes and alpha = rank (diffusers' convention); kohya files are not read.
    """
    from safetensors import safe_open

    try:
        with artifacts.local_file(path) as local, safe_open(local, "np") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise LoraFormatError(f"cannot read LoRA file {path}: {e}") from e
    metadata = json.loads(header.get(METADATA_KEY) or "{}")
    out, used = {}, set()
    for prefix in prefixes:
        part = {}
        for key, value in tensors.items():
            if key.startswith(prefix + "."):
                used.add(key)
                name = key[len(prefix) + 1:].removeprefix("text_model.").replace(".default.weight", ".weight")
                part[name] = value
        if not part:
            continue
        meta = {k[len(prefix) + 1:]: v for k, v in metadata.items() if k.startswith(prefix + ".")}
        if not meta:
            ranks = {v.shape[0] for k, v in part.items() if k.endswith("lora_A.weight")}
            if len(ranks) != 1:
                raise LoraFormatError(f"{path}: {prefix} adapters have ranks {sorted(ranks)}; one rank is supported")
            rank = ranks.pop()
            meta = {"r": rank, "lora_alpha": rank,
                    "target_modules": sorted({target_name(k.rsplit(".lora_", 1)[0]) for k in part})}
        out[prefix] = (part, LoraConfig.from_peft_metadata(meta, f"{path} ({prefix})"))
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise LoraFormatError(f"{path}: keys outside the parts {list(prefixes)}: {', '.join(unknown[:10])}")
    return out


def fold_file_into_pipeline(sd, path: str, *, scale: float = 1.0) -> None:
    """Folds a diffusers LoRA file (``unet.*`` and optional ``text_encoder.*``) into a loaded pipeline."""
    if not epath.Path(path).is_file():
        raise FileNotFoundError(f"no LoRA file at {path}; run the finetune stage first (or set the path)")
    for part, (state_dict, config) in read_diffusers_lora(path).items():
        fold_into_base(getattr(sd, part), state_dict, config, scale=scale, source=f"{path} ({part})")
