"""Small prepared TFDS datasets made by the real builders' own metadata, for tests of the stages that read them.

For each TFDS dataset the configs name, :func:`prepare` takes the registered builder (``tfds.builder(name)``: its
FeaturesDict, label names, version and supervised keys, as ``tfds build`` would use them), writes a few examples per
class of every split in ArrayRecord files named as TFDS names them, and writes the builder's own ``DatasetInfo`` with
those splits, so that ``tfds.builder(name, data_dir=...)`` finds the dataset prepared and reads it as it would the
real one. Each example fills every feature the builder declares (segmentation masks, boxes, species, ids) in the
builder's encoding (JPEG images, PNG masks), so a reader that decodes a feature it does not use pays for it, and a
test can see it.

``tfds.testing.mock_data`` was the other way: it patches the reading of a dataset that is not there, gives no split
metadata, does not mark the builder prepared, and cannot encode its own random boxes once a decoder is passed.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

# Per dataset: its splits and the real names of its first classes (where the builder has names, they are its own).
SPLITS = {"caltech_birds2011": ("train", "test"), "cars196": ("train", "test"),
          "oxford_iiit_pet": ("train", "test"), "oxford_flowers102": ("train", "validation", "test")}
# CUB's builder has unnamed labels (ClassLabel(num_classes=200)); its label_name feature holds the folder's name,
# lower-cased, as the builder writes it ("001.Black_footed_Albatross" -> "black_footed_albatross").
CUB_NAMES = ["black_footed_albatross", "laysan_albatross", "sooty_albatross", "groove_billed_ani"]
AIRCRAFT_VARIANTS = ["707-320", "727-200", "A300B4", "Cessna 172"]


def _jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    data = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(data, format="JPEG")
    return data.getvalue()


def _example(name: str, features, label: int, index: int, rng: np.random.Generator) -> dict:
    """One example with every feature of the builder filled as the builder fills it."""
    import tensorflow_datasets as tfds

    height, width = 12 + index % 5, 16 + label % 7
    out = {}
    for key, feature in features.items():
        if key == "label":
            out[key] = label
        elif isinstance(feature, tfds.features.Image):
            if feature.shape[-1] == 1:  # A segmentation mask (PNG).
                out[key] = rng.integers(0, 3, (height, width, 1), dtype=np.uint8)
            else:  # The photo: JPEG bytes, as the real archives hold.
                out[key] = io.BytesIO(_jpeg(rng, (height, width)))
        elif isinstance(feature, tfds.features.BBoxFeature):
            out[key] = tfds.features.BBox(ymin=0.1, xmin=0.2, ymax=0.8, xmax=0.9)
        elif isinstance(feature, tfds.features.ClassLabel):  # Pets' species.
            out[key] = label % feature.num_classes
        elif key == "label_name":
            out[key] = CUB_NAMES[label] if label < len(CUB_NAMES) else f"species_{label:03d}"
        else:  # The id: CUB's image/filename, Pets' and Flowers' file_name, Cars' id.
            out[key] = f"{name}/{label:03d}/{index:05d}.jpg"
    return out


def prepare(name: str, data_dir: str, per_class: dict[str, int]) -> int:
    """Writes ``per_class[split]`` examples of every class of the builder ``name`` into ``data_dir`` (prepared, in
    ArrayRecord); returns the number of classes."""
    import tensorflow_datasets as tfds
    from array_record.python import array_record_module

    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    info, rng = builder.info, np.random.default_rng(0)
    folder = builder.data_path
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = info.features["label"].num_classes
    split_infos = []
    for split in SPLITS[name]:
        examples = [_example(name, info.features, c, k, rng) for k in range(per_class[split]) for c in range(num_classes)]
        path = folder / f"{name}-{split}.array_record-00000-of-00001"
        writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
        for example in examples:
            writer.write(info.features.serialize_example(example))
        writer.close()
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(examples)],
                                               num_bytes=path.stat().length))
    info.set_splits(tfds.core.SplitDict(split_infos))
    info.set_file_format("array_record")
    info.write_to_directory(folder)
    return num_classes


def write_aircraft_archive(manual_dir: str, per_class: dict[str, int]) -> None:
    """``fgvc-aircraft-2013b.tar.gz`` in ``manual_dir``, in the official archive's layout
    (``fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt}``), with
    ``per_class[split]`` images of each of :data:`AIRCRAFT_VARIANTS` per split."""
    import shutil

    root = os.path.join(manual_dir, "build", "fgvc-aircraft-2013b", "data")
    os.makedirs(os.path.join(root, "images"))
    with open(os.path.join(root, "variants.txt"), "w") as f:
        f.write("\n".join(AIRCRAFT_VARIANTS) + "\n")
    rng, image_id = np.random.default_rng(0), 1000000
    for split, official in (("train", "train"), ("validation", "val"), ("test", "test")):
        lines = []
        for k in range(per_class[split]):
            for variant in AIRCRAFT_VARIANTS:
                with open(os.path.join(root, "images", f"{image_id:07d}.jpg"), "wb") as f:
                    f.write(_jpeg(rng, (12 + k, 16)))
                lines.append(f"{image_id:07d} {variant}")
                image_id += 1
        with open(os.path.join(root, f"images_variant_{official}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with tarfile.open(os.path.join(manual_dir, "fgvc-aircraft-2013b.tar.gz"), "w:gz") as tar:
        tar.add(os.path.dirname(root), arcname="fgvc-aircraft-2013b")
    shutil.rmtree(os.path.join(manual_dir, "build"))


def prepare_aircraft(data_dir: str, per_class: dict[str, int]) -> int:
    """FGVC-Aircraft through bobjax's own builder, from an archive in the official layout
    (:func:`write_aircraft_archive`)."""
    import tensorflow_datasets as tfds

    from bobjax.data import aircraft

    manual = os.path.join(data_dir, "downloads", "manual")
    os.makedirs(manual)
    write_aircraft_archive(manual, per_class)
    builder = aircraft.FgvcAircraft(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return len(AIRCRAFT_VARIANTS)
