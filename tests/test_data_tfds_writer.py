"""Shard-by-shard TFDS ArrayRecord writing: readable by TFDS, resumable, and loud about bad paths."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bobjax.artifacts import ArtifactError
from bobjax.data.tfds_writer import ShardedWriter, read_dataset

FEATURES = tfds.features.FeaturesDict({
    "image": tfds.features.Image(shape=(None, None, 3)),
    "label": tfds.features.ClassLabel(names=["a", "b"]),
    "prompt": tfds.features.Text(),
})


def examples(shard):
    return [{"image": np.full((4, 4, 3), 10 * shard + i, np.uint8), "label": i % 2, "prompt": f"s{shard}i{i}"}
            for i in range(3)]


def test_written_dataset_reads_back_with_tfds(tmp_path):
    writer = ShardedWriter(str(tmp_path / "ds"), "synthetic", FEATURES, "train", num_shards=2)
    for k in range(2):
        writer.write_shard(k, examples(k))
    writer.finalize([3, 3])
    source = read_dataset(str(tmp_path / "ds"))
    assert len(source) == 6
    assert source[4]["prompt"] == b"s1i1" and int(source[4]["image"][0, 0, 0]) == 11
    also = tfds.builder_from_directory(str(tmp_path / "ds")).info.features["label"].names
    assert also == ["a", "b"]


def test_killed_shard_leaves_no_file_and_rerun_completes(tmp_path):
    writer = ShardedWriter(str(tmp_path / "ds"), "synthetic", FEATURES, "train", num_shards=3)
    writer.write_shard(0, examples(0))

    def dies():
        yield examples(1)[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writer.write_shard(1, dies())
    assert writer.missing_shards() == [1, 2]
    assert not [f for f in os.listdir(tmp_path / "ds") if "tmp" in f]
    with pytest.raises(ArtifactError, match=r"lacks shards \[1, 2\]"):
        writer.finalize([3, 3, 3])
    for k in writer.missing_shards():
        writer.write_shard(k, examples(k))
    writer.finalize([3, 3, 3])
    prompts = [read_dataset(str(tmp_path / "ds"))[i]["prompt"] for i in range(9)]
    assert len(set(prompts)) == 9


def test_unwritable_directory_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match=str(blocker)):
        ShardedWriter(str(blocker / "ds"), "synthetic", FEATURES, "train", num_shards=1)
    with pytest.raises(ArtifactError, match="no finished TFDS dataset"):
        read_dataset(str(tmp_path))
