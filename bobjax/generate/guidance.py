"""The peers' generation modes, as additions to a plan: which real image an image starts from, with which soft
label, and which second prompt its condition is mixed with.

- ``same_class`` real guidance (DA-Fusion, DISEF): start from a train image of the target class, drawn uniformly.
- ``other_class`` (Diff-Mix's inter-class translation): start from a train image of another class, drawn uniformly,
  and label the result softly. Diff-Mix gives the target class ``s ** gamma`` and the source class
  ``1 - s ** gamma`` (s the translation strength; Wang et al., 2024, "Enhance Image Classification via Inter-Class
  Image Mixup with Diffusion Model", its released ``SyntheticDataset``; gamma 0.8 and s 0.7 in its scripts). The
  same rule with one class is a hard label, so ``same_class`` images carry it too.
- MVC (Rahat & Venkateswara, "Dataset Augmentation by Mixing Visual Concepts") conditions on a mix of two captions'
  embeddings of the class; here the second is the prompt of another planned image of the same class, drawn
  uniformly: under a context plan its context is an independent draw of the same rule as the image's own.

Every draw comes from a generator keyed by (seed, class, index) on a stream of its own, so the plan's other draws
(contexts, noise seeds) are those of the plain plan, and an image's additions do not depend on the rest of the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bobjax.errors import ConfigError
from bobjax.generate.plan import PlannedImage

REAL_GUIDANCE = ("", "same_class", "other_class")
_STREAM = 0x6D17  # Keys these draws apart from the plan's own.


def in_use(generate_config) -> bool:
    """Whether ``config.generate`` asks for any of the peers' modes (real guidance or MVC mixing)."""
    return bool(generate_config.real_guidance) or generate_config.mvc_weight != 1.0


def check(real_guidance: str, strength: float, mvc_weight: float) -> None:
    """Config errors that name the field, before any model is loaded."""
    if real_guidance not in REAL_GUIDANCE:
        raise ConfigError(f"config.generate.real_guidance is {real_guidance!r}; expected one of {REAL_GUIDANCE}")
    if real_guidance and not 0.0 < strength <= 1.0:
        raise ConfigError(f"config.generate.strength must be in (0, 1] for real-guided generation, got {strength}")
    if not 0.0 < mvc_weight <= 1.0:
        raise ConfigError(f"config.generate.mvc_weight must be in (0, 1] (1: no mixing), got {mvc_weight}")


def add_guidance(planned: Sequence[PlannedImage], *, seed: int, train_labels: np.ndarray, real_guidance: str = "",
                 strength: float = 1.0, gamma: float = 1.0, mvc_weight: float = 1.0) -> list[PlannedImage]:
    """``planned`` with real sources (``real_guidance``) and mix prompts (``mvc_weight < 1``) filled in."""
    check(real_guidance, strength, mvc_weight)
    train_labels = np.asarray(train_labels)
    prompts: dict[int, list[str]] = {}
    for item in planned:
        prompts.setdefault(item.label, []).append(item.prompt)
    if mvc_weight < 1.0 and all(len(set(p)) < 2 for p in prompts.values()):
        raise ConfigError("config.generate.mvc_weight < 1 mixes two prompts of a class, but every class has one prompt "
                          "only; use a plan with contexts (bob, within_class, independent)")
    out = []
    for item in planned:
        rng = np.random.default_rng([seed, item.label, item.index, _STREAM])
        changes = {}
        if real_guidance:
            own = train_labels == item.label
            candidates = np.flatnonzero(own if real_guidance == "same_class" else ~own)
            if not len(candidates):
                raise ConfigError(f"config.generate.real_guidance={real_guidance!r}: class {item.class_name!r} has no "
                                  f"{'own' if real_guidance == 'same_class' else 'other class'} train image to start from")
            source = int(candidates[rng.integers(len(candidates))])
            changes.update(source_index=source, source_label=int(train_labels[source]),
                           source_weight=float(1.0 - strength ** gamma))
        if mvc_weight < 1.0:
            same_class = prompts[item.label]
            changes["mix_prompt"] = same_class[rng.integers(len(same_class))]
        out.append(dataclasses.replace(item, **changes))
    return out
