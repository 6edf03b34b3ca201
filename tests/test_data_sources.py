"""Image folders and TFDS (ArrayRecord) sources, and their errors."""

import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from bobjax import config_lib
from bobjax.data import sources
from bobjax.data.sources import DataError


def write_image(path, colour, size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder_reads_classes_and_images(tmp_path):
    write_image(tmp_path / "train/002.Laysan_Albatross/a.jpg", (255, 0, 0))
    write_image(tmp_path / "train/001.Black_footed_Albatross/b.png", (0, 255, 0))
    write_image(tmp_path / "test/001.Black_footed_Albatross/c.png", (0, 0, 255))
    source = sources.folder_source(str(tmp_path), "bird")
    assert source.class_names == ["Black footed Albatross", "Laysan Albatross"]
    train = source.split("train")
    assert train.image_ids() == ["001.Black_footed_Albatross/b.png", "002.Laysan_Albatross/a.jpg"]
    record = train[0]
    assert record["image"].shape == (10, 12, 3) and record["label"] == 0
    assert tuple(record["image"][0, 0]) == (0, 255, 0)
    assert len(source.split("test")) == 1


def test_image_folder_without_splits_is_all_train(tmp_path):
    write_image(tmp_path / "cat/a.jpg", (1, 2, 3))
    write_image(tmp_path / "dog/b.jpg", (1, 2, 3))
    source = sources.folder_source(str(tmp_path), "pet")
    assert list(source.splits) == ["train"] and len(source.split("train")) == 2
    with pytest.raises(DataError, match="no split 'test'"):
        source.split("test")


def test_corrupt_image_names_the_file(tmp_path):
    write_image(tmp_path / "cat/good.jpg", (1, 2, 3))
    (tmp_path / "cat/broken.jpg").write_bytes(b"not a jpeg at all")
    train = sources.folder_source(str(tmp_path), "pet").split("train")
    broken = train.image_ids().index("cat/broken.jpg")
    with pytest.raises(DataError, match="broken.jpg"):
        train[broken]


def test_missing_folder_and_tfds_dir_are_named(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        sources.folder_source(str(tmp_path / "nowhere"), "pet")
    with pytest.raises(DataError, match=r"python -m bobjax.data.prepare caltech_birds2011"):
        sources.tfds_source("caltech_birds2011", str(tmp_path / "nowhere"), "bird")
    with pytest.raises(DataError, match="not prepared"):
        sources.tfds_source("caltech_birds2011", str(tmp_path), "bird")


def make_aircraft_archive(manual_dir):
    """A miniature FGVC-Aircraft archive in the official layout."""
    root = manual_dir / "build" / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (root / "images").mkdir(parents=True)
    (root / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = {"train": [], "val": [], "test": []}
    for i in range(12):
        image_id = f"{1000000 + i:07d}"
        write_image(root / "images" / f"{image_id}.jpg", (i * 20, 0, 0), size=(16, 12))
        lines[["train", "train", "val", "test"][i % 4]].append(f"{image_id} {variants[i % 3]}")
    for split, rows in lines.items():
        (root / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    with tarfile.open(manual_dir / "fgvc-aircraft-2013b.tar.gz", "w:gz") as tar:
        tar.add(root.parent, arcname="fgvc-aircraft-2013b")
    import shutil

    shutil.rmtree(manual_dir / "build")


def test_aircraft_builder_and_tfds_array_record_source(tmp_path):
    import tensorflow_datasets as tfds

    from bobjax.data import aircraft

    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    make_aircraft_archive(manual)
    builder = aircraft.FgvcAircraft(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))

    config = config_lib.base_config().data
    config.name, config.data_dir, config.descriptor = "fgvc_aircraft", str(tmp_path), "aircraft"
    source = sources.load_source(config)
    assert source.class_names == ["707-320", "A300B4", "Cessna 172"]
    train = source.split("train")
    assert len(train) == 6 and len(source.split("validation")) == 3 and len(source.split("test")) == 3
    ids = train.image_ids()
    record = train[ids.index("1000000.jpg")]
    assert record["image"].shape == (12, 16, 3) and record["class_name"] == "707-320"
    assert sorted(np.bincount(train.labels()).tolist()) == [2, 2, 2]


def write_tfds_dataset(data_dir, name="tiny_birds", count=9):
    """A prepared TFDS dataset (one train split, two shards) in ``data_dir``, as ``tfds build`` lays it out; returns
    the (label, image id) of each record as written."""
    import tensorflow_datasets as tfds

    from bobjax.data.tfds_writer import ShardedWriter

    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                           "label": tfds.features.ClassLabel(names=["gull", "tern", "wren"]),
                                           "image/filename": tfds.features.Text()})
    rows = [((i * 2) % 3, f"birds/{i:03d}.png") for i in range(count)]
    writer = ShardedWriter(str(data_dir / name / "1.0.0"), name, features, "train", num_shards=2)
    examples = [{"image": np.full((6, 8, 3), 20 * i, np.uint8), "label": label, "image/filename": image_id}
                for i, (label, image_id) in enumerate(rows)]
    writer.write_shard(0, examples[:4])
    writer.write_shard(1, examples[4:])
    writer.finalize([4, count - 4])
    return rows


def test_tfds_labels_and_ids_are_read_once_per_process_without_decoding_an_image(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from bobjax.data import make_splits

    rows = write_tfds_dataset(tmp_path)
    config = config_lib.base_config().data
    config.name, config.data_dir, config.descriptor, config.shots = "tiny_birds", str(tmp_path), "bird", 2
    train = sources.load_source(config).split("train")

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    reads = []
    read = type(train._source).__getitem__
    monkeypatch.setattr(sources, "decode_image", no_decoding)
    monkeypatch.setattr(tfds.features.Image, "decode_example_np", no_decoding)
    monkeypatch.setattr(type(train._source), "__getitem__", lambda source, i: reads.append(i) or read(source, i))
    assert train.labels().tolist() == [label for label, _ in rows]
    assert train.image_ids() == [image_id for _, image_id in rows]
    assert make_splits(config, 0).train.image_ids() and make_splits(config, 1).train.labels().size == 6
    assert sorted(reads) == list(range(len(rows))), "one read of each record, for labels and ids, for every stage"

    monkeypatch.undo()
    decoded = [train[i] for i in range(len(train))]
    assert [(r["label"], r["image_id"]) for r in decoded] == rows
    assert decoded[3]["image"].shape == (6, 8, 3) and int(decoded[3]["image"][0, 0, 0]) == 60
