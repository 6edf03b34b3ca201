"""FGVC-Aircraft as a TFDS builder (TFDS ships none): reads the official archive from the manual folder.

Put ``fgvc-aircraft-2013b.tar.gz`` (or its extracted ``fgvc-aircraft-2013b/`` folder) in
``DATA_DIR/downloads/manual/`` and run ``python -m bobjax.data.prepare fgvc_aircraft --data_dir=DATA_DIR``
(docs/data.md; with the ``tfds`` command, where apache-beam lets it start, add ``--imports=bobjax.data.aircraft``).
The 100 variants are the classes; the official train / val / test lists are the splits.
"""

from __future__ import annotations

import os
import tarfile

import tensorflow_datasets as tfds

_ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
_FOLDER = "fgvc-aircraft-2013b"
_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def _data_root(manual_dir: str) -> str:
    """The archive's ``data/`` folder, extracting the archive next to itself the first time."""
    root = os.path.join(manual_dir, _FOLDER, "data")
    if os.path.isdir(root):
        return root
    archive = os.path.join(manual_dir, _ARCHIVE)
    if not os.path.isfile(archive):
        raise FileNotFoundError(
            f"FGVC-Aircraft not found: put {_ARCHIVE} (from the dataset's official page) or its extracted "
            f"{_FOLDER}/ folder in {manual_dir}"
        )
    partial = os.path.join(manual_dir, f".{_FOLDER}.extracting")
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    os.replace(os.path.join(partial, _FOLDER), os.path.join(manual_dir, _FOLDER))
    os.rmdir(partial)
    return root


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class FgvcAircraft(tfds.core.GeneratorBasedBuilder):
    """FGVC-Aircraft 2013b, variant level (100 classes)."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Place {_ARCHIVE} or the extracted {_FOLDER}/ folder in the manual_dir."

    def _manual_dir(self) -> str:
        return os.path.join(os.fspath(self._data_dir_root), "downloads", "manual")

    def _info(self) -> tfds.core.DatasetInfo:
        # Class names must be known before any example is written, so they are read from the archive in the
        # default manual folder; a prepared dataset restores them from its own metadata instead.
        names = None
        if os.path.isdir(self._manual_dir()):
            names = _read_lines(os.path.join(_data_root(self._manual_dir()), "variants.txt"))
        label = tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(num_classes=100)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": label,
                "image/filename": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        if os.path.abspath(os.fspath(dl_manager.manual_dir)) != os.path.abspath(self._manual_dir()):
            raise FileNotFoundError(f"put {_ARCHIVE} in {self._manual_dir()} (the variant names are read from there)")
        root = _data_root(self._manual_dir())
        return {name: self._generate_examples(root, official) for name, official in _SPLITS.items()}

    def _generate_examples(self, root: str, official: str):
        for line in _read_lines(os.path.join(root, f"images_variant_{official}.txt")):
            image_id, variant = line.split(" ", 1)
            filename = f"{image_id}.jpg"
            yield image_id, {
                "image": os.path.join(root, "images", filename),
                "label": variant,
                "image/filename": filename,
            }
