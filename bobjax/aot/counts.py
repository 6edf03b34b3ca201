"""How many times a run of a config calls each compiled program, from the config and the dataset's published sizes,
without the data: what turns a step's roofline bound into the stage's.

The counts follow the stages' own rules: LoRA steps ``epochs * ceil(images / batch)`` (per class with
``finetune.per_class``), generated images by ``generate.plan.images_per_class`` in shards of ``SHARD_SIZE`` (the
busiest host's calls: hosts generate at once), the
classifier's steps per epoch by its mixing phases (``classify.mixing``), plus one validation pass per epoch and a
test pass. Only the paper's datasets are known (``bobjax.data.paper_datasets``); another dataset gets no totals,
only per-step figures.
"""

from __future__ import annotations

import math

import numpy as np

from bobjax.classify import mixing
from bobjax.data.fewshot import long_tail_counts
from bobjax.data.paper_datasets import BY_TFDS_NAME, PaperDataset
from bobjax.generate.plan import images_per_class
from bobjax.generate.outputs import SHARD_SIZE


def dataset(config) -> PaperDataset | None:
    """The dataset's published sizes (:mod:`bobjax.data.paper_datasets`), or None for another dataset."""
    return BY_TFDS_NAME.get(config.data.name)



def train_counts(config, data: PaperDataset) -> list[int]:
    """Real training images per class: ``shots`` each, the long tail, or every image (``shots=0``)."""
    if config.data.imbalance:
        return long_tail_counts(data.train_per_class, data.classes, config.data.imbalance)
    return [config.data.shots or data.train_per_class] * data.classes


def lora_steps(config, data: PaperDataset) -> int:
    c, counts = config.finetune, train_counts(config, data)
    if c.per_class:
        return sum(c.epochs * math.ceil(n / c.batch_size) for n in counts)
    return c.epochs * math.ceil(sum(counts) / c.batch_size)


def synthetic_counts(config, data: PaperDataset) -> list[int]:
    g = config.generate
    return images_per_class(train_counts(config, data), g.images_per_class, g.long_tail_total, g.long_tail_m)


def generation_calls(config, data: PaperDataset, per_call: int, hosts: int = 1) -> tuple[int, int]:
    """(images, sampler calls of the busiest host): shards of ``SHARD_SIZE`` images dealt to ``hosts`` round-robin,
    each host cutting its shards into calls of ``per_call`` images (``bobjax.meshes.generation_batch``). Hosts draw
    at once, so the stage takes as long as its busiest host."""
    images = sum(synthetic_counts(config, data))
    shards = [min(SHARD_SIZE, images - k) for k in range(0, images, SHARD_SIZE)]
    return images, max(sum(math.ceil(n / per_call) for n in shards[h::hosts]) for h in range(hosts))


def classifier_steps(config, data: PaperDataset) -> tuple[int, int]:
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


def encoded_images(config, data: PaperDataset) -> int:
    """Images the quality encoder reads: the synthetic set and the reference split, once each."""
    return sum(synthetic_counts(config, data)) + data.test
