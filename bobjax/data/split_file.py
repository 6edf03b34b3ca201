"""Split files (``config.data.split_file``): a fixed split in place of the seeded draw, in one of two formats.

- **A list** (any name but ``*.json``): the few-shot train images, one image id or path per line, as the authors of
  BOB ship their splits; blank lines and ``#`` comments are skipped, and anything after the first whitespace of a
  line (a label) is ignored. The validation hold-out (``config.data.val_size``) is still drawn, from the images the
  list does not name.
- **A split manifest** (``*.json``), the ``splits.json`` every run records::

      {"class_names": [...], "train": [image ids], "validation": [image ids], "test": [image ids], ...}

  It fixes the train and the validation images, and checks that the dataset has the file's classes and test
  images, so ``--config.data.split_file=OTHER_RUN/splits.json`` repeats that run's split exactly, on any machine.
  Validation ids are held out of the train split when ``config.data.val_size`` is set (as many as it says), and are
  the dataset's own validation split when it is 0. Test ids are the dataset's test split, or, where it has none (a
  flat image folder, see ``config.data.test_size``), held out of its train split. Other keys (``dataset``,
  ``descriptor``) are not checked: a folder dataset is named after its folder, which may differ between machines.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from bobjax import artifacts
from bobjax.data.sources import DataError, Source

SHOWN = 5  # Ids an error message lists.


@dataclasses.dataclass(frozen=True)
class FixedSplit:
    """What a split manifest fixes, as indices into the train split."""

    train: np.ndarray
    validation: np.ndarray | None  # Held out of the train split; None: the dataset's own validation split.
    test: np.ndarray | None = None  # Held out of the train split where the dataset has no test split.


def is_manifest(path: str) -> bool:
    return bool(path) and path.endswith(".json")


def read_list(path: str, image_ids: Sequence[str]) -> np.ndarray:
    """Indices of the images a list names. A line matches an image id exactly, or by its trailing path components
    (absolute paths from another machine still match ``class/image.jpg`` ids); the first line that matches nothing
    is an error."""
    file = _path(path)
    lookup = {image_id: i for i, image_id in enumerate(image_ids)}
    chosen = []
    with file.open() as f:
        for line_number, line in enumerate(f, 1):
            entry = line.strip().split()[0] if line.strip() else ""
            if not entry or entry.startswith("#"):
                continue
            parts = entry.replace("\\", "/").split("/")
            match = next(("/".join(parts[j:]) for j in range(len(parts)) if "/".join(parts[j:]) in lookup), None)
            if match is None:
                raise DataError(f"split file {file} line {line_number}: image {entry!r} is not in the dataset")
            chosen.append(lookup[match])
    if not chosen:
        raise DataError(f"split file {file} lists no images")
    if len(set(chosen)) != len(chosen):
        raise DataError(f"split file {file} lists the same image more than once")
    return np.asarray(chosen, dtype=np.int64)


def read_manifest(path: str, source: Source, data_config) -> FixedSplit:
    """The train and validation images a split manifest fixes, after checking it against ``source``."""
    file = _path(path)
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"split file {file} is not valid JSON ({e}); expected a split manifest such as a run's "
                        "splits.json") from e
    if not isinstance(manifest, dict):
        raise DataError(f"split file {file} holds a {type(manifest).__name__}; expected a JSON object with "
                        "'class_names', 'train', 'validation' and 'test' lists, as in a run's splits.json")
    ids = {key: _ids(manifest, key, file) for key in ("class_names", "train", "validation", "test")}
    if ids["class_names"] != list(source.class_names):
        differ = next((k for k, (a, b) in enumerate(zip(ids["class_names"], source.class_names)) if a != b),
                      min(len(ids["class_names"]), len(source.class_names)))
        raise DataError(f"split file {file} was made for other classes than dataset {source.name!r} has: "
                        f"{len(ids['class_names'])} in the file, {len(source.class_names)} in the dataset, the first "
                        f"difference at class {differ} ({_at(ids['class_names'], differ)} in the file, "
                        f"{_at(source.class_names, differ)} in the dataset)")
    pool = source.split(data_config.train_split)
    train = _indices(ids["train"], pool.image_ids(), file, "train", data_config.train_split)
    if not len(train):
        raise DataError(f"split file {file} lists no train images")
    validation = None
    if data_config.val_size:
        validation = _indices(ids["validation"], pool.image_ids(), file, "validation", data_config.train_split)
        if len(validation) != data_config.val_size:
            raise DataError(f"split file {file} holds {len(validation)} validation images (held out of the train "
                            f"split); config.data.val_size is {data_config.val_size}")
        both = sorted(set(ids["train"]) & set(ids["validation"]))
        if both:
            raise DataError(f"split file {file} lists {len(both)} image(s) in both train and validation: "
                            f"{both[:SHOWN]}")
    else:
        _same_split(ids["validation"], source.splits.get("validation"), file, "validation",
                    "config.data.val_size=0 takes the dataset's own validation split")
    if data_config.test_split in source.splits:
        _same_split(ids["test"], source.splits[data_config.test_split], file, "test",
                    f"config.data.test_split={data_config.test_split!r}")
        return FixedSplit(train, validation)
    # A dataset without a test split (a flat image folder): the file's test images were held out of the train split.
    test = _indices(ids["test"], pool.image_ids(), file, "test", data_config.train_split)
    both = sorted(set(ids["test"]) & (set(ids["train"]) | set(ids["validation"])))
    if not len(test) or both:
        raise DataError(f"split file {file}: dataset {source.name!r} has no {data_config.test_split!r} split, so the "
                        "file's test images are held out of its train split; they must be some, and none of the "
                        f"train or validation images ({len(test)} test images, {len(both)} in both: {both[:SHOWN]})")
    return FixedSplit(train, validation, test)


def _path(path: str):
    file = artifacts.storage_path(path, "config.data.split_file")
    if not file.is_file():
        raise DataError(f"split file {file} does not exist")
    return file


def _ids(manifest: dict, key: str, file) -> list[str]:
    value = manifest.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"split file {file}: {key!r} must be a list of strings (as in a run's splits.json), got "
                        f"{type(value).__name__}")
    if len(set(value)) != len(value):
        raise DataError(f"split file {file} lists the same entry more than once in {key!r}")
    return value


def _at(names: Sequence[str], k: int) -> str:
    return repr(names[k]) if k < len(names) else "none"


def _indices(wanted: list[str], image_ids: Sequence[str], file, key: str, split: str) -> np.ndarray:
    lookup = {image_id: i for i, image_id in enumerate(image_ids)}
    missing = [i for i in wanted if i not in lookup]
    if missing:
        raise DataError(f"split file {file}: {len(missing)} {key} image id(s) are not in the dataset's {split!r} "
                        f"split: {missing[:SHOWN]}")
    return np.asarray([lookup[i] for i in wanted], dtype=np.int64)


def _same_split(wanted: list[str], records, file, key: str, why: str) -> None:
    """The file's ``key`` ids must be those of the dataset's split ``records`` (none where it has no such split)."""
    have = records.image_ids() if records is not None else []
    if set(wanted) != set(have):
        missing, extra = sorted(set(wanted) - set(have)), sorted(set(have) - set(wanted))
        raise DataError(f"split file {file} lists other {key} images than the dataset has ({why}): {len(missing)} in "
                        f"the file only {missing[:SHOWN]}, {len(extra)} in the dataset only {extra[:SHOWN]}")
