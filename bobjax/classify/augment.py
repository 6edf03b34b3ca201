"""The classifier's random augmentation (BOB's downstream classifier, docs/paper.md), per image on the host, with PIL
as torchvision's PIL path.

Per-pixel gathers are slow on TPUs (the on-device version's warps counted 2,147 GB per chip per step on a v5e-8), so
the random ops run in the input pipeline (``bobjax.classify.input``) and only MixUp/CutMix run on the device. Each row
of a global batch draws from its own generator, :func:`row_rng` ``(seed, step, row)``: a resumed, re-sharded or
multi-host run, with any number of input workers, sees the same pixels.

Order: RandomResizedCrop (bicubic), horizontal flip, RandAugment (optional), ColorJitter with p (its four ops in a
random order, as torchvision), grayscale with p, Gaussian blur with p, solarize with p. Each op is torchvision's on a
PIL image (``torchvision.transforms.functional`` calls these same PIL functions), so for the same parameters the
pixels are the same (tests/test_classify_augment.py); torchvision's tensor path differs by a few levels (docs/pipeline.md).
The crop box is drawn from the image the host keeps for training, already resized (shorter side) and centre-cropped
to ``image_size`` (:func:`bobjax.data.image_ops.resize_and_center_crop`, which is also the whole test transform).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

from bobjax.classify import randaugment
from bobjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    image_size: int
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.2
    solarize_threshold: int = 128
    flip: bool = True
    randaugment: bool = False

    @property
    def blur_kernel(self) -> int:
        return 2 * (self.image_size // 20) + 1  # About a tenth of the image, odd, as in SimCLR-style blur.


def spec_from_config(cfg) -> AugmentSpec:
    """``config.classify`` -> the augmentation it asks for."""
    if not 0.0 < cfg.crop_scale_min <= 1.0:
        raise ConfigError(f"config.classify.crop_scale_min must be in (0, 1], got {cfg.crop_scale_min}")
    colour = {} if cfg.color_augment else dict(jitter_prob=0.0, grayscale_prob=0.0, solarize_prob=0.0)
    if not cfg.augment:
        return AugmentSpec(image_size=cfg.image_size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0,
                           grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0, flip=False)
    return AugmentSpec(image_size=cfg.image_size, crop_scale=(cfg.crop_scale_min, 1.0), randaugment=cfg.randaugment,
                       **colour)


def row_rng(seed: int, step: int, row: int, stream: int = 0) -> np.random.Generator:
    """The generator of row ``row`` of global step ``step``'s batch (``stream`` 1: a realmix partner's)."""
    return np.random.default_rng([seed, step, row, stream])


def crop_box(rng: np.random.Generator, height: int, width: int, spec: AugmentSpec) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's ``RandomResizedCrop.get_params`` draws it: up to ten tries of a random area
    fraction and log-uniform aspect ratio, rounded to pixels, then a centre crop clamped to the ratio range."""
    log_low, log_high = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
    for _ in range(10):
        area = height * width * rng.uniform(*spec.crop_scale)
        ratio = math.exp(rng.uniform(log_low, log_high))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < spec.crop_ratio[0]:
        w, h = width, round(width / spec.crop_ratio[0])
    elif ratio > spec.crop_ratio[1]:
        w, h = round(height * spec.crop_ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
    top, left, h, w = box
    return image.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def adjust_hue(image: Image.Image, shift: float) -> Image.Image:
    """Hue rotated by ``shift`` of a turn in PIL's 8-bit HSV, wrapping around (torchvision's PIL hue)."""
    h, s, v = image.convert("HSV").split()
    hue = np.asarray(h, np.uint8) + np.int32(shift * 255).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


_JITTER_OPS = (lambda x, f: ImageEnhance.Brightness(x).enhance(f), lambda x, f: ImageEnhance.Contrast(x).enhance(f),
               lambda x, f: ImageEnhance.Color(x).enhance(f), adjust_hue)


def jitter_params(rng: np.random.Generator, spec: AugmentSpec) -> tuple[np.ndarray, tuple[float, ...]]:
    """(order of brightness, contrast, saturation, hue; their factors): torchvision's ``ColorJitter.get_params``."""
    brightness, contrast, saturation, hue = spec.jitter
    order = rng.permutation(4)
    factors = (rng.uniform(1 - brightness, 1 + brightness), rng.uniform(1 - contrast, 1 + contrast),
               rng.uniform(1 - saturation, 1 + saturation), rng.uniform(-hue, hue))
    return order, factors


def color_jitter(image: Image.Image, order, factors) -> Image.Image:
    for i in order:
        image = _JITTER_OPS[i](image, factors[i])
    return image


def gaussian_blur(image: Image.Image, kernel: int, sigma: float) -> Image.Image:
    """torchvision's ``gaussian_blur``: a ``kernel``-tap Gaussian, reflected borders, rounded back to uint8 (done
    here as two 1-D passes, which changes float32 rounding only)."""
    x = np.linspace(-(kernel - 1) / 2, (kernel - 1) / 2, kernel)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights = (weights / weights.sum()).astype(np.float32)
    pixels = np.asarray(image, np.float32)
    for axis in (0, 1):
        pixels = ndimage.correlate1d(pixels, weights, axis=axis, mode="mirror")
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def augment_image(rng: np.random.Generator, image: np.ndarray, spec: AugmentSpec) -> np.ndarray:
    """One uint8 HxWx3 image -> its augmented ``image_size`` view, uint8."""
    pil = Image.fromarray(image)
    pil = resized_crop(pil, crop_box(rng, image.shape[0], image.shape[1], spec), spec.image_size)
    if spec.flip and rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if spec.randaugment:
        pil = randaugment.rand_augment(rng, pil)
    if rng.random() < spec.jitter_prob:
        pil = color_jitter(pil, *jitter_params(rng, spec))
    if rng.random() < spec.grayscale_prob:
        pil = pil.convert("L").convert("RGB")
    if rng.random() < spec.blur_prob:
        pil = gaussian_blur(pil, spec.blur_kernel, rng.uniform(*spec.blur_sigma))
    if rng.random() < spec.solarize_prob:
        pil = ImageOps.solarize(pil, spec.solarize_threshold)
    return np.asarray(pil)
