"""A stage's identity: what its output depends on. Its ``COMPLETE`` marker records it; a rerun skips a stage whose
identity is unchanged and refuses one whose identity changed; a comparison shares a stage between runs whose
identities are equal (:mod:`bobjax.share`).

What counts is what changes the output, not where things are stored or how the work is split, so a run moves
between machines (captions made on a GPU with the data on a local disk, the rest on a TPU with it in a bucket):

- the dataset by what it is: the ``config.data`` fields that say which dataset and which images (source, TFDS
  builder name and split names, shots, hold-outs, the toy world's parameters, ...), the prepared TFDS version, and
  a digest of the class names and the image ids each split reads (an image folder's ids are its images' relative
  paths), not ``data.data_dir`` or ``data.split_file`` (whose effect is the image ids);
- files by their content: ``caption.tsv_dir``'s two TSV files, ``generate.contexts_file``;
- left out, as they leave every output unchanged (each claim has a test in tests/test_identity.py): ``mesh`` (never
  recorded), ``model.attention`` (every kernel computes the same attention), ``caption.batch_size`` (greedy
  decoding of a left-padded batch gives each image the answers it gets alone), ``generate.batch_size_per_device`` (each
  image's noise comes from its own seed) and ``quality.batch_size`` (the encoders embed each image alone);
  ``compare.pack_points`` (a packed grid point trains as it does alone, to float rounding:
  tests/test_classify_packed.py).
  The classifier's and fine-tuning's batch sizes change training, and count.

Markers written before this identity (until 2026-12-07) hold whole config sections and no ``format``: they are read
by leaving out of both the marker and this config's sections the same fields as above, so those workdirs keep
resuming; their images were checked against the workdir's ``splits.json`` (:func:`bobjax.main.record_splits`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping

import ml_collections
from etils import epath

from bobjax import artifacts, assets, run_folder
from bobjax.data import fewshot, load_source
from bobjax.errors import ConfigError

FORMAT = 2  # Of the marker; those without a "format" (format 1) hold whole config sections.

# The config sections each stage's output depends on (later stages inherit the earlier ones').
SECTIONS = {
    "caption": ("seed", "data", "caption"),
    "finetune": ("seed", "data", "caption", "model", "finetune"),
    "generate": ("seed", "data", "caption", "model", "finetune", "generate"),
    # The filter's encoder is config.quality's; on the toy world its oracle is sized by config.report's oracle_*.
    "filter": ("seed", "data", "caption", "model", "finetune", "generate", "filter", "quality", "report"),
    "classify": ("seed", "data", "caption", "model", "finetune", "generate", "filter", "classify", "method"),
    "report": ("seed", "data", "caption", "model", "finetune", "generate", "filter", "classify", "method", "compare",
               "report", "quality"),
}

# Fields of those sections that are not in an identity: where things are stored (files are identified by their
# content instead), and settings that leave every output unchanged.
LEFT_OUT = ("data.data_dir", "data.split_file", "caption.tsv_dir", "generate.contexts_file", "model.attention",
            "caption.batch_size", "generate.batch_size", "generate.batch_size_per_device", "quality.batch_size",
            "compare.pack_points")


def _sections(config, stage: str) -> dict:
    full = json.loads(config.to_json_best_effort())
    return {key: full[key] for key in SECTIONS[stage] if key in full}


def _leave_out(sections: dict) -> dict:
    out = json.loads(json.dumps(sections))
    for field in LEFT_OUT:
        section, name = field.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=16)
def _images(data_json: str, seed: int) -> dict:
    """The prepared version and the images of the dataset ``config.data`` (as JSON) names, drawn with ``seed``.
    Kept per process: a dataset does not change under a running command, and listing a bucket is slow."""
    data = ml_collections.ConfigDict(json.loads(data_json))
    source = load_source(data)
    splits = fewshot.select(source, data, seed)
    manifest = splits.manifest()
    del manifest["dataset"]  # An image folder's name: where it is stored.
    counts = {split: len(manifest[split]) for split in ("train", "validation", "test")}
    return {"version": source.version, **counts, "sha256": _digest(manifest)}


def _file_digest(name: str, field: str) -> str:
    path = epath.Path(assets.resolve(name))
    if not path.is_file():
        raise ConfigError(f"{field} {name!r}: no such file ({path})")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def of(config, stage: str) -> dict:
    """``stage``'s identity under ``config``, as plain JSON values (what its marker records)."""
    sections = _sections(config, stage)
    out = {"format": FORMAT, **_leave_out(sections)}
    if "data" in out:
        out["data"]["images"] = _images(json.dumps(sections["data"], sort_keys=True), config.seed)
    caption = config.caption
    if "caption" in out and caption.method == "tsv" and caption.tsv_dir:
        folder = artifacts.storage_path(caption.tsv_dir, "config.caption.tsv_dir")
        out["caption"]["tsv_sha256"] = {name: _file_digest(os.fspath(folder / name), "config.caption.tsv_dir")
                                        for name in ("background.tsv", "pose.tsv")}
    generate = config.generate
    if "generate" in out and generate.plan == "listed" and generate.contexts_file:
        out["generate"]["contexts_sha256"] = _file_digest(generate.contexts_file, "config.generate.contexts_file")
    return out


def changed(recorded: Mapping, config, stage: str) -> list[str]:
    """The fields in which the identity ``recorded`` (a marker's) differs from ``stage``'s under ``config``."""
    if "format" not in recorded:  # Whole config sections, made before identities.
        return _diff(_leave_out(dict(recorded)), _leave_out(_sections(config, stage)))
    if recorded["format"] != FORMAT:
        raise artifacts.ArtifactError(f"stage {stage!r} was marked complete in format {recorded['format']!r}, which "
                                      f"this bobjax (format {FORMAT}) cannot read; use the bobjax that made it, or "
                                      f"rerun with --redo={stage}")
    return _diff(recorded, of(config, stage))


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if a != b else []


def is_complete(config, workdir: str | os.PathLike, stage: str) -> bool:
    """Whether ``stage`` finished in ``workdir`` with the same identity; a changed identity is an error."""
    folder = run_folder.stage_dir(workdir, stage)
    marker = folder / run_folder.COMPLETE
    if not marker.exists():
        return False
    differences = changed(artifacts.read_json(marker), config, stage)
    if differences:
        raise artifacts.ArtifactError(
            f"stage {stage!r} is complete in {folder} but was made with a different config "
            f"({', '.join(differences[:8])}{' ...' if len(differences) > 8 else ''}); rerun with --redo={stage} to "
            "remake it, or use another --workdir"
        )
    return True


def mark_complete(config, workdir: str | os.PathLike, stage: str) -> None:
    artifacts.write_json(run_folder.stage_dir(workdir, stage) / run_folder.COMPLETE, of(config, stage))
