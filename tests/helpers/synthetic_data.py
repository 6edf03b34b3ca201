"""A generate-stage dataset written straight from images, for tests of the stages that read one."""

import numpy as np
import tensorflow_datasets as tfds

from bobjax import run_folder
from bobjax.data.tfds_writer import ShardedWriter
from bobjax.generate.stage import features


# The fields the peers' modes added to the synthetic set: a set written before them lacks them.
SOFT_LABEL_FIELDS = ("mix_prompt", "source_label", "source_weight")


def write_synthetic(workdir: str, class_names, images: np.ndarray, labels, source_labels=None, source_weights=None,
                    old_format: bool = False) -> None:
    """``images[i]`` of class ``labels[i]`` as ``WORKDIR/synthetic`` (one shard, made-up prompts and contexts), with
    hard labels unless ``source_labels`` and ``source_weights`` are given; ``old_format``: without their fields."""
    spec = features(class_names)
    if old_format:
        spec = tfds.features.FeaturesDict({k: v for k, v in spec.items() if k not in SOFT_LABEL_FIELDS})
    writer = ShardedWriter(run_folder.stage_dir(workdir, "generate"), "synthetic", spec, "train", 1)
    n = len(labels)
    sources = np.full(n, -1) if source_labels is None else source_labels
    weights = np.zeros(n) if source_weights is None else source_weights
    examples = [{"image": np.asarray(image, np.uint8), "label": int(label), "image_id": f"s{i}",
                 "class_name": class_names[int(label)], "prompt": "p", "background": "b", "pose": "q", "seed": i,
                 **({} if old_format else {"mix_prompt": "", "source_label": int(sources[i]),
                                           "source_weight": float(weights[i])})}
                for i, (image, label) in enumerate(zip(images, labels))]
    writer.write_shard(0, examples)
    writer.finalize([len(examples)])
