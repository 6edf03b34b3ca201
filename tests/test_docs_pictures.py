"""docs/make_pictures.py lays a demo run's fixed-noise grids out unchanged (scaled up, under titles and class
names), following a run's pointer to a shared folder; a run without them is a clear error naming what is missing."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("make_pictures", os.path.join(ROOT, "docs", "make_pictures.py"))
make_pictures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_pictures)

CLASSES = ["Ashby", "Brenner", "Calder"]
TILE = 8


def fake_run(run, methods=("datadream", "bob")):
    """A comparison's folders with each method's seed-0 grid, 2 rows x 3 class columns of flat tiles, a colour per
    tile: DataDream's in its own run folder, BOB's in a shared folder that its pointer file names."""
    rng = np.random.default_rng(0)
    grids = {}
    for method in methods:
        folder = run / method / "seed0"
        folder.mkdir(parents=True)
        (folder / "splits.json").write_text(json.dumps({"class_names": CLASSES}))
        home = folder
        if method == "bob":
            home = run / "shared" / "generate-0123456789ab"
            (folder / "synthetic.link").write_text("../../shared/generate-0123456789ab\n")
        (home / "synthetic" / "grids").mkdir(parents=True)
        colours = rng.integers(0, 256, (2, len(CLASSES), 3), dtype=np.uint8)
        grids[method] = np.kron(colours, np.ones((TILE, TILE, 1), np.uint8))
        Image.fromarray(grids[method]).save(home / "synthetic" / "grids" / "fixed_noise.png")
    return grids


def test_the_picture_holds_both_grids_unchanged_side_by_side(tmp_path):
    grids = fake_run(tmp_path / "run")
    out = make_pictures.make(str(tmp_path / "run"), str(tmp_path / "picture.png"))
    picture = np.asarray(Image.open(out).convert("RGB"))
    s = make_pictures.SCALE
    width = len(CLASSES) * TILE * s
    assert picture.shape[1] == 2 * width + make_pictures.GAP
    x = 0
    for method, _ in make_pictures.PANELS:
        scaled = np.kron(grids[method], np.ones((s, s, 1), np.uint8))
        top = picture.shape[0] - scaled.shape[0]  # The grid sits under the panel's two lines of text.
        np.testing.assert_array_equal(picture[top:, x:x + width], scaled)
        assert (picture[:top, x:x + width] < 128).any()  # Its title and class names are written above it.
        x += width + make_pictures.GAP


def test_a_run_without_bob_is_an_error_naming_the_file(tmp_path, capsys):
    fake_run(tmp_path / "run", methods=("datadream",))
    assert make_pictures.main([str(tmp_path / "run"), "--out", str(tmp_path / "p.png")]) == 1
    assert "bob/seed0 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_a_split_without_class_names_is_an_error(tmp_path):
    fake_run(tmp_path / "run")
    (tmp_path / "run" / "datadream" / "seed0" / "splits.json").write_text(json.dumps({"train": []}))
    with pytest.raises(make_pictures.PictureError, match="names no classes"):
        make_pictures.make(str(tmp_path / "run"), str(tmp_path / "p.png"))
