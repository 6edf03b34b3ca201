"""RandAugment (Cubuk et al. 2020) as torchvision applies it by default: 2 operations drawn from its 14, magnitude 9
of 31 bins, signed operations negated with even odds, nearest-pixel warps filled with black.

On the host, on PIL images, with the PIL calls torchvision's PIL path makes (``torchvision.transforms.autoaugment``'s
``_apply_op``), so an operation at a given magnitude gives torchvision's pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

NUM_OPS = 2
MAGNITUDE, BINS = 9, 31
_FRACTION = MAGNITUDE / (BINS - 1)
SHEAR = 0.3 * _FRACTION
TRANSLATE = (150.0 / 331.0) * _FRACTION  # of the image side
ROTATE_DEGREES = 30.0 * _FRACTION
ENHANCE = 0.9 * _FRACTION  # brightness, colour, contrast, sharpness factors are 1 +- this
POSTERIZE_BITS = 8 - round(MAGNITUDE / ((BINS - 1) / 4))
SOLARIZE_THRESHOLD = 255.0 * (1 - _FRACTION)


def _affine(image: Image.Image, matrix) -> Image.Image:
    """``matrix``: output (x, y) -> input (x, y), PIL's convention."""
    return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=(0, 0, 0))


def _enhance(kind):
    return lambda image, sign: kind(image).enhance(1.0 + ENHANCE * sign)


# torchvision's operations, in its order; each takes (image, sign), sign = +-1.
OPERATIONS = {
    "Identity": lambda image, sign: image,
    "ShearX": lambda image, sign: _affine(image, (1.0, SHEAR * sign, 0.0, 0.0, 1.0, 0.0)),
    "ShearY": lambda image, sign: _affine(image, (1.0, 0.0, 0.0, SHEAR * sign, 1.0, 0.0)),
    "TranslateX": lambda image, sign: _affine(image, (1.0, 0.0, -int(TRANSLATE * image.width * sign), 0.0, 1.0, 0.0)),
    "TranslateY": lambda image, sign: _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, -int(TRANSLATE * image.height * sign))),
    "Rotate": lambda image, sign: image.rotate(ROTATE_DEGREES * sign, Image.Resampling.NEAREST, fillcolor=(0, 0, 0)),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "Posterize": lambda image, sign: ImageOps.posterize(image, POSTERIZE_BITS),
    "Solarize": lambda image, sign: ImageOps.solarize(image, SOLARIZE_THRESHOLD),
    "AutoContrast": lambda image, sign: ImageOps.autocontrast(image),
    "Equalize": lambda image, sign: ImageOps.equalize(image),
}
_NAMES = tuple(OPERATIONS)


def rand_augment(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """``NUM_OPS`` operations drawn uniformly (with replacement), each with a random sign."""
    for _ in range(NUM_OPS):
        name = _NAMES[rng.integers(len(_NAMES))]
        image = OPERATIONS[name](image, 1.0 if rng.random() < 0.5 else -1.0)
    return image
