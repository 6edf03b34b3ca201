"""Atomic artifacts and stage completion: what makes every stage killable at any moment and rerunnable.

Rules: an artifact is written under a temporary name in the same folder and renamed when complete (rename is
atomic on POSIX file systems), so a reader never sees half a file. A stage's folder gets a ``COMPLETE`` file,
holding the config fields the stage depends on, only after the stage returned; a rerun skips such a stage,
and refuses to reuse it when those fields have changed since.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

from bobjax.errors import UserError

COMPLETE = "COMPLETE"

# Where each stage's artifact lives under the workdir.
STAGE_DIRS = {"caption": "captions", "finetune": "finetune", "generate": "synthetic", "classify": "classify",
              "report": "report"}

TIMINGS = "timings.json"  # Wall seconds of each completed stage of a run, for the report.

# The finetune stage's LoRA (diffusers/peft layout, so ``load_lora_weights`` in PyTorch reads it), which generate
# reads: in ``WORKDIR/finetune/``, or in one ``class_NNNN/`` folder per class with ``config.finetune.per_class``.
LORA_FILE = "pytorch_lora_weights.safetensors"

# The config sections each stage's output depends on (later stages inherit the earlier ones').
_STAGE_INPUTS = {
    "caption": ("seed", "data", "caption"),
    "finetune": ("seed", "data", "caption", "model", "finetune"),
    "generate": ("seed", "data", "caption", "model", "finetune", "generate"),
    "classify": ("seed", "data", "caption", "model", "finetune", "generate", "classify", "method"),
    "report": ("seed", "data", "caption", "model", "finetune", "generate", "classify", "method", "compare", "report"),
}


class ArtifactError(UserError):
    """An artifact cannot be written or reused; the message names the path."""


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path next to ``path``; renames it to ``path`` if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise ArtifactError(f"cannot write in {folder}: {e.strerror or e}") from e
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a fresh temporary folder next to ``path``; it replaces ``path`` if the block succeeds.

    For artifacts made of several files (a TFDS dataset): readers see the old folder or the new one, never a mix.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise ArtifactError(f"cannot write in {parent}: {e.strerror or e}") from e
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str):
    """The JSON value in ``path``; a damaged file is an error that names it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it or rerun the stage that writes it") from e


def record_timing(workdir: str, stage: str, seconds: float) -> None:
    """Sets ``stage``'s wall time in ``WORKDIR/timings.json`` (the seconds of the attempt that completed it)."""
    path = os.path.join(workdir, TIMINGS)
    timings = read_json(path) if os.path.exists(path) else {}
    timings[stage] = round(seconds, 1)
    write_json(path, timings)


def stage_inputs(config, stage: str) -> dict:
    """The part of ``config`` that ``stage``'s artifact depends on, as plain JSON values."""
    full = json.loads(config.to_json_best_effort())
    return {key: full[key] for key in _STAGE_INPUTS[stage] if key in full}


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if a != b else []


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, STAGE_DIRS[stage])


def class_lora_dir(finetune_dir: str, label: int) -> str:
    """Where class ``label``'s LoRA goes with ``config.finetune.per_class``."""
    return os.path.join(finetune_dir, f"class_{label:04d}")


def partial_dir(workdir: str, stage: str) -> str:
    """Where a stage keeps work in progress (caches, checkpoints) that ``--redo`` must discard with it."""
    return stage_dir(workdir, stage) + ".partial"


def is_complete(config, workdir: str, stage: str) -> bool:
    """Whether ``stage`` finished in ``workdir`` with the same inputs; a changed input is an error."""
    marker = os.path.join(stage_dir(workdir, stage), COMPLETE)
    if not os.path.exists(marker):
        return False
    recorded = read_json(marker)
    changed = _diff(recorded, stage_inputs(config, stage))
    if changed:
        raise ArtifactError(
            f"stage {stage!r} is complete in {stage_dir(workdir, stage)} but was made with a different config "
            f"({', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}); rerun with --redo={stage} to remake "
            "it, or use another --workdir"
        )
    return True


def mark_complete(config, workdir: str, stage: str) -> None:
    write_json(os.path.join(stage_dir(workdir, stage), COMPLETE), stage_inputs(config, stage))


def remove_stage(workdir: str, stage: str) -> None:
    """Deletes a stage's artifact and work in progress (for ``--redo``), marker first so a kill midway leaves
    the stage incomplete."""
    folder = stage_dir(workdir, stage)
    marker = os.path.join(folder, COMPLETE)
    if os.path.exists(marker):
        os.remove(marker)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(partial_dir(workdir, stage), ignore_errors=True)
