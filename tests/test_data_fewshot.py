"""Few-shot, long-tail and split-file selections: deterministic, right counts, named errors."""

import json

import numpy as np
import pytest

from bobjax import artifacts, config_lib, main
from bobjax.data import fewshot, sources
from bobjax.data.sources import DataError


class FakeSplit:
    """Labels and ids only: split-making must not need the images."""

    def __init__(self, labels, prefix="img"):
        self._labels = np.asarray(labels)
        self._ids = [f"class{l}/{prefix}{i:04d}.jpg" for i, l in enumerate(labels)]

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        raise AssertionError("split-making decoded an image")

    def labels(self):
        return self._labels

    def image_ids(self):
        return self._ids


def make_source(per_class=(30, 30, 30), with_test=True):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    labels = np.random.default_rng(0).permutation(labels)
    splits = {"train": FakeSplit(labels)}
    if with_test:
        splits["test"] = FakeSplit(labels[:9], prefix="test")
    return sources.Source("fake", [f"c{i}" for i in range(len(per_class))], "thing", splits)


def data_config(**overrides):
    config = config_lib.base_config().data
    config.shots, config.val_size = 5, 0
    for key, value in overrides.items():
        config[key] = value
    return config


def test_k_shot_counts_and_determinism():
    source = make_source()
    a = fewshot.select(source, data_config(shots=5), seed=1)
    b = fewshot.select(source, data_config(shots=5), seed=1)
    c = fewshot.select(source, data_config(shots=5), seed=2)
    assert np.bincount(a.train.labels(), minlength=3).tolist() == [5, 5, 5]
    assert a.train.image_ids() == b.train.image_ids()
    assert a.train.image_ids() != c.train.image_ids()
    assert len(set(a.train.image_ids())) == 15


def test_validation_hold_out_is_disjoint_and_sized():
    splits = fewshot.select(make_source(), data_config(shots=5, val_size=20), seed=0)
    assert len(splits.validation) == 20
    assert not set(splits.validation.image_ids()) & set(splits.train.image_ids())


def test_too_few_images_names_the_class():
    with pytest.raises(DataError, match="'c1'"):
        fewshot.select(make_source(per_class=(10, 3, 10)), data_config(shots=5), seed=0)


def test_long_tail_profile():
    assert fewshot.long_tail_counts(100, 5, 0.01) == [100, 31, 10, 3, 1]
    splits = fewshot.select(make_source(per_class=(40, 40, 40)), data_config(shots=0, imbalance=0.1), seed=0)
    assert np.bincount(splits.train.labels()).tolist() == [40, 12, 4]
    with pytest.raises(DataError, match="imbalance"):
        fewshot.long_tail_counts(10, 3, 1.5)


def test_split_file_by_id_and_by_path_suffix(tmp_path):
    source = make_source()
    ids = source.split("train").image_ids()
    split_file = tmp_path / "split.txt"
    split_file.write_text(f"{ids[3]}\n/home/someone/CUB/images/{ids[7]}\n\n# comment\n{ids[1]} 2\n")
    splits = fewshot.select(source, data_config(split_file=str(split_file)), seed=0)
    assert splits.train.image_ids() == [ids[3], ids[7], ids[1]]


def test_split_file_naming_missing_image(tmp_path):
    source = make_source()
    split_file = tmp_path / "split.txt"
    split_file.write_text(source.split("train").image_ids()[0] + "\nclass9/nothere.jpg\n")
    with pytest.raises(DataError, match=r"line 2: image 'class9/nothere.jpg'"):
        fewshot.select(source, data_config(split_file=str(split_file)), seed=0)
    with pytest.raises(DataError, match="does not exist"):
        fewshot.select(source, data_config(split_file=str(tmp_path / "none.txt")), seed=0)


def test_validation_is_held_out_of_the_images_a_split_list_does_not_name(tmp_path):
    """The authors' lists name few-shot train images only; the validation hold-out must leave them to train."""
    source = make_source()
    ids = source.split("train").image_ids()
    split_file = tmp_path / "split.txt"
    split_file.write_text("\n".join(ids[:40]) + "\n")
    splits = fewshot.select(source, data_config(split_file=str(split_file), val_size=49), seed=0)
    assert splits.train.image_ids() == ids[:40]
    assert len(splits.validation) == 49 and not set(splits.validation.image_ids()) & set(ids[:40])
    with pytest.raises(DataError, match="val_size=50 is not smaller than the 50 images"):
        fewshot.select(source, data_config(split_file=str(split_file), val_size=50), seed=0)


