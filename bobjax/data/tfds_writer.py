"""Writes a TFDS dataset in ArrayRecord format shard by shard, so a long job can be killed and resumed.

Each shard is one ArrayRecord file, written atomically (:func:`bobjax.artifacts.atomic_path`: ArrayRecord's writer
writes local files only, so on an object store a shard is written locally and uploaded whole); a rerun writes
only the shards that are missing. When every shard exists, :meth:`ShardedWriter.finalize` writes the TFDS
metadata, ``dataset_info.json`` last: that file marks the dataset finished, locally and on an object store. Then
``tfds.builder_from_directory(directory)`` and its ``as_data_source`` read the dataset.
The shard count is fixed up front (from the job's plan), so file names never change between runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds
from etils import epath

from bobjax import artifacts
from bobjax.artifacts import ArtifactError

# Written last, by TFDS, after every shard and the other metadata: a folder holding it is a finished dataset.
FINISHED = "dataset_info.json"


class ShardedWriter:
    def __init__(self, directory, name: str, features: tfds.features.FeaturesDict, split: str, num_shards: int):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.directory, self.name, self.features = epath.Path(directory), name, features
        self.split, self.num_shards = split, num_shards
        try:  # A folder that cannot be written fails here, not after a shard's worth of work.
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"cannot create {directory}: {e.strerror or e}") from e

    def shard_path(self, index: int) -> epath.Path:
        return self.directory / f"{self.name}-{self.split}.array_record-{index:05d}-of-{self.num_shards:05d}"

    def is_written(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def missing_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.is_written(k)]

    def write_shard(self, index: int, examples: Iterable[dict]) -> None:
        """Serialises ``examples`` into shard ``index``; the file appears only once it is complete."""
        from array_record.python import array_record_module

        path = self.shard_path(index)
        try:
            with artifacts.atomic_path(path) as tmp:
                writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
                try:
                    for example in examples:
                        writer.write(self.features.serialize_example(example))
                finally:
                    writer.close()
        except (ArtifactError, RuntimeError, ValueError) as e:
            raise ArtifactError(f"cannot write shard {path}: {e}; the shards already written stay valid, "
                                "rerun to continue") from e

    def finalize(self, shard_lengths: Sequence[int], **info) -> None:
        """Writes the TFDS metadata for the complete set of shards (lengths in shard order)."""
        missing = self.missing_shards()
        if missing:
            raise ArtifactError(f"{self.directory} lacks shards {missing[:10]}; cannot finalise the dataset")
        if len(shard_lengths) != self.num_shards:
            raise ValueError(f"{len(shard_lengths)} shard lengths for {self.num_shards} shards")
        split_info = tfds.core.SplitInfo(name=self.split, shard_lengths=list(shard_lengths), num_bytes=sum(
            self.shard_path(k).stat().length for k in range(self.num_shards)))
        try:
            tfds.folder_dataset.write_metadata(
                data_dir=self.directory, features=self.features, split_infos=[split_info], check_data=False, **info)
        except OSError as e:
            raise ArtifactError(f"cannot write TFDS metadata in {self.directory}: {e.strerror or e}") from e


def is_finished(directory) -> bool:
    """Whether ``directory`` holds a finished dataset (see :data:`FINISHED`)."""
    return (epath.Path(directory) / FINISHED).exists()


def read_dataset(directory, split: str = "train"):
    """The random-access source of a dataset written by :class:`ShardedWriter` (or any TFDS folder).

    ArrayRecord's reader opens a ``gs://`` shard itself, through Google Cloud's C++ storage client (with the
    machine's default credentials), not through epath.
    """
    if not is_finished(directory):
        raise ArtifactError(f"{directory} holds no finished TFDS dataset (no {FINISHED})")
    return tfds.builder_from_directory(directory).as_data_source(split=split)
