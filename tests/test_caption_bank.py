"""The caption bank on disk: TFDS (ArrayRecord) readable by tfds and by read_caption_bank; the authors' TSVs."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bobjax.artifacts import ArtifactError
from bobjax.caption import tsv
from bobjax.caption.bank import CaptionBank, read_caption_bank, write_caption_bank
from bobjax.data import DataError

CLASSES = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]


def small_bank():
    return CaptionBank(
        image_ids=["001.Black/a.jpg", "002.Laysan/b.jpg", "001.Black/c.jpg"],
        labels=np.array([0, 1, 0]),
        class_names=[CLASSES[0], CLASSES[1], CLASSES[0]],
        backgrounds=["grass, sky, hangar", "", "océan, rocks"],
        poses=["A bird soars with wings spread wide", "perched", "standing"],
    )


def test_bank_is_a_tfds_dataset_in_bank_order(tmp_path):
    captions = small_bank()
    path = write_caption_bank(str(tmp_path), captions, CLASSES, {"method": "test"})
    assert str(path) == str(tmp_path / "captions")
    builder = tfds.builder_from_directory(path)
    assert builder.info.features["label"].names == CLASSES
    assert builder.info.splits["train"].num_examples == 3
    assert any(f.endswith(".array_record-00000") for f in os.listdir(path))
    source = builder.as_data_source(split="train")
    records = [source[i] for i in range(len(source))]
    assert [r["image_id"] for r in records] == [i.encode() for i in captions.image_ids]
    assert [r["background"].decode() for r in records] == captions.backgrounds
    assert [r["pose"].decode() for r in records] == captions.poses
    assert [int(r["label"]) for r in records] == [0, 1, 0]
    assert json.loads((tmp_path / "captions" / "stats.json").read_text()) == {"method": "test"}


def test_read_caption_bank_returns_what_was_written(tmp_path):
    captions = small_bank()
    write_caption_bank(str(tmp_path), captions, CLASSES, {})
    read = read_caption_bank(str(tmp_path))
    assert len(read) == 3
    assert read.image_ids == captions.image_ids and read.class_names == captions.class_names
    assert read.backgrounds == captions.backgrounds and read.poses == captions.poses
    assert read.labels.dtype == np.int64 and read.labels.tolist() == [0, 1, 0]


def test_rewriting_replaces_the_bank_and_leaves_no_temporary_folder(tmp_path):
    write_caption_bank(str(tmp_path), small_bank(), CLASSES, {})
    smaller = CaptionBank(["x.jpg"], np.array([2]), [CLASSES[2]], ["sea"], ["flying"])
    write_caption_bank(str(tmp_path), smaller, CLASSES, {})
    assert read_caption_bank(str(tmp_path)).image_ids == ["x.jpg"]
    assert sorted(os.listdir(tmp_path)) == ["captions"]


def test_missing_bank_is_named(tmp_path):
    with pytest.raises(ArtifactError, match=f"no caption bank in {tmp_path}/captions"):
        read_caption_bank(str(tmp_path))


def test_tsv_export_has_the_authors_layout_and_reads_back(tmp_path):
    captions = small_bank()
    captions.poses[2] = "standing\ton one\nleg"  # A tab or newline would break the row.
    write_caption_bank(str(tmp_path), captions, CLASSES, {})
    folder = tmp_path / "captions" / "tsv"
    lines = (folder / "background.tsv").read_text().splitlines()
    assert lines == ["image\tresponse", "001.Black/a.jpg\tgrass, sky, hangar", "002.Laysan/b.jpg\t",
                     "001.Black/c.jpg\tocéan, rocks"]
    assert tsv.read_tsv(str(folder / "background.tsv"), captions.image_ids) == captions.backgrounds
    assert tsv.read_tsv(str(folder / "pose.tsv"), captions.image_ids) == captions.poses[:2] + ["standing on one leg"]


def write_rows(path, rows, header="image\tresponse"):
    path.write_text("\n".join([header] + [f"{i}\t{r}" for i, r in rows]) + "\n")
    return str(path)


IDS = ["001.Black/a.jpg", "002.Laysan/b.jpg", "001.Black/c.jpg"]


def test_tsv_image_names_may_be_paths_from_another_machine(tmp_path):
    path = write_rows(tmp_path / "pose.tsv", [("/data/CUB_200_2011/images/001.Black/a.jpg", "flying"),
                                              ("C:\\cub\\images\\002.Laysan\\b.jpg", "perched"), ("c.jpg", "diving")])
    assert tsv.read_tsv(path, IDS) == ["flying", "perched", "diving"]


def test_tsv_with_a_row_missing_names_the_first_mismatch(tmp_path):
    path = write_rows(tmp_path / "pose.tsv", [(IDS[0], "flying"), (IDS[1], "perched")])
    with pytest.raises(DataError) as e:
        tsv.read_tsv(path, IDS)
    message = str(e.value)
    assert path in message and "2 rows for the 3 images" in message
    assert "line 4" in message and "expected '001.Black/c.jpg', found the end of the file" in message


def test_tsv_with_a_row_too_many_names_the_first_mismatch(tmp_path):
    path = write_rows(tmp_path / "pose.tsv", [(i, "x") for i in IDS] + [("extra.jpg", "x")])
    message = r"4 rows for the 3 images.*line 5: expected the end of the file, found 'extra.jpg'"
    with pytest.raises(DataError, match=message):
        tsv.read_tsv(path, IDS)


def test_tsv_with_a_wrong_image_names_file_row_expected_and_found(tmp_path):
    path = write_rows(tmp_path / "background.tsv", [(IDS[0], "sky"), (IDS[2], "grass"), (IDS[1], "sea")])
    with pytest.raises(DataError) as e:
        tsv.read_tsv(path, IDS)
    assert str(e.value) == (f"caption file {path} line 3: expected image '002.Laysan/b.jpg', "
                            "found '001.Black/c.jpg'")


def test_tsv_without_the_header_or_the_file_is_named(tmp_path):
    path = write_rows(tmp_path / "pose.tsv", [(IDS[0], "x")], header="path\tcaption")
    with pytest.raises(DataError, match="expected the header 'image<TAB>response', found 'path\\\\tcaption'"):
        tsv.read_tsv(path, IDS[:1])
    with pytest.raises(DataError, match=f"{tmp_path}/nothing.tsv does not exist"):
        tsv.read_tsv(str(tmp_path / "nothing.tsv"), IDS)


def test_bank_fields_must_align():
    with pytest.raises(ValueError, match="different lengths"):
        CaptionBank(["a"], np.array([0, 1]), ["x"], ["sky"], ["flying"])


def test_a_write_that_fails_midway_keeps_the_old_bank(tmp_path, monkeypatch):
    write_caption_bank(str(tmp_path), small_bank(), CLASSES, {})

    def killed(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(tsv, "write_tsv", killed)
    with pytest.raises(RuntimeError):
        write_caption_bank(str(tmp_path), CaptionBank(["x.jpg"], np.array([2]), [CLASSES[2]], ["sea"], ["fly"]),
                           CLASSES, {})
    assert read_caption_bank(str(tmp_path)).image_ids == small_bank().image_ids
    assert sorted(os.listdir(tmp_path)) == ["captions"]