@pytest.mark.parametrize("val_size", [0, 20])
def test_a_runs_splits_json_repeats_its_split_in_another_config(tmp_path, val_size):
    """Written by one run (seed 0), read by a config that would draw another split (seed 1): the same manifest."""
    first = config_lib.base_config()
    first.data.source, first.data.val_size = "toyworld", val_size
    main.record_splits(first, str(tmp_path / "first"))
    recorded = artifacts.read_json(tmp_path / "first" / "splits.json")
    second = config_lib.base_config()
    second.data.source, second.data.val_size, second.seed = "toyworld", val_size, 1
    assert fewshot.make_splits(second.data, second.seed).manifest()["train"] != recorded["train"]
    second.data.split_file = str(tmp_path / "first" / "splits.json")
    assert fewshot.make_splits(second.data, second.seed).manifest() == recorded
    main.record_splits(second, str(tmp_path / "second"))  # Its own record is the same file's content.
    assert artifacts.read_json(tmp_path / "second" / "splits.json") == recorded


def _manifest_file(tmp_path, source, val_size=0, **changes):
    manifest = fewshot.select(source, data_config(val_size=val_size), seed=0).manifest()
    manifest.update(changes)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(manifest))
    return str(path), manifest


@pytest.mark.parametrize("change, message", [
    (lambda m: {"train": m["train"][:2] + ["class0/elsewhere.jpg"]},
     r"1 train image id\(s\) are not in the dataset's 'train' split: \['class0/elsewhere.jpg'\]"),
    (lambda m: {"class_names": ["c0", "c1", "bird"]},
     r"other classes .* class 2 \('bird' in the file, 'c2' in the dataset\)"),
    (lambda m: {"test": m["test"][1:]},
     r"other test images .* 0 in the file only \[\], 1 in the dataset only \['class"),
    (lambda m: {"validation": m["validation"][:10]}, r"10 validation images .*; config.data.val_size is 20"),
    (lambda m: {"validation": m["validation"][:19] + m["train"][:1]}, r"1 image\(s\) in both train and validation"),
    (lambda m: {"train": "class0/img0001.jpg"}, r"'train' must be a list of strings"),
])
def test_a_bad_split_manifest_names_the_file_and_the_ids(tmp_path, change, message):
    source = make_source()
    path, manifest = _manifest_file(tmp_path, source, val_size=20)
    path, _ = _manifest_file(tmp_path, source, val_size=20, **change(manifest))
    with pytest.raises(DataError, match=message) as error:
        fewshot.select(source, data_config(split_file=path, val_size=20), seed=0)
    assert path in str(error.value)


def test_a_split_manifest_of_the_datasets_own_validation_split(tmp_path):
    """With val_size=0 validation is the dataset's own split: the file must name exactly its images."""
    source = make_source()
    source.splits["validation"] = FakeSplit(np.arange(6) % 3, prefix="val")
    path, manifest = _manifest_file(tmp_path, source)
    assert fewshot.select(source, data_config(split_file=path), seed=3).manifest() == manifest
    path, _ = _manifest_file(tmp_path, source, validation=manifest["validation"][:-1])
    with pytest.raises(DataError, match=r"other validation images .*val_size=0.* \['class2/val0005.jpg'\]"):
        fewshot.select(source, data_config(split_file=path), seed=0)


def test_toyworld_few_shot_split_is_spuriously_correlated():
    config = data_config(source="toyworld", shots=5)
    splits = fewshot.make_splits(config, seed=0)
    assert len(splits.train) == 5 * 6 and len(splits.test) == 30 * 6
    own = [r["background"] for r in (splits.train[i] for i in range(len(splits.train)))]
    labels = splits.train.labels()
    from bobjax.toyworld.world import BACKGROUNDS

    in_own = [BACKGROUNDS.index(b) in {l % 6, (l + 1) % 6} for b, l in zip(own, labels)]
    assert np.mean(in_own) > 0.75
