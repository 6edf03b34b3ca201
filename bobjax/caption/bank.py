"""The caption bank: one (background, pose) pair per real training image, as a TFDS dataset in ArrayRecord.

``WORKDIR/captions/`` is a TFDS dataset folder (``tfds.builder_from_directory(path).as_data_source("train")``;
text features come back as bytes), plus ``stats.json`` (how the captions were made) and ``tsv/`` (the same
captions in the authors' TSV layout). It is built in a temporary folder and renamed when complete.
The finetune and generate stages read it with :func:`read_caption_bank`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from etils import epath

from bobjax import artifacts, run_folder
from bobjax.artifacts import ArtifactError
from bobjax.caption import tsv

NAME = "caption_bank"
VERSION = "1.0.0"
SPLIT = "train"


@dataclasses.dataclass
class CaptionBank:
    """Captions aligned with the train split: entry ``i`` describes image ``image_ids[i]``."""

    image_ids: list[str]
    labels: np.ndarray
    class_names: list[str]  # Per entry: the class of its image.
    backgrounds: list[str]
    poses: list[str]

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        sizes = {len(self.image_ids), len(self.labels), len(self.class_names), len(self.backgrounds), len(self.poses)}
        if len(sizes) != 1:
            raise ValueError(f"caption bank fields have different lengths: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.image_ids)


def bank_path(workdir) -> epath.Path:
    return run_folder.stage_dir(workdir, "caption")


def _features(all_class_names: list[str]):
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        "image_id": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=all_class_names),
        "class_name": tfds.features.Text(),
        "background": tfds.features.Text(),
        "pose": tfds.features.Text(),
    })


def _write_tfds(folder: str, bank: CaptionBank, all_class_names: list[str]) -> None:
    """The bank as a one-split TFDS dataset, in bank order (shuffling disabled)."""
    import tensorflow_datasets as tfds

    identity = tfds.core.DatasetIdentity(name=NAME, version=tfds.core.Version(VERSION), data_dir=folder,
                                         module_name=__name__)
    info = tfds.core.DatasetInfo(builder=identity, features=_features(all_class_names), disable_shuffling=True,
                                 description="BOB caption bank: class-agnostic background and pose per real image.")
    writer = tfds.core.SequentialWriter(ds_info=info, max_examples_per_shard=max(1, len(bank)),
                                        file_format="array_record")
    writer.initialize_splits([SPLIT])
    writer.add_examples({SPLIT: [
        {"image_id": i, "label": int(y), "class_name": c, "background": b, "pose": p}
        for i, y, c, b, p in zip(bank.image_ids, bank.labels, bank.class_names, bank.backgrounds, bank.poses)
    ]})
    writer.close_all()


def write_caption_bank(workdir, bank: CaptionBank, all_class_names: list[str], stats: dict) -> epath.Path:
    """Writes ``WORKDIR/captions/`` atomically (TFDS dataset, ``stats.json``, ``tsv/``); returns its path."""
    from bobjax.data.tfds_writer import FINISHED

    path = bank_path(workdir)
    with artifacts.atomic_dir(path, marker=FINISHED) as tmp:
        _write_tfds(tmp, bank, all_class_names)
        artifacts.write_json(os.path.join(tmp, "stats.json"), stats)
        tsv.write_tsv(os.path.join(tmp, "tsv", "background.tsv"), bank.image_ids, bank.backgrounds)
        tsv.write_tsv(os.path.join(tmp, "tsv", "pose.tsv"), bank.image_ids, bank.poses)
    return path


def read_caption_bank(workdir) -> CaptionBank:
    """The bank the caption stage wrote in ``workdir``."""
    import tensorflow_datasets as tfds

    from bobjax.data.tfds_writer import is_finished

    path = bank_path(workdir)
    if not is_finished(path):
        raise ArtifactError(f"no caption bank in {path}; run the caption stage first (--config.stages=caption)")
    source = tfds.builder_from_directory(path).as_data_source(split=SPLIT)
    records = [source[i] for i in range(len(source))]

    def text(key: str) -> list[str]:
        return [r[key].decode("utf-8") for r in records]

    return CaptionBank(text("image_id"), np.asarray([r["label"] for r in records], dtype=np.int64),
                       text("class_name"), text("background"), text("pose"))
