"""Image grids for people: TensorBoard previews, the prior's sample sheet, generation's rows of each class."""

from __future__ import annotations

import numpy as np


def to_uint8(images, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Float images with values in [``low``, ``high``] -> uint8 (clipped, rounded)."""
    scaled = (np.asarray(images, np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def image_grid(images: np.ndarray, columns: int = 4, fill: int = 0) -> np.ndarray:
    """[N, H, W, C] uint8 -> one image [rows * H, columns * W, C], row by row; empty cells are ``fill``."""
    images = np.asarray(images, np.uint8)
    n, h, w, c = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, c), fill, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included (all of them if fewer): the
    classes a grid shows when a dataset has too many for one picture, chosen before any accuracy is known."""
    if total <= count:
        return list(range(total))
    return sorted({int(round(k * (total - 1) / max(count - 1, 1))) for k in range(count)})
