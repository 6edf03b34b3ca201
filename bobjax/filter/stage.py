"""The ``filter`` stage, between generate and classify: which synthetic images the classifier keeps, and why.

Runs only when ``config.filter.rule`` is not ``none`` (BOB keeps every image). Encodes the synthetic set and the
few-shot real training images with the encoder of ``config.quality.encoder`` (:mod:`bobjax.quality.encoders`),
applies the rule (:mod:`bobjax.filter.rules`) and writes the keep list (:mod:`bobjax.filter.keep_list`); nothing is
copied. Like the synthetic set it is shared by the runs of a comparison whose inputs are equal (:mod:`bobjax.share`),
so a sweep over classifier settings filters once. One host computes it (one pass of an image encoder); a kill before
the keep list is written leaves nothing behind, and the rerun does it again.
"""

from __future__ import annotations

from absl import logging

from bobjax import parallel, run_folder
from bobjax.data import make_splits
from bobjax.data.tfds_writer import read_dataset
from bobjax.filter import keep_list, rules
from bobjax.quality import encoders


def run(config, workdir: str) -> dict:
    rules.check(config.filter)
    if not parallel.is_main_process():
        return {}
    splits = make_splits(config.data, config.seed)
    encoder = encoders.make_encoder(config, splits.class_names, splits.descriptor)
    features, fields = encoder.encode(read_dataset(run_folder.stage_dir(workdir, "generate")))
    real_features, _ = encoder.encode(splits.train)
    labels = [int(f["label"]) for f in fields]
    decision = rules.decide(config.filter, labels, features, encoder.class_logits(features), real_features,
                            splits.train.labels(), encoder.class_text)
    out = keep_list.write(workdir, decision, config.filter.to_dict(), encoder.name, fields, splits.class_names)
    logging.info("filter: %s kept %d of %d synthetic images (%s)", decision.rule, out["kept"], len(labels),
                 encoder.name)
    return out
