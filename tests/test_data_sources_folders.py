"""What real image folders hold: no train/test split (a flat folder of class folders), phone photos with an EXIF
orientation, and 16-bit images. Each of these failed before issue 30: a flat folder trained and then died in
evaluation (``TypeError: object of type 'NoneType' has no len()``), EXIF was ignored, 16-bit grey was clipped to
white."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from bobjax import artifacts, config_lib, main
from bobjax.classify import input as classify_input
from bobjax.data import fewshot, sources
from bobjax.data.sources import DataError


def flat_folder(root, per_class=(10, 7, 3)):
    """``root/<class>/<image>.png``, no train/ or test/; each image's red value is its index within its class."""
    for c, n in enumerate(per_class):
        os.makedirs(root / f"{c:03d}.class_{c}", exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 6), (i, c, 0)).save(root / f"{c:03d}.class_{c}" / f"{i:02d}.png")
    return str(root)


def folder_config(data_dir, **overrides):
    config = config_lib.base_config()
    config.data.source, config.data.data_dir, config.data.descriptor, config.data.shots = "folder", data_dir, "bird", 2
    for key, value in overrides.items():
        config.data[key] = value
    return config


def test_a_flat_folder_gets_a_stratified_test_split_the_same_for_every_seed(tmp_path):
    config = folder_config(flat_folder(tmp_path / "birds"))
    a = fewshot.make_splits(config.data, seed=0)
    b = fewshot.make_splits(config.data, seed=1)
    assert a.test is not None
    # round(0.2 * n) per class, at least one, never a class's last image.
    assert np.bincount(a.test.labels(), minlength=3).tolist() == [2, 1, 1]
    assert a.test.image_ids() == b.test.image_ids(), "every seed and method is tested on the same images"
    assert a.train.image_ids() != b.train.image_ids()
    assert not set(a.test.image_ids()) & set(a.train.image_ids())
    # What classify evaluates on: every test image, once (this raised TypeError on a flat folder).
    rows = [r for batch, valid in classify_input.eval_batches(a.test, 8, 8) for r in batch["label"][:valid]]
    assert sorted(rows) == sorted(a.test.labels().tolist())


def test_a_flat_folders_test_split_is_recorded_and_repeated_by_its_splits_json(tmp_path):
    config = folder_config(flat_folder(tmp_path / "birds"), val_size=3, shots=1)
    main.record_splits(config, str(tmp_path / "run"))
    recorded = artifacts.read_json(tmp_path / "run" / "splits.json")
    assert len(recorded["test"]) == 4 and len(recorded["validation"]) == 3 and len(recorded["train"]) == 3
    assert not set(recorded["test"]) & (set(recorded["train"]) | set(recorded["validation"]))
    again = folder_config(str(tmp_path / "birds"), val_size=3, shots=1, test_size=0.5,
                          split_file=str(tmp_path / "run" / "splits.json"))
    assert fewshot.make_splits(again.data, seed=7).manifest() == recorded
    recorded["test"] = recorded["test"][:1] + recorded["train"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(recorded))
    again.data.split_file = str(tmp_path / "bad.json")
    with pytest.raises(DataError, match=r"bad.json.*no 'test' split.*1 in both"):
        fewshot.make_splits(again.data, seed=0)


def test_without_test_size_a_missing_test_split_stops_the_run_before_its_first_stage(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(main, "STAGE_RUNS", {s: lambda c, w, s=s: calls.append(s) for s in config_lib.STAGES})
    config = folder_config(flat_folder(tmp_path / "birds"), test_size=0.0)
    with pytest.raises(DataError, match=r"'birds' has no 'test' split .*config.data.test_size"):
        main.run(config, str(tmp_path / "run"))
    assert calls == []


def test_shots_that_the_test_hold_out_leaves_too_few_of_are_named(tmp_path):
    config = folder_config(flat_folder(tmp_path / "birds"), shots=3)
    with pytest.raises(DataError, match=r"'class 2' has 2 training images after the test hold-out \(config.data"
                                        r".test_size=0.2\), fewer than shots=3"):
        fewshot.make_splits(config.data, seed=0)


def test_a_list_split_file_keeps_its_images_out_of_the_test_hold_out(tmp_path):
    config = folder_config(flat_folder(tmp_path / "birds"))
    listed = ["000.class_0/00.png", "000.class_0/01.png", "001.class_1/00.png", "002.class_2/00.png"]
    (tmp_path / "shots.txt").write_text("\n".join(listed) + "\n")
    config.data.split_file = str(tmp_path / "shots.txt")
    splits = fewshot.make_splits(config.data, seed=0)
    assert splits.train.image_ids() == listed
    assert not set(listed) & set(splits.test.image_ids()) and len(splits.test) == 4


def test_exif_orientation_is_applied():
    """A phone photo: stored 20 wide x 10 high with orientation 6 (turn 90 degrees clockwise to view)."""
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)  # Left half red: after the turn, the top half.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = io.BytesIO()
    Image.fromarray(stored).save(data, format="JPEG", exif=exif, quality=95)
    image = sources.decode_image(data.getvalue(), "photo.jpg")
    assert image.shape == (20, 10, 3)
    assert image[:8, :, 0].min() > 200 and image[12:, :, 0].max() < 50


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_high_bit_depth_grey_is_scaled_not_clipped(mode):
    grey = (np.arange(64, dtype=np.int32).reshape(8, 8) * 1000)  # 0 .. 63,000 of 65,535.
    image = Image.fromarray(grey.astype(np.uint16)) if mode == "I;16" else Image.fromarray(grey, mode="I")
    data = io.BytesIO()
    image.save(data, format="PNG" if mode == "I;16" else "TIFF")
    assert Image.open(io.BytesIO(data.getvalue())).mode == mode
    decoded = sources.decode_image(data.getvalue(), "deep.png")
    np.testing.assert_allclose(decoded[..., 0], grey / 257.0, atol=0.5)
    assert (decoded[..., 0] == decoded[..., 2]).all()
    np.testing.assert_allclose(sources.decode_image(grey.astype(np.uint16)[..., None], "array")[..., 1],
                               grey / 257.0, atol=0.5)
