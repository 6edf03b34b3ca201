"""The filter stage's output: ``WORKDIR/filter/keep.json``, a keep list with provenance, never a copy of the images.

``{"rule": the rule as a sentence, "encoder": its feature space, "filter": config.filter, "kept": n, "dropped": n,
"per_class": {class: {"kept", "dropped"}}, "images": [{"index", "image_id", "label", "kept", "score"[, "text_score"]},
...]}``, one entry per synthetic image in the synthetic dataset's order. The classify stage trains on the images it
keeps (:func:`kept_indices`); the report counts both.
"""

from __future__ import annotations

import math

import numpy as np

from bobjax import artifacts, run_folder

KEEP_FILE = "keep.json"


def path(workdir):
    return run_folder.stage_dir(workdir, "filter") / KEEP_FILE


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def write(workdir, decision, filter_config: dict, encoder: str, fields: list[dict], class_names: list[str]) -> dict:
    """Writes the keep list of ``decision`` (:class:`bobjax.filter.rules.Decision`) for the synthetic images whose
    non-image ``fields`` (label, image_id) are given, in dataset order; returns it."""
    images = []
    for index, record in enumerate(fields):
        entry = {"index": index, "image_id": record["image_id"].decode() if isinstance(record["image_id"], bytes)
                 else str(record["image_id"]), "label": int(record["label"]), "kept": bool(decision.kept[index])}
        entry.update({name: _number(values[index]) for name, values in decision.scores.items()})
        images.append(entry)
    labels = np.array([e["label"] for e in images], np.int64)
    per_class = {name: {"kept": int(decision.kept[labels == c].sum()), "dropped": int((~decision.kept[labels == c]).sum())}
                 for c, name in enumerate(class_names)}
    out = {"rule": decision.rule, "encoder": encoder, "filter": filter_config, "kept": int(decision.kept.sum()),
           "dropped": int((~decision.kept).sum()), "per_class": per_class, "images": images}
    artifacts.write_json(path(workdir), out)
    return out


def read(workdir) -> dict:
    where = path(workdir)
    if not where.exists():
        raise artifacts.ArtifactError(f"config.filter.rule is set, so the classifier trains on the images kept in "
                                      f"{where}, which does not exist; run the filter stage first")
    return artifacts.read_json(where)


def kept_indices(workdir) -> np.ndarray:
    """The synthetic dataset's indices that the filter kept, in order."""
    return np.array([e["index"] for e in read(workdir)["images"] if e["kept"]], np.int64)
