"""How many times a run of a config calls each compiled program, from the config and the dataset's published sizes,
without the data: what turns a step's roofline bound into the stage's.

The counts follow the stages' own rules: LoRA steps ``epochs * ceil(images / batch)`` (per class with
``finetune.per_class``), generated images by ``generate.plan.images_per_class`` in shards of ``SHARD_SIZE`` (the
busiest host's calls: hosts generate at once), the
classifier's steps per epoch by its mixing phases (``classify.mixing``), plus one validation pass per epoch and a
test pass. Only the datasets below are known (their split sizes are the TFDS/paper figures named); another dataset
gets no totals, only per-step figures.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bobjax.classify import mixing
from bobjax.data.fewshot import long_tail_counts
from bobjax.generate.plan import images_per_class
from bobjax.generate.stage import SHARD_SIZE


@dataclasses.dataclass(frozen=True)
class Dataset:
    classes: int
    train_per_class: int  # The largest class of the split the run trains from (the long tail's n_max).
    test: int  # Images of the split the classifier is tested on (and the quality metrics' reference).


# TFDS split sizes: caltech_birds2011 (train 5,994: at most 30 a class; test 5,794), fgvc_aircraft variants (trainval
# 6,667: 66-67 a class; test 3,333), cars196 (train 8,144: at most 68; test 8,041), oxford_iiit_pet (train 3,680: at
# most 100; test 3,669), oxford_flowers102 (configs/flowers_lt.py trains from TFDS's test split, 6,149 images, at most
# 238 a class, and tests on its train split, 1,020).
DATASETS = {
    "caltech_birds2011": Dataset(200, 30, 5794),
    "fgvc_aircraft": Dataset(100, 67, 3333),
    "cars196": Dataset(196, 68, 8041),
    "oxford_iiit_pet": Dataset(37, 100, 3669),
    "oxford_flowers102": Dataset(102, 238, 1020),
}


def dataset(config) -> Dataset | None:
    return DATASETS.get(config.data.name)


def train_counts(config, data: Dataset) -> list[int]:
    """Real training images per class: ``shots`` each, the long tail, or every image (``shots=0``)."""
    if config.data.imbalance:
        return long_tail_counts(data.train_per_class, data.classes, config.data.imbalance)
    return [config.data.shots or data.train_per_class] * data.classes


def lora_steps(config, data: Dataset) -> int:
    c, counts = config.finetune, train_counts(config, data)
    if c.per_class:
        return sum(c.epochs * math.ceil(n / c.batch_size) for n in counts)
    return c.epochs * math.ceil(sum(counts) / c.batch_size)


def synthetic_counts(config, data: Dataset) -> list[int]:
    g = config.generate
    return images_per_class(train_counts(config, data), g.images_per_class, g.long_tail_total, g.long_tail_m)


def generation_calls(config, data: Dataset, per_call: int, hosts: int = 1) -> tuple[int, int]:
    """(images, sampler calls of the busiest host): shards of ``SHARD_SIZE`` images dealt to ``hosts`` round-robin,
    each host cutting its shards into calls of ``per_call`` images (``bobjax.meshes.generation_batch``). Hosts draw
    at once, so the stage takes as long as its busiest host."""
    images = sum(synthetic_counts(config, data))
    shards = [min(SHARD_SIZE, images - k) for k in range(0, images, SHARD_SIZE)]
    return images, max(sum(math.ceil(n / per_call) for n in shards[h::hosts]) for h in range(hosts))


def classifier_steps(config, data: Dataset) -> tuple[int, int]:
    """(training steps, evaluation calls) of the classify stage: its phases as ``classify.input.TrainInput`` cuts
    them, one validation pass per epoch, one test pass."""
    cfg = config.classify
    real = np.repeat(np.arange(data.classes), train_counts(config, data))
    synthetic = np.repeat(np.arange(data.classes), synthetic_counts(config, data))
    steps, epochs = 0, 0
    for kind, phase_epochs in mixing.phases(cfg.mixing, cfg.epochs, cfg.real_only_epochs):
        if kind == "lambda":
            size = len(mixing.repeated_real_indices(real, synthetic)) + len(synthetic)
        elif kind in ("alpha", "realmix"):
            size = len(mixing.repeated_real_indices(real, synthetic))
        else:
            size = len(real)
        steps += phase_epochs * (cfg.steps_per_epoch or max(1, math.ceil(size / cfg.batch_size)))
        epochs += phase_epochs
    validation = config.data.val_size
    return steps, epochs * math.ceil(validation / cfg.batch_size) + math.ceil(data.test / cfg.batch_size)


def encoded_images(config, data: Dataset) -> int:
    """Images the quality encoder reads: the synthetic set and the reference split, once each."""
    return sum(synthetic_counts(config, data)) + data.test
