"""Where real images come from: TFDS datasets, an image folder, or the toy world.

Every source gives, per split, a random-access record source (``len`` / ``[i]``, the protocol grain reads)
whose records are ``{"image": uint8 HxWx3, "label": int, "image_id": str, "class_name": str}``, plus the cheap
``labels()`` and ``image_ids()`` that split-making needs without decoding a single image.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from absl import logging
from etils import epath
from PIL import Image, ImageOps

from bobjax import artifacts, toyworld
from bobjax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DataError(UserError):
    """Bad or missing data: the message names the path, image or class."""


class RecordSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict: ...
    def labels(self) -> np.ndarray: ...
    def image_ids(self) -> list[str]: ...


@dataclasses.dataclass
class Source:
    """A dataset: its class names, its object descriptor and its splits (and, for TFDS, the prepared version)."""

    name: str
    class_names: list[str]
    descriptor: str
    splits: dict[str, RecordSource]
    version: str = ""

    def split(self, name: str) -> RecordSource:
        if name not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded PIL image -> RGB (or grey) array, turned as its EXIF orientation says (phone photos are stored
    sideways), with high-bit-depth grey scaled to 8 bits where ``convert("RGB")`` would clip it to white: 16-bit
    (modes I;16*) by 1/257; 32-bit integer or float (modes I, F, as TIFF holds) by 1/257 when its values pass 255,
    or from [0, 1] when a float image's stay within it."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.float32) / 257.0
    if image.mode not in ("I", "F"):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image, np.float64)
    top = float(array.max(initial=0.0))
    if image.mode == "F" and top <= 1.0:
        return array * 255.0
    return array / max(257.0, top / 255.0) if top > 255 else array


def decode_image(data: bytes | np.ndarray | Image.Image, what: str) -> np.ndarray:
    """Any image (bytes, array, PIL) -> uint8 RGB HxWx3; an unreadable one is a DataError naming ``what``. A uint16
    array is scaled to 8 bits, as a 16-bit image file is (:func:`_to_rgb`)."""
    if isinstance(data, np.ndarray):
        array = data.astype(np.float32) / 257.0 if data.dtype == np.uint16 else data
    else:
        try:
            image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
            image.load()
            array = _to_rgb(image)
        except Exception as e:
            raise DataError(f"cannot read image {what}: {e}") from e
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"image {what} has shape {array.shape}; expected HxWx3")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array), 0, 255)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def clean_class_name(raw: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross': prompts want words, not file names."""
    name = re.sub(r"^\d+[._ ]", "", raw)
    return name.replace("_", " ").strip()


# ---------------------------------------------------------------------------------------------- image folder


class FolderSplit:
    """``root/<class name>/<image>``; image ids are paths relative to ``root``."""

    def __init__(self, root: epath.Path, class_names: Sequence[str]):
        self.root = root
        self._files: list[str] = []
        self._labels: list[int] = []
        for label, name in enumerate(class_names):
            folder = root / name
            if not folder.is_dir():
                continue
            for file in sorted(f.name for f in folder.iterdir()):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    self._files.append(f"{name}/{file}")
                    self._labels.append(label)
        self._class_names = list(class_names)

    def __len__(self) -> int:
        return len(self._files)

    def labels(self) -> np.ndarray:
        return np.asarray(self._labels, dtype=np.int64)

    def image_ids(self) -> list[str]:
        return list(self._files)

    def __getitem__(self, index: int) -> dict:
        path = self.root / self._files[index]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from e
        label = self._labels[index]
        return {
            "image": decode_image(data, path),
            "label": label,
            "image_id": self._files[index],
            "class_name": clean_class_name(self._class_names[label]),
        }


