"""What one training image costs the host's input pipeline, measured on this machine's core: the cores a host needs
to keep its chips fed (``python -m bobjax.aot`` prints them beside the train step's bound; the benchmark
``benchmarks/host_augment.py`` prints them with torchvision's cost beside).

A row of a training batch is the config's augmentation (``bobjax.classify.augment``) of an image already at the
classifier's size; a method with synthetic images adds half a synthetic image's decode (a 512 px PNG decoded, resized
and centre-cropped): a mixed batch is half synthetic, decoded each time it is drawn, and half real, decoded once and
kept (``bobjax.classify.input``). Timed in the calling thread's CPU time (``time.thread_time``; the work is
single-threaded): what an input worker costs a core, less disturbed by other work on the machine than the wall
clock, and blind to other threads of the process (``python -m bobjax.aot`` measures beside a TPU or GPU client's
threads, which the process's CPU time charged: 11 to 26 ms a BOB row where the benchmark measured 12). The images
are smooth colour fields with noise, which PNG compresses about as poorly as photographs.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from bobjax.classify import augment
from bobjax.data import image_ops

SYNTHETIC_SIZE = 512  # The generator's resolution (SD 2.1-base and SD 1.5).


def photo(size: int, seed: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB uint8 image with a photograph's mix of smooth shading and sensor noise."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0), 128 + 90 * np.cos((x + y) / 19.0),
                      60 + 50 * np.sin(y / 11.0)], -1)
    return np.clip(image + np.random.default_rng(seed).normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def decode(data: bytes, image_size: int) -> np.ndarray:
    """A synthetic image as the input pipeline reads it: PNG decoded, resized and centre-cropped."""
    return image_ops.resize_and_center_crop(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), image_size)


def per_image_ms(work: Callable[[int], object], count: int) -> float:
    """CPU milliseconds per call of ``work(i)`` over ``count`` calls."""
    start = time.thread_time()
    for i in range(count):
        work(i)
    return (time.thread_time() - start) / count * 1e3


def row_ms(spec: augment.AugmentSpec, synthetic: bool, count: int = 16) -> float:
    """CPU milliseconds of one batch row with augmentation ``spec``: the augmentation, plus half a synthetic decode
    when the method trains on synthetic images."""
    photos = [photo(spec.image_size, seed) for seed in range(4)]
    ms = per_image_ms(lambda i: augment.augment_image(augment.row_rng(0, 0, i), photos[i % 4], spec), count)
    if synthetic:
        encoded = [png(photo(SYNTHETIC_SIZE, seed)) for seed in range(4)]
        ms += per_image_ms(lambda i: decode(encoded[i % 4], spec.image_size), count) / 2
    return ms
