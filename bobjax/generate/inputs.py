"""What the sampler gets for a batch of planned images: prompts and seeds, and for the peers' modes the real images
to start from (resized and centre-cropped to the generation resolution, in [-1, 1]) and the prompts to mix with.

Real images are decoded once and kept: a few-shot train split is small, and every synthetic image of a class
draws its start from the same few.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bobjax.data.image_ops import resize_and_center_crop
from bobjax.generate.plan import PlannedImage


class SamplerInputs:
    """``planned images -> keyword arguments of TextToImage``."""

    def __init__(self, train_source, resolution: int, *, real_guided: bool, mixed: bool):
        self.train_source, self.resolution = train_source, resolution
        self.real_guided, self.mixed = real_guided, mixed
        self._images: dict[int, np.ndarray] = {}

    def real_image(self, index: int) -> np.ndarray:
        if index < 0:  # A planned image without a source (a plain plan's): a negative index would read another image.
            raise ValueError("real-guided sampling needs each planned image's source_index; this one has none")
        if index not in self._images:
            image = resize_and_center_crop(np.asarray(self.train_source[index]["image"]), self.resolution)
            self._images[index] = image.astype(np.float32) / 127.5 - 1.0
        return self._images[index]

    def __call__(self, planned: Sequence[PlannedImage]) -> dict:
        kwargs = {"prompts": [p.prompt for p in planned], "seeds": [p.seed for p in planned]}
        if self.real_guided:
            kwargs["images"] = np.stack([self.real_image(p.source_index) for p in planned])
        if self.mixed:
            kwargs["mix_prompts"] = [p.mix_prompt for p in planned]
        return kwargs
