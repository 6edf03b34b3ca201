"""The caption stage: every real training image gets a class-agnostic (background, pose) pair in the bank.

``config.caption.method`` picks where the pairs come from: ``vlm`` asks a chat VLM (resumable: answers are
cached per image as they come), ``oracle`` takes the toy world's ground-truth words, ``tsv`` imports the
authors' caption files. Whatever the method, the result is ``WORKDIR/captions/`` (see ``bank.py``).

The VLM (PyTorch) answers in a child process, and this process starts no JAX backend before it has finished
(``bobjax.main`` runs every caption stage first; :mod:`bobjax.parallel` tells hosts apart without a backend).
Why: on a GPU a JAX backend takes 75 % of the memory as it starts, and a 7B VLM needs about 17 GiB of the rest;
PyTorch, for its part, keeps its CUDA context and cached blocks until its process ends. A child's memory all
returns when it exits, so the JAX stages after it find the whole GPU, and torch's CUDA libraries never load
beside JAX's. The alternative, a JAX that does not preallocate, would leave every JAX stage of the run on the
slower, fragmenting on-demand allocator and still keep torch's leftovers in the process. The child costs a few
seconds to start; it appends to the same per-image answer cache (a killed run resumes), and an error in it is
raised again here (a ``UserError`` reaches the user as one line, as any other).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import jax
import numpy as np
from absl import logging
from etils import epath
from tqdm import tqdm

from bobjax import artifacts, identity, parallel, run_folder
from bobjax.caption import answers, bank, prompts, tsv
from bobjax.caption.answers import AskFn
from bobjax.caption.cache import ResponseCache
from bobjax.data import DataError, Splits, make_splits
from bobjax.errors import ConfigError

METHODS = ("vlm", "oracle", "tsv")
# How long the other hosts wait for host 0's captions: hours at most, for the VLM on thousands of images.
BANK_TIMEOUT_S = 24 * 3600


def run(config, workdir, make_captioner: Callable[[], AskFn] | None = None) -> epath.Path:
    """Writes the caption bank of ``config``'s train split in ``workdir``; returns its path.

    ``make_captioner`` builds a captioner in this process, called only when some image still needs answers; by
    default the VLM of ``config.caption`` (:class:`~bobjax.caption.vlm.VLMCaptioner`) answers in a child process.
    """
    method = config.caption.method
    if method not in METHODS:
        raise ConfigError(f"config.caption.method is {method!r}; expected one of {METHODS}")
    if parallel.is_main_process():
        splits = make_splits(config.data, config.seed)
        if method == "vlm":
            backgrounds, poses, stats = vlm_captions(config, splits, workdir, make_captioner)
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
    # The other hosts go on to stages that read the bank.
    parallel.wait_for_every_host(f"bobjax: caption bank written in {workdir}", BANK_TIMEOUT_S)
    return bank.bank_path(workdir)


def _vlm_factory(config) -> Callable[[], AskFn]:
    def make() -> AskFn:
        from bobjax.caption.vlm import VLMCaptioner

        return VLMCaptioner(config.caption.model, config.caption.max_new_tokens)

    return make


def cache_key(config) -> dict:
    """What the cached answers depend on: the caption stage's identity (the data, the seed and the caption settings
    but the batch size, so a run that ran out of memory can resume with a smaller batch)."""
    return identity.of(config, "caption")


def _image(train, index: int, image_id: str) -> np.ndarray:
    """The pixels of a training image; an unreadable one stops the stage, naming it."""
    try:
        return train[index]["image"]
    except DataError as e:
        if image_id in str(e):
            raise
        raise DataError(f"image {image_id}: {e}") from e


def _answers(config, workdir: str) -> ResponseCache:
    return ResponseCache(run_folder.partial_dir(workdir, "caption"), cache_key(config),
                         lambda recorded: not identity.changed(recorded, config, "caption"))


def vlm_captions(config, splits: Splits, workdir: str, make_captioner: Callable[[], AskFn] | None = None):
    """Both answers about every image: the cached ones, and those of ``make_captioner()``'s captioner (default:
    the configured VLM, in a child process) for the rest."""
    if config.caption.batch_size < 1:
        raise ConfigError(f"config.caption.batch_size must be >= 1, got {config.caption.batch_size}")
    image_ids, cache = splits.train.image_ids(), _answers(config, workdir)
    if any(image_id not in cache for image_id in image_ids):
        if make_captioner is None:
            _in_child_process(_ask_the_vlm, config, workdir)
            cache = _answers(config, workdir)  # With what the child appended.
        else:
            ask_all(config, splits, cache, make_captioner)
    records = [cache.records[image_id] for image_id in image_ids]
    backgrounds, poses = [r["background"] for r in records], [r["pose"] for r in records]
    events = [e for r in records for e in (r["events"]["background"], r["events"]["pose"])]
    return backgrounds, poses, {"model": config.caption.model, **answers.count(backgrounds + poses, events)}


def _ask_the_vlm(config, workdir: str) -> None:
    """The child process's work: the configured VLM answers every image the cache lacks."""
    jax.config.update("jax_platforms", "cpu")  # Nothing here uses JAX; nothing imported may take the VLM's GPU.
    ask_all(config, make_splits(config.data, config.seed), _answers(config, workdir), _vlm_factory(config))


def _in_child_process(fn, *args) -> None:
    """``fn(*args)`` in a fresh Python (spawned: a fork would copy this process's threads); its exception, if
    any, is raised here."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(fn, *args).result()
    except BrokenProcessPool as e:
        raise RuntimeError("the caption VLM's process died (killed, or out of memory); the answers it cached are "
                           "kept: rerun to resume") from e


def ask_all(config, splits: Splits, cache: ResponseCache, make_captioner: Callable[[], AskFn]) -> None:
    """Asks the captioner both questions about every image not in ``cache``, a batch at a time, caching as it
    goes; the captioner is built only when some image needs it."""
    batch_size = config.caption.batch_size
    train, image_ids, labels = splits.train, splits.train.image_ids(), splits.train.labels()
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
    folder = artifacts.storage_path(folder, "config.caption.tsv_dir")
    image_ids = splits.train.image_ids()
    backgrounds, poses = ([answers.clean(r) for r in tsv.read_tsv(folder / f"{a}.tsv", image_ids)]
                          for a in prompts.ATTRIBUTES)
    return backgrounds, poses, {"source": str(folder), **answers.count(backgrounds + poses, [])}