def folder_source(data_dir: str, descriptor: str) -> Source:
    """An image folder. With ``train/`` (and ``test/``, ``validation/``) subfolders those are the splits;
    otherwise the folder itself is the train split (and the test split is held out of it: ``config.data.test_size``,
    :func:`bobjax.data.fewshot.select`). Class names are the sorted train subfolder names."""
    root = artifacts.storage_path(data_dir, "config.data.data_dir") if data_dir else None
    if root is None or not root.is_dir():
        raise DataError(
            f"image folder {data_dir!r} does not exist; set --config.data.data_dir to a folder laid out as "
            "<class name>/<image> (optionally under train/ and test/)"
        )
    split_dirs = {s: root / s for s in ("train", "validation", "test")}
    split_dirs = {s: d for s, d in split_dirs.items() if d.is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    train_dir = split_dirs["train"]
    class_dirs = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not class_dirs:
        raise DataError(f"image folder {train_dir} has no class subfolders; expected <class name>/<image>")
    splits = {name: FolderSplit(path, class_dirs) for name, path in split_dirs.items()}
    if len(splits["train"]) == 0:
        raise DataError(f"image folder {train_dir} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return Source(root.name, [clean_class_name(c) for c in class_dirs], descriptor, splits)


# ---------------------------------------------------------------------------------------------- TFDS


class TfdsSplit:
    """A TFDS split in ArrayRecord format through ``tfds.data_source`` (random access, no tf.data).

    The data source decodes no feature (``tfds.decode.SkipDecoding`` on each: the builders' segmentation masks,
    boxes and species stay bytes): ``[i]`` decodes the image bytes itself, and the labels, image ids and the
    label-name feature (``label_name``: CUB's builder has unnamed labels) are read in one pass kept for the object's
    life. ArrayRecord stores whole examples, so that pass still reads every feature's bytes from disk.
    """

    def __init__(self, source, name: str, split: str, class_names: Sequence[str], image_key: str, label_key: str):
        self._source, self._name, self._split = source, name, split
        self._class_names, self._image_key, self._label_key = class_names, image_key, label_key
        self._index: tuple[np.ndarray, list[str], dict[int, str]] | None = None

    def __len__(self) -> int:
        return len(self._source)

    def _raw(self, index: int) -> dict:
        return self._source[index]

    def _scan(self) -> tuple[np.ndarray, list[str], dict[int, str]]:
        if self._index is None:
            labels, ids, names = [], [], {}
            name_key = f"{self._label_key}_name"
            for i in range(len(self)):
                raw = self._raw(i)
                labels.append(int(raw[self._label_key]))
                ids.append(self._image_id(raw, i))
                if name_key in raw:
                    names.setdefault(labels[-1], _text(raw[name_key]))
            self._index = np.asarray(labels, dtype=np.int64), ids, names
        return self._index

    def labels(self) -> np.ndarray:
        return self._scan()[0]

    def image_ids(self) -> list[str]:
        return list(self._scan()[1])

    def label_names(self) -> dict[int, str]:
        """``{label: its label-name feature}`` of the labels this split has, where the dataset has that feature."""
        return self._scan()[2]

    def _image_id(self, raw: dict, index: int) -> str:
        for key in ("image/filename", "file_name", "filename", "id"):
            if key in raw:
                return _text(raw[key])
        return f"{self._name}/{self._split}/{index:06d}"

    def __getitem__(self, index: int) -> dict:
        raw = self._raw(index)
        label = int(raw[self._label_key])
        image_id = self._image_id(raw, index)
        return {
            "image": decode_image(raw[self._image_key], f"{self._name}/{self._split}[{index}] ({image_id})"),
            "label": label,
            "image_id": image_id,
            "class_name": self._class_names[label],
        }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _class_names(name: str, label, splits: dict[str, TfdsSplit]) -> list[str]:
    """The label feature's names; where it has none (CUB's builder: ``ClassLabel(num_classes=200)``), the names
    its examples carry in the label-name feature (``label_name``), from the first split that has each."""
    if label.names != [str(k) for k in range(label.num_classes)]:
        return [clean_class_name(n) for n in label.names]
    found: dict[int, str] = {}
    for split in splits.values():
        for k, text in split.label_names().items():
            found.setdefault(k, text)
        if len(found) == label.num_classes:
            return [clean_class_name(found[k]) for k in range(label.num_classes)]
    if not found:  # Numbers are the only names there are: say so once, as prompts will read "a photo of a 17".
        logging.warning("TFDS dataset %s has unnamed labels and no label-name feature: its classes are called "
                        "'0' to '%d' in prompts", name, label.num_classes - 1)
        return list(label.names)
    missing = [k for k in range(label.num_classes) if k not in found]
    raise DataError(f"TFDS dataset {name!r} names its classes by a label-name feature, but no example of label(s) "
                    f"{missing[:10]} is in any split, so their names are unknown")


def prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares TFDS dataset ``name`` in ``data_dir`` as bobjax reads it (bobjax/data/prepare.py,
    docs/data.md)."""
    return f"python -m bobjax.data.prepare {name} --data_dir={data_dir}"


@functools.lru_cache(maxsize=8)
def tfds_source(name: str, data_dir: str, descriptor: str, image_key: str = "image", label_key: str = "label") -> Source:
    """A prepared TFDS dataset. Kept per process (a failure is not), so every stage of a run, and every run of a
    comparison, reads its labels and image ids once: a prepared TFDS version never changes on disk."""
    import tensorflow_datasets as tfds

    # Registers bobjax's own builders (FGVC-Aircraft) so tfds can find them by name.
    from bobjax.data import aircraft  # noqa: F401

    root = artifacts.storage_path(data_dir, "config.data.data_dir") if data_dir else None
    if root is None or not root.is_dir():
        raise DataError(
            f"TFDS data_dir {data_dir!r} does not exist; prepare the dataset with "
            f"`{prepare_command(name, 'DIR')}` (manual downloads go in DIR/downloads/manual; "
            f"docs/data.md) and pass --config.data.data_dir=DIR"
        )
    try:
        builder = tfds.builder(name, data_dir=root, file_format="array_record")
    except Exception as e:
        raise DataError(f"TFDS has no dataset {name!r}: {e}") from e
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {data_dir}; run `{prepare_command(name, data_dir)}` "
            f"(for manual-download datasets put the archives in {root / 'downloads' / 'manual'} first: "
            f"docs/data.md)"
        )
    info = builder.info
    class_names: list[str] = []  # Filled below, once the splits can be read; every split shares the list.
    decoders = {key: tfds.decode.SkipDecoding() for key in info.features}
    splits = {}
    for split in info.splits:
        try:  # On gs://, ArrayRecord's reader opens the shards itself: see tfds_writer.read_dataset.
            ds = builder.as_data_source(split=split, decoders=decoders)
        except Exception as e:
            raise DataError(f"TFDS dataset {name!r} in {data_dir} cannot be read as ArrayRecord ({e}); "
                            f"rebuild it with --file_format=array_record") from e
        splits[split] = TfdsSplit(ds, name, split, class_names, image_key, label_key)
    class_names += _class_names(name, info.features[label_key], splits)
    return Source(name, class_names, descriptor, splits, str(info.version))


# ---------------------------------------------------------------------------------------------- toy world


def toyworld_source(spec: toyworld.ToyWorldSpec) -> Source:
    splits = {s: toyworld.ToyWorldSplit(spec, s) for s in ("train", "validation", "test")}
    names = [c.name for c in toyworld.toy_classes(spec.num_classes)]
    return Source("toyworld", names, "bird", splits)


def load_source(data_config) -> Source:
    """The source named by ``config.data``."""
    kind = data_config.source
    if kind == "toyworld":
        return toyworld_source(toyworld.spec_from_config(data_config.toyworld))
    if kind == "folder":
        return folder_source(data_config.data_dir, data_config.descriptor)
    if kind == "tfds":
        return tfds_source(data_config.name, data_config.data_dir, data_config.descriptor,
                           data_config.image_key, data_config.label_key)
    raise DataError(f"config.data.source is {kind!r}; expected one of 'tfds', 'folder', 'toyworld'")
