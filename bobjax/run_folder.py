"""A run's folder (the workdir): where each stage's artifact, work in progress and marker go, and the run's timings.

A stage's folder gets a ``COMPLETE`` file, holding the stage's identity (:mod:`bobjax.identity`), only after the
stage returned; a rerun skips such a stage, and refuses to reuse it when its identity has changed since.

A run of a comparison may hold, instead of a stage's folder, a pointer file to a folder it shares with other runs
(``synthetic.link``, see :mod:`bobjax.share`); :func:`stage_dir` and :func:`partial_dir` follow it, so stages read,
write, complete and remove a shared folder exactly as their own.
"""

from __future__ import annotations

import os

from etils import epath

from bobjax import artifacts

COMPLETE = "COMPLETE"

# Where each stage's artifact lives under the workdir.
STAGE_DIRS = {"caption": "captions", "finetune": "finetune", "generate": "synthetic", "filter": "filter",
              "classify": "classify", "report": "report"}

# A run's pointer to the folder that holds a stage folder it shares with other runs (``WORKDIR/synthetic.link``: that
# folder's path relative to the run's), written by :mod:`bobjax.share` where the run's own stage folder would be.
LINK_SUFFIX = ".link"

TIMINGS = "timings.json"  # Wall seconds of each completed stage of a run, for the report.

# The finetune stage's LoRA (diffusers/peft layout, so ``load_lora_weights`` in PyTorch reads it), which generate
# reads: in ``WORKDIR/finetune/``, or in one ``class_NNNN/`` folder per class with ``config.finetune.per_class``.
LORA_FILE = "pytorch_lora_weights.safetensors"


def record_timing(workdir: str | os.PathLike, stage: str, seconds: float) -> None:
    """Sets ``stage``'s wall time in ``WORKDIR/timings.json`` (the seconds of the attempt that completed it)."""
    path = epath.Path(workdir) / TIMINGS
    timings = artifacts.read_json(path) if path.exists() else {}
    timings[stage] = round(seconds, 1)
    artifacts.write_json(path, timings)


def _follow(folder: str | os.PathLike, relative: str) -> epath.Path:
    """``folder / relative`` with leading ``..`` parts taken as parents: object-store paths are never normalised."""
    folder, parts = epath.Path(folder), relative.split("/")
    while parts and parts[0] == "..":
        folder, parts = folder.parent, parts[1:]
    return folder.joinpath(*parts)


def link_path(workdir: str | os.PathLike, stage: str) -> epath.Path:
    """Where a run's pointer to the shared folder of ``stage`` goes (:mod:`bobjax.share`)."""
    return epath.Path(workdir) / (STAGE_DIRS[stage] + LINK_SUFFIX)


def stage_dir(workdir: str | os.PathLike, stage: str) -> epath.Path:
    """``WORKDIR/<stage folder>``, or that folder in the shared one its pointer file names."""
    link = link_path(workdir, stage)
    home = _follow(workdir, link.read_text().strip()) if link.exists() else epath.Path(workdir)
    return home / STAGE_DIRS[stage]


def class_lora_dir(finetune_dir: str | os.PathLike, label: int) -> epath.Path:
    """Where class ``label``'s LoRA goes with ``config.finetune.per_class``."""
    return epath.Path(finetune_dir) / f"class_{label:04d}"


def partial_dir(workdir: str | os.PathLike, stage: str) -> epath.Path:
    """Where a stage keeps work in progress (caches, checkpoints) that ``--redo`` must discard with it: beside its
    folder, so a shared stage's progress is shared too."""
    folder = stage_dir(workdir, stage)
    return folder.parent / (folder.name + ".partial")


def remove_stage(workdir: str | os.PathLike, stage: str) -> None:
    """Deletes a stage's artifact and work in progress (for ``--redo``), marker first so a kill midway leaves
    the stage incomplete. A shared folder is deleted for every run that shares it, and remade once."""
    folder = stage_dir(workdir, stage)
    (folder / COMPLETE).unlink(missing_ok=True)
    folder.rmtree(missing_ok=True)
    partial_dir(workdir, stage).rmtree(missing_ok=True)
