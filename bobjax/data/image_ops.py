"""Image operations on the host that more than one stage applies to real images: the classifier's test transform,
the real-guided sampler's start images and the quality encoders' inputs are all this resize and centre crop."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 -> uint8 size x size x 3: shorter side to ``size`` (bicubic), then the central square."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])
