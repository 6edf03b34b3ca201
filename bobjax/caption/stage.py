"""The caption stage: every real training image gets a class-agnostic (background, pose) pair in the bank.

``config.caption.method`` picks where the pairs come from: ``vlm`` asks a chat VLM (resumable: answers are
cached per image as they come), ``oracle`` takes the toy world's ground-truth words, ``tsv`` imports the
authors' caption files. Whatever the method, the result is ``WORKDIR/captions/`` (see ``bank.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from bobjax import artifacts, parallel
from bobjax.caption import answers, bank, prompts, tsv
from bobjax.caption.answers import AskFn
from bobjax.caption.cache import ResponseCache
from bobjax.data import DataError, Splits, make_splits
from bobjax.errors import ConfigError

METHODS = ("vlm", "oracle", "tsv")


def run(config, workdir: str, make_captioner: Callable[[], AskFn] | None = None) -> str:
    """Writes the caption bank of ``config``'s train split in ``workdir``; returns its path.

    ``make_captioner`` builds the VLM (default: :class:`~bobjax.caption.vlm.VLMCaptioner` from ``config.caption``);
    it is called only when some image still needs answers.
    """
    method = config.caption.method
    if method not in METHODS:
        raise ConfigError(f"config.caption.method is {method!r}; expected one of {METHODS}")
    if parallel.is_main_process():
        splits = make_splits(config.data, config.seed)
        if method == "vlm":
            backgrounds, poses, stats = vlm_captions(config, splits, workdir, make_captioner or _vlm_factory(config))
        elif method == "oracle":
            backgrounds, poses, stats = oracle_captions(splits)
        else:
            backgrounds, poses, stats = tsv_captions(config, splits)
        labels = splits.train.labels()
        captions = bank.CaptionBank(splits.train.image_ids(), labels, [splits.class_names[y] for y in labels],
                                    backgrounds, poses)
        stats = {"method": method, "images": len(captions), **stats}
        logging.info("caption bank: %s", stats)
        bank.write_caption_bank(workdir, captions, splits.class_names, stats)
    if jax.process_count() > 1:  # The other hosts go on to stages that read the bank.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("caption bank written")
    return bank.bank_path(workdir)


def _vlm_factory(config) -> Callable[[], AskFn]:
    def make() -> AskFn:
        from bobjax.caption.vlm import VLMCaptioner

        return VLMCaptioner(config.caption.model, config.caption.max_new_tokens)

    return make


def cache_key(config) -> dict:
    """What the cached answers depend on: the data, the seed and the caption settings but the batch size, so a
    run that ran out of memory can resume with a smaller batch."""
    key = artifacts.stage_inputs(config, "caption")
    del key["caption"]["batch_size"]
    return key


def _image(train, index: int, image_id: str) -> np.ndarray:
    """The pixels of a training image; an unreadable one stops the stage, naming it."""
    try:
        return train[index]["image"]
    except DataError as e:
        if image_id in str(e):
            raise
        raise DataError(f"image {image_id}: {e}") from e


def vlm_captions(config, splits: Splits, workdir: str, make_captioner: Callable[[], AskFn]):
    """Asks the VLM both questions about every image not answered yet, a batch at a time, caching as it goes."""
    batch_size = config.caption.batch_size
    if batch_size < 1:
        raise ConfigError(f"config.caption.batch_size must be >= 1, got {batch_size}")
    train, image_ids, labels = splits.train, splits.train.image_ids(), splits.train.labels()
    cache = ResponseCache(artifacts.partial_dir(workdir, "caption"), cache_key(config))
    todo = [i for i, image_id in enumerate(image_ids) if image_id not in cache]
    if todo:
        ask = make_captioner()
        with tqdm(total=len(image_ids), initial=len(image_ids) - len(todo), unit="img", desc="caption",
                  dynamic_ncols=True) as progress:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                images = [_image(train, i, image_ids[i]) for i in batch]
                forbidden = [answers.class_words(splits.class_names[labels[i]], splits.descriptor) for i in batch]
                n = len(batch)
                got = answers.resolve(ask, images * 2, ["background"] * n + ["pose"] * n, forbidden * 2,
                                      splits.descriptor, reask=config.caption.reask)
                cache.add({
                    "image_id": image_ids[i],
                    "background": background.text,
                    "pose": pose.text,
                    "raw": {"background": background.raw, "pose": pose.raw},
                    "events": {"background": background.events, "pose": pose.events},
                } for i, background, pose in zip(batch, got[:n], got[n:]))
                progress.update(n)
    records = [cache.records[image_id] for image_id in image_ids]
    backgrounds, poses = [r["background"] for r in records], [r["pose"] for r in records]
    events = [e for r in records for e in (r["events"]["background"], r["events"]["pose"])]
    return backgrounds, poses, {"model": config.caption.model, **answers.count(backgrounds + poses, events)}


def oracle_captions(splits: Splits):
    """The toy world's ground-truth context words: what a perfect captioner would say."""
    backgrounds, poses = [], []
    for i in range(len(splits.train)):
        record = splits.train[i]
        if "background" not in record or "pose" not in record:
            raise ConfigError(
                f"config.caption.method='oracle' needs ground-truth background and pose words, which only the toy "
                f"world's images carry; image {record['image_id']!r} of dataset {splits.name!r} has none. Use "
                "'vlm' or 'tsv'"
            )
        backgrounds.append(record["background"])
        poses.append(record["pose"])
    return backgrounds, poses, answers.count(backgrounds + poses, [])


def tsv_captions(config, splits: Splits):
    """Captions from ``config.caption.tsv_dir``'s ``background.tsv`` and ``pose.tsv``, aligned with the split."""
    folder = config.caption.tsv_dir
    if not folder:
        raise ConfigError("config.caption.method='tsv' needs config.caption.tsv_dir: a folder holding "
                          "background.tsv and pose.tsv (header 'image<TAB>response', one row per train image)")
    image_ids = splits.train.image_ids()
    backgrounds, poses = ([answers.clean(r) for r in tsv.read_tsv(os.path.join(folder, f"{a}.tsv"), image_ids)]
                          for a in prompts.ATTRIBUTES)
    return backgrounds, poses, {"source": os.path.abspath(folder), **answers.count(backgrounds + poses, [])}
