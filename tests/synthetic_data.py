"""A generate-stage dataset written straight from images, for tests of the stages that read one."""

import numpy as np

from bobjax import artifacts
from bobjax.data.tfds_writer import ShardedWriter
from bobjax.generate.stage import features


def write_synthetic(workdir: str, class_names, images: np.ndarray, labels) -> None:
    """``images[i]`` of class ``labels[i]`` as ``WORKDIR/synthetic`` (one shard, made-up prompts and contexts)."""
    writer = ShardedWriter(artifacts.stage_dir(workdir, "generate"), "synthetic", features(class_names), "train", 1)
    examples = [{"image": np.asarray(image, np.uint8), "label": int(label), "image_id": f"s{i}",
                 "class_name": class_names[int(label)], "prompt": "p", "background": "b", "pose": "q", "seed": i}
                for i, (image, label) in enumerate(zip(images, labels))]
    writer.write_shard(0, examples)
    writer.finalize([len(examples)])
