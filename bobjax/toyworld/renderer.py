"""A perfect generator for the toy world: its own renderer draws each planned (class, background, pose).

Why: when BOB does not beat its baselines on the demo, either the context plan or the diffusion prior is to
blame. Rendering the plan exactly takes the prior out of the question: what the classifier gains over real-only
is then the plan's alone (an upper bound on what any generator could give that plan). Only context plans can be
rendered, as a class-only prompt does not say which background to draw (the generate stage checks the plan). A data
source, it reads a planned image through :class:`Scene` and imports no stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from bobjax import toyworld
from bobjax.errors import ConfigError


class Scene(Protocol):
    """What the renderer reads of a planned image (``bobjax.generate.plan.PlannedImage`` provides it)."""

    label: int
    index: int
    class_name: str
    background: str
    pose: str
    seed: int
    image_id: str


class ToyWorldRenderer:
    """``renderer(planned images) -> uint8 images [B, S, S, 3]``; image i is a function of its plan entry only."""

    def __init__(self, config):
        if config.data.source != "toyworld":
            raise ConfigError(f"config.generate.renderer='toyworld' draws toy-world birds; config.data.source is "
                              f"{config.data.source!r}: use config.generate.renderer='diffusion'")
        self.classes = toyworld.toy_classes(config.data.toyworld.num_classes)
        self.resolution = config.generate.resolution

    def __call__(self, planned: Sequence[Scene]) -> np.ndarray:
        images = []
        for item in planned:
            cls = self.classes[item.label]
            if cls.name != item.class_name:
                raise ConfigError(f"planned image {item.image_id} is class {item.class_name!r}, but toy-world class "
                                  f"{item.label} is {cls.name!r}")
            rng = np.random.default_rng([item.seed, item.label, item.index])
            images.append(toyworld.render(cls, item.background, item.pose, self.resolution, rng))
        return np.stack(images)
